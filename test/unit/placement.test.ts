// The placement driver: its checkers are pure functions from a cluster view to operations,
// and its machine issues each operation once, only while leading the meta range and only
// from a view it has observed itself (DESIGN.md, "Placement driver").

import { describe, expect, it } from 'vitest';
import { createActor } from 'xstate';
import {
  balanceLeaders,
  type ClusterView,
  decisions,
  defaultPlacementConfig,
  type Operation,
  operationsInFlight,
  type PlacementConfig,
  type PlacementEvent,
  placementConfig,
  placementMachine,
  type RangeDesc,
  type RangeReport,
  repairDirectory,
  splitBySize,
} from '../../placement/index.ts';
import { initialState, lead, observeReports } from '../../placement/state.ts';

const MiB = 1024 * 1024;
const key = (s: string): Uint8Array => new TextEncoder().encode(s);
const sys = (s: string): Uint8Array => new Uint8Array([0x00, ...key(`sys/${s}`)]);

function desc(rangeId: number, start: string, end: string | null, generation: number): RangeDesc {
  return {
    rangeId,
    start: key(start),
    end: end === null ? null : key(end),
    replicas: [
      { nodeId: 'n1', replicaId: rangeId * 10 + 1, role: 'voter' },
      { nodeId: 'n2', replicaId: rangeId * 10 + 2, role: 'voter' },
      { nodeId: 'n3', replicaId: rangeId * 10 + 3, role: 'voter' },
    ],
    generation,
  };
}

function report(
  descriptor: RangeDesc,
  fields: { bytes?: number; splitKey?: Uint8Array | string; atMs?: number; leader?: string } = {},
): RangeReport {
  const splitKey = typeof fields.splitKey === 'string' ? key(fields.splitKey) : fields.splitKey;
  return {
    descriptor,
    leaderNode: fields.leader ?? 'n1',
    keys: 1000,
    bytes: fields.bytes ?? 0,
    opsPerS: 0,
    ...(splitKey === undefined ? {} : { splitKey }),
    atMs: fields.atMs ?? 0,
  };
}

function view(fields: {
  reports?: RangeReport[];
  directory?: RangeDesc[];
  nowMs?: number;
  directoryAtMs?: number;
  inFlight?: Operation[];
  settling?: Operation[];
  liveNodes?: string[] | null;
}): ClusterView {
  return {
    nowMs: fields.nowMs ?? 0,
    reports: new Map((fields.reports ?? []).map((r) => [r.descriptor.rangeId, r])),
    directory: new Map((fields.directory ?? []).map((d) => [d.rangeId, d])),
    directoryAtMs: fields.directoryAtMs ?? 0,
    inFlight: fields.inFlight ?? [],
    settling: fields.settling ?? [],
    liveNodes: fields.liveNodes === null ? null : new Set(fields.liveNodes ?? ['n1', 'n2', 'n3']),
  };
}

const config = defaultPlacementConfig;

describe('placement config', () => {
  it('defaults to production sizes and the 0x00 "sys/" system prefix', () => {
    expect(config.splitBytesThreshold).toBe(64 * MiB);
    expect(config.reportStaleMs).toBe(10_000);
    expect(config.opTimeoutMs).toBe(10_000);
    expect(config.warmupMs).toBe(2_000);
    expect(config.splitsInFlightMax).toBe(4);
    expect(config.leaderTransfersInFlightMax).toBe(32);
    expect(config.decisionsMax).toBe(200);
    expect([...config.systemPrefix]).toEqual([0x00, 0x73, 0x79, 0x73, 0x2f]);
  });

  it('overrides some values and refuses nonsense', () => {
    const c = placementConfig({ splitBytesThreshold: 1000, warmupMs: 0 });
    expect(c.splitBytesThreshold).toBe(1000);
    expect(c.warmupMs).toBe(0);
    expect(c.opTimeoutMs).toBe(10_000);
    expect(() => placementConfig({ splitBytesThreshold: 0 })).toThrow(/splitBytesThreshold/);
    expect(() => placementConfig({ splitsInFlightMax: 1.5 })).toThrow(/splitsInFlightMax/);
    expect(() => placementConfig({ reportStaleMs: -1 })).toThrow(/reportStaleMs/);
    expect(() => placementConfig({ systemPrefix: new Uint8Array() })).toThrow(/systemPrefix/);
  });
});

describe('checkers', () => {
  it('make operations in range order, whatever order the reports came in', () => {
    const reports = [report(desc(3, 'm', null, 2)), report(desc(2, 'f', 'm', 2))];
    const ops = repairDirectory(view({ reports, directory: [desc(1, '', 'f', 2)] }), config);
    expect(ops.map((op) => op.id)).toEqual(['updateDirectory:2@2', 'updateDirectory:3@2']);
  });
});

