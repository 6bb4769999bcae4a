/**
 * The needle page: starts `needle-worker.ts` (which holds the device and the OPFS cache), shows
 * what it reports, and puts the whole state on `window.__tesseraNeedle` for the e2e test.
 *
 * URL parameters (`needle-params.ts`): `tokens` (default 1,000,000; `tokens=10000000` for 10M),
 * `run=0` (only check the cache already on OPFS), `exact=0` (skip the exact streaming pass),
 * `pageSize` (64), `budgetTokens` (2048), `gpuBudget` (MiB, 256), `corrupt=<page>` (flip a byte of
 * that page of the stored cache before the check).
 */
import type { NeedleResult } from '../../src/demo/needle.js';
import type { NeedleMessage, NeedleRequest, OpfsVerify } from './needle-protocol.js';
import { parseNeedleParams } from './needle-params.js';

export interface NeedlePageState {
  done: boolean;
  request?: NeedleRequest;
  verify?: OpfsVerify;
  result?: NeedleResult;
  manifest?: { pages: number; pageBytes: number; fileBytes: number };
  error?: string;
  log: string[];
}

const state: NeedlePageState = { done: false, log: [] };
(globalThis as unknown as { __tesseraNeedle: NeedlePageState }).__tesseraNeedle = state;
const $ = (id: string) => document.getElementById(id)!;

function log(line: string): void {
  state.log.push(line);
  const pre = $('log');
  pre.textContent += line + '\n';
  pre.scrollTop = pre.scrollHeight;
}

function status(text: string, cls = ''): void {
  $('status').textContent = text;
  $('status').className = cls;
}

function table(id: string, obj: object): void {
  const body = $(id).querySelector('tbody')!;
  body.textContent = '';
  for (const [k, v] of Object.entries(obj)) {
    const tr = document.createElement('tr');
    const a = document.createElement('td');
    a.className = 'key';
    a.textContent = k;
    const b = document.createElement('td');
    b.textContent =
      typeof v === 'number' && !Number.isInteger(v)
        ? Math.abs(v) < 1e-2 && v !== 0
          ? v.toExponential(3)
          : v.toFixed(4)
        : String(v);
    tr.append(a, b);
    body.appendChild(tr);
  }
}

try {
  const req: NeedleRequest = parseNeedleParams(location.search);
  state.request = req;
  status(req.run ? `checking OPFS, then ${req.tokens.toLocaleString('en-US')} tokens` : 'checking the cache on OPFS');
  const worker = new Worker(new URL('./needle-worker.ts', import.meta.url), { type: 'module' });
  worker.onerror = (e) => {
    state.error = `worker error: ${e.message}`;
    status(state.error, 'bad');
    state.done = true;
  };
  worker.onmessage = (ev: MessageEvent<NeedleMessage>) => {
    const m = ev.data;
    if (m.type === 'log') log(m.line);
    else if (m.type === 'progress') {
      const p = $('progress') as HTMLProgressElement;
      p.max = m.total;
      p.value = m.done;
    } else if (m.type === 'verify') {
      state.verify = m.verify;
      table('verify', m.verify);
      log(
        m.verify.found
          ? `OPFS: found a cache of ${m.verify.pages} pages, ${m.verify.mismatches} checksum mismatches (${m.verify.ms?.toFixed(0)} ms)`
          : 'OPFS: no cache yet',
      );
    } else if (m.type === 'result') {
      state.result = m.result;
      state.manifest = m.manifest;
      table('result', m.result);
      $('json').textContent = JSON.stringify(m.result, null, 2);
      log(
        `needle ${m.result.needleFound ? 'FOUND' : 'NOT FOUND'}; read ${(100 * m.result.kvBytesReadFraction).toFixed(3)}% of the KV bytes`,
      );
    } else if (m.type === 'error') {
      state.error = m.message;
      log(`error: ${m.message}`);
      status(m.message, 'bad');
      state.done = true;
    } else if (m.type === 'done') {
      const ok = (!state.result || state.result.needleFound) && (!state.verify?.found || state.verify.mismatches === 0);
      status(ok ? 'done' : 'done, with a failed check', ok ? 'ok' : 'bad');
      state.done = true;
      worker.terminate();
    }
  };
  worker.postMessage(req);
} catch (e) {
  state.error = (e as Error).message;
  status(state.error, 'bad');
  state.done = true;
}
