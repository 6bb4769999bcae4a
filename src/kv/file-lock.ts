/**
 * One `FileStore` per file. Two stores on one file would each number pages from 0 and write over
 * each other (and the second would truncate the file under the first when it opens it). So a
 * store claims its file before opening it:
 * - in this process: a registry of the files open as a store, by real path (symlinks and `..`
 *   resolved as far as they exist);
 * - across processes: an exclusive lock file beside it (`<path>.lock`, created with `wx`, holding
 *   the owner's pid). A lock whose process is gone (a crash) is stale and taken over.
 * Both are released by `close()`. Node only (exported through `tessera/node`).
 */
import { closeSync, openSync, readFileSync, realpathSync, rmSync, statSync, writeSync } from 'node:fs';
import { basename, dirname, join, resolve } from 'node:path';
import { TesseraError } from '../errors.js';

const openFiles = new Set<string>();

/** The file's identity for the registry: its real path, as far as it exists. */
function fileKey(path: string): string {
  const abs = resolve(path);
  try {
    return realpathSync(abs);
  } catch {
    try {
      return join(realpathSync(dirname(abs)), basename(abs));
    } catch {
      return abs;
    }
  }
}

/** The pid in a lock file; null when it names none (a lock being written right now counts as live for 10 s). */
function lockOwner(lock: string): number | null {
  try {
    const pid = Number(readFileSync(lock, 'utf8').trim());
    if (Number.isInteger(pid) && pid > 0) return pid;
    return Date.now() - statSync(lock).mtimeMs < 10_000 ? -1 : null;
  } catch {
    return null;
  }
}

function alive(pid: number): boolean {
  if (pid === -1) return true;
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * Claims `path` for one store: `E_STATE` naming `path` when a store of this process, or a live
 * process's lock file, holds it. Returns the claim to pass to {@link releaseFile}.
 */
export function claimFile(path: string): { key: string; lock: string } {
  const key = fileKey(path);
  if (openFiles.has(key)) {
    throw new TesseraError(
      'E_STATE',
      `path: ${path} is already open as the store of another FileStore in this process (close it, or its cache, first)`,
      { argument: 'path', actual: path },
    );
  }
  const lock = `${key}.lock`;
  for (let attempt = 0; attempt < 2; attempt++) {
    let fd: number;
    try {
      fd = openSync(lock, 'wx');
    } catch (e) {
      // Cannot create a lock here at all (a read-only directory): the in-process registry still holds.
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') break;
      const pid = lockOwner(lock);
      if (pid !== null && pid !== process.pid && alive(pid)) {
        throw new TesseraError(
          'E_STATE',
          `path: ${path} is the store of a FileStore in ${pid > 0 ? `process ${pid}` : 'another process'} (lock file ${lock})`,
          { argument: 'path', actual: path },
        );
      }
      if (attempt > 0)
        throw new TesseraError('E_STATE', `path: ${path} is locked (${lock})`, { argument: 'path', actual: path });
      // Stale: its process is gone, or it is this process's and no open store holds the file.
      rmSync(lock, { force: true });
      continue;
    }
    try {
      writeSync(fd, String(process.pid));
    } finally {
      closeSync(fd);
    }
    break;
  }
  openFiles.add(key);
  return { key, lock };
}

/** Releases a claim from {@link claimFile}. Idempotent. */
export function releaseFile(claim: { key: string; lock: string }): void {
  if (!openFiles.delete(claim.key)) return;
  try {
    const pid = Number(readFileSync(claim.lock, 'utf8').trim());
    if (pid === process.pid) rmSync(claim.lock, { force: true });
  } catch {
    /* no lock file (read-only dir) or already gone */
  }
}
