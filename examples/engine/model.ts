/**
 * The toy transformer of `examples/engine`: its configuration, its weights (deterministic, f32)
 * and its float64 mirror (the whole model, token by token, with the same page-level choices:
 * window + sinks, Quest selection from f16-rounded page summaries).
 *
 * Per layer (pre-norm, no MLP): `xn = x / sqrt(mean(x^2) + eps)`; `q = xn Wq`, `k = xn Wk`,
 * `v = xn Wv` (GQA heads); RoPE (rotate-half) on q and k at the token's position; attention of
 * the layer's kind; `x += o Wo`. The next decode input of a sequence is
 * `alpha * norm(h) + (1 - alpha) * e` with `h` the last layer's output of its previous token and
 * `e` a fixed per-step embedding: each step's K/V come from the previous step's output, and the
 * map contracts (alpha < 1), so f32 and float64 stay within rounding of each other.
 */
import { Rng } from '../../src/testing.js';
import { ropeReference } from '../../kernels/append/reference.js';
import { f16BitsToF32 } from '../../src/tensor.js';
import { f16Bound } from '../../kernels/append/reference.js';

export type LayerKind = 'full' | 'window' | 'quest';

export interface ModelConfig {
  layers: LayerKind[];
  Hq: number;
  Hkv: number;
  D: number;
  /** Model width. */
  Dm: number;
  pageSize: number;
  /** Prompt length of each sequence (the batch). */
  prompts: number[];
  steps: number;
  /** Sliding window (keys) and sink tokens of window layers. */
  window: number;
  sinks: number;
  /** Quest layers: pages attended per decode query (sink and newest included), sink pages. */
  questBudgetPages: number;
  questSinkPages: number;
  theta: number;
  alpha: number;
  eps: number;
  seed: number;
}

export function defaultConfig(small: boolean): ModelConfig {
  return {
    layers: ['full', 'window', 'quest'],
    Hq: 8,
    Hkv: 2,
    D: 64,
    Dm: 128,
    pageSize: small ? 8 : 16,
    prompts: small ? [13, 24, 37, 6] : [37, 64, 90, 23],
    steps: small ? 8 : 256,
    window: small ? 16 : 64,
    sinks: 4,
    questBudgetPages: small ? 3 : 6,
    questSinkPages: 1,
    theta: 1e4,
    alpha: 0.5,
    eps: 1e-6,
    seed: 7,
  };
}

export interface Weights {
  /** Per layer: Wq [Dm, Hq*D], Wk [Dm, Hkv*D], Wv [Dm, Hkv*D], Wo [Hq*D, Dm], f32 values. */
  layers: {
    wq: Float32Array<ArrayBuffer>;
    wk: Float32Array<ArrayBuffer>;
    wv: Float32Array<ArrayBuffer>;
    wo: Float32Array<ArrayBuffer>;
  }[];
  /** Prompt embeddings, all sequences' tokens in batch order: [sum prompts, Dm]. */
  ePrompt: Float32Array<ArrayBuffer>;
  /** Decode embeddings [steps, B, Dm]. */
  eDecode: Float32Array<ArrayBuffer>;
}

export function makeWeights(c: ModelConfig): Weights {
  const rng = new Rng(c.seed);
  const mat = (rows: number, cols: number, scale: number) => Float32Array.from(rng.normals(rows * cols, scale));
  const layers = c.layers.map(() => ({
    wq: mat(c.Dm, c.Hq * c.D, 1 / Math.sqrt(c.Dm)),
    wk: mat(c.Dm, c.Hkv * c.D, 1 / Math.sqrt(c.Dm)),
    wv: mat(c.Dm, c.Hkv * c.D, 1 / Math.sqrt(c.Dm)),
    wo: mat(c.Hq * c.D, c.Dm, 0.5 / Math.sqrt(c.Hq * c.D)),
  }));
  const total = c.prompts.reduce((a, b) => a + b, 0);
  return { layers, ePrompt: mat(total, c.Dm, 1), eDecode: mat(c.steps, c.prompts.length * c.Dm, 1) };
}

/** What the float64 mirror computed. */
export interface MirrorResult {
  /** Last layer's output of each sequence's newest token after prefill and after each step: [steps + 1, B, Dm]. */
  history: Float64Array;
  /** Smallest gap between the last selected and the first unselected Quest score (near-ties could select differently in f32). */
  questMargin: number;
  /** Quest selections made (decode steps x sequences with more pages than the budget). */
  questSelections: number;
}

function matvec(x: ArrayLike<number>, w: Float32Array, rows: number, cols: number, inv = 1): Float64Array {
  const y = new Float64Array(cols);
  for (let r = 0; r < rows; r++) {
    const xr = x[r]! * inv;
    if (xr === 0) continue;
    const o = r * cols;
    for (let c = 0; c < cols; c++) y[c] += xr * w[o + c]!;
  }
  return y;
}

function rmsInv(x: ArrayLike<number>, eps: number): number {
  let s = 0;
  for (let i = 0; i < x.length; i++) s += x[i]! * x[i]!;
  return 1 / Math.sqrt(s / x.length + eps);
}

/**
 * The whole model in float64, token by token (prefill tokens in order, then decode steps).
 *
 * @example
 * const m = mirror(cfg, makeWeights(cfg));
 */
