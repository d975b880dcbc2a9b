// Runs every script in testdata/ through the harness and compares the trace with the
// expected one. `REWRITE=1 npx vitest run test/interaction` rewrites the files with the
// actual traces: review the diff before keeping it. To add a scenario, write the commands
// (see harness.ts) separated by blank lines, without `----`, and rewrite: the harness
// inserts each command's output.

import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { Harness } from './harness.ts';

const dir = fileURLToPath(new URL('./testdata', import.meta.url));
const rewrite = process.env.REWRITE === '1';
const files = readdirSync(dir)
  .filter((f) => f.endsWith('.txt'))
  .sort();

/**
 * Runs a datadriven script and returns it with every command's output replaced by the
 * actual trace. A command without `----` after it gets its output inserted.
 */
function runScript(text: string): string {
  const h = new Harness();
  const lines = text.split('\n');
  const out: string[] = [];
  let i = 0;
  while (i < lines.length) {
    const line = lines[i]!;
    i++;
    if (line.trim() === '' || line.startsWith('#')) {
      out.push(line);
      continue;
    }
    out.push(line, '----', ...h.run(line));
    if (lines[i] === '----') {
      i++;
      while (i < lines.length && lines[i]!.trim() !== '') i++; // the old expected output
    }
    if (i < lines.length && lines[i]!.trim() !== '') out.push('');
  }
  return out.join('\n');
}

describe('interaction', () => {
  it('has scenario files', () => {
    expect(files.length).toBeGreaterThan(0);
  });

  for (const file of files) {
    it(file, () => {
      const path = join(dir, file);
      const expected = readFileSync(path, 'utf8');
      const actual = runScript(expected);
      if (rewrite) writeFileSync(path, actual);
      else expect(actual).toBe(expected);
    });
  }
});
