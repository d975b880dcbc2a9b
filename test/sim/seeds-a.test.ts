// 1,000 seeds of the simulator over every configuration (seeds-b runs the next 1,000), so
// `npm test` checks 2,000 seeds on both cores (about 30 s).

import { describe, it } from 'vitest';
import { checkSeeds } from './check-seeds.ts';

describe('simulator', () => {
  it('seeds 0-999 keep every invariant and every history is linearizable', () => {
    checkSeeds(0, 1000);
  });
});
