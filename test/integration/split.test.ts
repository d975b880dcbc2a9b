// Splits on real processes (DESIGN.md, "Ranges, the directory and splits"; docs/ranges.md):
// one 3-node cluster for the file (nodes compact their logs past 100 entries, so a
// lagging replica needs a snapshot); each test works in its own key prefix (zz-, sp1-,
// sp2-, ...) and the ranges it makes stay for the next tests.
//
//   - the right-hand range of a split is led at once by the parent's leader's node;
//   - 9 splits under 8 writers and a get/set/cas/del history load (each history key ends
//     in a range of its own): no acknowledged write is lost, the history is
//     linearizable, every node reports the same ranges, they tile the keyspace, and the
//     meta directory catches up with them;
//   - kill -9 of a follower, then of the leader, of the range being split, under write
//     load: the cluster converges (same ranges everywhere, a leader for each), nothing
//     acknowledged is lost, both sides take writes;
//   - a follower down through splits and compaction catches up by snapshots (and learns
//     the new ranges from its peers), then holds every write when another node dies;
//   - clients whose range cache is stale (range 1 for every key; a range that split since)
//     reach the right ranges and learn them; raw requests on `<p>.kv` for keys in every
//     range are answered correctly by whichever node takes them;
//   - 2,000 keys over 100 ranges: scans during the 99 splits, then scanAll, scan pages
//     crossing range boundaries and `rasputin scan` return every key once, in order, and
//     never a system key; the directory lists all the ranges;
//   - `rasputin split` and `rasputin ranges`.
//
// RASPUTIN_KEEP_LOGS=1 keeps the nodes' logs in a temp dir (printed at the end).

