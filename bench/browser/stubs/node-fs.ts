// The suites import `writeFileSync` from node:fs at the top for their CLI `--json` output; the page
// never writes files. vite.config.ts aliases node:fs to this stub so those imports resolve.
function unavailable(): never {
  throw new Error('node:fs is not available in the browser');
}
export const writeFileSync = unavailable;
export const mkdirSync = unavailable;
export const existsSync = (): boolean => false;
export const readFileSync = unavailable;
export const readdirSync = unavailable;
// src/kv/file-store.ts (the Node disk tier, reachable from the needle demo's CLI entry)
export const closeSync = unavailable;
export const mkdtempSync = unavailable;
export const openSync = unavailable;
export const readSync = unavailable;
export const rmSync = unavailable;
export const writeSync = unavailable;
export const fstatSync = unavailable;
export const fsyncSync = unavailable;
export const renameSync = unavailable;
// src/kv/file-lock.ts (one FileStore per file)
export const realpathSync = unavailable;
export const statSync = unavailable;
export default {
  writeFileSync,
  mkdirSync,
  existsSync,
  readFileSync,
  readdirSync,
  closeSync,
  mkdtempSync,
  openSync,
  readSync,
  rmSync,
  writeSync,
  fstatSync,
  fsyncSync,
  renameSync,
  realpathSync,
  statSync,
};
