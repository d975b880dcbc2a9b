// Subscribe without a cluster: the events ops' validation (checkOp), cursors and prefix
// spans, the page check, following split markers, and the Subscription's merge of several
// ranges' streams over a fake EventsSource (a stream per range, long polls, splits,
// failures). The client's events calls are exercised against a fake node on a real
// nats-server (the reply to a long poll may come after the usual 1 s attempt timeout;
// without a leader a poll waits for one rather than going to `<p>.kv`). Real nodes:
// test/integration/subscribe.test.ts.

import { describe, expect, it } from 'vitest';
import {
  Client,
  CompactedError,
  InvalidArgumentError,
  limits,
  type SubscribeEvent,
  UnavailableError,
} from '../../src/client/index.ts';
import {
  decodeCursor,
  type EventsSource,
  encodeCursor,
  followSplit,
  type PageEvent,
  prefixSpan,
  type RangeSpan,
  readPage,
  Subscription,
} from '../../src/client/subscription.ts';
import { checkOp, decode, encode, protocolVersion } from '../../src/protocol/wire.ts';
import { useFakeNodeNats } from './fake-node-nats.ts';

const b = (s: string) => Buffer.from(s);
const hex = (x: Buffer | null) => (x === null ? null : x.toString('hex'));

describe('checkOp: eventsHead and events', () => {
  it('accepts well-formed ops (an empty key and prefix too) and defaults waitMs to 0', () => {
    expect(checkOp({ op: 'eventsHead', key: b('') })).toEqual({
      ok: true,
      value: { op: 'eventsHead', key: b('') },
    });
    const ok = checkOp({ op: 'events', key: b(''), rangeId: 3, after: 0, limit: 1 });
    expect(ok).toEqual({
      ok: true,
      value: { op: 'events', key: b(''), rangeId: 3, after: 0, limit: 1, waitMs: 0 },
    });
    const max = {
      op: 'events',
      key: b('p/'),
      rangeId: 1,
      after: 2 ** 40,
      limit: limits.eventsLimitMax,
      waitMs: limits.eventsWaitMsMax,
    };
    expect(checkOp(max).ok).toBe(true);
  });

  it('refuses bad ops: InvalidArgument naming the limit, or BadRequest', () => {
    const base = { op: 'events', key: b('p/'), rangeId: 1, after: 5, limit: 10, waitMs: 100 };
    const cases: [Record<string, unknown>, string, string?][] = [
      [{ ...base, key: 'p/' }, 'BadRequest'],
      [{ ...base, key: Buffer.alloc(limits.keyBytesMax + 1) }, 'InvalidArgument', 'keyBytesMax'],
      [{ ...base, rangeId: 0 }, 'BadRequest'],
      [{ ...base, rangeId: undefined }, 'BadRequest'],
      [{ ...base, after: -1 }, 'BadRequest'],
      [{ ...base, after: 1.5 }, 'BadRequest'],
      [{ ...base, limit: 0 }, 'InvalidArgument', 'eventsLimitMin'],
      [{ ...base, limit: limits.eventsLimitMax + 1 }, 'InvalidArgument', 'eventsLimitMax'],
      [{ ...base, waitMs: -1 }, 'BadRequest'],
      [{ ...base, waitMs: limits.eventsWaitMsMax + 1 }, 'InvalidArgument', 'eventsWaitMsMax'],
      [{ op: 'eventsHead', key: 7 }, 'BadRequest'],
      [{ op: 'eventsHead', key: Buffer.alloc(limits.keyBytesMax + 1) }, 'InvalidArgument'],
    ];
    for (const [op, code, limit] of cases) {
      const r = checkOp(op);
      expect(r.ok, JSON.stringify(op)).toBe(false);
      if (!r.ok) {
        expect(r.code).toBe(code);
        if (limit) expect(r.limit).toBe(limit);
      }
    }
  });
});

