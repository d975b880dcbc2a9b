// Subscribe on real processes (docs/streams.md): one 3-node cluster for the file, with a
// small history window (--events-retain) and a small bound on held polls per node
// (--events-polls-max); each test works under its own key prefix.
//
//   - from now: only later writes; set, a successful cas and a del of an existing key
//     each arrive once with their prevValue; a failed cas, a del of an absent key and keys
//     outside the prefix do not; a set too large to carry its prevValue comes without it,
//     flagged;
//   - the checker: writers overwrite keys under a prefix while a range under it splits
//     (inside the prefix, then at its start, so the first range leaves the prefix), the
//     subscriber is restarted from the cursor of the last event it handled, and the
//     leader of the prefix's ranges is killed with SIGKILL (then restarted): every
//     acknowledged write arrives exactly once, each key's events come in revision order
//     with every prevValue the value of the event before (no gap), nothing arrives that
//     was not written, the last event of each key is its value now; a slow subscriber
//     from the same start gets the same streams; a subscription from now spans both
//     sides of the split;
//   - a cursor that fell out of the retained history ends the subscription with
//     CompactedError, saying the oldest revision still available;
//   - past --events-polls-max held polls a node answers Overloaded; held polls end empty
//     after their wait;
//   - `rasputin subscribe PREFIX --from CURSOR --count N`.

import { connect } from '@nats-io/transport-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { NodeStatus } from '../../src/cli/status.ts';
import {
  type Client,
  CompactedError,
  type SubscribeEvent,
  type Subscription,
} from '../../src/client/index.ts';
import { decode, encode, frameRequest } from '../../src/protocol/wire.ts';
import { type Cluster, runRasputin } from './harness.ts';
import {
  clusterStartMsMax,
  connectClient,
  errorCode,
  nodeLogs,
  nowMs,
  sleep,
  startServingCluster,
  statsSum,
  statusOf,
  until,
} from './helpers.ts';

/** Revisions of history each range keeps (the nodes' --events-retain). */
const retainRevisions = 1500;
/** Held polls per node (the nodes' --events-polls-max). */
const pollsHeldMax = 24;
/** The subscribers' long-poll wait: a killed leader delays delivery by about this. */
const waitMs = 1000;

let cluster: Cluster;

/** Pages of events the nodes read for polls, from their events tails and from LMDB. */
async function pages(): Promise<{ tail: number; store: number }> {
  const nodes = await statusOf(cluster.natsUrl);
  return {
    tail: statsSum(nodes, 'eventPagesFromTail'),
    store: statsSum(nodes, 'eventPagesFromStore'),
  };
}
let writer: Client;
let subscriber: Client;
let admin: Client;

beforeAll(async () => {
  cluster = await startServingCluster({
    nodes: 3,
    extraArgs: [
      '--events-retain',
      String(retainRevisions),
      '--events-polls-max',
      String(pollsHeldMax),
    ],
  });
  writer = await connectClient(cluster.natsUrl, 10_000);
  subscriber = await connectClient(cluster.natsUrl, 10_000);
  admin = await connectClient(cluster.natsUrl, 10_000);
}, clusterStartMsMax);

afterAll(async () => {
  await Promise.all(
    [writer, subscriber, admin].filter((c) => c !== undefined).map((c) => c.close()),
  );
  await cluster?.stop();
});

interface Collector {
  /** Every event handled so far, in delivery order. */
  readonly events: SubscribeEvent[];
  /** Resolves when the loop ends: undefined, or the error that ended it. */
  readonly ended: Promise<unknown>;
  /** Ends the subscription and waits for the loop. */
  stop(): Promise<unknown>;
}

/**
 * Runs a subscription's loop in the background, appending its events to `into`; a slow
 * consumer spends `delayMs` on each event.
 */
function collect(sub: Subscription, into: SubscribeEvent[] = [], delayMs = 0): Collector {
  const ended = (async () => {
    for await (const e of sub) {
      into.push(e);
      if (delayMs > 0) await sleep(delayMs);
    }
  })().then(
    () => undefined,
    (err: unknown) => err,
  );
  return {
    events: into,
    ended,
    stop: async () => {
      sub.close();
      return ended;
    },
  };
}

const text = (b: Buffer | null | undefined) =>
  b === null || b === undefined ? null : b.toString();

