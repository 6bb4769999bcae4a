/**
 * docs/engine.md: the "Inside an engine" walkthrough runs as written (its imports from 'tessera'
 * resolved to src/index.ts) and its decode output matches float64.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import * as tessera from '../src/index.js';

describe('docs/engine.md', () => {
  it('the walkthrough runs and its decode step matches float64', async () => {
    const md = readFileSync(join(__dirname, '..', 'docs', 'engine.md'), 'utf8');
    const block = /```ts\n([\s\S]*?)```/.exec(md)?.[1];
    expect(block).toBeTruthy();
    const imp = /import \{([^}]*)\} from 'tessera';\n/.exec(block!)!;
    const names = imp[1]!.split(',').map((s) => s.trim()).filter(Boolean);
    const body = block!.replace(imp[0], '').replace(/ as const\)/g, ')');
    const ts = (await import('typescript')).default;
    const js = ts.transpileModule(body, { compilerOptions: { target: ts.ScriptTarget.ES2022, module: ts.ModuleKind.ESNext } }).outputText;
    const logs: unknown[][] = [];
    const fakeConsole = { log: (...a: unknown[]) => logs.push(a) };
    const AsyncFunction = Object.getPrototypeOf(async () => {}).constructor as new (...a: string[]) => (...v: unknown[]) => Promise<void>;
    const run = new AsyncFunction('console', ...names, js);
    await run(fakeConsole, ...names.map((n) => (tessera as Record<string, unknown>)[n]));
    expect(logs).toHaveLength(1);
    const [, relRms, , used] = logs[0]!;
    expect(typeof relRms).toBe('number');
    expect(relRms as number).toBeLessThan(1e-5);
    expect(used).toBe(3); // sequence 0: 6 tokens in 2 pages of 4; sequence 1: 4 tokens in 1
  });
});
