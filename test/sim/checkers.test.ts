// The simulator's checkers are not vacuous: runs that break an assumption of the protocol
// must be reported. (The mutation runs in docs/simulation.md do the same for the core and
// for the split protocol.)

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
    // A run breaks a lease only when an election falls inside a drifted lease; about one
    // seed in 30 to 50 does (seed 70 is the first, with lazy commit notices).
    const checkers = new Set<string>();
    for (let seed = 0; seed < 150 && checkers.size < 2; seed++) {
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
      if (r.stats.quiescesUnderFaults > 0 && r.stats.wakes > 0) quiescedRuns++;
      lapseElections += r.stats.lapseElections;
      lapseElectionsLeaderDown += r.stats.lapseElectionsLeaderDown;
    }
    expect(quiescedRuns).toBeGreaterThan(50); // before the cluster settles
    expect(lapseElections).toBeGreaterThan(10);
    expect(lapseElectionsLeaderDown).toBeGreaterThan(0);
  });

  it('see splits under faults: races refused, ranges learned by snapshot and from peers', () => {
    const lossy = configurations.find((c) => c.name === 'harpoon-3x2-lossy')!;
    const totals = { applied: 0, refused: 0, created: 0, initialized: 0, snapshotSplits: 0 };
    for (let seed = 0; seed < 40; seed++) {
      const r = runSeed(seed, lossy);
      expect(r.violations).toEqual([]);
      totals.applied += r.stats.splitsApplied;
      totals.refused += r.stats.splitsRefused;
      totals.created += r.stats.uninitializedCreated;
      totals.initialized += r.stats.uninitializedInitialized;
      totals.snapshotSplits += r.stats.snapshotSplits;
    }
    expect(totals.applied).toBeGreaterThan(60);
    expect(totals.refused).toBeGreaterThan(0); // a split proposed under a stale generation
    expect(totals.snapshotSplits).toBeGreaterThan(5); // a replica's span shrank by snapshot
    expect(totals.created).toBeGreaterThan(5); // it learned the new range from a peer
    // ...which its leader's snapshot initialized (one lost in a crash is learned again).
    expect(totals.initialized).toBeGreaterThan(5);
  });

  it('report a left range that keeps applying writes of the right-hand span', () => {
    const base = configurations.find((c) => c.name === 'harpoon-3-split')!;
    const broken = { ...base, mutation: 'apply-outside-span' as const };
    const checkers = new Set<string>();
    for (let seed = 0; seed < 30; seed++) {
      for (const v of runSeed(seed, broken).violations) checkers.add(v.checker);
    }
    expect([...checkers].sort()).toEqual(['key-owned-by-one-range', 'linearizable']);
  });

  it('report lease reads answered at an index the core has moved past', () => {
    const base = configurations.find((c) => c.name === 'harpoon-3')!;
    const broken = { ...base, mutation: 'lease-gate-stays-open' as const };
    const checkers = new Set<string>();
    for (let seed = 0; seed < 30 && !checkers.has('lease-read-as-core'); seed++) {
      for (const v of runSeed(seed, broken).violations) checkers.add(v.checker);
    }
    expect(checkers).toContain('lease-read-as-core');
  });

  it('find nothing within the bound on the same seeds', () => {
    const base = configurations.find((c) => c.name === 'harpoon-3-longlease-drift')!;
    for (let seed = 0; seed < 40; seed++) expect(runSeed(seed, base).violations).toEqual([]);
  });
});
