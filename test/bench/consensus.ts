// Consensus hot-path benchmark, in one process with an instant network and storage:
// how many xstate events one replicated batch costs, and what the machine adds over
// calling the same core handlers directly.
//
//   npm run bench -- [--batches N] [--batch-size N] [--json]

import { parseArgs } from 'node:util';
import { RaftCore, type RoleChange } from '../../ranges/core/raft.ts';
import type { Ready } from '../../ranges/core/ready.ts';
import { defaultOptions, type Message, type PersistedState } from '../../ranges/core/types.ts';
import { RangeReplica } from '../../ranges/replica/replica.ts';
import { Prng } from '../../src/lib/prng.ts';

const { values } = parseArgs({
  options: {
    batches: { type: 'string', default: '20000' },
    'batch-size': { type: 'string', default: '16' },
    json: { type: 'boolean', default: false },
  },
});
const batches = Math.min(1_000_000, Math.max(100, Number(values.batches)));
const batchSize = Math.min(1024, Math.max(1, Number(values['batch-size'])));

/** What the benchmark needs of a replica, with or without the machine. */
interface Driven {
  readonly core: RaftCore;
  tick(): void;
  step(ms: readonly Message[]): void;
  propose(datas: Uint8Array[]): void;
  events(): number;
}

function fresh(): PersistedState {
  return {
    hardState: { term: 0, vote: 0, commit: 0 },
    snapshot: { index: 0, term: 0, config: { voters: [1, 2, 3], outgoing: [], learners: [] } },
    entries: [],
    applied: 0,
  };
}

let clockMs = 0;
const env = (seed: number) => {
  const prng = new Prng(seed);
  return {
    nowMs: () => clockMs,
    random: () => prng.next(),
    takeSnapshot: () => {
      throw new Error('no snapshots in this benchmark');
    },
  };
};

function withMachine(id: number): Driven {
  const r = new RangeReplica(id, fresh(), defaultOptions, env(id));
  return {
    core: r.core,
    tick: () => r.tick(),
    step: (ms) => r.step(ms),
    propose: (datas) => {
      r.propose(datas);
    },
    events: () => r.eventsSent,
  };
}

/** The same handlers, switched on core.role by hand: the baseline without xstate. */
function direct(id: number): Driven {
  const core = new RaftCore(id, fresh(), defaultOptions, env(id));
  const apply = (c: RoleChange | undefined): void => {
    while (c) {
      if (c.type === 'BECOME_FOLLOWER') c = core.becomeFollower(c.term, c.leader);
      else if (c.type === 'BECOME_PRECANDIDATE') c = core.becomePreCandidate();
      else if (c.type === 'BECOME_CANDIDATE') c = core.becomeCandidate(c.transfer);
      else c = core.becomeLeader();
    }
  };
  const step = (ms: readonly Message[]): void => {
    let rest = ms;
    while (rest.length > 0) {
      const r =
        core.role === 'leader'
          ? core.stepLeader(rest)
          : core.role === 'candidate'
            ? core.stepCandidate(rest)
            : core.role === 'preCandidate'
              ? core.stepPreCandidate(rest)
              : core.stepFollower(rest);
      if (!r) return;
      apply(r.change);
      rest = r.rest;
    }
  };
  return {
    core,
    tick: () =>
      apply(
        core.role === 'leader'
          ? core.tickLeader()
          : core.role === 'follower'
            ? core.tickFollower()
            : core.tickCampaign(),
      ),
    step,
    propose: (datas) => {
      core.propose(datas);
    },
    events: () => 0,
  };
}

/** Runs every replica's ready/persist/deliver loop until nothing is left (one turn each). */
function settle(rs: Driven[]): void {
  for (let round = 0; round < 100; round++) {
    const inbox = new Map<number, Message[]>();
    let busy = false;
    for (const r of rs) {
      if (!r.core.hasReady()) continue;
      busy = true;
      const rd: Ready = r.core.ready();
      if (rd.write) r.core.persisted(rd.write.id);
      for (const m of rd.messages) {
        const list = inbox.get(m.to) ?? [];
        list.push(m);
        inbox.set(m.to, list);
      }
    }
    for (const [to, ms] of inbox) rs[to - 1]!.step(ms);
    if (!busy && inbox.size === 0) return;
  }
}

function run(make: (id: number) => Driven) {
  clockMs = 0;
  const rs = [make(1), make(2), make(3)];
  for (let t = 0; t < 200 && !rs.some((r) => r.core.role === 'leader'); t++) {
    clockMs += 100;
    for (const r of rs) r.tick();
    settle(rs);
  }
  const leader = rs.find((r) => r.core.role === 'leader');
  if (!leader) throw new Error('no leader elected');
  const data = new Uint8Array(100);
  const payload = Array.from({ length: batchSize }, () => data);
  const eventsBefore = rs.reduce((n, r) => n + r.events(), 0);
  const commitBefore = leader.core.log.committed;
  const started = process.hrtime.bigint();
  for (let b = 0; b < batches; b++) {
    leader.propose(payload);
    settle(rs);
    if (b % 64 === 63) {
      for (const r of rs) r.core.compact(Math.min(r.core.log.committed, r.core.log.applying));
    }
  }
  const elapsedNs = Number(process.hrtime.bigint() - started);
  const committed = leader.core.log.committed - commitBefore;
  if (committed !== batches * batchSize) {
    throw new Error(`committed ${committed}, expected ${batches * batchSize}`);
  }
  return {
    usPerBatch: elapsedNs / 1000 / batches,
    eventsPerBatch: (rs.reduce((n, r) => n + r.events(), 0) - eventsBefore) / batches,
    entriesPerS: (committed / elapsedNs) * 1e9,
  };
}

run(withMachine); // warm up the JIT on both paths
run(direct);
const machine = run(withMachine);
const plain = run(direct);
const overheadPct = ((machine.usPerBatch - plain.usPerBatch) / plain.usPerBatch) * 100;
const row = {
  workload: 'consensus-core',
  replicas: 3,
  batches,
  batch_size: batchSize,
  xstate_events_per_batch: Number(machine.eventsPerBatch.toFixed(2)),
  us_per_batch_xstate: Number(machine.usPerBatch.toFixed(2)),
  us_per_batch_direct: Number(plain.usPerBatch.toFixed(2)),
  xstate_overhead_pct: Number(overheadPct.toFixed(1)),
  entries_per_s: Math.round(machine.entriesPerS),
};
if (values.json) console.log(JSON.stringify(row));
else {
  console.log(`consensus core, 3 replicas in one process, ${batches} batches of ${batchSize}:`);
  console.log(
    `  xstate events per replicated batch (all replicas): ${row.xstate_events_per_batch}`,
  );
  console.log(
    `  per batch: ${row.us_per_batch_xstate} us with the machine, ` +
      `${row.us_per_batch_direct} us calling the core directly (+${row.xstate_overhead_pct}%)`,
  );
  console.log(`  committed entries per second (machine): ${row.entries_per_s}`);
}