describe('cursors and spans', () => {
  it('prefixSpan: the keys that start with the prefix', () => {
    const span = (p: Uint8Array) => {
      const s = prefixSpan(p);
      return [hex(s.start), hex(s.end)];
    };
    expect(span(b(''))).toEqual(['', null]);
    expect(span(b('a/'))).toEqual([b('a/').toString('hex'), b('a0').toString('hex')]);
    expect(span(Buffer.from([0x61, 0xff]))).toEqual(['61ff', '62']);
    expect(span(Buffer.from([0xff, 0xff]))).toEqual(['ffff', null]);
  });

  it('round-trips a vector of streams; refuses another prefix and garbage', () => {
    const streams = new Map([
      [7, 120],
      [1, 0],
      [2 ** 31, 2 ** 45],
    ]);
    const cursor = encodeCursor(b('p/'), streams);
    expect(cursor).toMatch(/^[A-Za-z0-9_-]+$/);
    expect([...decodeCursor(cursor, b('p/'))].sort((x, y) => x[0] - y[0])).toEqual([
      [1, 0],
      [7, 120],
      [2 ** 31, 2 ** 45],
    ]);
    expect(() => decodeCursor(cursor, b('q/'))).toThrow(/another prefix/);
    for (const bad of ['', 'nonsense', 42, Buffer.from(encode([1, 2, 3])).toString('base64url')]) {
      expect(() => decodeCursor(bad, b('p/'))).toThrow(InvalidArgumentError);
    }
    const empty = encodeCursor(b('p/'), new Map());
    expect(() => decodeCursor(empty, b('p/'))).toThrow(/no streams/);
  });
});

describe('pages and split markers', () => {
  const d = (rangeId: number, start: string, end: string | null) => ({
    rangeId,
    start: b(start),
    end: end === null ? null : b(end),
    replicas: [{ nodeId: 'a', replicaId: 1, role: 'voter' }],
    generation: 2,
  });

  it('readPage checks order, prefix and progress', () => {
    const ok = readPage(
      {
        ok: true,
        after: 30,
        events: [
          { revision: 11, op: 'set', key: b('p/a'), value: b('1') },
          { revision: 12, op: 'split', left: d(1, '', 'p/m'), right: d(4, 'p/m', null) },
          { revision: 20, op: 'del', key: b('p/a'), prevValue: b('1') },
          { revision: 21, op: 'set', key: b('p/a'), value: b('2'), prevValueOmitted: true },
        ],
      },
      1,
      10,
      b('p/'),
    );
    expect(ok.after).toBe(30);
    expect(ok.events.map((e) => [e.revision, e.op])).toEqual([
      [11, 'set'],
      [12, 'split'],
      [20, 'del'],
      [21, 'set'],
    ]);
    const bad: [unknown[], number][] = [
      [[{ revision: 10, op: 'set', key: b('p/a'), value: b('1') }], 30], // not after `after`
      [
        [
          { revision: 12, op: 'set', key: b('p/a'), value: b('1') },
          { revision: 12, op: 'set', key: b('p/b'), value: b('1') },
        ],
        30,
      ],
      [[{ revision: 12, op: 'set', key: b('q/a'), value: b('1') }], 30], // outside the prefix
      [[{ revision: 12, op: 'del', key: b('p/a') }], 30],
      [[{ revision: 12, op: 'split', left: d(9, '', 'p/m'), right: d(4, 'p/m', null) }], 30],
      [[{ revision: 12, op: 'set', key: b('p/a'), value: b('1') }], 11], // after goes back
    ];
    for (const [events, after] of bad) {
      expect(() => readPage({ ok: true, events: events as never, after }, 1, 10, b('p/'))).toThrow(
        /malformed events result/,
      );
    }
  });

  it('followSplit: the right side joins when it overlaps; the left goes when it does not', () => {
    const span = prefixSpan(b('p/'));
    const marker = (left: RangeSpan, right: RangeSpan) => ({ revision: 50, left, right });
    const s1 = new Map([[1, 40]]);
    followSplit(s1, span, 1, marker(d(1, '', 'p/m'), d(4, 'p/m', null)));
    expect([...s1]).toEqual([
      [1, 50],
      [4, 50],
    ]);
    const s2 = new Map([[1, 40]]);
    followSplit(s2, span, 1, marker(d(1, '', 'p/'), d(4, 'p/', null)));
    expect([...s2]).toEqual([[4, 50]]);
    const s3 = new Map([[1, 40]]);
    followSplit(s3, span, 1, marker(d(1, '', 'q'), d(4, 'q', null)));
    expect([...s3]).toEqual([[1, 50]]);
  });
});

