// 250 seeds of the simulator over every configuration (seeds-b runs the next 250), so
// `npm test` checks at least 500 seeds on both cores.

import { describe, it } from 'vitest';
import { checkSeeds } from './check-seeds.ts';

describe('simulator', () => {
  it('seeds 0-249 keep every invariant and every history is linearizable', () => {
    checkSeeds(0, 250);
  });
});