describe('directory repair checker', () => {
  it('adds a reported range missing from the directory', () => {
    const d2 = desc(2, 'm', null, 2);
    const ops = repairDirectory(
      view({ reports: [report(d2)], directory: [desc(1, '', 'm', 2)] }),
      config,
    );
    expect(ops).toEqual([
      {
        kind: 'updateDirectory',
        id: 'updateDirectory:2@2',
        descriptor: d2,
        reason: expect.stringContaining('range 2 (generation 2, leader on n1) is missing'),
      },
    ]);
  });

  it('rewrites an entry older than the reported descriptor', () => {
    const reported = desc(1, '', 'm', 4);
    const ops = repairDirectory(
      view({ reports: [report(reported)], directory: [desc(1, '', null, 3)] }),
      config,
    );
    expect(ops).toHaveLength(1);
    expect(ops[0]).toMatchObject({ kind: 'updateDirectory', descriptor: reported });
    expect(ops[0]!.reason).toContain('at generation 3');
    expect(ops[0]!.reason).toContain('reports generation 4');
  });

  it('leaves an entry at the same or a newer generation alone', () => {
    const same = view({ reports: [report(desc(1, '', 'm', 3))], directory: [desc(1, '', 'm', 3)] });
    expect(repairDirectory(same, config)).toEqual([]);
    // A deposed leader still reporting the generation before a split.
    const older = view({
      reports: [report(desc(1, '', null, 2))],
      directory: [desc(1, '', 'm', 3)],
    });
    expect(repairDirectory(older, config)).toEqual([]);
  });

  it('ignores a report older than reportStaleMs', () => {
    const reports = [report(desc(2, 'm', null, 2), { atMs: 0 })];
    const atLimit = view({ reports, nowMs: config.reportStaleMs, directoryAtMs: 10_000 });
    expect(repairDirectory(atLimit, config)).toHaveLength(1);
    const stale = view({ reports, nowMs: config.reportStaleMs + 1, directoryAtMs: 10_000 });
    expect(repairDirectory(stale, config)).toEqual([]);
  });

  it('acts on no directory read older than reportStaleMs', () => {
    const reports = [report(desc(2, 'm', null, 2), { atMs: 20_000 })];
    expect(repairDirectory(view({ reports, nowMs: 20_000, directoryAtMs: 0 }), config)).toEqual([]);
  });
});

describe('split-by-size checker', () => {
  const big = 70.1 * MiB;

  it('splits a range at or above the threshold at its median key, with its generation', () => {
    const ops = splitBySize(
      view({ reports: [report(desc(7, 'a', 'z', 3), { bytes: big, splitKey: 'k' })] }),
      config,
    );
    expect(ops).toEqual([
      {
        kind: 'split',
        id: 'split:7@3',
        rangeId: 7,
        generation: 3,
        key: key('k'),
        reason: expect.stringContaining('range 7 is 70.1 MiB >= 64 MiB'),
      },
    ]);
    expect(ops[0]!.reason).toContain('"k"');
    const atThreshold = view({
      reports: [report(desc(7, 'a', 'z', 3), { bytes: 64 * MiB, splitKey: 'k' })],
    });
    expect(splitBySize(atThreshold, config)).toHaveLength(1);
  });

  it('leaves a range below the threshold alone', () => {
    const small = view({
      reports: [report(desc(7, 'a', 'z', 3), { bytes: 64 * MiB - 1, splitKey: 'k' })],
    });
    expect(splitBySize(small, config)).toEqual([]);
  });

  it('splits only strictly inside the span', () => {
    const at = (splitKey: string | undefined, end: string | null = 'm') =>
      splitBySize(
        view({ reports: [report(desc(7, 'c', end, 3), { bytes: big, splitKey })] }),
        config,
      );
    expect(at('c')).toEqual([]); // the start: the left side would be empty
    expect(at('m')).toEqual([]); // the end: not in the span
    expect(at('a')).toEqual([]); // before the span
    expect(at('x')).toEqual([]); // after the span
    expect(at(undefined)).toEqual([]); // fewer than 2 keys: no median
    expect(at('d')).toHaveLength(1);
    expect(at('x', null)).toHaveLength(1); // the last range has no end
  });

  it('never splits the system prefix away from the meta range', () => {
    const meta = (splitKey: Uint8Array) =>
      splitBySize(
        view({ reports: [report(desc(1, '', null, 1), { bytes: big, splitKey })] }),
        config,
      );
    expect(meta(sys('range/x'))).toEqual([]); // inside the prefix
    expect(meta(config.systemPrefix)).toEqual([]); // the prefix itself
    expect(meta(new Uint8Array([0x00, 0x61]))).toEqual([]); // before it: the prefix would move right
    expect(meta(new Uint8Array([0x00, 0x73, 0x79, 0x73, 0x30]))).toHaveLength(1); // first key after
    expect(meta(key('user/m'))).toHaveLength(1);
  });

  it('keeps at most splitsInFlightMax splits in flight, biggest first, one per range', () => {
    const reports = [1, 2, 3, 4, 5, 6].map((id) =>
      report(desc(id, `k${id}`, `k${id}z`, 1), { bytes: (64 + id) * MiB, splitKey: `k${id}m` }),
    );
    const splitOf = (id: number): Operation => ({
      kind: 'split',
      id: `split:${id}@1`,
      rangeId: id,
      generation: 1,
      key: key(`k${id}m`),
      reason: '',
    });
    const none = splitBySize(view({ reports }), config);
    expect(none.map((op) => (op.kind === 'split' ? op.rangeId : 0))).toEqual([6, 5, 4, 3]);
    const three = splitBySize(view({ reports, inFlight: [6, 2, 1].map(splitOf) }), config);
    expect(three.map((op) => (op.kind === 'split' ? op.rangeId : 0))).toEqual([5]);
    const four = splitBySize(view({ reports, inFlight: [6, 5, 2, 1].map(splitOf) }), config);
    expect(four).toEqual([]);
  });

  it('ignores a report older than reportStaleMs', () => {
    const reports = [report(desc(7, 'a', 'z', 3), { bytes: big, splitKey: 'k', atMs: 0 })];
    expect(splitBySize(view({ reports, nowMs: config.reportStaleMs + 1 }), config)).toEqual([]);
  });
});