/** The node that leads the range holding `key`, from the nodes' status. */
function leaderOfKey(status: readonly NodeStatus[], key: string): string | undefined {
  const k = Buffer.from(key);
  for (const n of status) {
    for (const r of n.ranges) {
      const start = Buffer.from(r.start ?? []);
      const end = r.end ? Buffer.from(r.end) : null;
      const holds = Buffer.compare(k, start) >= 0 && (end === null || Buffer.compare(k, end) < 0);
      if (holds && r.role === 'leader') return n.node;
    }
  }
  return undefined;
}

describe('subscribe', () => {
  it('from now: only later writes, each once, with its prevValue', async () => {
    const before = await pages();
    await writer.set('n/a', 'before');
    const sub = subscriber.subscribe('n/', { waitMs });
    const start = await sub.started;
    expect(typeof start).toBe('string');
    const c = collect(sub);
    await writer.set('n/a', 'after1');
    expect((await writer.cas('n/a', 'after1', 'after2')).success).toBe(true);
    expect((await writer.cas('n/a', 'nope', 'x')).success).toBe(false); // no event
    expect((await writer.del('n/a')).value?.toString()).toBe('after2');
    expect((await writer.del('n/a')).value).toBeNull(); // absent: no event
    await writer.set('m/outside', 'x');
    await writer.set('n', 'not under n/');
    await writer.set('n/b', 'b1');
    await until('4 events', () => c.events.length >= 4);
    await sleep(300);
    expect(await c.stop()).toBeUndefined();
    const seen = c.events.map((e) => [e.op, text(e.key), text(e.value), text(e.prevValue)]);
    expect(seen).toEqual([
      ['set', 'n/a', 'after1', 'before'],
      ['set', 'n/a', 'after2', 'after1'],
      ['del', 'n/a', null, 'after2'],
      ['set', 'n/b', 'b1', null],
    ]);
    const revisions = c.events.map((e) => e.revision);
    expect([...revisions].sort((a, b) => a - b)).toEqual(revisions);
    expect(new Set(c.events.map((e) => e.cursor)).size).toBe(4);
    // Polls at the head of the stream were answered from the leader's events tail.
    const after = await pages();
    expect(after.tail).toBeGreaterThan(before.tail);

    // Resuming from the second event's cursor gives the rest, and nothing before.
    const resumed = collect(
      subscriber.subscribe('n/', { fromRevision: c.events[1]!.cursor, waitMs }),
    );
    await until('2 resumed events', () => resumed.events.length >= 2);
    await sleep(200);
    expect(await resumed.stop()).toBeUndefined();
    expect(resumed.events.map((e) => e.revision)).toEqual(revisions.slice(2));

    // A cursor of another prefix is refused before anything is sent.
    expect(() => subscriber.subscribe('m/', { fromRevision: start })).toThrow(/another prefix/);
  });

  it('subscriptions of one client at the same place each get every event; closing one leaves the rest whole', async () => {
    // They share their polls (one request while they stand at the same revision).
    const opened = [0, 1, 2].map(() => subscriber.subscribe('sh/', { waitMs }));
    await Promise.all(opened.map((sub) => sub.started));
    const subs = opened.map((sub) => collect(sub));
    for (let i = 0; i < 40; i++) {
      await writer.set(`sh/k${i % 7}`, `v${i}`);
      if (i === 20) expect(await subs[1]!.stop()).toBeUndefined();
    }
    await until('40 events on the open ones', () =>
      [subs[0]!, subs[2]!].every((c) => c.events.length >= 40),
    );
    await sleep(200);
    for (const c of [subs[0]!, subs[2]!]) {
      expect(await c.stop()).toBeUndefined();
      expect(c.events.map((e) => text(e.value))).toEqual(
        Array.from({ length: 40 }, (_, i) => `v${i}`),
      );
    }
    const closed = subs[1]!.events.map((e) => text(e.value));
    expect(closed).toEqual(Array.from({ length: closed.length }, (_, i) => `v${i}`));
    // Each event's cursor resumes right after it, whichever subscription it came from.
    const from = subs[2]!.events[29]!;
    const resumed = collect(subscriber.subscribe('sh/', { fromRevision: from.cursor, waitMs }));
    await until('10 resumed events', () => resumed.events.length >= 10);
    expect(await resumed.stop()).toBeUndefined();
    expect(resumed.events.map((e) => text(e.value))).toEqual(
      Array.from({ length: 10 }, (_, i) => `v${30 + i}`),
    );
  });

  it('a set too large to carry its prevValue comes without it, flagged', async () => {
    const big = (c: string) => Buffer.alloc(512 * 1024, c);
    await writer.set('nb/big', big('a'));
    const sub = subscriber.subscribe('nb/', { waitMs });
    await sub.started;
    const c = collect(sub);
    await writer.set('nb/big', big('b')); // 512 KiB value + 512 KiB prevValue: over a reply
    await writer.set('nb/big', 'small'); // prevValue 512 KiB: fits
    await until('2 events', () => c.events.length >= 2);
    expect(await c.stop()).toBeUndefined();
    const [first, second] = c.events;
    expect(first!.value).toEqual(big('b'));
    expect(first!.prevValue).toBeUndefined();
    expect(first!.prevValueOmitted).toBe(true);
    expect(second!.value?.toString()).toBe('small');
    expect(second!.prevValue).toEqual(big('b'));
    expect(second!.prevValueOmitted).toBeUndefined();
  });

  it('checker: every acknowledged write once, in order per key, across a split, a resumed subscriber and kill -9 of the leader', async () => {
    const prefix = 'ck/';
    const writerCount = 3;
    const keysPerWriter = 8;
    /** Every write of the load, by value (values are unique). */
    const writes = new Map<string, { key: string; n: number; writer: number; ok: boolean }>();
    let writing = true;
    const writerClients = await Promise.all(
      Array.from({ length: writerCount }, () => connectClient(cluster.natsUrl, 10_000)),
    );
    const seen: SubscribeEvent[] = [];
    let killed: string | undefined;
    const first = subscriber.subscribe(prefix, { waitMs });
    const start = await first.started;
    let current = collect(first, seen);
    // A slow consumer of the same stream: it pulls when it is ready, nothing piles up.
    const slowSeen: SubscribeEvent[] = [];
    const slow = collect(
      subscriber.subscribe(prefix, { fromRevision: start, waitMs }),
      slowSeen,
      3,
    );
    const load = writerClients.map(async (c, w) => {
      for (let n = 0; writing && n < 5000; n++) {
        // Writers own disjoint keys: ck/0..., ck/1... and ck/2... (the split goes at ck/1).
        const key = `${prefix}${w}-${n % keysPerWriter}`;
        const value = `${w}:${n}`;
        const write = { key, n, writer: w, ok: false };
        writes.set(value, write);
        try {
          await c.set(key, value, { timeoutMs: 10_000 });
          write.ok = true;
        } catch {
          // outcome unknown: it may or may not arrive
        }
        await sleep(8);
      }
    });
    try {
      await sleep(1000);
      const split = await admin.split(`${prefix}1`);
      expect(split).toHaveLength(2);
      await sleep(500);
      // At the prefix's start: the range before it no longer holds any of its keys.
      expect(await admin.split(prefix)).toHaveLength(2);
      await sleep(500);

      // The subscriber restarts from the cursor of the last event it handled.
      expect(await current.stop()).toBeUndefined();
      const last = seen[seen.length - 1]!;
      await sleep(300); // writes go on meanwhile
      current = collect(subscriber.subscribe(prefix, { fromRevision: last.cursor, waitMs }), seen);
      await sleep(800);

      // kill -9 of the node leading the prefix's ranges (both sides of the split).
      killed = leaderOfKey(await statusOf(cluster.natsUrl), `${prefix}1`);
      expect(killed).toBeDefined();
      await cluster.stopNode(killed!, 'SIGKILL');
      await sleep(2500);
      await cluster.startNode(killed!);
      await sleep(1000);
    } finally {
      writing = false;
      await Promise.all(load);
    }
    const acked = [...writes.entries()].filter(([, x]) => x.ok).map(([v]) => v);
    const values = () => new Set(seen.map((e) => text(e.value)));
    try {
      await until(
        `every acknowledged write (${acked.length}) in the stream`,
        () => {
          const v = values();
          return acked.every((x) => v.has(x));
        },
        20_000,
      );
    } catch (err) {
      const v = values();
      const missing = acked.filter((x) => !v.has(x));
      throw new Error(
        `${(err as Error).message}: ${missing.length} missing, e.g. ${missing.slice(0, 5).join(' ')}\n` +
          nodeLogs(cluster, 30),
      );
    }
    await sleep(500); // stragglers of writes with unknown outcomes
    expect(await current.stop()).toBeUndefined();
    await until('the slow subscriber', () => slowSeen.length >= seen.length, 20_000);
    await sleep(200);
    expect(await slow.stop()).toBeUndefined();
    const perKey = (es: SubscribeEvent[]) => {
      const m = new Map<string, string[]>();
      for (const e of es)
        m.set(text(e.key)!, [...(m.get(text(e.key)!) ?? []), `${e.revision}:${text(e.value)}`]);
      return [...m].sort();
    };
    expect(perKey(slowSeen)).toEqual(perKey(seen));

    // Nothing twice, nothing unknown.
    const ids = seen.map((e) => `${text(e.key)}@${e.revision}`);
    expect(new Set(ids).size).toBe(ids.length);
    expect(new Set(seen.map((e) => text(e.value))).size).toBe(seen.length);
    for (const e of seen) {
      expect(e.op).toBe('set');
      const w = writes.get(text(e.value)!);
      expect(w?.key, `event ${text(e.key)}=${text(e.value)} was never written`).toBe(text(e.key));
    }
    // Per key: revisions ascend, each prevValue is the value of the event before (no gap),
    // and an acknowledged write comes before every write its writer issued after it.
    const byKey = new Map<string, SubscribeEvent[]>();
    for (const e of seen) byKey.set(text(e.key)!, [...(byKey.get(text(e.key)!) ?? []), e]);
    for (const [key, es] of byKey) {
      for (let i = 1; i < es.length; i++) {
        expect(es[i]!.revision, key).toBeGreaterThan(es[i - 1]!.revision);
        expect(text(es[i]!.prevValue), `${key}: the event before ${text(es[i]!.value)}`).toBe(
          text(es[i - 1]!.value),
        );
      }
      const ns = es.map((e) => writes.get(text(e.value)!)!);
      for (let i = 0; i < ns.length; i++) {
        for (let j = i + 1; j < ns.length; j++) {
          if (ns[j]!.ok) expect(ns[i]!.n, `${key}: acked write order`).toBeLessThan(ns[j]!.n);
        }
      }
      // The stream's last value of the key is its value now.
      expect(text((await writer.get(key))?.value), key).toBe(text(es[es.length - 1]!.value));
    }
    // The splits were followed: events came from the three ranges.
    expect(new Set(seen.map((e) => e.range)).size).toBeGreaterThanOrEqual(3);
    console.log(
      `subscribe checker: ${writes.size} writes (${acked.length} acknowledged), ${seen.length} ` +
        `events from ranges ${[...new Set(seen.map((e) => e.range))].join(',')}; killed ${killed}`,
    );

    // A subscription from now covers both sides of the split.
    const both = subscriber.subscribe(prefix, { waitMs });
    await both.started;
    const c = collect(both);
    await writer.set(`${prefix}0-x`, 'left');
    await writer.set(`${prefix}2-x`, 'right');
    await until('both sides', () => c.events.length >= 2);
    expect(await c.stop()).toBeUndefined();
    expect(c.events.map((e) => text(e.value)).sort()).toEqual(['left', 'right']);
    expect(new Set(c.events.map((e) => e.range)).size).toBe(2);
    await Promise.all(writerClients.map((x) => x.close()));
  }, 60_000);

  it('a cursor behind the retained history ends the subscription with CompactedError', async () => {
    // A range of its own, so the revisions written here are its own.
    await admin.split('zc/');
    await admin.split('zd');
    const sub = subscriber.subscribe('zc/', { waitMs });
    const old = await sub.started;
    sub.close();
    const writes = retainRevisions + Math.ceil(retainRevisions / 4) + 200;
    for (let i = 0; i < writes; i += 100) {
      await Promise.all(
        Array.from({ length: Math.min(100, writes - i) }, (_, j) =>
          writer.set(`zc/k${(i + j) % 50}`, `v${i + j}`),
        ),
      );
    }
    // The leader proposes compactEvents within a second or so; until then the old cursor
    // still reads (events come).
    const storeBefore = (await pages()).store;
    const deadline = nowMs() + 15_000;
    let failure: unknown;
    while (failure === undefined && nowMs() < deadline) {
      const s = subscriber.subscribe('zc/', { fromRevision: old, waitMs: 0 });
      try {
        await s.next();
        await sleep(200);
      } catch (err) {
        failure = err;
      } finally {
        s.close();
      }
    }
    expect(failure).toBeInstanceOf(CompactedError);
    // A cursor this old is before the leader's events tail: LMDB answered.
    expect((await pages()).store).toBeGreaterThan(storeBefore);
    const compacted = failure as CompactedError;
    expect(errorCode(compacted)).toBe('Compacted');
    expect(compacted.message).toMatch(/oldest revision still available is \d+/);
    expect(compacted.oldestRetained).toBeGreaterThan(1);
    expect(compacted.message).toContain(`still available is ${compacted.oldestRetained}`);
    expect(compacted.rangeId).toBeGreaterThan(1);
    // A subscription from now works, and sees the next write only.
    const fresh = subscriber.subscribe('zc/', { waitMs });
    await fresh.started;
    const c = collect(fresh);
    await writer.set('zc/after', 'x');
    await until('the write after the compaction', () => c.events.length >= 1);
    expect(await c.stop()).toBeUndefined();
    expect(c.events.map((e) => text(e.key))).toEqual(['zc/after']);
  }, 40_000);

  it('past --events-polls-max held polls a node answers Overloaded; held polls end empty', async () => {
    // Polls of the subscriptions closed above may still be held for up to waitMs.
    await sleep(waitMs + 500);
    const nc = await connect({ servers: cluster.natsUrl });
    try {
      const head = decode(
        (
          await nc.request(
            'rasputin.kv',
            frameRequest([encode({ op: 'eventsHead', key: Buffer.from('zq/') })]),
            { timeout: 5000 },
          )
        ).data,
      ) as { res: { ok: boolean; after: number; descriptors: { rangeId: number }[] }[] };
      const { after, descriptors } = head.res[0]!;
      const rangeId = descriptors[0]!.rangeId;
      const poll = encode({
        op: 'events',
        key: Buffer.from('zq/'),
        rangeId,
        after,
        limit: 10,
        waitMs: 2000,
      });
      const sentMs = nowMs();
      const answers: { code: string | undefined; events: number; atMs: number }[] = [];
      await Promise.all(
        Array.from({ length: pollsHeldMax + 4 }, async () => {
          const reply = await nc.request(`rasputin.range.${rangeId}`, frameRequest([poll]), {
            timeout: 5000,
          });
          const r = (decode(reply.data) as { res: { code?: string; events?: unknown[] }[] })
            .res[0]!;
          answers.push({ code: r.code, events: r.events?.length ?? -1, atMs: nowMs() - sentMs });
        }),
      );
      const overloaded = answers.filter((a) => a.code === 'Overloaded');
      const held = answers.filter((a) => a.code === undefined);
      expect(overloaded).toHaveLength(4);
      for (const a of overloaded) expect(a.atMs).toBeLessThan(1000);
      expect(held).toHaveLength(pollsHeldMax);
      for (const a of held) {
        expect(a.events).toBe(0);
        expect(a.atMs).toBeGreaterThan(1500);
      }
    } finally {
      await nc.close();
    }
  });

  it('rasputin subscribe PREFIX --from CURSOR --count N prints events with their cursors', async () => {
    const sub = subscriber.subscribe('cl/');
    const from = await sub.started;
    sub.close();
    await writer.set('cl/a', 'one');
    await writer.set('cl/b', 'two');
    const env = { RASPUTIN_NATS: cluster.natsUrl };
    const all = await runRasputin(['subscribe', 'cl/', '--from', from, '--count', '2'], { env });
    expect(all.code, all.stderr).toBe(0);
    const lines = all.stdout.split('\n').map((l) => l.split('\t'));
    expect(lines.map((l) => l.slice(0, 3))).toEqual([
      ['set', 'cl/a', 'one'],
      ['set', 'cl/b', 'two'],
    ]);
    // Resume after the first line's cursor: the second event only.
    const rest = await runRasputin(['subscribe', 'cl/', '--from', lines[0]![5]!, '--count', '1'], {
      env,
    });
    expect(rest.code, rest.stderr).toBe(0);
    expect(rest.stdout.split('\t').slice(0, 3)).toEqual(['set', 'cl/b', 'two']);
    const bad = await runRasputin(['subscribe', 'cl/', '--from', 'nonsense'], { env });
    expect(bad.code).toBe(1);
    expect(bad.stderr).toContain('InvalidArgumentError');
  });
});
