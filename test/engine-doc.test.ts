/**
 * docs/engine.md: the "Inside an engine" walkthrough runs as written (its imports from 'tessera',
 * 'tessera/reference' and 'tessera/testing' resolved to src/) and its decode output matches float64.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import * as tessera from '../src/index.js';
import * as reference from '../src/reference.js';
import * as testing from '../src/testing.js';

describe('docs/engine.md', () => {
  it('the walkthrough runs and its decode step matches float64', async () => {
    const md = readFileSync(join(__dirname, '..', 'docs', 'engine.md'), 'utf8');
    const block = /```ts\n([\s\S]*?)```/.exec(md)?.[1];
    expect(block).toBeTruthy();
    // its imports from 'tessera', 'tessera/reference' and 'tessera/testing' (one line each)
    const entries: Record<string, Record<string, unknown>> = {
      tessera,
      'tessera/reference': reference,
      'tessera/testing': testing,
    };
    const imports = [...block!.matchAll(/import \{([^}]*)\} from '(tessera(?:\/\w+)?)';\n/g)];
    expect(imports.length).toBeGreaterThan(0);
    const names = imports.flatMap((m) =>
      m[1]!
        .split(',')
        .map((s) => s.trim())
        .filter(Boolean),
    );
    const values = imports.flatMap((m) =>
      m[1]!
        .split(',')
        .map((s) => s.trim())
        .filter(Boolean)
        .map((n) => entries[m[2]!]![n]),
    );
    for (const [i, v] of values.entries()) expect(v, names[i]).toBeDefined();
    const body = imports.reduce((b, m) => b.replace(m[0], ''), block!).replace(/ as const\)/g, ')');
    const ts = (await import('typescript')).default;
    const js = ts.transpileModule(body, {
      compilerOptions: { target: ts.ScriptTarget.ES2022, module: ts.ModuleKind.ESNext },
    }).outputText;
    const logs: unknown[][] = [];
    const fakeConsole = { log: (...a: unknown[]) => logs.push(a) };
    const AsyncFunction = Object.getPrototypeOf(async () => {}).constructor as new (
      ...a: string[]
    ) => (...v: unknown[]) => Promise<void>;
    const run = new AsyncFunction('console', ...names, js);
    await run(fakeConsole, ...values);
    expect(logs).toHaveLength(1);
    const [, relRms, , used] = logs[0]!;
    expect(typeof relRms).toBe('number');
    expect(relRms as number).toBeLessThan(1e-5);
    expect(used).toBe(3); // sequence 0: 6 tokens in 2 pages of 4; sequence 1: 4 tokens in 1
  });
});