describe('leader balancing checker', () => {
  /** The meta range [, a) and user ranges 2..n+1 at [a..), each led where `leaders` says. */
  const ranges = (leaders: string[], atMs = 0) => [
    report(desc(1, '', 'a', 1), { atMs }),
    ...leaders.map((leader, i) =>
      report(desc(i + 2, String.fromCharCode(97 + i), String.fromCharCode(98 + i), 1), {
        atMs,
        leader,
      }),
    ),
  ];
  /** A split of range 2 in flight. */
  const split: Operation = {
    kind: 'split',
    id: 'split:2@1',
    rangeId: 2,
    generation: 1,
    key: key('aa'),
    reason: '',
  };
  const moves = (ops: Operation[]) =>
    ops.map((op) => (op.kind === 'transferLeader' ? `${op.rangeId}:${op.from}>${op.to}` : op.id));

  it('moves leaders off the busiest node until no node leads two more than another', () => {
    const ops = balanceLeaders(view({ reports: ranges(Array(6).fill('n1')) }), config);
    // n1 leads 7 (the meta range too), n2 and n3 none: 3, 2 and 2 after four moves.
    expect(moves(ops)).toEqual(['2:n1>n2', '3:n1>n3', '4:n1>n2', '5:n1>n3']);
    expect(ops[0]).toEqual({
      kind: 'transferLeader',
      id: 'transferLeader:2@1',
      rangeId: 2,
      generation: 1,
      key: key('a'),
      from: 'n1',
      to: 'n2',
      reason: "n1 leads 7 of 7 ranges, n2 0 (3 live nodes): move range 2's leadership to n2",
    });
  });

  it('never moves the meta range, and leaves a difference of one alone', () => {
    // n1 leads the meta range and range 2, n2 range 3: range 2 moves to n3.
    expect(moves(balanceLeaders(view({ reports: ranges(['n1', 'n2']) }), config))).toEqual([
      '2:n1>n3',
    ]);
    // With range 2 busy, only the meta range is left on n1: it stays.
    const reports = ranges(['n1', 'n2']);
    expect(balanceLeaders(view({ reports, inFlight: [split] }), config)).toEqual([]);
    expect(balanceLeaders(view({ reports: ranges(['n2', 'n3']) }), config)).toEqual([]);
    expect(balanceLeaders(view({ reports: ranges(['n2', 'n2', 'n3']) }), config)).toEqual([]);
    expect(moves(balanceLeaders(view({ reports: ranges(['n2', 'n2', 'n2']) }), config))).toEqual([
      '2:n2>n3',
    ]);
  });

  it('counts transfers in flight and settling at their targets, within its budget', () => {
    const reports = ranges(Array(9).fill('n1'));
    const first = balanceLeaders(view({ reports }), config);
    expect(first).toHaveLength(6); // 10 leaders: 4, 3, 3
    const c = placementConfig({ leaderTransfersInFlightMax: 3 });
    const inFlight = first.slice(0, 2);
    const settling = first.slice(2, 4);
    const next = balanceLeaders(view({ reports, inFlight, settling }), c);
    // Two in flight leave one of three; the four counted as moved are not moved again.
    expect(moves(next)).toEqual(['6:n1>n2']);
    expect(balanceLeaders(view({ reports, inFlight: first.slice(0, 3) }), c)).toEqual([]);
  });

  it('moves only to live voter nodes, and not a range with another operation in flight', () => {
    const reports = ranges(Array(6).fill('n1'));
    // n3 is not heard from: n1 and n2 share the 7 leaders.
    const ops = balanceLeaders(view({ reports, liveNodes: ['n1', 'n2'] }), config);
    expect(moves(ops)).toEqual(['2:n1>n2', '3:n1>n2', '4:n1>n2']);
    // A split of range 2 in flight: its leadership stays.
    const around = balanceLeaders(view({ reports, inFlight: [split] }), config);
    expect(moves(around)[0]).toBe('3:n1>n2');
    expect(around.some((op) => op.kind === 'transferLeader' && op.rangeId === 2)).toBe(false);
    // A range whose only other voters are elsewhere cannot move to a node without one.
    const d = { ...desc(2, 'a', 'b', 1), replicas: desc(2, 'a', 'b', 1).replicas.slice(0, 1) };
    const lone = [report(desc(1, '', 'a', 1)), report(d), report(desc(3, 'b', null, 1))];
    expect(moves(balanceLeaders(view({ reports: lone }), config))).toEqual(['3:n1>n2']);
  });

  it('does nothing without live nodes, when turned off, or from stale reports', () => {
    const reports = ranges(Array(6).fill('n1'));
    expect(balanceLeaders(view({ reports, liveNodes: null }), config)).toEqual([]);
    const off = placementConfig({ leaderTransfersInFlightMax: 0 });
    expect(balanceLeaders(view({ reports }), off)).toEqual([]);
    expect(balanceLeaders(view({ reports, nowMs: config.reportStaleMs + 1 }), config)).toEqual([]);
  });
});

