// Keeps the pure folders pure: the consensus core and the range machine do no I/O and
// read no clock or random source they were not given (DESIGN.md, Layout).

import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';
import { describe, expect, it } from 'vitest';

const root = join(import.meta.dirname, '..', '..');
const pureFolders = ['ranges', 'placement'];

const banned: { pattern: RegExp; why: string }[] = [
  { pattern: /from\s+['"]node:/, why: 'imports a node: module' },
  { pattern: /import\(\s*['"]node:/, why: 'imports a node: module' },
  { pattern: /\brequire\s*\(/, why: 'uses require' },
  { pattern: /\bDate\b/, why: 'reads the wall clock (Date)' },
  { pattern: /\bperformance\s*\.\s*now\b/, why: 'reads a clock (performance.now)' },
  { pattern: /\bMath\s*\.\s*random\b/, why: 'uses Math.random' },
  { pattern: /\b(setTimeout|setInterval|setImmediate|queueMicrotask)\b/, why: 'uses a timer' },
  { pattern: /\bprocess\s*\./, why: 'touches the process' },
];

/** Imports allowed in pure code: relative paths and these packages. */
const allowedPackages = new Set(['xstate']);

function sourceFiles(dir: string): string[] {
  let out: string[] = [];
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch {
    return out;
  }
  for (const name of names) {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) out = out.concat(sourceFiles(p));
    else if (p.endsWith('.ts')) out.push(p);
  }
  return out;
}

function stripComments(text: string): string {
  return text.replace(/\/\*[\s\S]*?\*\//g, '').replace(/(^|[^:])\/\/.*$/gm, '$1');
}

function impurities(file: string, text: string): string[] {
  const code = stripComments(text);
  const found: string[] = [];
  for (const { pattern, why } of banned) if (pattern.test(code)) found.push(`${file}: ${why}`);
  for (const m of code.matchAll(/from\s+['"]([^'"]+)['"]/g)) {
    const spec = m[1]!;
    if (!spec.startsWith('.') && !allowedPackages.has(spec)) {
      found.push(`${file}: imports ${spec}`);
    }
  }
  return found;
}

describe('pure folders', () => {
  it('ranges/ and placement/ do no I/O and use no ambient clock, randomness or timers', () => {
    const files = pureFolders.flatMap((f) => sourceFiles(join(root, f)));
    expect(files.length).toBeGreaterThan(0);
    const problems = files.flatMap((f) => impurities(relative(root, f), readFileSync(f, 'utf8')));
    expect(problems).toEqual([]);
  });

  it('the check itself flags each banned construct', () => {
    const samples = [
      "import { readFileSync } from 'node:fs';",
      'const t = Date.now();',
      'const r = Math.random();',
      'setTimeout(() => {}, 1);',
      'const x = performance.now();',
      'process.exit(1);',
      "import { connect } from '@nats-io/transport-node';",
    ];
    for (const s of samples) expect(impurities('sample.ts', s)).not.toEqual([]);
    expect(
      impurities('ok.ts', "import { setup } from 'xstate';\n// Date.now() in a comment"),
    ).toEqual([]);
  });
});
