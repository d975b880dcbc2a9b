// Simulator configurations and the per-seed runner shared by the CLI and the tests.

import {
  type ConsensusMode,
  type ConsensusOptions,
  defaultOptions,
} from '../../ranges/core/types.ts';
import { checkLinearizable } from './linearizability.ts';
import { type SimConfig, type Violation, World } from './world.ts';

/** Simulated timing: 10 ms ticks, 100-200 ms election timeouts, 90 ms leases. */
export function simOptions(mode: ConsensusMode): ConsensusOptions {
  return {
    ...defaultOptions,
    mode,
    electionTicks: 10,
    heartbeatTicks: 2,
    leaseDurationMs: 90,
    maxDriftRate: 0.02,
    inflightAppendsMax: 8,
    appendBytesMax: 4096,
    snapshotChunkBytesMax: 512,
  };
}

const baseFaults = {
  dropRate: 0.02,
  duplicateRate: 0.01,
  delayMsMax: 3,
  delaySpikeRate: 0.01,
  partitions: true,
  crashes: true,
  transfers: false,
  faultIntervalMs: 600,
};

function config(name: string, mode: ConsensusMode, over: Partial<SimConfig>): SimConfig {
  return {
    name,
    nodes: 3,
    groups: 1,
    options: simOptions(mode),
    tickMs: 10,
    durationMs: 6_000,
    settleMs: 1_500,
    faults: baseFaults,
    compactEntries: 40,
    syncMsMax: 1.5,
    clients: 4,
    opsPerClient: 60,
    keys: 6,
    quiescence: mode === 'harpoon',
    ...over,
  };
}

/** Client load in bursts with idle gaps long enough to quiesce (100 ms) and lapse (100 ms). */
const idlePeriods = { busyMsMax: 600, idleMsMin: 150, idleMsMax: 1200 };

/** The configurations a seed run cycles through: seed s runs configurations[s % length]. */
export const configurations: readonly SimConfig[] = [
  config('harpoon-3', 'harpoon', {}),
  config('harpoon-5', 'harpoon', { nodes: 5 }),
  config('harpoon-3-transfer', 'harpoon', { faults: { ...baseFaults, transfers: true } }),
  config('harpoon-3x2-lossy', 'harpoon', {
    groups: 2,
    keys: 8,
    compactEntries: 15,
    syncMsMax: 10,
    faults: {
      ...baseFaults,
      dropRate: 0.1,
      duplicateRate: 0.05,
      delayMsMax: 8,
      delaySpikeRate: 0.05,
    },
  }),
  // Leases longer than the election timeout, and clocks drifting by up to 18%: the grants, not
  // the election timer, are what keep two leases apart here (clock rates differ by up to 36%).
  config('harpoon-3-longlease-drift', 'harpoon', {
    options: { ...simOptions('harpoon'), leaseDurationMs: 240, maxDriftRate: 0.4 },
  }),
  config('etcd-3', 'etcd', { faults: { ...baseFaults, transfers: true } }),
  config('raft-3', 'raft', {}),
  // Quiescence under faults: the load stops and starts again, faults come more often.
  config('harpoon-3-idle', 'harpoon', {
    idle: idlePeriods,
    faults: { ...baseFaults, faultIntervalMs: 400 },
  }),
  config('harpoon-5-idle', 'harpoon', {
    nodes: 5,
    idle: idlePeriods,
    faults: { ...baseFaults, dropRate: 0.05, transfers: true, faultIntervalMs: 400 },
  }),
];

export interface SeedResult {
  readonly seed: number;
  readonly config: SimConfig;
  readonly simulatedMs: number;
  readonly messages: number;
  readonly faults: number;
  readonly crashes: number;
  readonly operations: number;
  readonly quiesces: number;
  readonly quiescesUnderFaults: number;
  readonly wakes: number;
  readonly lapses: number;
  readonly lapseElections: number;
  readonly lapseElectionsLeaderDown: number;
  readonly violations: readonly Violation[];
  readonly trace: readonly string[];
}

export function runSeed(seed: number, cfg?: SimConfig, traceLive = false): SeedResult {
  const c = cfg ?? configurations[seed % configurations.length]!;
  const world = new World(c, seed);
  world.traceLive = traceLive;
  const violations: Violation[] = [];
  try {
    world.run();
  } catch (err) {
    // A broken invariant inside a replica stops the run: report it with the trace.
    violations.push({
      checker: 'invariant',
      message: String((err as Error).stack ?? err),
      atMs: world.nowMs,
    });
  }
  violations.push(...world.violations);
  const lin = checkLinearizable(world.history);
  for (const v of lin.violations) {
    violations.push({
      checker: 'linearizable',
      message: `${v.key}: ${v.message}`,
      atMs: world.nowMs,
    });
  }
  for (const key of lin.inconclusive) {
    violations.push({
      checker: 'linearizable',
      message: `${key}: search budget ran out`,
      atMs: world.nowMs,
    });
  }
  return {
    seed,
    config: c,
    simulatedMs: world.stats.simulatedMs,
    messages: world.stats.messages,
    faults: world.stats.faults,
    crashes: world.stats.crashes,
    operations: world.history.length,
    quiesces: world.stats.quiesces,
    quiescesUnderFaults: world.stats.quiescesUnderFaults,
    wakes: world.stats.wakes,
    lapses: world.stats.lapses,
    lapseElections: world.stats.lapseElections,
    lapseElectionsLeaderDown: world.stats.lapseElectionsLeaderDown,
    violations,
    trace: world.trace,
  };
}
