import { describe, it } from 'vitest';
import { checkSeeds } from './check-seeds.ts';

describe('simulator', () => {
  it('seeds 250-499 keep every invariant and every history is linearizable', () => {
    checkSeeds(250, 250);
  });
});