/** A driver with a recording issue port and small, test-sized limits. */
function driver(overrides: Partial<PlacementConfig> = {}) {
  const issued: Operation[] = [];
  const actor = createActor(placementMachine, {
    input: {
      issue: (op) => issued.push(op),
      config: { splitBytesThreshold: 1000, ...overrides },
    },
  });
  const errors: unknown[] = [];
  actor.subscribe({ error: (e) => errors.push(e) });
  actor.start();
  const send = (event: PlacementEvent) => actor.send(event);
  return { actor, issued, errors, send };
}

// The meta range [, m) and a big user range [m, ) at generation 1, both in the directory.
const meta1 = desc(1, '', 'm', 1);
const user1 = desc(2, 'm', null, 1);
const bigUser = (atMs = 0, descriptor = user1) =>
  report(descriptor, { bytes: 5000, splitKey: 't', atMs });

/** LEAD at t, a directory read and reports at t, warm at t + warmupMs. */
function leadAndWarm(d: ReturnType<typeof driver>, t: number, reports: RangeReport[]) {
  d.send({ type: 'LEAD', nowMs: t });
  d.send({ type: 'DIRECTORY', descriptors: [meta1, user1], nowMs: t });
  d.send({ type: 'REPORT', reports, nowMs: t });
  d.send({ type: 'TICK', nowMs: t + 2000 });
}

/** LEAD at 0 with every reported range in the directory, warm at warmupMs. */
function leadAndWarmAll(d: ReturnType<typeof driver>, reports: RangeReport[]) {
  d.send({ type: 'LEAD', nowMs: 0 });
  d.send({ type: 'DIRECTORY', descriptors: reports.map((r) => r.descriptor), nowMs: 0 });
  d.send({ type: 'REPORT', reports, nowMs: 0 });
  d.send({ type: 'TICK', nowMs: 2000 });
}

