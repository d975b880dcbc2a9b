// The seed's headline claim, measured: under a partial partition (the leader reaches a
// quorum, but a follower is cut off from the leader only), plain Raft's leadership
// bounces, while Harpoon keeps its first leader. No other faults run.

import { type ConsensusMode, defaultOptions } from '../../ranges/core/types.ts';
import { type SimConfig, World } from './world.ts';

export type PartitionName = 'cut' | 'one-way' | 'ring-5';

export interface ScenarioRow {
  readonly mode: ConsensusMode;
  readonly partition: PartitionName;
  readonly leader_changes: number;
  readonly unavailable_s: number;
  readonly writes_committed: number;
  readonly simulated_s: number;
}

export const partitions: readonly PartitionName[] = ['cut', 'one-way', 'ring-5'];
export const modes: readonly ConsensusMode[] = ['raft', 'etcd', 'harpoon'];

const warmupMs = 3_000;

export function runPartialPartition(
  mode: ConsensusMode,
  partition: PartitionName,
  minutes: number,
  seed: number,
): ScenarioRow {
  const nodes = partition === 'ring-5' ? 5 : 3;
  const durationMs = warmupMs + minutes * 60_000;
  const config: SimConfig = {
    name: `${mode}-${partition}`,
    nodes,
    ranges: 1,
    // Production timing (defaultOptions): 100 ms ticks, 1-2 s election timeouts, 900 ms leases.
    options: { ...defaultOptions, mode },
    tickMs: 100,
    durationMs,
    settleMs: 0,
    faults: {
      dropRate: 0,
      duplicateRate: 0,
      delayMsMax: 2,
      delaySpikeRate: 0,
      partitions: false,
      crashes: false,
      transfers: false,
      faultIntervalMs: 1e12,
    },
    compactEntries: 200,
    syncMsMax: 1,
    quiescence: false,
    clients: 4,
    // About 20 operations per second in all, for the whole run.
    opsPerClient: Math.ceil((durationMs / 1000) * 5),
    keys: 8,
  };
  const world = new World(config, seed);
  world.start(false);
  world.startClients(config.clients, config.opsPerClient);
  world.runUntil(warmupMs);
  const leader = world.leaderOf(1);
  if (leader === 0) throw new Error(`${config.name}: no leader after ${warmupMs} ms`);
  const changesBefore = world.stats.leaderChanges;
  if (partition === 'cut' || partition === 'one-way') {
    const follower = leader === 1 ? 2 : 1;
    world.block(leader, follower);
    if (partition === 'cut') world.block(follower, leader);
  } else {
    // A ring: each node reaches only its two neighbours.
    for (let a = 1; a <= nodes; a++) {
      for (let b = 1; b <= nodes; b++) {
        const d = Math.abs(a - b);
        if (a !== b && d !== 1 && d !== nodes - 1) world.block(a, b);
      }
    }
  }
  world.runUntil(durationMs);
  const firstSecond = Math.ceil(warmupMs / 1000);
  const lastSecond = Math.floor(durationMs / 1000);
  let unavailable = 0;
  let committed = 0;
  for (let s = firstSecond; s < lastSecond; s++) {
    const n = world.stats.commitsPerSecond[s] ?? 0;
    committed += n;
    if (n === 0) unavailable++;
  }
  return {
    mode,
    partition,
    leader_changes: world.stats.leaderChanges - changesBefore,
    unavailable_s: unavailable,
    writes_committed: committed,
    simulated_s: (durationMs - warmupMs) / 1000,
  };
}
