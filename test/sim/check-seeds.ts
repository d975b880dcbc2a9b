// Runs a block of simulator seeds and fails with every violation found.

import { expect } from 'vitest';
import { runSeed } from './run.ts';

export function checkSeeds(from: number, count: number): void {
  const failures: string[] = [];
  let operations = 0;
  for (let seed = from; seed < from + count; seed++) {
    const r = runSeed(seed);
    operations += r.operations;
    for (const v of r.violations) {
      failures.push(`seed ${seed} (${r.config.name}) [${v.checker}] ${v.message}`);
    }
  }
  expect(failures).toEqual([]);
  expect(operations).toBeGreaterThan(count * 50);
}
