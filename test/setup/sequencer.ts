/**
 * The order in which `vitest run` hands files to its two workers: the browser files first (each
 * holds a worker while its chromium, which runs on other threads, builds and runs the page), then
 * vitest's own order (longest first from its cache of earlier durations, else largest file
 * first), so that the short files fill the tail instead of one long file running alone at the end.
 */
import { BaseSequencer, type TestSpecification } from 'vitest/node';

export class BrowserFirstSequencer extends BaseSequencer {
  override async sort(files: TestSpecification[]): Promise<TestSpecification[]> {
    const sorted = await super.sort(files);
    const browser = (f: TestSpecification) => f.project.name === 'browser';
    return [...sorted.filter(browser), ...sorted.filter((f) => !browser(f))];
  }
}
