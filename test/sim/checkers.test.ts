// The simulator's checkers are not vacuous: runs that break an assumption of the protocol
// must be reported. (The mutation runs in docs/simulation.md do the same for the core.)

import { describe, expect, it } from 'vitest';
import { configurations, runSeed } from './run.ts';

describe('simulator checkers', () => {
  it('report broken leases when clocks drift beyond the configured bound', () => {
    const base = configurations.find((c) => c.name === 'harpoon-3-longlease-drift')!;
    // The protocol is told clocks differ by under 2%, but they differ by up to 60%.
    const broken = {
      ...base,
      name: 'drift-beyond-bound',
      options: { ...base.options, maxDriftRate: 0.02 },
      clockDriftMax: 0.3,
    };
    const checkers = new Set<string>();
    for (let seed = 0; seed < 40; seed++) {
      for (const v of runSeed(seed, broken).violations) checkers.add(v.checker);
    }
    expect([...checkers].sort()).toEqual(
      expect.arrayContaining(['lease-excludes-newer-commits', 'no-overlapping-leases']),
    );
  });

  it('see idle ranges quiesce under faults, and elect a leader when its node dies', () => {
    const idle = configurations.find((c) => c.name === 'harpoon-3-idle')!;
    let quiescedRuns = 0;
    let lapseElections = 0;
    let lapseElectionsLeaderDown = 0;
    for (let seed = 0; seed < 60; seed++) {
      const r = runSeed(seed, idle);
      expect(r.violations).toEqual([]);
      if (r.quiescesUnderFaults > 0 && r.wakes > 0) quiescedRuns++;
      lapseElections += r.lapseElections;
      lapseElectionsLeaderDown += r.lapseElectionsLeaderDown;
    }
    expect(quiescedRuns).toBeGreaterThan(50); // before the cluster settles
    expect(lapseElections).toBeGreaterThan(10);
    expect(lapseElectionsLeaderDown).toBeGreaterThan(0);
  });

  it('find nothing within the bound on the same seeds', () => {
    const base = configurations.find((c) => c.name === 'harpoon-3-longlease-drift')!;
    for (let seed = 0; seed < 40; seed++) expect(runSeed(seed, base).violations).toEqual([]);
  });
});