export function mirror(c: ModelConfig, w: Weights): MirrorResult {
  const B = c.prompts.length;
  const { Hq, Hkv, D, Dm, pageSize: P } = c;
  const group = Hq / Hkv;
  const scale = 1 / Math.sqrt(D);
  const history = new Float64Array((c.steps + 1) * B * Dm);
  let questMargin = Infinity;
  let questSelections = 0;
  let promptRow = 0;
  for (let b = 0; b < B; b++) {
    // Per layer: keys / values of this sequence [t][Hkv * D] (RoPE'd keys).
    const K: Float64Array[][] = c.layers.map(() => []);
    const V: Float64Array[][] = c.layers.map(() => []);
    const T = c.prompts[b]! + c.steps;
    let x = new Float64Array(Dm);
    for (let t = 0; t < T; t++) {
      const prefill = t < c.prompts[b]!;
      if (prefill) x = Float64Array.from(w.ePrompt.subarray((promptRow + t) * Dm, (promptRow + t + 1) * Dm));
      else {
        const s = t - c.prompts[b]!;
        const inv = rmsInv(x, c.eps);
        const e = w.eDecode.subarray((s * B + b) * Dm, (s * B + b + 1) * Dm);
        const nx = new Float64Array(Dm);
        for (let i = 0; i < Dm; i++) nx[i] = c.alpha * x[i]! * inv + (1 - c.alpha) * e[i]!;
        x = nx;
      }
      c.layers.forEach((kind, l) => {
        const W = w.layers[l]!;
        const inv = rmsInv(x, c.eps);
        const q = ropeReference(matvec(x, W.wq, Dm, Hq * D, inv), [t], Hq, D, { style: 'half', theta: c.theta });
        K[l]!.push(ropeReference(matvec(x, W.wk, Dm, Hkv * D, inv), [t], Hkv, D, { style: 'half', theta: c.theta }));
        V[l]!.push(matvec(x, W.wv, Dm, Hkv * D, inv));
        // Which keys this query sees.
        let keys: number[];
        const all = Array.from({ length: t + 1 }, (_, j) => j);
        if (kind === 'window') keys = all.filter((j) => j > t - c.window || j < c.sinks);
        else if (kind === 'quest' && !prefill) {
          const n = Math.ceil((t + 1) / P);
          let pages = Array.from({ length: n }, (_, i) => i);
          if (n > c.questBudgetPages) {
            const sel = questSelect(q, K[l]!, t + 1, c);
            questMargin = Math.min(questMargin, sel.margin);
            questSelections++;
            pages = sel.pages;
          }
          keys = pages.flatMap((p) => all.slice(p * P, Math.min(t + 1, (p + 1) * P)));
        } else keys = all;
        const o = new Float64Array(Hq * D);
        for (let h = 0; h < Hq; h++) {
          const hk = Math.floor(h / group);
          const s = keys.map((j) => {
            let d = 0;
            for (let i = 0; i < D; i++) d += q[h * D + i]! * K[l]![j]![hk * D + i]!;
            return d * scale;
          });
          const m = Math.max(...s);
          const p = s.map((x) => Math.exp(x - m));
          const z = p.reduce((a, b) => a + b, 0);
          keys.forEach((j, n) => {
            const pj = p[n]! / z;
            for (let i = 0; i < D; i++) o[h * D + i] += pj * V[l]![j]![hk * D + i]!;
          });
        }
        const y = matvec(o, W.wo, Hq * D, Dm);
        for (let i = 0; i < Dm; i++) x[i] += y[i]!;
      });
      if (t >= c.prompts[b]! - 1) history.set(x, ((t - c.prompts[b]! + 1) * B + b) * Dm);
    }
    promptRow += c.prompts[b]!;
  }
  return { history, questMargin, questSelections };
}

/** Quest's head-shared selection from f16-rounded min/max page summaries of the keys (as the GPU). */
function questSelect(
  q: Float64Array,
  K: Float64Array[],
  len: number,
  c: ModelConfig,
): { pages: number[]; margin: number } {
  const { Hq, Hkv, D, pageSize: P } = c;
  const group = Hq / Hkv;
  const n = Math.ceil(len / P);
  const score = (p: number) => {
    let best = -Infinity;
    for (let h = 0; h < Hkv; h++) {
      const mn = new Float64Array(D).fill(Infinity);
      const mx = new Float64Array(D).fill(-Infinity);
      for (let t = p * P; t < Math.min(len, (p + 1) * P); t++) {
        for (let d = 0; d < D; d++) {
          const x = Math.fround(K[t]![h * D + d]!);
          mn[d] = Math.min(mn[d]!, x);
          mx[d] = Math.max(mx[d]!, x);
        }
      }
      for (let d = 0; d < D; d++) {
        mn[d] = f16BitsToF32(f16Bound(mn[d]!, false));
        mx[d] = f16BitsToF32(f16Bound(mx[d]!, true));
      }
      for (let g = 0; g < group; g++) {
        let s = 0;
        for (let d = 0; d < D; d++) {
          const qq = q[(h * group + g) * D + d]!;
          s += Math.max(qq * mx[d]!, qq * mn[d]!);
        }
        best = Math.max(best, s);
      }
    }
    return best;
  };
  const sinks = Math.min(c.questSinkPages, n, c.questBudgetPages - 1);
  const free: { i: number; s: number }[] = [];
  for (let i = sinks; i < n - 1; i++) free.push({ i, s: score(i) });
  free.sort((a, b) => b.s - a.s || a.i - b.i);
  const k = c.questBudgetPages - sinks - 1;
  const margin = k > 0 && k < free.length ? free[k - 1]!.s - free[k]!.s : Infinity;
  const take = new Set([...Array.from({ length: sinks }, (_, i) => i), n - 1, ...free.slice(0, k).map((x) => x.i)]);
  return { pages: Array.from({ length: n }, (_, i) => i).filter((i) => take.has(i)), margin };
}
