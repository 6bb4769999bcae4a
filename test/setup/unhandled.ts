/**
 * Every test file: an unhandled promise rejection fails the test during which it surfaced (issue 12,
 * class 1: no promise inside the library may be left unobserved). Vitest itself also reports such
 * an error and fails the run; this makes it fail the test that caused it, by name.
 */
import { afterEach } from 'vitest';

const KEY = Symbol.for('tessera.test.unhandledRejections');
const g = globalThis as unknown as Record<symbol, unknown[] | undefined>;
if (!g[KEY]) {
  const seen: unknown[] = [];
  g[KEY] = seen;
  process.on('unhandledRejection', (reason) => {
    seen.push(reason);
  });
}
const seen = g[KEY]!;

afterEach(async () => {
  // Let rejections of the test's last promises reach the 'unhandledRejection' event first.
  await new Promise((r) => setTimeout(r, 0));
  if (seen.length > 0) {
    const list = seen.splice(0).map((e) => (e instanceof Error ? `${e.name}: ${e.message}` : String(e)));
    throw new Error(`unhandled promise rejection(s) during this test: ${list.join(' | ')}`);
  }
});
