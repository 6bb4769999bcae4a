/**
 * One cache per backing store. A {@link Store} is a flat byte space addressed by page id, and
 * each cache numbers its pages from 0: two live caches on one store object would write their
 * pages over each other's, and each would then read the other's bytes (a checksum error at best).
 * So a cache claims its store when it is created and releases it on `dispose()` (or hands it to
 * the cache `moveTo` makes); a second live cache on the same store is refused with `E_STATE`
 * naming `store`. Two `FileStore`s on one path are refused by `FileStore` itself (see
 * `file-lock.ts`), since each would be a different store object over the same file.
 */
import { TesseraError } from '../errors.js';

const owners = new WeakMap<object, object>();

/** Claims `store` for `owner`; `E_STATE` (argument `store`) while another live owner holds it. */
export function claimStore(store: object, owner: object): void {
  const held = owners.get(store);
  if (held !== undefined && held !== owner) {
    const kind = (store as { kind?: string }).kind;
    const path = (store as { path?: string }).path;
    throw new TesseraError(
      'E_STATE',
      `store: this ${kind ?? ''} store${path ? ` (${path})` : ''} already backs another live KvCache; two caches on one store overwrite each other's pages`,
      {
        argument: 'store',
        expected: 'a store of its own per cache (dispose the other cache first, or use its moveTo())',
      },
    );
  }
  owners.set(store, owner);
}

/** Releases `owner`'s claim on `store` (a no-op when it holds none). */
export function releaseStore(store: object, owner: object): void {
  if (owners.get(store) === owner) owners.delete(store);
}
