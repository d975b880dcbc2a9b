// Consensus hot-path benchmark, in one process with an instant network and storage:
// how many xstate events one replicated batch costs, and what the machine adds over
// calling the same core handlers directly. Then the node-to-node envelope codec
// (src/transport/raft-codec.ts): bytes and CPU per message of the array wire form of
// the hot message types, against the same messages as maps with field names. Then the
// storage forms a put encodes and decodes on every replica (src/storage/binary.ts), binary
// against the msgpack maps of earlier versions. Then what a put costs in the core and in
// the store's turns when it is its range's only entry in a turn (many busy ranges) against
// one range that batches them. Then what a
// restart costs with a full journal (src/storage/journal.ts): a real store in a temp dir
// with 256 ranges of 1,000 log entries each (written one entry per range per turn, as
// many busy ranges write them), closed and opened again.
//
//   npm run bench -- [--batches N] [--batch-size N] [--json]

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { isDeepStrictEqual, parseArgs } from 'node:util';
import { RaftCore, type RoleChange } from '../../ranges/core/raft.ts';
import type { Ready } from '../../ranges/core/ready.ts';
import {
  defaultOptions,
  type Entry,
  type Message,
  type PersistedState,
} from '../../ranges/core/types.ts';
import { RangeReplica } from '../../ranges/replica/replica.ts';
import { ownBytes } from '../../src/lib/bytes.ts';
import { Prng } from '../../src/lib/prng.ts';
import { encode } from '../../src/protocol/wire.ts';
import {
  type Command,
  type DataRecord,
  decodeCommand,
  decodeRecord,
  encodeCommand,
  encodeRecord,
  packr,
} from '../../src/storage/commands.ts';
import {
  decodeEvent,
  encodeEvent,
  eventToWire,
  type RangeEvent,
} from '../../src/storage/events.ts';
import { Store } from '../../src/storage/store.ts';
import {
  decodeEnvelope,
  encodeEnvelope,
  type RaftEnvelope,
} from '../../src/transport/raft-codec.ts';

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

function withMachine(id: number, seed = id): Driven {
  const r = new RangeReplica(id, fresh(), defaultOptions, env(seed));
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
  settleGroups([rs]);
}

/**
 * The same for several groups of 3 replicas (ranges), each delivering to its own: a group
 * leaves the loop once a round finds nothing in it.
 */
