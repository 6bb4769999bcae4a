// Builds the browser verify/bench page: `npx vite build --config bench/browser/vite.config.ts`
// (output in bench/browser/dist), or `npx vite --config bench/browser/vite.config.ts` to serve it
// with the golden vectors of ../shared/golden under /golden (see docs/browser.md).
import { createReadStream, existsSync, statSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { defineConfig, type Plugin } from 'vite';

const here = dirname(fileURLToPath(import.meta.url));
const repo = resolve(here, '..', '..');
/** Golden vectors served under /golden by the dev server (`TESSERA_GOLDEN` overrides). */
export const GOLDEN_DIR = resolve(process.env.TESSERA_GOLDEN ?? join(repo, '..', 'shared', 'golden'));

function serveGolden(): Plugin {
  return {
    name: 'tessera-golden',
    configureServer(server) {
      server.middlewares.use('/golden', (req, res, next) => {
        const file = join(GOLDEN_DIR, decodeURIComponent((req.url ?? '/').split('?')[0]!));
        if (!file.startsWith(GOLDEN_DIR) || !existsSync(file) || !statSync(file).isFile()) return next();
        res.setHeader('Content-Type', file.endsWith('.json') ? 'application/json' : 'application/octet-stream');
        createReadStream(file).pipe(res);
      });
    },
  };
}

export default defineConfig({
  root: here,
  base: './',
  plugins: [serveGolden()],
  // The bench suites' CLI entries import commander and node:fs; the page uses only their reusable
  // functions, so those Node-only modules resolve to stubs (bench/browser/stubs/).
  resolve: {
    alias: [
      { find: /^commander$/, replacement: join(here, 'stubs', 'commander.ts') },
      { find: /^node:fs$/, replacement: join(here, 'stubs', 'node-fs.ts') },
    ],
  },
  build: {
    outDir: join(here, 'dist'),
    emptyOutDir: true,
    target: 'es2022',
    chunkSizeWarningLimit: 4096,
    // needle.html: the needle demo in a worker with an OPFS cache; kvcache.html: a persistent
    // KvCache on OPFS reopened after a reload (docs/browser.md)
    rollupOptions: {
      input: { main: join(here, 'index.html'), needle: join(here, 'needle.html'), kvcache: join(here, 'kvcache.html') },
    },
  },
  worker: { format: 'es' },
  server: { host: '127.0.0.1', fs: { allow: [repo] } },
});