// -------------------------------------------------------------------- a fake cluster

/** One range's stream: its span now and its events (revisions ascending). */
interface FakeRange {
  span: RangeSpan;
  events: PageEvent[];
  applied: number;
  oldest: number;
}

/**
 * Ranges with streams, answering heads and long polls like range leaders: a poll with
 * nothing new waits until an append (or waitMs). `failures` makes the next polls of a
 * range fail with the given errors first.
 */
class FakeSource implements EventsSource {
  readonly ranges = new Map<number, FakeRange>();
  readonly failures = new Map<number, Error[]>();
  readonly polls: { rangeId: number; after: number }[] = [];
  private waiters = new Set<() => void>();

  add(rangeId: number, start: string, end: string | null, applied: number): void {
    this.ranges.set(rangeId, {
      span: { rangeId, start: b(start), end: end === null ? null : b(end) },
      events: [],
      applied,
      oldest: 1,
    });
  }

  /** Applies an event at the next revision of the range. */
  set(rangeId: number, key: string, value: string): number {
    const r = this.ranges.get(rangeId)!;
    const revision = ++r.applied;
    r.events.push({ revision, op: 'set', key: b(key), value: b(value) });
    this.wake();
    return revision;
  }

  /** Splits range `rangeId` at `key`: the right side becomes `rightId`. */
  split(rangeId: number, key: string, rightId: number): void {
    const r = this.ranges.get(rangeId)!;
    const revision = ++r.applied;
    const right = { rangeId: rightId, start: b(key), end: r.span.end, generation: 2 };
    const left = { rangeId, start: r.span.start, end: b(key), generation: 2 };
    r.events.push({ revision, op: 'split', left, right });
    r.span = { rangeId, start: left.start, end: left.end };
    this.ranges.set(rightId, { span: right, events: [], applied: revision, oldest: revision + 1 });
    this.wake();
  }

  private wake(): void {
    const waiters = this.waiters;
    this.waiters = new Set();
    for (const w of waiters) w();
  }

  async head(key: Uint8Array): Promise<{ after: number; range: RangeSpan }> {
    for (const r of this.ranges.values()) {
      const { start, end } = r.span;
      if (Buffer.compare(key, start) >= 0 && (end === null || Buffer.compare(key, end) < 0)) {
        return { after: r.applied, range: r.span };
      }
    }
    throw new Error('no range holds the key');
  }

  async page(
    rangeId: number,
    prefix: Uint8Array,
    after: number,
    limit: number,
    waitMs: number,
    signal: AbortSignal,
  ) {
    this.polls.push({ rangeId, after });
    const failure = this.failures.get(rangeId)?.shift();
    if (failure) throw failure;
    const r = this.ranges.get(rangeId)!;
    if (after < r.oldest - 1) throw new CompactedError(`compacted; oldest ${r.oldest}`, r.oldest);
    const read = () => {
      const events = r.events
        .filter((e) => e.revision > after)
        .filter(
          (e) => e.op === 'split' || Buffer.from(e.key).subarray(0, prefix.length).equals(prefix),
        )
        .slice(0, limit);
      const last = events.at(-1)?.revision;
      return { events, after: events.length === limit && last !== undefined ? last : r.applied };
    };
    let page = read();
    if (page.events.length === 0 && waitMs > 0) {
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, waitMs);
        const done = () => {
          clearTimeout(timer);
          resolve();
        };
        this.waiters.add(done);
        signal.addEventListener('abort', done, { once: true });
      });
      page = read();
    }
    return page;
  }
}

function subscribe(
  source: FakeSource,
  prefix: string,
  o: { from?: string; pageSize?: number; signal?: AbortSignal } = {},
): Subscription {
  return new Subscription(source, b(prefix), {
    from: o.from === undefined ? undefined : decodeCursor(o.from, b(prefix)),
    waitMs: 200,
    pageSize: o.pageSize ?? 100,
    signal: o.signal,
  });
}