function settleGroups(groups: readonly Driven[][]): void {
  let pending: readonly Driven[][] = groups;
  for (let round = 0; round < 100 && pending.length > 0; round++) {
    const next: Driven[][] = [];
    for (const rs of pending) {
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
      if (busy || inbox.size > 0) next.push(rs);
    }
    pending = next;
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

/** Envelopes of 64 messages (one per range), as a turn with 64 busy ranges sends them. */
function codecRows(): Array<Record<string, string | number>> {
  const data = new Uint8Array(130).fill(7);
  const appends: [number, Message][] = [];
  const responses: [number, Message][] = [];
  for (let r = 1; r <= 64; r++) {
    const common = { term: 3, seq: 55 };
    appends.push([
      r,
      {
        type: 'append',
        from: 1,
        to: 2,
        ...common,
        prevIndex: 1000 + r,
        prevTerm: 3,
        commit: 1000 + r,
        entries: [{ index: 1001 + r, term: 3, kind: 'normal', data }],
      },
    ]);
    responses.push([
      r,
      {
        type: 'appendResponse',
        from: 2,
        to: 1,
        ...common,
        reject: false,
        index: 1001 + r,
        hint: 0,
      },
    ]);
  }
  const rounds = 3000;
  const rows: Array<Record<string, string | number>> = [];
  for (const [message, msgs] of [
    ['append', appends],
    ['appendResponse', responses],
  ] as const) {
    for (const [form, enc] of [
      ['maps', (e: RaftEnvelope) => encode(e)],
      ['arrays', encodeEnvelope],
    ] as const) {
      const env: RaftEnvelope = {
        v: 1,
        cid: 'c'.repeat(20),
        from: 'a',
        store: 's'.repeat(20),
        msgs,
      };
      let wire = enc(env);
      for (let i = 0; i < 200; i++) decodeEnvelope(enc(env)); // warm-up
      let t = process.hrtime.bigint();
      for (let i = 0; i < rounds; i++) wire = enc(env);
      const encodeUs = Number(process.hrtime.bigint() - t) / 1000 / rounds / msgs.length;
      t = process.hrtime.bigint();
      for (let i = 0; i < rounds; i++) {
        if (!decodeEnvelope(wire).ok) throw new Error(`${form} envelope refused`);
      }
      const decodeUs = Number(process.hrtime.bigint() - t) / 1000 / rounds / msgs.length;
      rows.push({
        workload: 'raft-codec',
        message,
        form,
        bytes_per_msg: Number((wire.length / msgs.length).toFixed(1)),
        encode_us: Number(encodeUs.toFixed(2)),
        decode_us: Number(decodeUs.toFixed(2)),
      });
    }
  }
  return rows;
}

const codec = codecRows();
if (values.json) for (const r of codec) console.log(JSON.stringify(r));
else {
  console.log('raft envelope codec, 64 messages per envelope (the wire form is arrays):');
  for (const r of codec) {
    console.log(
      `  ${String(r.message).padEnd(15)} as ${String(r.form).padEnd(6)} ${r.bytes_per_msg} B/msg, ` +
        `encode ${r.encode_us} us, decode ${r.decode_us} us per message`,
    );
  }
}

/**
 * The storage forms every apply encodes or decodes on every replica (src/storage/binary.ts):
 * a set's command, the key's data record (with one inline request) and its event, in the
 * binary form against the msgpack maps earlier versions wrote, in this run.
 */
function storageCodecRows(): Array<Record<string, string | number>> {
  const key = Buffer.from('p_000012345');
  const value = Buffer.alloc(100, 7);
  const id = Buffer.alloc(16, 3);
  const cmd: Command = { op: 'set', key, value, id };
  const record: DataRecord = { value, revision: 123_456, requests: [[id, 123_456, { ok: true }]] };
  const event: RangeEvent = { op: 'set', key, value, prevValue: value };
  const rounds = 200_000;
  const time = (f: () => unknown): number => {
    for (let i = 0; i < 20_000; i++) f();
    const t = process.hrtime.bigint();
    for (let i = 0; i < rounds; i++) f();
    return Number(process.hrtime.bigint() - t) / 1000 / rounds;
  };
  const rows: Array<Record<string, string | number>> = [];
  const cases: [string, string, () => Uint8Array, (b: Uint8Array) => unknown][] = [
    ['command', 'binary', () => encodeCommand(cmd), decodeCommand],
    ['command', 'msgpack', () => ownBytes(packr.pack({ ...cmd })), decodeCommand],
    ['record', 'binary', () => encodeRecord(record), decodeRecord],
    ['record', 'msgpack', () => packr.pack({ ...record }), decodeRecord],
    ['event', 'binary', () => encodeEvent(event), decodeEvent],
    ['event', 'msgpack', () => packr.pack(eventToWire(event)), decodeEvent],
  ];
  for (const [what, form, enc, dec] of cases) {
    const bytes = Buffer.from(enc());
    if (
      !isDeepStrictEqual(dec(bytes), what === 'command' ? cmd : what === 'record' ? record : event)
    ) {
      throw new Error(`${what} as ${form} does not round-trip`);
    }
    rows.push({
      workload: 'storage-codec',
      what,
      form,
      bytes: bytes.length,
      encode_us: Number(time(enc).toFixed(3)),
      decode_us: Number(time(() => dec(bytes)).toFixed(3)),
    });
  }
  return rows;
}

const storageCodec = storageCodecRows();
if (values.json) for (const r of storageCodec) console.log(JSON.stringify(r));
else {
  console.log(
    'storage codec, per item (a set: its command, record and event; stored form: binary):',
  );
  for (const r of storageCodec) {
    console.log(
      `  ${String(r.what).padEnd(8)} as ${String(r.form).padEnd(8)} ${r.bytes} B, ` +
        `encode ${r.encode_us} us, decode ${r.decode_us} us`,
    );
  }
}

// ------------------------------------------------------------ many ranges, one process
//
// What a put costs in the consensus core and in the store when it is the only entry of
// its range in a turn (256 busy ranges under a uniform load: about 45 ranges with one put
// each per turn) against one range that batches the turn's puts (45 a turn), with the
// network and the other processes taken away: one process, an instant network (core), a
// real store in a temp dir, one replica's turns (write a turn's entries, apply the last
// turn's, as a follower does; durable every 8 turns). The rows are medians of 3 runs,
// alternated. Against the cluster's gap (docs/architecture.md, "Where 256 ranges lose
// against one"): what these layers add per put by themselves.

const manyPuts = 45_000;
const perTurn = 45;

/** us per committed put: `ranges` groups of 3 replicas, `touched` of them `each` puts a turn. */
function coreGroups(ranges: number, touched: number, each: number): number {
  clockMs = 0;
  const groups: Driven[][] = [];
  for (let g = 0; g < ranges; g++) groups.push([1, 2, 3].map((id) => withMachine(id, g * 3 + id)));
  const leaderOf = (rs: Driven[]) => rs.find((r) => r.core.role === 'leader');
  for (let t = 0; t < 400 && groups.some((rs) => !leaderOf(rs)); t++) {
    clockMs += 100;
    for (const rs of groups) for (const r of rs) r.tick();
    settleGroups(groups);
  }
  const leaders = groups.map((rs) => {
    const l = leaderOf(rs);
    if (!l) throw new Error('a group elected no leader');
    return l;
  });
  const data = new Uint8Array(100);
  const payload = Array.from({ length: each }, () => data);
  const commitBefore = leaders.reduce((n, l) => n + l.core.log.committed, 0);
  let next = 0;
  let puts = 0;
  const started = process.hrtime.bigint();
  for (let turn = 1; puts < manyPuts; turn++) {
    const busy: Driven[][] = [];
    for (let k = 0; k < touched; k++) {
      const g = next++ % ranges;
      leaders[g]!.propose(payload);
      busy.push(groups[g]!);
    }
    settleGroups(busy);
    puts += touched * each;
    if (turn % 64 === 0) {
      for (const rs of busy) {
        for (const r of rs) r.core.compact(Math.min(r.core.log.committed, r.core.log.applying));
      }
    }
  }
  const elapsedNs = Number(process.hrtime.bigint() - started);
  const committed = leaders.reduce((n, l) => n + l.core.log.committed, 0) - commitBefore;
  if (committed !== puts) throw new Error(`committed ${committed} of ${puts} puts`);
  return elapsedNs / 1000 / puts;
}

/** us of CPU (process) per applied put: one replica's store turns, as coreGroups' shape. */
async function storeGroups(ranges: number, touched: number, each: number): Promise<number> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'rasputin-bench-turns-'));
  try {
    const store = Store.open(dir);
    const keyspace = 100_000;
    const keyOf = (i: number) => Buffer.from(`p_${String(i).padStart(8, '0')}`);
    const lowOf = (r: number) => Math.floor((r * keyspace) / ranges);
    const config = { voters: [1, 2, 3], outgoing: [], learners: [] };
    for (let r = 0; r < ranges; r++) {
      const start = r === 0 ? new Uint8Array() : keyOf(lowOf(r));
      const end = r === ranges - 1 ? null : keyOf(lowOf(r + 1));
      const replicas = [{ nodeId: 'a', replicaId: 1, role: 'voter' as const }];
      await store.createRange({ rangeId: r + 1, start, end, replicas, generation: 1 }, config);
    }
    const prng = new Prng(ranges);
    const value = new Uint8Array(100).fill(120);
    const last = new Array<number>(ranges).fill(0);
    let previous: Array<[number, Entry[]]> = [];
    let next = 0;
    let applied = 0;
    let writeId = 0;
    const cpu0 = process.cpuUsage();
    for (let turn = 1; applied < manyPuts; turn++) {
      const t = store.beginTurn();
      const written: Array<[number, Entry[]]> = [];
      for (let k = 0; k < touched; k++) {
        const r = next++ % ranges;
        const span = lowOf(r + 1) - lowOf(r);
        const entries: Entry[] = [];
        for (let e = 0; e < each; e++) {
          const key = keyOf(lowOf(r) + Math.floor(prng.next() * span));
          const id = Buffer.alloc(8);
          id.writeDoubleBE(turn * 1e6 + k * 1e3 + e);
          const data = encodeCommand({ op: 'set', key, value, id });
          entries.push({ index: ++last[r]!, term: 1, kind: 'normal', data });
        }
        const hardState = { term: 1, vote: 1, commit: last[r]! };
        t.write(r + 1, { id: ++writeId, hardState, entries, snapshot: null });
        written.push([r + 1, entries]);
      }
      for (const [rangeId, entries] of previous) t.apply(rangeId, entries);
      for (const [, entries] of previous) applied += entries.length;
      const c = t.commit();
      await c.results;
      if (turn % 8 === 0) await c.durable;
      previous = written;
    }
    const cpu = process.cpuUsage(cpu0);
    await store.close();
    return (cpu.user + cpu.system) / applied;
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

async function manyRangesRows(): Promise<Array<Record<string, string | number>>> {
  const shapes: Array<{ shape: string; ranges: number; touched: number; each: number }> = [
    { shape: `1 range, ${perTurn} puts a turn`, ranges: 1, touched: 1, each: perTurn },
    { shape: '1 range, 1 put a turn', ranges: 1, touched: 1, each: 1 },
    { shape: `${perTurn} ranges, 1 put each a turn`, ranges: perTurn, touched: perTurn, each: 1 },
    {
      shape: `256 ranges, ${perTurn} of them 1 put each a turn`,
      ranges: 256,
      touched: perTurn,
      each: 1,
    },
  ];
  const core = shapes.map(() => [] as number[]);
  const store = shapes.map(() => [] as number[]);
  coreGroups(1, 1, perTurn); // warm up the JIT
  for (let rep = 0; rep < 3; rep++) {
    for (let i = 0; i < shapes.length; i++) {
      const { ranges, touched, each } = shapes[i]!;
      core[i]!.push(coreGroups(ranges, touched, each));
      if (each > 1 || touched > 1) store[i]!.push(await storeGroups(ranges, touched, each));
    }
  }
  return shapes.map(({ shape, ranges }, i) => ({
    workload: 'many-ranges',
    shape,
    ranges,
    core_us_per_put: Number(median(core[i]!).toFixed(2)),
    store_cpu_us_per_put: store[i]!.length > 0 ? Number(median(store[i]!).toFixed(1)) : '-',
  }));
}

const many = await manyRangesRows();
if (values.json) for (const r of many) console.log(JSON.stringify(r));
else {
  console.log(
    `many ranges in one process, ${manyPuts} puts (median of 3): consensus core (3 replicas, ` +
      'instant network) us per put; store turns (one replica, real LMDB) us of CPU per put:',
  );
  for (const r of many) {
    console.log(
      `  ${String(r.shape).padEnd(40)} core ${String(r.core_us_per_put).padStart(6)} us, ` +
        `store ${String(r.store_cpu_us_per_put).padStart(6)} us`,
    );
  }
}

/** Opening a store whose journal holds `ranges` x `perRange` entries, and loading them. */
async function journalRestart(
  ranges: number,
  perRange: number,
): Promise<Record<string, number | string>> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'rasputin-bench-journal-'));
  try {
    const config = { voters: [1, 2, 3], outgoing: [], learners: [] };
    let store = Store.open(dir);
    for (let r = 1; r <= ranges; r++) {
      const start = r === 1 ? new Uint8Array() : new Uint8Array([r >> 8, r & 0xff]);
      const end = r === ranges ? null : new Uint8Array([(r + 1) >> 8, (r + 1) & 0xff]);
      const replicas = [{ nodeId: 'a', replicaId: 1, role: 'voter' as const }];
      await store.createRange({ rangeId: r, start, end, replicas, generation: 1 }, config);
    }
    const data = new Uint8Array(150).fill(1);
    for (let i = 1; i <= perRange; i++) {
      const turn = store.beginTurn();
      for (let r = 1; r <= ranges; r++) {
        turn.write(r, {
          id: i,
          hardState: { term: 1, vote: 1, commit: 0 },
          entries: [{ index: i, term: 1, kind: 'noop', data }],
          snapshot: null,
        });
      }
      const c = turn.commit();
      if (i % 50 === 0 || i === perRange) await c.durable;
    }
    await store.close();
    let t = performance.now();
    store = Store.open(dir);
    const openMs = performance.now() - t;
    t = performance.now();
    let entries = 0;
    for (let r = 1; r <= ranges; r++) entries += store.loadRange(r)!.state.entries.length;
    const loadMs = performance.now() - t;
    await store.close();
    if (entries !== ranges * perRange) throw new Error(`loaded ${entries} entries`);
    return {
      workload: 'journal-restart',
      ranges,
      entries,
      open_ms: Math.round(openMs),
      load_ms: Math.round(loadMs),
      open_s_per_million: Number(((openMs / entries) * 1000).toFixed(2)),
      load_s_per_million: Number(((loadMs / entries) * 1000).toFixed(2)),
    };
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

const restart = await journalRestart(256, 1000);
if (values.json) console.log(JSON.stringify(restart));
else {
  console.log(
    `journal restart, ${restart.ranges} ranges, ${restart.entries} log entries: open ` +
      `${restart.open_ms} ms (${restart.open_s_per_million} s per million entries), every ` +
      `range's log loaded in ${restart.load_ms} ms (${restart.load_s_per_million} s per million)`,
  );
}
