/**
 * The KvCache persistence page: starts `kvcache-worker.ts` (device, `OpfsStore`, `OpfsManifest`),
 * shows its report and puts the state on `window.__tesseraKv` for the e2e test
 * (test/browser/kvcache.test.ts).
 *
 * URL parameters: `phase=create` (default: build, commit and close a cache on OPFS) or
 * `phase=reopen` (open it again with `openKvCache`, verify every checksum, sample and decode),
 * `tokens` (base sequence length, default 65,553), `corrupt=<page>` (reopen only: flip one byte of
 * that page in the file first).
 */
import type { KvPageMessage, KvPageRequest, KvPageResult } from './kvcache-protocol.js';

export interface KvPageState {
  done: boolean;
  request?: KvPageRequest;
  result?: KvPageResult;
  error?: string;
  errorCode?: string;
  log: string[];
}

const state: KvPageState = { done: false, log: [] };
(globalThis as unknown as { __tesseraKv: KvPageState }).__tesseraKv = state;
const $ = (id: string) => document.getElementById(id)!;

function log(line: string): void {
  state.log.push(line);
  $('log').textContent += line + '\n';
}

function finish(text: string, ok: boolean): void {
  $('status').textContent = text;
  $('status').className = ok ? 'ok' : 'bad';
  state.done = true;
}

try {
  const params = new URLSearchParams(location.search);
  const phase = params.get('phase') ?? 'create';
  if (phase !== 'create' && phase !== 'reopen') throw new Error(`URL parameter phase=${phase}: create or reopen`);
  const tokens = Number(params.get('tokens') ?? 65_553);
  if (!Number.isInteger(tokens) || tokens < 256)
    throw new Error(`URL parameter tokens=${params.get('tokens')}: an integer >= 256`);
  const corrupt = params.get('corrupt');
  const req: KvPageRequest = { phase, tokens, corruptPage: corrupt === null ? undefined : Number(corrupt) };
  state.request = req;
  $('status').textContent = `${phase}: running`;
  const worker = new Worker(new URL('./kvcache-worker.ts', import.meta.url), { type: 'module' });
  worker.onerror = (e) => {
    state.error = `worker error: ${e.message}`;
    finish(state.error, false);
  };
  worker.onmessage = (ev: MessageEvent<KvPageMessage>) => {
    const m = ev.data;
    if (m.type === 'log') log(m.line);
    else if (m.type === 'result') {
      state.result = m.result;
      $('json').textContent = JSON.stringify(
        m.result,
        (k, v) => (k === 'decode' ? `[${(v as number[]).length} values]` : v),
        2,
      );
      const r = m.result;
      const ok =
        r.base.sampleBad === 0 &&
        r.child.sampleBad === 0 &&
        (r.failed?.length ?? 0) === (req.corruptPage === undefined ? 0 : 1);
      finish(`${phase}: done${ok ? '' : ', with a failed check'}`, ok);
      worker.terminate();
    } else {
      state.error = m.message;
      state.errorCode = m.code;
      log(`error: ${m.message}`);
      finish(m.message, false);
      worker.terminate();
    }
  };
  worker.postMessage(req);
} catch (e) {
  state.error = (e as Error).message;
  finish(state.error, false);
}