async function take(sub: Subscription, n: number): Promise<SubscribeEvent[]> {
  const out: SubscribeEvent[] = [];
  while (out.length < n) {
    const r = await sub.next();
    if (r.done) break;
    out.push(r.value);
  }
  return out;
}

const shown = (es: SubscribeEvent[]) => es.map((e) => `${e.key}=${e.value}@${e.range}`);

describe('Subscription over a fake source', () => {
  it('starts from now across ranges, and follows a split only after its marker', async () => {
    const f = new FakeSource();
    f.add(1, '', 'p/m', 10);
    f.add(2, 'p/m', null, 30);
    f.set(1, 'p/a', 'before'); // before the start: never delivered
    const sub = subscribe(f, 'p/', { pageSize: 2 });
    const start = decodeCursor(await sub.started, b('p/'));
    expect([...start]).toEqual([
      [1, 11],
      [2, 30],
    ]);
    f.set(1, 'p/a', 'a1');
    f.set(1, 'q/x', 'outside');
    f.set(2, 'p/x', 'x1');
    f.split(2, 'p/t', 3); // range 2 at revision 32: p/t.. continue in range 3
    f.set(3, 'p/u', 'u1');
    f.set(2, 'p/n', 'n1');
    const got = await take(sub, 4);
    expect(shown(got).sort()).toEqual(['p/a=a1@1', 'p/n=n1@2', 'p/u=u1@3', 'p/x=x1@2'].sort());
    // Range 3 is polled only after range 2's marker was handled.
    const firstPollOf3 = f.polls.findIndex((p) => p.rangeId === 3);
    expect(f.polls[firstPollOf3]!.after).toBe(32);
    // Each event's cursor resumes right after it.
    const [, second] = got;
    const resumed = subscribe(f, 'p/', { from: second!.cursor });
    const rest = await take(resumed, 2);
    expect(shown(rest).sort()).toEqual(shown(got.slice(2)).sort());
    sub.close();
    resumed.close();
    expect(await sub.next()).toEqual({ done: true, value: undefined });
  });

  it('resumes from a cursor from before a split: the marker is read again, nothing twice', async () => {
    const f = new FakeSource();
    f.add(1, '', null, 0);
    const sub = subscribe(f, '');
    const from = await sub.started;
    sub.close();
    f.set(1, 'a', '1');
    f.split(1, 'm', 2);
    f.set(2, 'z', '2');
    f.set(1, 'b', '3');
    const resumed = subscribe(f, '', { from });
    const got = await take(resumed, 3);
    resumed.close();
    expect(shown(got).sort()).toEqual(['a=1@1', 'b=3@1', 'z=2@2']);
    const again = subscribe(f, '', { from: got.find((e) => e.key.toString() === 'a')!.cursor });
    const rest = await take(again, 2);
    again.close();
    expect(shown(rest).sort()).toEqual(['b=3@1', 'z=2@2']);
  });

  it('retries retryable failures from the same revision; ends with CompactedError', async () => {
    const f = new FakeSource();
    f.add(1, '', null, 5);
    f.failures.set(1, [new UnavailableError('no leader'), new UnavailableError('no leader')]);
    const sub = subscribe(f, 'k');
    await sub.started;
    f.set(1, 'k1', 'v');
    expect(shown(await take(sub, 1))).toEqual(['k1=v@1']);
    expect(f.polls.slice(0, 3).map((p) => p.after)).toEqual([5, 5, 5]);
    sub.close();

    const old = encodeCursor(b('k'), new Map([[1, 2]]));
    f.ranges.get(1)!.oldest = 5;
    const behind = subscribe(f, 'k', { from: old });
    const err = await behind.next().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(CompactedError);
    expect((err as CompactedError).oldestRetained).toBe(5);
    expect((err as CompactedError).rangeId).toBe(1);
    expect((err as Error).message).toMatch(/resubscribe from now/);
  });

  it('a signal or break ends the loop quietly, and polls stop', async () => {
    const f = new FakeSource();
    f.add(1, '', null, 0);
    const abort = new AbortController();
    const sub = subscribe(f, '', { signal: abort.signal });
    await sub.started;
    const loop = (async () => {
      const out: SubscribeEvent[] = [];
      for await (const e of sub) out.push(e);
      return out;
    })();
    f.set(1, 'a', '1');
    await new Promise((resolve) => setTimeout(resolve, 50));
    abort.abort();
    expect(shown(await loop)).toEqual(['a=1@1']);
    const polls = f.polls.length;
    await new Promise((resolve) => setTimeout(resolve, 300));
    expect(f.polls.length).toBe(polls);
    expect(sub.cursor).toBeDefined();
  });
});

