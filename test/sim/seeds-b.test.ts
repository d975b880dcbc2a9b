import { describe, it } from 'vitest';
import { checkSeeds } from './check-seeds.ts';

describe('simulator', () => {
  it('seeds 1000-1999 keep every invariant and every history is linearizable', () => {
    checkSeeds(1000, 1000);
  });
});