describe('placement driver', () => {
  it('issues nothing in standby', () => {
    const d = driver({ warmupMs: 0 });
    d.send({ type: 'DIRECTORY', descriptors: [], nowMs: 0 });
    d.send({ type: 'REPORT', reports: [report(meta1), bigUser()], nowMs: 0 });
    d.send({ type: 'TICK', nowMs: 5000 });
    expect(d.actor.getSnapshot().value).toBe('standby');
    expect(d.issued).toEqual([]);
    expect(decisions(d.actor)).toEqual([]);
    expect(d.errors).toEqual([]);
  });

  it('after LEAD waits for a directory read and warmupMs of reports', () => {
    const d = driver();
    d.send({ type: 'LEAD', nowMs: 1000 });
    d.send({ type: 'REPORT', reports: [report(meta1), bigUser(1000)], nowMs: 1000 });
    d.send({ type: 'TICK', nowMs: 9000 });
    expect(d.issued).toEqual([]); // no directory read yet
    d.send({ type: 'DIRECTORY', descriptors: [meta1, user1], nowMs: 9000 });
    d.send({ type: 'REPORT', reports: [report(meta1), bigUser(9000)], nowMs: 9000 });
    expect(d.issued).toEqual([]);
    d.send({ type: 'TICK', nowMs: 9001 });
    expect(d.issued.map((op) => op.id)).toEqual(['split:2@1']);

    // Warm-up counts from the first report, not from LEAD.
    const late = driver();
    late.send({ type: 'LEAD', nowMs: 0 });
    late.send({ type: 'DIRECTORY', descriptors: [meta1, user1], nowMs: 0 });
    late.send({ type: 'TICK', nowMs: 5000 });
    late.send({ type: 'REPORT', reports: [bigUser(5000)], nowMs: 5000 });
    late.send({ type: 'TICK', nowMs: 6999 });
    expect(late.issued).toEqual([]);
    late.send({ type: 'TICK', nowMs: 7000 });
    expect(late.issued.map((op) => op.id)).toEqual(['split:2@1']);
  });

  it('issues a split once and not again while it is in flight', () => {
    const d = driver();
    leadAndWarm(d, 0, [report(meta1), bigUser()]);
    expect(d.issued).toEqual([
      expect.objectContaining({ kind: 'split', rangeId: 2, generation: 1, key: key('t') }),
    ]);
    for (let t = 2500; t < 10_000; t += 500) {
      d.send({ type: 'REPORT', reports: [report(meta1, { atMs: t }), bigUser(t)], nowMs: t });
      d.send({ type: 'DIRECTORY', descriptors: [meta1, user1], nowMs: t });
      d.send({ type: 'TICK', nowMs: t });
    }
    expect(d.issued).toHaveLength(1);
    expect(operationsInFlight(d.actor).map((f) => f.op.id)).toEqual(['split:2@1']);
  });

  it('forgets a split once a report shows the range at a newer generation', () => {
    const d = driver();
    leadAndWarm(d, 0, [report(meta1), bigUser()]);
    expect(d.issued).toHaveLength(1);
    // The split applied: [m, t) and [t, ) at generation 2, each small.
    const left = desc(2, 'm', 't', 2);
    const right = desc(3, 't', null, 2);
    d.send({
      type: 'REPORT',
      reports: [report(left, { bytes: 500, splitKey: 'p' }), report(right, { bytes: 500 })],
      nowMs: 3000,
    });
    expect(operationsInFlight(d.actor)).toEqual([]);
    expect(decisions(d.actor)[0]!.outcome).toMatchObject({
      status: 'observed',
      detail: 'range 2 is at generation 2',
    });
    // A deposed leader's late report of the old, big range changes nothing.
    d.send({ type: 'REPORT', reports: [bigUser(3000)], nowMs: 3000 });
    d.send({ type: 'TICK', nowMs: 3000 });
    // What is left is repairing the directory with both new descriptors.
    expect(d.issued.slice(1)).toEqual([
      expect.objectContaining({ kind: 'updateDirectory', descriptor: left }),
      expect.objectContaining({ kind: 'updateDirectory', descriptor: right }),
    ]);
  });

  it('forgets a split after opTimeoutMs and reissues it only once a newer report asks for it', () => {
    const d = driver({ opTimeoutMs: 5000 });
    leadAndWarm(d, 0, [report(meta1), bigUser()]);
    expect(d.issued).toHaveLength(1);
    d.send({ type: 'DIRECTORY', descriptors: [meta1, user1], nowMs: 6999 });
    d.send({ type: 'TICK', nowMs: 6999 });
    expect(operationsInFlight(d.actor)).toHaveLength(1);
    d.send({ type: 'TICK', nowMs: 7000 });
    expect(operationsInFlight(d.actor)).toEqual([]);
    expect(decisions(d.actor)[0]!.outcome).toMatchObject({ status: 'timedOut', atMs: 7000 });
    d.send({ type: 'TICK', nowMs: 7500 });
    expect(d.issued).toHaveLength(1); // the only report is from before the timeout
    d.send({ type: 'REPORT', reports: [bigUser(8000)], nowMs: 8000 });
    d.send({ type: 'TICK', nowMs: 8000 });
    expect(d.issued.map((op) => op.id)).toEqual(['split:2@1', 'split:2@1']);
    expect(decisions(d.actor).map((x) => x.outcome?.status)).toEqual(['timedOut', undefined]);
  });

  it('records OP_DONE and OP_FAILED, and waits for a newer report before trying again', () => {
    const d = driver();
    leadAndWarm(d, 0, [report(meta1), bigUser()]);
    d.send({ type: 'OP_FAILED', id: 'split:2@1', why: 'generation mismatch: range 2 is at 2' });
    expect(operationsInFlight(d.actor)).toEqual([]);
    expect(decisions(d.actor)[0]!.outcome).toEqual({
      status: 'failed',
      atMs: 2000,
      detail: 'generation mismatch: range 2 is at 2',
    });
    d.send({ type: 'TICK', nowMs: 2500 });
    expect(d.issued).toHaveLength(1);
    d.send({ type: 'REPORT', reports: [bigUser(3000)], nowMs: 3000 });
    d.send({ type: 'TICK', nowMs: 3000 });
    expect(d.issued).toHaveLength(2);
    d.send({ type: 'OP_DONE', id: 'split:2@1' });
    expect(decisions(d.actor)[1]!.outcome).toMatchObject({ status: 'done' });
    d.send({ type: 'TICK', nowMs: 3500 });
    expect(d.issued).toHaveLength(2);
    // An answer for an operation not in flight is ignored.
    d.send({ type: 'OP_DONE', id: 'split:9@9' });
    expect(d.errors).toEqual([]);
  });

  it('a fresh range (same generation) counts as a new report; another generation does not', () => {
    const d = driver();
    leadAndWarm(d, 0, [report(meta1), bigUser()]);
    d.send({ type: 'OP_FAILED', id: 'split:2@1', why: 'busy' });
    d.send({ type: 'REPORT', reports: [], fresh: [[2, 2]], nowMs: 3000 });
    d.send({ type: 'TICK', nowMs: 3000 });
    expect(d.issued).toHaveLength(1); // range 2 is not known at generation 2
    d.send({ type: 'REPORT', reports: [], fresh: [[9, 1]], nowMs: 3200 });
    d.send({ type: 'TICK', nowMs: 3200 });
    expect(d.issued).toHaveLength(1); // nor is range 9
    d.send({ type: 'REPORT', reports: [], fresh: [[2, 1]], nowMs: 3500 });
    d.send({ type: 'TICK', nowMs: 3500 });
    expect(d.issued.map((op) => op.id)).toEqual(['split:2@1', 'split:2@1']);
    expect(d.errors).toEqual([]);
  });

  it('a report by numbers alone updates the kept report of its generation, split key dropped', () => {
    const led = lead(initialState(defaultPlacementConfig), 0);
    let s = observeReports(led, [report(meta1), bigUser(0)], 1000);
    const stats = (rangeId: number, generation: number) => ({
      rangeId,
      generation,
      keys: 7,
      bytes: 700,
      opsPerS: 3.5,
    });
    s = observeReports(s, [], 2000, [], [stats(2, 1), stats(2, 2), stats(9, 1)]);
    const kept = s.leader!.reports;
    expect(kept.get(2)).toEqual({
      descriptor: user1,
      leaderNode: 'n1',
      keys: 7,
      bytes: 700,
      opsPerS: 3.5,
      atMs: 2000,
    });
    expect(kept.get(1)).toEqual({ ...report(meta1), atMs: 1000 });
    expect(kept.has(9)).toBe(false);
    // Through the machine: after a failed split, numbers alone (no split key) are a newer
    // report but call for no split; a full report with the key does.
    const d = driver();
    leadAndWarm(d, 0, [report(meta1), bigUser()]);
    d.send({ type: 'OP_FAILED', id: 'split:2@1', why: 'busy' });
    d.send({ type: 'REPORT', reports: [], stats: [stats(2, 1)], nowMs: 3000 });
    d.send({ type: 'TICK', nowMs: 3000 });
    expect(d.issued).toHaveLength(1);
    d.send({ type: 'REPORT', reports: [bigUser(3500)], nowMs: 3500 });
    d.send({ type: 'TICK', nowMs: 3500 });
    expect(d.issued.map((op) => op.id)).toEqual(['split:2@1', 'split:2@1']);
    expect(d.errors).toEqual([]);
  });

  it('fresh ranges and an unchanged directory keep the view from going stale', () => {
    // A directory entry is missing; the repair is retried only on a view newer than its end.
    const repair = (fresh: boolean) => {
      const d = driver({ opTimeoutMs: 1000 });
      const r3 = desc(3, 'x', null, 2);
      leadAndWarm(d, 0, [report(meta1), report(user1), report(r3)]);
      expect(d.issued.map((op) => op.id)).toEqual(['updateDirectory:3@2']);
      for (let t = 5000; t <= 30_000; t += 5000) {
        if (fresh) {
          d.send({
            type: 'REPORT',
            reports: [],
            fresh: [
              [1, 1],
              [2, 1],
              [3, 2],
            ],
            nowMs: t,
          });
          d.send({ type: 'DIRECTORY', descriptors: null, nowMs: t });
        }
        d.send({ type: 'TICK', nowMs: t });
      }
      return d.issued.length;
    };
    // Refreshed: the repair times out and is issued again each time the view is newer.
    expect(repair(true)).toBeGreaterThan(3);
    // Not refreshed: after reportStaleMs the report and the read are stale: nothing more.
    expect(repair(false)).toBe(1);
  });

  it('an unchanged directory before any read is no read', () => {
    const d = driver({ warmupMs: 0 });
    d.send({ type: 'LEAD', nowMs: 0 });
    d.send({ type: 'DIRECTORY', descriptors: null, nowMs: 0 });
    d.send({ type: 'REPORT', reports: [report(meta1), bigUser()], nowMs: 0 });
    d.send({ type: 'TICK', nowMs: 1000 });
    expect(d.issued).toEqual([]); // not warm: no directory read yet
  });

  it('takes an answer the port sends back synchronously', () => {
    const ids: string[] = [];
    const actor = createActor(placementMachine, {
      input: {
        issue: (op) => {
          ids.push(op.id);
          actor.send({ type: 'OP_DONE', id: op.id });
        },
        config: { splitBytesThreshold: 1000 },
      },
    });
    actor.start();
    actor.send({ type: 'LEAD', nowMs: 0 });
    actor.send({ type: 'DIRECTORY', descriptors: [meta1, user1], nowMs: 0 });
    actor.send({ type: 'REPORT', reports: [bigUser()], nowMs: 0 });
    actor.send({ type: 'TICK', nowMs: 2000 });
    expect(ids).toEqual(['split:2@1']);
    expect(decisions(actor)[0]!.outcome).toMatchObject({ status: 'done' });
    expect(operationsInFlight(actor)).toEqual([]);
  });

  it('repairs the directory and takes a directory read showing the entry as the end', () => {
    const d = driver();
    leadAndWarm(d, 0, [report(meta1), report(user1), report(desc(3, 'x', null, 2))]);
    expect(d.issued.map((op) => op.id)).toEqual(['updateDirectory:3@2']);
    d.send({ type: 'DIRECTORY', descriptors: [meta1, user1, desc(3, 'x', null, 2)], nowMs: 2100 });
    expect(operationsInFlight(d.actor)).toEqual([]);
    expect(decisions(d.actor)[0]!.outcome).toMatchObject({ status: 'observed' });
    d.send({ type: 'TICK', nowMs: 2200 });
    expect(d.issued).toHaveLength(1);
  });

  it('stamps reports with the time they arrive, not the sender clock', () => {
    const d = driver();
    d.send({ type: 'LEAD', nowMs: 500_000 });
    d.send({ type: 'DIRECTORY', descriptors: [meta1, user1], nowMs: 500_000 });
    d.send({ type: 'REPORT', reports: [bigUser(-1_000_000)], nowMs: 500_000 });
    d.send({ type: 'TICK', nowMs: 502_000 });
    expect(d.issued.map((op) => op.id)).toEqual(['split:2@1']);
  });

  it('bounds operations in flight across checkers', () => {
    const d = driver({ operationsInFlightMax: 3 });
    const missing = [3, 4, 5, 6].map((id) => report(desc(id, `x${id}`, `x${id}z`, 2)));
    leadAndWarm(d, 0, [report(meta1), bigUser(), ...missing]);
    expect(d.issued.map((op) => op.id)).toEqual([
      'updateDirectory:3@2',
      'updateDirectory:4@2',
      'updateDirectory:5@2',
    ]);
    d.send({ type: 'OP_DONE', id: 'updateDirectory:3@2' });
    d.send({ type: 'TICK', nowMs: 2100 });
    expect(d.issued.slice(3).map((op) => op.id)).toEqual(['updateDirectory:6@2']);
  });

  it('balances leaders once told the live nodes; a done transfer counts until reported', () => {
    const d = driver();
    const spread = (leader: (id: number) => string, atMs: number) => [
      report(meta1, { atMs }),
      ...[3, 4, 5, 6].map((id) =>
        report(desc(id, `u${id}`, `u${id}z`, 1), { atMs, leader: leader(id) }),
      ),
    ];
    leadAndWarmAll(
      d,
      spread(() => 'n1', 0),
    );
    expect(d.issued.filter((op) => op.kind === 'transferLeader')).toEqual([]); // no live nodes yet
    d.send({ type: 'TICK', nowMs: 2500, liveNodes: ['n1', 'n2', 'n3'] });
    const transfers = () => d.issued.filter((op) => op.kind === 'transferLeader');
    const moved = ['transferLeader:3@1', 'transferLeader:4@1', 'transferLeader:5@1'];
    expect(transfers().map((op) => op.id)).toEqual(moved);
    for (const id of moved) d.send({ type: 'OP_DONE', id });
    // The reports still say n1 leads all: the done transfers are counted as moved anyway.
    d.send({ type: 'TICK', nowMs: 3000, liveNodes: ['n1', 'n2', 'n3'] });
    expect(transfers()).toHaveLength(3);
    // The new leaders report: the view matches, nothing more to move.
    const after = spread((id) => ({ 3: 'n2', 4: 'n3', 5: 'n2' })[id] ?? 'n1', 3500);
    d.send({ type: 'REPORT', reports: after, nowMs: 3500 });
    d.send({ type: 'TICK', nowMs: 4000, liveNodes: ['n1', 'n2', 'n3'] });
    expect(transfers()).toHaveLength(3);
    // n2 stops being heard from: its two leaders count nowhere, and n1 (2) and n3 (1) are even.
    d.send({ type: 'TICK', nowMs: 4500, liveNodes: ['n1', 'n3'] });
    expect(transfers()).toHaveLength(3);
    const outcomes = decisions(d.actor)
      .filter((x) => x.op.kind === 'transferLeader')
      .map((x) => x.outcome?.status);
    expect(outcomes).toEqual(['done', 'done', 'done']);
    expect(d.errors).toEqual([]);
  });

  it('ends a transfer in flight as observed when a report names its target as the leader', () => {
    const d = driver();
    const users = (leader: string, atMs: number) =>
      [3, 4].map((id) => report(desc(id, `u${id}`, `u${id}z`, 1), { atMs, leader }));
    leadAndWarmAll(d, [report(meta1), ...users('n1', 0)]);
    d.send({ type: 'TICK', nowMs: 2500, liveNodes: ['n1', 'n2'] });
    expect(operationsInFlight(d.actor).map((f) => f.op.id)).toEqual(['transferLeader:3@1']);
    d.send({ type: 'REPORT', reports: users('n2', 2600).slice(0, 1), nowMs: 2600 });
    expect(operationsInFlight(d.actor)).toEqual([]);
    expect(decisions(d.actor).at(-1)!.outcome).toMatchObject({
      status: 'observed',
      detail: 'range 3 is led by n2',
    });
  });

  it('UNLEAD drops the view and what is in flight; the next LEAD starts over', () => {
    const d = driver();
    leadAndWarm(d, 0, [report(meta1), bigUser()]);
    expect(d.issued).toHaveLength(1);
    d.send({ type: 'UNLEAD' });
    expect(d.actor.getSnapshot().value).toBe('standby');
    expect(operationsInFlight(d.actor)).toEqual([]);
    expect(decisions(d.actor)[0]!.outcome).toMatchObject({ status: 'abandoned' });
    d.send({ type: 'TICK', nowMs: 3000 });
    expect(d.issued).toHaveLength(1);

    d.send({ type: 'LEAD', nowMs: 4000 });
    d.send({ type: 'TICK', nowMs: 7000 });
    expect(d.issued).toHaveLength(1); // nothing observed in this term yet
    d.send({ type: 'DIRECTORY', descriptors: [meta1, user1], nowMs: 7000 });
    d.send({ type: 'REPORT', reports: [bigUser(7000)], nowMs: 7000 });
    d.send({ type: 'TICK', nowMs: 8999 });
    expect(d.issued).toHaveLength(1); // warming up again
    d.send({ type: 'TICK', nowMs: 9000 });
    expect(d.issued.map((op) => op.id)).toEqual(['split:2@1', 'split:2@1']);
  });

  it('LEAD while active starts over too', () => {
    const d = driver();
    leadAndWarm(d, 0, [report(meta1), bigUser()]);
    d.send({ type: 'LEAD', nowMs: 2500 });
    expect(operationsInFlight(d.actor)).toEqual([]);
    d.send({ type: 'TICK', nowMs: 10_000 });
    expect(d.issued).toHaveLength(1);
  });

  it('records each decision with its time and reason, keeping the last decisionsMax', () => {
    const d = driver({ decisionsMax: 3 });
    const missing = [3, 4, 5, 6, 7].map((id) => report(desc(id, `x${id}`, `x${id}z`, 2)));
    leadAndWarm(d, 0, [report(meta1), ...missing]);
    expect(d.issued).toHaveLength(5);
    const kept = decisions(d.actor);
    expect(kept.map((x) => x.op.id)).toEqual([
      'updateDirectory:5@2',
      'updateDirectory:6@2',
      'updateDirectory:7@2',
    ]);
    expect(kept[2]).toEqual({
      atMs: 2000,
      op: d.issued[4],
      reason: 'range 7 (generation 2, leader on n1) is missing from the directory',
    });
  });
});