// -------------------------------------------------------------------- the client's calls

const env = useFakeNodeNats();

describe('client: events calls', () => {
  it('a long poll answered after the usual attempt timeout is still received', async () => {
    const p = env.nextPrefix('ev');
    const c = env.track(
      await Client.connect({ servers: env.nats.url, prefix: p, timeoutMs: 3000 }),
    );
    const seen: Record<string, unknown>[] = [];
    let revision = 7;
    const range = env.server.subscribe(`${p}.range.1`, {
      callback: (_err, msg) => {
        const { ops } = decode(msg.data) as { ops: Record<string, unknown>[] };
        const op = ops[0]!;
        seen.push(op);
        const reply = (res: unknown) =>
          msg.respond(encode({ v: protocolVersion, cid: 'c', res: [res] }));
        if (op.op === 'scan') {
          reply({ ok: true, entries: [] }); // the directory, read at the start: empty
          return;
        }
        if (op.op === 'eventsHead') {
          const d = { rangeId: 1, start: b(''), end: null, generation: 1, replicas: [] };
          reply({ ok: true, after: revision, descriptors: [d] });
          return;
        }
        // Held 1.5 s: longer than one ordinary attempt (1 s).
        setTimeout(() => {
          revision++;
          reply({
            ok: true,
            after: revision,
            events: [{ revision, op: 'set', key: b('k1'), value: b('v1') }],
          });
        }, 1500);
      },
    });
    env.trackSubscription(range);
    await env.server.flush();
    const sub = c.subscribe('k', { waitMs: 2000 });
    const [e] = await take(sub, 1);
    sub.close();
    expect(shown([e!])).toEqual(['k1=v1@1']);
    expect(e!.revision).toBe(8);
    const poll = seen.find((op) => op.op === 'events')!;
    expect(poll).toMatchObject({
      rangeId: 1,
      after: 7,
      waitMs: 2000,
      limit: limits.eventsLimitMax,
    });
    expect(c.stats.retries).toBe(0);
  });

  it('without a leader a poll waits for one on its range subject, never <p>.kv', async () => {
    const p = env.nextPrefix('ev');
    const c = env.track(
      await Client.connect({ servers: env.nats.url, prefix: p, timeoutMs: 3000 }),
    );
    const onKv: unknown[] = [];
    env.trackSubscription(
      env.server.subscribe(`${p}.kv`, {
        callback: (_err, msg) => {
          onKv.push((decode(msg.data) as { ops: unknown[] }).ops[0]);
        },
      }),
    );
    await env.server.flush();
    const from = encodeCursor(b('k'), new Map([[5, 40]]));
    const sub = c.subscribe('k', { fromRevision: from, waitMs: 1000 });
    const first = take(sub, 1);
    await new Promise((resolve) => setTimeout(resolve, 400));
    // A leader appears.
    const leader = env.server.subscribe(`${p}.range.5`, {
      callback: (_err, msg) => {
        const op = (decode(msg.data) as { ops: { after: number }[] }).ops[0]!;
        const res = {
          ok: true,
          after: op.after + 1,
          events: [{ revision: op.after + 1, op: 'set', key: b('k9'), value: b('v') }],
        };
        msg.respond(encode({ v: protocolVersion, cid: 'c', res: [res] }));
      },
    });
    env.trackSubscription(leader);
    await env.server.flush();
    const [e] = await first;
    sub.close();
    expect(shown([e!])).toEqual(['k9=v@5']);
    expect(e!.revision).toBe(41);
    expect(onKv).toEqual([]);
    expect(c.stats.retries).toBeGreaterThan(0);
  });
});
