/**
 * The order in which `vitest run` hands files to its two workers. The browser files first (each
 * holds a worker while its chromium, which runs on other threads, builds and runs the page), then
 * the Node files longest first, so that the two workers finish together: by the durations of
 * this machine's last run (vitest's cache) where it has them, else by those committed in
 * `durations.json` (written by `node scripts/test-durations.mjs` from a run); a file in neither
 * runs first. Without either, vitest runs the files in discovery order: 181 s of vitest in a fresh
 * clone here, against 152-168 s longest first (a worker compiles the pipelines of each file it
 * runs, so the order also decides how many pipelines both workers compile).
 */
import { readFileSync } from 'node:fs';
import { relative } from 'node:path';
import { BaseSequencer, type TestSpecification } from 'vitest/node';

const durations = JSON.parse(readFileSync(new URL('./durations.json', import.meta.url), 'utf8')) as Record<
  string,
  number
>;

export class BrowserFirstSequencer extends BaseSequencer {
  override async sort(files: TestSpecification[]): Promise<TestSpecification[]> {
    const root = this.ctx.config.root;
    const cost = (f: TestSpecification) => {
      const file = relative(root, f.moduleId).replaceAll('\\', '/');
      const last = this.ctx.cache.getFileTestResults(`${f.project.name}:${file}`);
      return last && !last.failed ? last.duration / 1000 : (durations[file] ?? Number.POSITIVE_INFINITY);
    };
    const rank = (f: TestSpecification) => (f.project.name === 'browser' ? 0 : 1);
    return [...files].sort((a, b) => rank(a) - rank(b) || cost(b) - cost(a));
  }
}