import { randomBytes } from 'node:crypto';
import { copyFile, mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { NodeStatus, RangeStatus } from '../../src/cli/status.ts';
import { showKey } from '../../src/cli/status.ts';
import type { Client, ScanEntry } from '../../src/client/index.ts';
import { decode, encode, frameRequest, type WireResult } from '../../src/protocol/wire.ts';
import { isSystemKey } from '../../src/storage/descriptor.ts';
import { type Cluster, runRasputin } from './harness.ts';
import {
  clusterStartMsMax,
  connectClient,
  getEventually,
  lostWrites,
  nodeLogs,
  nowMs,
  sleep,
  startServingCluster,
  startWriteLoad,
  statsSum,
  statusOf,
} from './helpers.ts';
import {
  checkHistory,
  countType,
  describeLoad,
  dropSavedHistory,
  finalReads,
  ns,
  saveHistory,
  startHistoryLoad,
} from './history-load.ts';

const writerCount = 8;
const historyClientCount = 4;
/** Bound of every wait for the nodes to agree on the ranges. */
const convergeMsMax = 20_000;
/** The right-hand side of a split serves this soon (its leader campaigns at once). */
const rightSideServedMsMax = 500;
/** kill -9 this long after a split request was sent: while the split is in flight. */
const killAfterSendMs = 2;
/** Log entries a range keeps before compacting (the nodes' --log-entries-max). */
const logEntriesMax = 100;
/** Writes per side of a split while a follower is down: enough to compact past the split. */
const compactionWrites = 3 * logEntriesMax;
/** Bound of the scans run while 99 splits happen. */
const scansDuringSplitsMax = 200;

let cluster: Cluster;
/** Writers of startWriteLoad. */
const writers: Client[] = [];
/** Clients of the history load. */
const historyClients: Client[] = [];
/** Splits and setup writes. */
let admin: Client;
/** Reads things back. */
let reader: Client;
/** Connected before any split, and used once then: it routes every key to range 1. */
let unsplitClient: Client;
let raw: NatsConnection;

beforeAll(async () => {
  cluster = await startServingCluster({
    nodes: 3,
    extraArgs: ['--log-entries-max', String(logEntriesMax)],
  });
  for (let i = 0; i < writerCount; i++) writers.push(await connectClient(cluster.natsUrl));
  for (let i = 0; i < historyClientCount; i++) {
    historyClients.push(await connectClient(cluster.natsUrl, 3000));
  }
  admin = await connectClient(cluster.natsUrl, 10_000);
  reader = await connectClient(cluster.natsUrl, 10_000);
  unsplitClient = await connectClient(cluster.natsUrl, 10_000);
  expect(await unsplitClient.get('sp3-before-any-split')).toBeNull();
  raw = await connect({ servers: cluster.natsUrl, name: 'rasputin-it-split-raw' });
}, clusterStartMsMax);

// A test that failed with a node down leaves it running again for the next ones.
afterEach(async () => {
  for (const id of cluster?.nodeIds ?? []) {
    if (!cluster.node(id).running()) await cluster.startNode(id);
  }
}, 60_000);

afterAll(async () => {
  // The cluster's temp dir, logs included, goes with the cluster.
  if (process.env.RASPUTIN_KEEP_LOGS && cluster) {
    const dir = await mkdtemp(join(tmpdir(), 'rasputin-split-logs-'));
    for (const id of cluster.nodeIds) {
      await copyFile(join(cluster.baseDir, `${id}.log`), join(dir, `${id}.log`)).catch(() => {});
    }
    console.log(`split: node logs kept in ${dir}`);
  }
  await raw?.close();
  const all = [...writers, ...historyClients, admin, reader, unsplitClient];
  await Promise.all(all.filter((c) => c !== undefined).map((c) => c.close()));
  await cluster?.stop();
});

// -------------------------------------------------------------------- ranges as nodes see them

/** A range as the tests compare it: id, span (hex; end null = no end) and generation. */
interface Span {
  rangeId: number;
  start: string;
  end: string | null;
  generation: number;
}

const hex = (k: Uint8Array | string) => Buffer.from(k).toString('hex');

function spanOf(r: Pick<RangeStatus, 'rangeId' | 'start' | 'end' | 'generation'>): Span {
  return {
    rangeId: r.rangeId,
    start: hex(r.start ?? new Uint8Array(0)),
    end: r.end === null || r.end === undefined ? null : hex(r.end),
    generation: r.generation ?? -1,
  };
}

function byStart(a: { start: string }, b: { start: string }): number {
  return Buffer.compare(Buffer.from(a.start, 'hex'), Buffer.from(b.start, 'hex'));
}

/** A key for messages: text when printable, else hex. */
function showHexKey(h: string | null): string {
  if (h === null) return '∞';
  const b = Buffer.from(h, 'hex');
  return /^[\x20-\x7e]*$/.test(b.toString('latin1')) ? JSON.stringify(b.toString('latin1')) : h;
}

function showSpans(spans: readonly Span[]): string {
  return spans
    .map((s) => `${s.rangeId}[${showHexKey(s.start)},${showHexKey(s.end)})g${s.generation}`)
    .join(' ');
}

/** Why these spans (sorted by start) do not tile the keyspace, or undefined when they do. */
function tilingProblem(spans: readonly Span[]): string | undefined {
  if (spans.length === 0) return 'no ranges';
  if (spans[0]!.start !== '') return `the first range starts at ${showHexKey(spans[0]!.start)}`;
  for (let i = 0; i < spans.length; i++) {
    const s = spans[i]!;
    if (s.end !== null && byStart({ start: s.start }, { start: s.end }) >= 0) {
      return `range ${s.rangeId} is empty or reversed`;
    }
    const next = spans[i + 1];
    if (next === undefined) {
      if (s.end !== null) return `the last range ${s.rangeId} ends at ${showHexKey(s.end)}`;
    } else if (s.end !== next.start) {
      return `range ${s.rangeId} ends at ${showHexKey(s.end)}, range ${next.rangeId} starts at ${showHexKey(next.start)}`;
    }
  }
  if (new Set(spans.map((s) => s.rangeId)).size !== spans.length) return 'a range id twice';
  return undefined;
}

/** The range whose span holds `key`. */
function spanHolding(spans: readonly Span[], key: string | Uint8Array): Span | undefined {
  const k = Buffer.from(key);
  return spans.find(
    (s) =>
      Buffer.compare(k, Buffer.from(s.start, 'hex')) >= 0 &&
      (s.end === null || Buffer.compare(k, Buffer.from(s.end, 'hex')) < 0),
  );
}

interface Converged {
  spans: Span[];
  /** Range id -> the node that leads it. */
  leaders: Map<number, string>;
  status: NodeStatus[];
}

/**
 * Why the status does not show a converged cluster, or undefined: every node answered,
 * each reports the same ranges (ids, spans, generations), all initialized (applied > 0),
 * tiling the keyspace, and each range has exactly one node that says it leads it.
 */
function convergenceProblem(status: readonly NodeStatus[], nodeIds: readonly string[]) {
  const answered = status.map((n) => n.node);
  if (!nodeIds.every((id) => answered.includes(id))) {
    return { why: `only ${answered.join(',')} answered` };
  }
  let reference: Span[] | undefined;
  for (const n of status) {
    const uninitialized = n.ranges.filter((r) => r.applied === 0).map((r) => r.rangeId);
    if (uninitialized.length > 0) {
      return { why: `node ${n.node}: ranges ${uninitialized.join(',')} not initialized` };
    }
    const spans = n.ranges.map(spanOf).sort(byStart);
    if (reference === undefined) {
      reference = spans;
      const problem = tilingProblem(spans);
      if (problem) return { why: `node ${n.node}: ${problem}: ${showSpans(spans)}` };
    } else if (JSON.stringify(spans) !== JSON.stringify(reference)) {
      return {
        why:
          `node ${n.node} reports ${showSpans(spans)}\n` +
          `  node ${status[0]!.node} reports ${showSpans(reference)}`,
      };
    }
  }
  const leaders = new Map<number, string>();
  for (const s of reference!) {
    const leading = status.filter((n) =>
      n.ranges.some((r) => r.rangeId === s.rangeId && r.role === 'leader'),
    );
    if (leading.length !== 1) {
      return {
        why: `range ${s.rangeId}: ${leading.length} leaders (${leading.map((n) => n.node).join(',')})`,
      };
    }
    leaders.set(s.rangeId, leading[0]!.node);
  }
  return { spans: reference!, leaders };
}

/** Waits until every node agrees on the ranges and each has one leader (two looks in a row). */
async function waitForConverged(what: string, timeoutMs = convergeMsMax): Promise<Converged> {
  const deadline = nowMs() + timeoutMs;
  let why = '';
  let previous = '';
  for (let look = 0; look < 1000 && nowMs() < deadline; look++) {
    const status = await statusOf(cluster.natsUrl);
    const c = convergenceProblem(status, cluster.nodeIds);
    if ('why' in c) {
      why = c.why ?? '';
      previous = '';
    } else {
      const now = JSON.stringify(c.spans);
      if (now === previous) return { spans: c.spans, leaders: c.leaders, status };
      previous = now;
    }
    await sleep(150);
  }
  throw new Error(
    `${what}: the nodes did not converge in ${timeoutMs} ms: ${why}\n${nodeLogs(cluster)}`,
  );
}

/** The meta directory as a client reads it, in the same form. */
async function directorySpans(c: Client): Promise<Span[]> {
  return (await c.ranges()).map((d) => ({
    rangeId: d.rangeId,
    start: hex(d.start),
    end: d.end === null ? null : hex(d.end),
    generation: d.generation,
  }));
}

/** Waits until client.ranges() (the meta directory) shows exactly `spans`. */
async function waitForDirectory(c: Client, spans: readonly Span[], timeoutMs = 10_000) {
  const deadline = nowMs() + timeoutMs;
  const want = JSON.stringify(spans);
  let last: Span[] = [];
  let lastError = '';
  for (let look = 0; look < 1000 && nowMs() < deadline; look++) {
    try {
      last = await directorySpans(c);
      if (JSON.stringify(last) === want) return;
    } catch (err) {
      lastError = String(err);
    }
    await sleep(200);
  }
  throw new Error(
    `the directory does not show the ranges after ${timeoutMs} ms ${lastError}\n` +
      `  directory: ${showSpans(last)}\n  nodes:     ${showSpans(spans)}`,
  );
}

/** One raw request on `<p>.kv` with these encoded ops; the results. */
async function rawKv(ops: Uint8Array[]): Promise<WireResult[]> {
  const msg = await raw.request('rasputin.kv', frameRequest(ops), { timeout: 5000 });
  const reply = decode(msg.data) as { res?: WireResult[]; code?: string; msg?: string };
  if (!Array.isArray(reply.res)) throw new Error(`request refused: ${reply.code} ${reply.msg}`);
  expect(reply.res).toHaveLength(ops.length);
  return reply.res;
}

/** A timeline of what a test did, printed at its end. */
function timeline() {
  const started = nowMs();
  const lines: string[] = [];
  return {
    lines,
    note(what: string) {
      lines.push(`${(nowMs() - started).toFixed(0).padStart(6)} ms: ${what}`);
    },
  };
}

// -------------------------------------------------------------------- tests

describe('splits', () => {
  it('the right-hand range is led at once by the node that led the range it split from', async () => {
    const before = await waitForConverged('before the split');
    const key = 'zz-right';
    const parent = spanHolding(before.spans, key)!;
    const parentLeader = before.leaders.get(parent.rangeId)!;
    const ds = await admin.split(key);
    const splitDoneMs = nowMs();
    expect(ds).toHaveLength(2);
    const right = ds[1]!;
    // The first write to the right-hand side, sent as soon as the split answered.
    await admin.set(`${key}-1`, 'v1', { timeoutMs: 10_000 });
    const servedMs = nowMs() - splitDoneMs;
    const after = await waitForConverged('after the split');
    const rightLeader = after.leaders.get(right.rangeId);
    console.log(
      `split: range ${right.rangeId} split off range ${parent.rangeId} (led by ` +
        `${parentLeader}); the first write on its side was acknowledged ` +
        `${servedMs.toFixed(0)} ms after the split answered; it is led by ${rightLeader}`,
    );
    // DESIGN.md: the right-hand replica on the left-hand leader's node campaigns at once;
    // the others wait out the parent's lease (~0.9 s) first.
    expect(servedMs).toBeLessThan(rightSideServedMsMax);
    expect(rightLeader).toBe(parentLeader);
    expect(await getEventually(reader, `${key}-1`)).toBe('v1');
  });

  it('splits under 8 writers and a history load: nothing lost, linearizable, nodes agree', async () => {
    const splitGapMs = 800;
    const afterLastSplitMs = 2500;
    const t = timeline();
    // Writers' keys sp1-<w>-<n> (w 0..7) and history keys sp1-<i>h (i 0..9) interleave;
    // every split key sp1-<i> falls between them, so each split cuts through both loads.
    const historyKeys = Array.from({ length: 10 }, (_, i) => `sp1-${i}h`);
    // The first splits range 1 (the meta range), the next ones the ranges it made; in the
    // end each history key has a range of its own.
    const splitKeys = [
      'sp1-4',
      'sp1-2',
      'sp1-6',
      'sp1-8',
      'sp1-1',
      'sp1-3',
      'sp1-5',
      'sp1-7',
      'sp1-9',
    ];
    const before = await waitForConverged('before the splits');
    const writes = startWriteLoad(writers, {
      prefix: 'sp1',
      perWriterMax: 2000,
      pauseMs: 10,
      timeoutMs: 5000,
      loadMsMax: 15_000,
    });
    const load = startHistoryLoad(historyClients, {
      keys: historyKeys,
      opsPerKeyMax: 400,
      loadMs: 15_000,
      pauseMsMin: 10,
      pauseMsMax: 40,
    });
    const splits: { key: string; startedMs: number; doneMs: number; doneNs: number }[] = [];
    try {
      for (const key of splitKeys) {
        await sleep(splitGapMs);
        const startedMs = nowMs();
        const ds = await admin.split(key);
        const doneMs = nowMs();
        splits.push({ key, startedMs, doneMs, doneNs: ns() });
        t.note(
          `split at ${key} in ${(doneMs - startedMs).toFixed(0)} ms: ` + showSpans(ds.map(spanOf)),
        );
        expect(ds).toHaveLength(2);
        const [left, right] = ds as [(typeof ds)[0], (typeof ds)[0]];
        expect(hex(left.end!)).toBe(hex(key));
        expect(hex(right.start)).toBe(hex(key));
        expect(right.generation).toBe(left.generation);
        expect(right.rangeId).not.toBe(left.rangeId);
      }
      // Long enough for the right-hand sides of the last split to elect and serve.
      await sleep(afterLastSplitMs);
    } finally {
      await Promise.all([writes.stop(), load.stop()]);
      t.note(`loads stopped: ${writes.writes.length} writes, ${load.history.length} history ops`);
    }
    const lastSplit = splits[splits.length - 1]!;

    const acked = writes.writes.filter((w) => w.outcome === 'ok');
    const unknown = writes.writes.filter((w) => w.outcome === 'unknown');
    t.note(
      `${acked.length} writes acknowledged, ${unknown.length} unknown ` +
        `(${[...new Set(unknown.map((w) => w.error))].join(',') || 'none'})`,
    );
    // The load ran through every split: writes in flight around it (within splitSlackMs:
    // a split can take a few ms, shorter than the writers' pauses between writes).
    const splitSlackMs = 50;
    for (const s of splits) {
      const around = writes.writes.filter(
        (w) => w.invokedMs < s.doneMs + splitSlackMs && w.completedMs > s.startedMs - splitSlackMs,
      );
      expect(around.length, `writes in flight around the split at ${s.key}`).toBeGreaterThan(0);
      // ...and writes acknowledged after it, which reached the new spans.
      expect(writes.writes.some((w) => w.outcome === 'ok' && w.invokedMs > s.doneMs)).toBe(true);
    }
    const lost = await lostWrites(reader, writes.writes);
    t.note(`read back every write: ${lost.length} lost`);
    expect(lost).toEqual([]);

    const history = load.history;
    await finalReads(reader, historyKeys, history);
    const { file, reread } = await saveHistory('split', history);
    expect(reread).toEqual(history);
    console.log(`split: history ${file}\n  ${describeLoad(load)}\n  ${t.lines.join('\n  ')}`);
    const result = checkHistory('split', history);
    expect(result.violations).toEqual([]);
    expect(result.inconclusive).toEqual([]);
    expect(result.ok).toBe(true);
    // A client reroutes after RangeKeyMismatch and NotLeader; neither reaches the caller.
    expect(load.errors.get('RangeKeyMismatch') ?? 0).toBe(0);
    expect(load.errors.get('NotLeader') ?? 0).toBe(0);
    expect(countType(history, 'ok')).toBeGreaterThan(100);
    // Every history key was served after the last split.
    for (const key of historyKeys) {
      const after = history.filter(
        (op) =>
          op.key === key &&
          op.type === 'ok' &&
          op.process !== 10_000 &&
          op.invoke > lastSplit.doneNs,
      );
      expect(after.length, `ok ops on ${key}`).toBeGreaterThan(0);
    }
    expect(acked.filter((w) => w.invokedMs > lastSplit.doneMs).length).toBeGreaterThan(writerCount);

    const converged = await waitForConverged('after the splits');
    const starts = converged.spans.map((s) => s.start);
    for (const key of splitKeys) expect(starts).toContain(hex(key));
    expect(converged.spans.length).toBe(before.spans.length + splitKeys.length);
    expect(tilingProblem(converged.spans)).toBeUndefined();
    await waitForDirectory(reader, converged.spans);
    const sum = (k: string) => statsSum(converged.status, k);
    console.log(
      `split: ranges ${showSpans(converged.spans)}; sets answered at commit ` +
        `${sum('setsAnsweredAtCommit')}, left to their apply by a split ${sum('setsHeldForSpan')}`,
    );
    await dropSavedHistory(file);
  });

  it('kill -9 of a follower, then of the leader, of a range being split: it converges, nothing is lost', async () => {
    const t = timeline();
    const load = startWriteLoad(writers, {
      prefix: 'sp2',
      perWriterMax: 2000,
      pauseMs: 10,
      timeoutMs: 8000,
      loadMsMax: 45_000,
    });
    const rounds = [
      { victim: 'follower', key: 'sp2-3', leftKey: 'sp2-2z' },
      { victim: 'leader', key: 'sp2-6', leftKey: 'sp2-5z' },
    ] as const;
    try {
      await sleep(500);
      for (const round of rounds) {
        const before = await waitForConverged(`before the split at ${round.key}`);
        const parent = spanHolding(before.spans, round.key)!;
        const leader = before.leaders.get(parent.rangeId)!;
        const victim =
          round.victim === 'leader' ? leader : cluster.nodeIds.find((id) => id !== leader)!;
        const victimProcess = cluster.node(victim);
        const startedMs = nowMs();
        const requestsBefore = admin.stats.requests;
        const splitting = admin.split(round.key, { timeoutMs: 20_000 }).then(
          (ds) => ({ ds, error: undefined, answeredMs: nowMs() }),
          (err: unknown) => ({ ds: undefined, error: err, answeredMs: nowMs() }),
        );
        // Once the request is out (the client sends at the end of the event-loop turn).
        for (let i = 0; i < 100 && admin.stats.requests === requestsBefore; i++) {
          await new Promise((resolve) => setImmediate(resolve));
        }
        await sleep(killAfterSendMs);
        const killedMs = nowMs();
        await cluster.stopNode(victim, 'SIGKILL');
        const appliedThere = victimProcess.output.some((l) =>
          l.includes(`range ${parent.rangeId} split:`),
        );
        const outcome = await splitting;
        t.note(
          `split of range ${parent.rangeId} (leader ${leader}) at ${round.key}; kill -9 of the ` +
            `${round.victim} ${victim} ${(killedMs - startedMs).toFixed(0)} ms later ` +
            `(it had ${appliedThere ? '' : 'not '}applied the split); the split answered after ` +
            `${(outcome.answeredMs - startedMs).toFixed(0)} ms: ` +
            (outcome.ds ? showSpans(outcome.ds.map(spanOf)) : String(outcome.error)),
        );
        // The client retries the split until it is done (or a range already starts there).
        expect(outcome.error).toBeUndefined();
        await sleep(500);
        const back = await cluster.startNode(victim);
        t.note(`restarted ${victim} (pid ${back.pid})`);
        const after = await waitForConverged(`after the kill during the split at ${round.key}`);
        t.note(`converged: ${after.spans.length} ranges`);
        expect(after.spans.map((s) => s.start)).toContain(hex(round.key));
        const right = spanHolding(after.spans, round.key)!;
        const left = spanHolding(after.spans, round.leftKey)!;
        expect(left.end).toBe(hex(round.key));
        expect(right.generation).toBe(left.generation);
      }
      await sleep(1000);
    } finally {
      await load.stop();
      console.log(`split: kill -9 during splits\n  ${t.lines.join('\n  ')}`);
    }
    const acked = load.writes.filter((w) => w.outcome === 'ok');
    const unknown = load.writes.filter((w) => w.outcome === 'unknown');
    console.log(
      `split: ${load.writes.length} writes, ${acked.length} acknowledged, ${unknown.length} ` +
        `unknown (${[...new Set(unknown.map((w) => w.error))].join(',') || 'none'})`,
    );
    expect(acked.length).toBeGreaterThan(writerCount * 10);
    expect(await lostWrites(reader, load.writes)).toEqual([]);
    // Both sides of each split take writes, through a client that knew neither.
    const fresh = await connectClient(cluster.natsUrl, 10_000);
    try {
      for (const key of ['sp2-2z', 'sp2-3a', 'sp2-5z', 'sp2-6a']) {
        await fresh.set(key, `after-${key}`);
        expect(await getEventually(reader, key)).toBe(`after-${key}`);
      }
    } finally {
      await fresh.close();
    }
  });

  it('a follower down through splits and log compaction catches up by snapshots', async () => {
    const t = timeline();
    const before = await waitForConverged('before the follower goes down');
    const splitKeys = ['sp2-1', 'sp2-7'];
    const parents = splitKeys.map((k) => spanHolding(before.spans, k)!);
    const parentLeaders = new Set(parents.map((p) => before.leaders.get(p.rangeId)!));
    const victim = cluster.nodeIds.find((id) => !parentLeaders.has(id))!;
    await cluster.stopNode(victim, 'SIGKILL');
    t.note(
      `kill -9 of ${victim} (parents ${parents.map((p) => p.rangeId).join(',')} led by ${[...parentLeaders].join(',')})`,
    );
    // A split retried by the client after its first attempt applied answers with the one
    // range that starts at the key: either answer will do, the ranges are checked below.
    for (const k of splitKeys) await admin.split(k, { timeoutMs: 15_000 });
    // More entries than --log-entries-max on both sides of both splits: the leaders
    // compact their logs past the split entries, so only snapshots can catch it up.
    const burst: string[] = [];
    for (const side of ['sp2-0x', 'sp2-1x', 'sp2-6x', 'sp2-7x']) {
      for (let i = 0; i < compactionWrites; i++) burst.push(`${side}-${i}`);
    }
    for (let i = 0; i < burst.length; i += 200) {
      await Promise.all(burst.slice(i, i + 200).map((k) => admin.set(k, `b:${k}`)));
    }
    t.note(`2 splits and ${burst.length} writes while ${victim} was down`);
    const back = await cluster.startNode(victim);
    const after = await waitForConverged(`after ${victim} came back`);
    t.note(`${victim} restarted (pid ${back.pid}); converged: ${after.spans.length} ranges`);
    for (const k of splitKeys) expect(after.spans.map((s) => s.start)).toContain(hex(k));
    const snapshotLines = back.output.filter((l) => /snapshot/i.test(l));
    t.note(`${victim} log on snapshots:\n    ${snapshotLines.join('\n    ') || '(none)'}`);

    // The two nodes that were up all along lose one of theirs: the caught-up node is now
    // half of every quorum, and every write must still be there.
    const rights = splitKeys.map((k) => spanHolding(after.spans, k)!);
    const other = after.leaders.get(rights[0]!.rangeId)!;
    expect(other).not.toBe(victim);
    await cluster.stopNode(other, 'SIGKILL');
    t.note(`kill -9 of ${other}, the leader of range ${rights[0]!.rangeId}`);
    try {
      const got = await Promise.all(burst.map((k) => getEventually(reader, k)));
      const wrong = burst.filter((k, i) => got[i] !== `b:${k}`);
      expect(wrong, `writes read back wrong with ${other} down`).toEqual([]);
      t.note(`read back ${burst.length} writes with ${other} down`);
    } finally {
      await cluster.startNode(other);
      console.log(`split: follower down through splits\n  ${t.lines.join('\n  ')}`);
    }
    await waitForConverged(`after ${other} came back`);
  });

  it('clients with a stale range cache reach the right ranges and learn them', async () => {
    // Used once before any split: it still routes every key to range 1.
    expect(unsplitClient.cachedRanges().map(spanOf)).toEqual([
      { rangeId: 1, start: '', end: null, generation: 0 },
    ]);
    const keys = ['sp3-a1', 'sp3-b1', 'sp3-c1', 'sp3-d1'];
    const later = (k: string) => `${k.slice(0, -1)}2`;
    for (const k of keys) await admin.set(k, `${k}-v1`);
    // This one learns the range of the sp3 keys as it is now.
    const staleClient = await connectClient(cluster.natsUrl, 10_000);
    try {
      expect((await staleClient.get('sp3-a1'))?.value.toString()).toBe('sp3-a1-v1');
      const learned = staleClient.cachedRanges().find((r) => spanHolding([spanOf(r)], 'sp3-d1'));
      expect(learned).toBeDefined();

      for (const k of ['sp3-b', 'sp3-c', 'sp3-d']) await admin.split(k);
      for (const k of keys) await admin.set(later(k), `${later(k)}-v2`);
      const converged = await waitForConverged('after the sp3 splits');
      const rangesOfKeys = keys.map((k) => spanHolding(converged.spans, k)!);
      expect(new Set(rangesOfKeys.map((s) => s.rangeId)).size).toBe(keys.length);
      // The cache of staleClient names the range of sp3-d1 at an older generation.
      expect(learned!.generation).toBeLessThan(rangesOfKeys[3]!.generation);

      const clients = [
        ['unsplit', unsplitClient],
        ['stale', staleClient],
      ] as const;
      for (const [name, c] of clients) {
        for (const k of keys) {
          expect((await c.get(k))?.value.toString(), `${name} get ${k}`).toBe(`${k}-v1`);
          expect((await c.get(later(k)))?.value.toString()).toBe(`${later(k)}-v2`);
          await c.set(`${k}-${name}`, name);
          expect(await getEventually(reader, `${k}-${name}`)).toBe(name);
          const cas = await c.cas(`${k}-${name}`, name, `${name}-2`);
          expect(cas.success).toBe(true);
        }
        // It has learned each range it used, as the nodes report it.
        const cached = c.cachedRanges().map(spanOf);
        for (const want of rangesOfKeys) expect(cached, name).toContainEqual(want);
      }

      // Raw requests on `<p>.kv` (docs/protocol.md): one batch with ops for every range,
      // taken by any node, which serves or forwards each op by its key.
      const probes: string[] = [];
      for (const s of converged.spans) {
        const start = Buffer.from(s.start, 'hex').toString('latin1');
        const k = start === '' ? 'raw' : `${start}~raw`;
        if (spanHolding(converged.spans, k)?.rangeId === s.rangeId) probes.push(k);
      }
      expect(probes.length).toBeGreaterThanOrEqual(converged.spans.length - 1);
      const sets = probes.map((k) =>
        encode({
          op: 'set',
          key: Buffer.from(k),
          value: Buffer.from(`raw:${k}`),
          id: randomBytes(16),
        }),
      );
      const setReply = await rawKv(sets);
      expect(setReply.map((r) => r.ok)).toEqual(probes.map(() => true));
      const gets = probes.flatMap((k) => [
        encode({ op: 'get', key: Buffer.from(k) }),
        encode({ op: 'get', key: Buffer.from(`${k}-missing`) }),
      ]);
      const want = probes.flatMap((k) => [`raw:${k}`, null]);
      // Several times, so that different nodes of the queue group take it.
      for (let i = 0; i < 6; i++) {
        const res = await rawKv(gets);
        expect(
          res.map((r) => (r.ok ? (r.value ? Buffer.from(r.value).toString() : null) : r.code)),
        ).toEqual(want);
      }
      for (const k of probes) expect(await getEventually(reader, k)).toBe(`raw:${k}`);
    } finally {
      await staleClient.close();
    }
  });

  it('scans over 100 ranges return every key once, in order, and never a system key', async () => {
    const t = timeline();
    const keyCount = 2000;
    const rangeCount = 100;
    // Keys of assorted lengths, not written in key order.
    const keys = Array.from(
      { length: keyCount },
      (_, i) => `sp4/${((i * 7919) % 100_000).toString(36)}`,
    );
    const sortedKeys = [...keys].sort((a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b)));
    expect(new Set(keys).size).toBe(keyCount);
    const valueFor = (k: string) => `v:${k}`;
    for (let i = 0; i < keyCount; i += 250) {
      await Promise.all(keys.slice(i, i + 250).map((k) => admin.set(k, valueFor(k))));
    }
    t.note(`wrote ${keyCount} keys`);
    // 99 split keys, one every 20 keys: at a key, or just after the key before it.
    const per = keyCount / rangeCount;
    const splitKeys: string[] = [];
    for (let j = 1; j < rangeCount; j++) {
      splitKeys.push(j % 2 === 1 ? sortedKeys[j * per]! : `${sortedKeys[j * per - 1]}\u0000`);
    }
    const expected = sortedKeys.map((k) => [k, valueFor(k)]);
    const pairs = (entries: readonly ScanEntry[]) =>
      entries.map((e) => [e.key.toString('latin1'), e.value.toString('latin1')]);
    // Scans while the ranges split under them (the keys do not change meanwhile).
    let splitting = true;
    const scansDuring = (async () => {
      let scans = 0;
      for (; scans < scansDuringSplitsMax && splitting; scans++) {
        const got: ScanEntry[] = [];
        for await (const e of reader.scanAll('sp4/', 'sp40', { pageSize: 50 })) got.push(e);
        expect(pairs(got), `scan ${scans} during the splits`).toEqual(expected);
      }
      return scans;
    })();
    // From the last to the first: each split cuts the range that keeps its leader.
    try {
      for (const k of [...splitKeys].reverse()) {
        const ds = await admin.split(k, { timeoutMs: 15_000 });
        expect(hex(ds.at(-1)!.start)).toBe(hex(k));
      }
    } finally {
      splitting = false;
    }
    const scanCount = await scansDuring;
    t.note(`${splitKeys.length} splits, ${scanCount} full scans meanwhile`);
    expect(scanCount).toBeGreaterThan(0);
    const converged = await waitForConverged('after 99 splits', 30_000);
    t.note(`converged: ${converged.spans.length} ranges`);
    const starts = converged.spans.map((s) => s.start);
    for (const k of splitKeys) expect(starts).toContain(hex(k));
    const holding = new Set(sortedKeys.map((k) => spanHolding(converged.spans, k)!.rangeId));
    expect(holding.size).toBe(rangeCount);
    await waitForDirectory(admin, converged.spans, 15_000);
    t.note('the directory shows them all');

    const scanner = await connectClient(cluster.natsUrl, 10_000);
    try {
      // The whole keyspace, by a client that knows no range yet.
      const all: ScanEntry[] = [];
      for await (const e of scanner.scanAll('')) all.push(e);
      t.note(`scanAll(''): ${all.length} entries`);
      for (let i = 1; i < all.length; i++) {
        expect(Buffer.compare(all[i - 1]!.key, all[i]!.key), `order at ${i}`).toBeLessThan(0);
      }
      expect(all.filter((e) => isSystemKey(e.key)).map((e) => e.key.toString('hex'))).toEqual([]);
      expect(pairs(all.filter((e) => e.key.toString('latin1').startsWith('sp4/')))).toEqual(
        expected,
      );

      const small: ScanEntry[] = [];
      for await (const e of scanner.scanAll('sp4/', 'sp40', { pageSize: 13 })) small.push(e);
      expect(pairs(small)).toEqual(expected);

      const whole = await scanner.scan('sp4/', 'sp40', { limit: 5000 });
      expect(whole.next).toBeUndefined();
      expect(pairs(whole.entries)).toEqual(expected);

      // Pages of 37 entries: most cross a range boundary.
      const pages: ScanEntry[][] = [];
      let from: string | Uint8Array = 'sp4/';
      for (let i = 0; i < 1000; i++) {
        const r = await admin.scan(from, 'sp40', { limit: 37 });
        pages.push(r.entries);
        if (r.next === undefined) break;
        expect(r.entries).toHaveLength(37);
        from = r.next;
      }
      expect(pairs(pages.flat())).toEqual(expected);
      const crossing = pages.filter(
        (p) =>
          p.length > 0 &&
          spanHolding(converged.spans, p[0]!.key) !== spanHolding(converged.spans, p.at(-1)!.key),
      );
      expect(crossing.length).toBeGreaterThan(pages.length / 2);

      // From the start of the keyspace (range 1 holds the system keys): none of them.
      const head = await scanner.scan('', null, { limit: 5 });
      expect(head.entries.filter((e) => isSystemKey(e.key))).toEqual([]);
      expect(head.entries).toHaveLength(5);
      t.note(`scans done: ${pages.length} pages of 37, ${crossing.length} crossing a range end`);
    } finally {
      await scanner.close();
    }

    // `rasputin scan` over 20 ranges.
    const from = sortedKeys[500]!;
    const to = sortedKeys[900]!;
    const cli = await runRasputin(
      ['scan', from, to, '--limit', '1000', '--nats', cluster.natsUrl],
      {
        timeoutMs: 30_000,
      },
    );
    expect(cli.code, cli.stderr).toBe(0);
    expect(cli.stdout.split('\n').filter((l) => l !== '')).toEqual(
      sortedKeys.slice(500, 900).map((k) => `${k}\t${valueFor(k)}`),
    );
    console.log(`split: 100 ranges\n  ${t.lines.join('\n  ')}`);
  });

  it('rasputin split KEY prints both ranges; rasputin ranges lists them in key order', async () => {
    const cli = (args: string[]) =>
      runRasputin([...args, '--nats', cluster.natsUrl], { timeoutMs: 30_000 });
    const shown = (h: string | null, none: string) =>
      h === null ? none : showKey(Buffer.from(h, 'hex'), none);
    const before = await waitForConverged('before the CLI split');
    const parent = spanHolding(before.spans, 'sp5-m')!;
    const first = await cli(['split', 'sp5-m']);
    expect(first.code, first.stderr).toBe(0);
    const m =
      /^OK range (\d+) \[(\S+), sp5-m\) and range (\d+) \[sp5-m, (\S+)\), generation (\d+)$/.exec(
        first.stdout.trim(),
      );
    expect(m, first.stdout).not.toBeNull();
    const [, leftId, leftStart, rightId, rightEnd, generation] = m!;
    expect(Number(leftId)).toBe(parent.rangeId);
    expect(leftStart).toBe(shown(parent.start, "''"));
    expect(rightEnd).toBe(shown(parent.end, '(end)'));
    expect(Number(generation)).toBe(parent.generation + 1);

    const again = await cli(['split', 'sp5-m']);
    expect(again.code, again.stderr).toBe(0);
    expect(again.stdout.trim()).toBe(
      `OK range ${rightId} [sp5-m, ${rightEnd}) already starts there (generation ${generation})`,
    );

    const converged = await waitForConverged('after the CLI split');
    const list = await cli(['ranges']);
    expect(list.code, list.stderr).toBe(0);
    const [header, ...lines] = list.stdout.split('\n').filter((l) => l.trim() !== '');
    expect(header).toMatch(/^\s*range\s+start\s+end\s+gen\s+leader/);
    const rows = lines.map((l) => l.trim().split(/\s+/));
    expect(rows.map((r) => Number(r[0]))).toEqual(converged.spans.map((s) => s.rangeId));
    expect(rows.map((r) => r[1])).toEqual(converged.spans.map((s) => shown(s.start, '?')));
    expect(rows.map((r) => r[2])).toEqual(converged.spans.map((s) => shown(s.end, '(end)')));
    expect(rows.map((r) => Number(r[3]))).toEqual(converged.spans.map((s) => s.generation));
    expect(rows.map((r) => r[4])).toEqual(
      converged.spans.map((s) => converged.leaders.get(s.rangeId)),
    );
    const byId = new Map(rows.map((r) => [r[0], r]));
    expect(byId.get(leftId!)?.[2]).toBe('sp5-m');
    expect(byId.get(rightId!)?.slice(1, 4)).toEqual(['sp5-m', rightEnd, generation]);
  });
});
