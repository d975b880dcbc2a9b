// Protocol conformance of the client (docs/protocol.md) against a real nats-server on
// 127.0.0.1 and fake nodes in this test: subscribers that record the raw requests on
// `<p>.range.1` / `<p>.kv` and answer per the protocol. The real node is tested by the
// integration tests.

import { connect, type Msg, type NatsConnection } from '@nats-io/transport-node';
import { describe, expect, it } from 'vitest';
import {
  AbortedError,
  BadRequestError,
  Client,
  ClientClosedError,
  type ClientOptions,
  InternalError,
  InvalidArgumentError,
  limits,
  TimeoutError,
  UnavailableError,
} from '../../src/client/index.ts';
import {
  checkRequest,
  decode,
  encode,
  frameRequest,
  protocolVersion,
  type WireResult,
} from '../../src/protocol/wire.ts';
import { freePort, startNatsServer } from '../integration/harness.ts';
import { useFakeNodeNats } from './fake-node-nats.ts';

interface Op {
  op: 'get' | 'set' | 'cas' | 'del';
  key: Uint8Array;
  value?: Uint8Array;
  expect?: Uint8Array | null;
  id?: Uint8Array;
}

interface Recorded {
  subject: string;
  raw: Uint8Array;
  request: { v: number; ops: Op[] };
}

/** What a fake node does with a request: the reply body, or undefined for no reply. */
type Handler = (ops: Op[], msg: Msg) => unknown;

const cid = 'test-cluster';

/** A tiny KV with the semantics of docs/protocol.md, including at-most-once by id. */
class FakeKv {
  private readonly data = new Map<string, Buffer>();
  private readonly applied = new Map<string, WireResult>();

  apply(op: Op): WireResult {
    const key = Buffer.from(op.key).toString('hex');
    const id = op.id ? Buffer.from(op.id).toString('hex') : undefined;
    const earlier = id === undefined ? undefined : this.applied.get(id);
    if (earlier) return earlier;
    const current = this.data.get(key) ?? null;
    let r: WireResult;
    switch (op.op) {
      case 'get':
        return { ok: true, value: current };
      case 'set':
        this.data.set(key, Buffer.from(op.value!));
        r = { ok: true };
        break;
      case 'cas': {
        const expect = op.expect ?? null;
        const match = expect === null ? current === null : current?.equals(expect) === true;
        if (match) this.data.set(key, Buffer.from(op.value!));
        r = { ok: true, success: match, value: this.data.get(key) ?? null };
        break;
      }
      case 'del':
        this.data.delete(key);
        r = { ok: true, value: current };
        break;
    }
    if (id !== undefined) this.applied.set(id, r);
    return r;
  }

  handler(): Handler {
    return (ops) => ({ v: protocolVersion, cid, res: ops.map((op) => this.apply(op)) });
  }
}

const env = useFakeNodeNats();

/** A fresh prefix per client, so tests never see each other's traffic. */
async function newClient(
  opts: ClientOptions = {},
): Promise<{ c: Client; p: string; range: string; kv: string }> {
  const p = env.nextPrefix('t');
  const c = env.track(await Client.connect({ servers: env.nats.url, prefix: p, ...opts }));
  return { c, p, range: `${p}.range.1`, kv: `${p}.kv` };
}

/**
 * Subscribes a fake node on `subject` and waits until nats-server has the subscription;
 * returns the requests it receives, raw and decoded.
 */
async function serve(
  subject: string,
  handler: Handler,
  conn: NatsConnection = env.server,
): Promise<Recorded[]> {
  const recorded: Recorded[] = [];
  const sub = conn.subscribe(subject, {
    callback: (err, msg) => {
      if (err) return;
      const request = decode(msg.data) as Recorded['request'];
      recorded.push({ subject, raw: msg.data, request });
      const body = handler(request.ops, msg);
      if (body !== undefined) msg.respond(encode(body));
    },
  });
  env.trackSubscription(sub);
  await conn.flush();
  return recorded;
}

const silent: Handler = () => undefined;

function notLeader(ops: Op[]) {
  return {
    v: protocolVersion,
    cid,
    res: ops.map(() => ({ ok: false, code: 'NotLeader', msg: 'not the leader', leader: 'b' })),
  };
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function hex(bytes: Uint8Array | undefined): string {
  return bytes ? Buffer.from(bytes).toString('hex') : '';
}

async function rejection(p: Promise<unknown>): Promise<Error> {
  try {
    await p;
  } catch (err) {
    return err as Error;
  }
  throw new Error('expected a rejection');
}

describe('frameRequest', () => {
  it('decodes like encode({ v, ops }) for any batch size', () => {
    for (const count of [1, 2, 15, 16, 17, 255, 256, limits.batchOpsMax]) {
      const ops = Array.from({ length: count }, (_, i) => ({
        op: 'set',
        key: Buffer.from(`k${i}`),
        value: Buffer.from(`v${i}`),
        id: Buffer.alloc(16, i),
      }));
      const framed = frameRequest(ops.map((op) => encode(op)));
      // (msgpackr decodes bins to Buffer from a Buffer, to Uint8Array from a Uint8Array.)
      const whole = new Uint8Array(encode({ v: protocolVersion, ops }));
      expect(decode(framed)).toEqual(decode(whole));
      expect((decode(framed) as { ops: unknown[] }).ops.length).toBe(count);
    }
  });

  it('writes routes of every integer width as msgpack does, for any batch size', () => {
    const widths = [
      0,
      1,
      127,
      128,
      255,
      256,
      65_535,
      65_536,
      0xffff_ffff,
      0x1_0000_0000,
      2 ** 53 - 1,
    ];
    for (const count of [1, 15, 16, 64, 300]) {
      const ops = Array.from({ length: count }, (_, i) => ({
        op: 'get',
        key: Buffer.from(`k${i}`),
      }));
      const routes = ops.map((_, i) => [
        widths[i % widths.length]!,
        widths[(i * 7 + 3) % widths.length]!,
      ]);
      const framed = frameRequest(
        ops.map((op) => encode(op)),
        undefined,
        undefined,
        routes.map(([rangeId, generation]) => ({ rangeId: rangeId!, generation: generation! })),
      );
      expect(decode(framed)).toEqual(
        decode(new Uint8Array(encode({ v: protocolVersion, routes, ops }))),
      );
    }
    expect(() =>
      frameRequest([encode({ op: 'get', key: Buffer.from('k') })], undefined, undefined, []),
    ).toThrow(RangeError);
  });

  it('carries the cluster id when given', () => {
    const ops = [{ op: 'get', key: Buffer.from('k') }];
    const id = '0f8e1c2a-5b7d-4e3f-9a1b-2c3d4e5f6a7b';
    const framed = frameRequest(
      ops.map((op) => encode(op)),
      id,
    );
    expect(decode(framed)).toEqual(
      decode(new Uint8Array(encode({ v: protocolVersion, cid: id, ops }))),
    );
  });

  it('carries a range and generation, or a route per op, which checkRequest accepts', () => {
    const ops = [
      { op: 'get', key: Buffer.from('a') },
      { op: 'get', key: Buffer.from('z') },
    ];
    const encoded = ops.map((op) => encode(op));
    const one = decode(frameRequest(encoded, undefined, { id: 7, gen: 3 }));
    expect(one).toEqual(
      decode(new Uint8Array(encode({ v: protocolVersion, range: 7, gen: 3, ops }))),
    );
    expect(checkRequest(one)).toMatchObject({ ok: true, value: { range: { id: 7, gen: 3 } } });
    const routes = [
      [7, 3],
      [70_000, 0],
    ] as const;
    const routed = decode(
      frameRequest(
        encoded,
        'cid',
        undefined,
        routes.map(([rangeId, generation]) => ({ rangeId, generation })),
      ),
    );
    expect(routed).toEqual(
      decode(new Uint8Array(encode({ v: protocolVersion, cid: 'cid', routes, ops }))),
    );
    expect(checkRequest(routed)).toMatchObject({
      ok: true,
      value: {
        routes: [
          [7, 3],
          [70_000, 0],
        ],
      },
    });
    // A route per op, no more and no less; not with range and gen.
    expect(checkRequest({ v: protocolVersion, ops, routes: [[7, 3]] })).toMatchObject({
      ok: false,
    });
    expect(checkRequest({ v: protocolVersion, ops, routes, range: 7, gen: 3 })).toMatchObject({
      ok: false,
      code: 'BadRequest',
    });
    expect(
      checkRequest({
        v: protocolVersion,
        ops,
        routes: [
          [0, 1],
          [1, -1],
        ],
      }),
    ).toMatchObject({
      ok: false,
    });
  });
});

describe('client: connect', () => {
  it('fails with UnavailableError when no NATS server listens', async () => {
    const port = await freePort();
    const err = await rejection(Client.connect({ servers: `nats://127.0.0.1:${port}` }));
    expect(err).toBeInstanceOf(UnavailableError);
    expect(err.message).toContain(String(port));
  });

  it('refuses a prefix that is not a subject', async () => {
    const err = await rejection(Client.connect({ servers: env.nats.url, prefix: 'a.*' }));
    expect(err).toBeInstanceOf(InvalidArgumentError);
  });
});

describe('client: input validation', () => {
  it('refuses bad input with typed errors naming the limit, and sends nothing', async () => {
    const { c, range, kv } = await newClient();
    const onRange = await serve(range, silent);
    const onKv = await serve(kv, silent);
    const big = Buffer.alloc(limits.valueBytesMax + 1);
    const max = Buffer.alloc(limits.valueBytesMax);
    const cases: [() => Promise<unknown>, string | undefined][] = [
      [() => c.set('', 'v'), 'keyBytesMin'],
      [() => c.get(new Uint8Array(0)), 'keyBytesMin'],
      // 513 two-byte characters: 1026 bytes of UTF-8, though only 513 code units.
      [() => c.get('é'.repeat(513)), 'keyBytesMax'],
      [() => c.del(Buffer.alloc(limits.keyBytesMax + 1)), 'keyBytesMax'],
      [() => c.set('k', big), 'valueBytesMax'],
      [() => c.cas('k', big, 'v'), 'valueBytesMax'],
      [() => c.cas('k', null, big), 'valueBytesMax'],
      // Each within valueBytesMax, together over what one request can carry.
      [() => c.cas('k', max, max), 'payloadBytesMax'],
      [() => c.set('k', 'v', { timeoutMs: 0 }), 'timeoutMs'],
      [() => c.get(42 as unknown as string), undefined],
      [() => c.set('k', {} as unknown as string), undefined],
    ];
    for (const [call, limit] of cases) {
      const err = await rejection(call());
      expect(err).toBeInstanceOf(InvalidArgumentError);
      expect(err.name).toBe('InvalidArgumentError');
      expect((err as InvalidArgumentError).code).toBe('InvalidArgument');
      expect((err as InvalidArgumentError).limit).toBe(limit);
      if (limit) expect(err.message).toContain(limit);
    }
    await sleep(50);
    expect(onRange.length + onKv.length).toBe(0);
    expect(c.stats).toEqual({ requests: 0, ops: 0, retries: 0 });
  });

  it('accepts a key and a value exactly at their limits', async () => {
    const { c, range } = await newClient();
    await serve(range, new FakeKv().handler());
    const key = Buffer.alloc(limits.keyBytesMax, 1);
    await c.set(key, Buffer.alloc(limits.valueBytesMax, 2));
    expect((await c.get(key))?.value.length).toBe(limits.valueBytesMax);
  });
});

describe('client: batching', () => {
  it('sends the ops of one turn in one request, in order, and maps the results', async () => {
    const { c, range } = await newClient();
    const seen = await serve(range, new FakeKv().handler());
    const [set, got, cas, del] = await Promise.all([
      c.set('k1', 'v1'),
      c.get('k1'),
      c.cas(Buffer.from('k2'), null, 'x'),
      c.del('k3'),
    ]);
    expect(set).toBeUndefined();
    expect(got?.value).toEqual(Buffer.from('v1'));
    expect(Buffer.isBuffer(got?.value)).toBe(true);
    expect(cas).toEqual({ success: true, value: Buffer.from('x') });
    expect(del).toEqual({ value: null });

    expect(seen.length).toBe(1);
    const request = seen[0]!.request;
    expect(Object.keys(request).sort()).toEqual(['ops', 'v']);
    expect(request.v).toBe(protocolVersion);
    const ops = request.ops;
    expect(ops.map((o) => o.op)).toEqual(['set', 'get', 'cas', 'del']);
    expect(ops.map((o) => Buffer.from(o.key).toString())).toEqual(['k1', 'k1', 'k2', 'k3']);
    expect(Buffer.from(ops[0]!.value!).toString()).toBe('v1');
    expect(ops[1]!.id).toBeUndefined();
    expect('expect' in ops[2]!).toBe(true);
    expect(ops[2]!.expect).toBeNull();
    for (const i of [0, 2, 3]) expect(ops[i]!.id?.length).toBe(16);
    expect(new Set(ops.map((o) => hex(o.id))).size).toBe(4);
    expect(c.stats).toEqual({ requests: 1, ops: 4, retries: 0 });
  });

  it('gives every write a request id of its own, 16 bytes, across many calls', async () => {
    const { c, range } = await newClient();
    const seen = await serve(range, new FakeKv().handler());
    // More writes than one fill of the client's pool of random ids.
    const count = 1000;
    await Promise.all(Array.from({ length: count }, (_, i) => c.set(`k${i}`, 'v')));
    await c.del('k0');
    const ids = seen.flatMap((r) => r.request.ops.map((o) => o.id));
    expect(ids.length).toBe(count + 1);
    for (const id of ids) expect(id?.length).toBe(16);
    expect(new Set(ids.map(hex)).size).toBe(count + 1);
  });

  it('follows the original Rasputin client example', async () => {
    const { c, range } = await newClient();
    await serve(range, new FakeKv().handler());
    await c.set('k1', 'v1');
    expect((await c.get('k1'))?.value.toString()).toBe('v1');
    expect(await c.cas('k1', 'v1', 'v12')).toEqual({ success: true, value: Buffer.from('v12') });
    const miss = await c.cas('k1', 'vNever', 'vNever2');
    expect(miss).toEqual({ success: false, value: Buffer.from('v12') });
    expect((await c.cas('k1', 'v12', 'v13')).value?.toString()).toBe('v13');
    expect((await c.del('k1')).value?.toString()).toBe('v13');
    expect(await c.get('k1')).toBeNull();
    expect(c.clusterId).toBe(cid);
  });

  it('sends the cluster id learned from the first reply with every later request', async () => {
    const { c, range } = await newClient();
    const seen = await serve(range, new FakeKv().handler());
    await c.set('first', 'a');
    await c.set('second', 'b');
    const sent = seen.map((r) => (decode(r.raw) as { cid?: string }).cid);
    expect(sent[0]).toBeUndefined();
    expect(sent.slice(1).every((x) => x === cid)).toBe(true);
    expect(sent.length).toBeGreaterThan(1);
  });

  it('cuts a turn into requests of at most batchOpsMax ops', async () => {
    const { c, range } = await newClient();
    const seen = await serve(range, new FakeKv().handler());
    const count = limits.batchOpsMax + 476;
    const results = await Promise.all(Array.from({ length: count }, (_, i) => c.get(`k${i}`)));
    expect(results.every((r) => r === null)).toBe(true);
    expect(seen.map((r) => r.request.ops.length)).toEqual([limits.batchOpsMax, 476]);
    expect(c.stats).toEqual({ requests: 2, ops: count, retries: 0 });
  });

  it('cuts a turn into requests under the payload limit', async () => {
    const { c, range } = await newClient();
    const seen = await serve(range, new FakeKv().handler());
    const value = Buffer.alloc(400 * 1024, 7);
    await Promise.all([c.set('a', value), c.set('b', value), c.set('c', value)]);
    expect(seen.map((r) => r.request.ops.length)).toEqual([2, 1]);
    for (const r of seen) expect(r.raw.length).toBeLessThanOrEqual(limits.payloadBytesMax);
  });

  it('pipelines: sends the next batch before the previous reply arrives', async () => {
    const { c, range } = await newClient();
    const kv = new FakeKv();
    const held: { msg: Msg; ops: Op[] }[] = [];
    const reply = (msg: Msg, ops: Op[]) =>
      msg.respond(encode({ v: protocolVersion, cid, res: ops.map((op) => kv.apply(op)) }));
    // Holds the first request until the second one arrives, then answers both.
    const seen = await serve(range, (ops, msg) => {
      held.push({ msg, ops });
      if (held.length === 2) for (const h of held) reply(h.msg, h.ops);
      return undefined;
    });
    const startedMs = performance.now();
    const first = c.get('a');
    await sleep(20);
    const second = c.get('b');
    await Promise.all([first, second]);
    expect(performance.now() - startedMs).toBeLessThan(900);
    expect(seen.map((r) => Buffer.from(r.request.ops[0]!.key).toString())).toEqual(['a', 'b']);
    expect(c.stats.retries).toBe(0);
  });
});

describe('client: retries and routing', () => {
  it('retries a NotLeader on <p>.kv with the same request id', async () => {
    const { c, range, kv } = await newClient();
    const fake = new FakeKv();
    const onRange = await serve(range, notLeader);
    const onKv = await serve(kv, fake.handler());
    await c.set('k', 'v');
    expect((await c.get('k'))?.value.toString()).toBe('v');
    expect(onRange.length).toBe(2);
    expect(onKv.length).toBe(2);
    const first = onRange[0]!.request.ops[0]!;
    const retried = onKv[0]!.request.ops[0]!;
    expect(first.op).toBe('set');
    expect(retried.id?.length).toBe(16);
    expect(hex(retried.id)).toBe(hex(first.id));
    expect(hex(retried.value)).toBe(hex(first.value));
    expect(c.stats).toEqual({ requests: 4, ops: 4, retries: 2 });
  });

  it('retries Unavailable, Overloaded and a refused request until one succeeds', async () => {
    const { c, range, kv } = await newClient();
    const fake = new FakeKv();
    let attempt = 0;
    const flaky: Handler = (ops) => {
      attempt++;
      if (attempt === 1) {
        const res = ops.map(() => ({ ok: false, code: 'Unavailable', msg: 'no leader yet' }));
        return { v: protocolVersion, cid, res };
      }
      if (attempt === 2) {
        const res = ops.map(() => ({ ok: false, code: 'Overloaded', msg: 'slow down' }));
        return { v: protocolVersion, cid, res };
      }
      if (attempt === 3) return { v: protocolVersion, cid, code: 'Unavailable', msg: 'no leader' };
      return fake.handler()(ops, undefined as unknown as Msg);
    };
    const onRange = await serve(range, flaky);
    const onKv = await serve(kv, flaky);
    expect(await c.cas('k', null, 'v')).toEqual({ success: true, value: Buffer.from('v') });
    expect(onRange.length).toBe(1);
    const all = [...onRange, ...onKv].map((r) => r.request.ops[0]!);
    expect(all.length).toBe(4);
    expect(new Set(all.map((o) => hex(o.id))).size).toBe(1);
    expect(c.stats).toEqual({ requests: 4, ops: 4, retries: 3 });
  });

  it('falls back to <p>.kv when <p>.range.1 has no responders', async () => {
    const { c, kv } = await newClient();
    const onKv = await serve(kv, new FakeKv().handler());
    await c.set('k', 'v');
    expect(onKv.length).toBe(1);
    expect(c.stats).toEqual({ requests: 2, ops: 2, retries: 1 });
  });

  it('a retried write applies once: the first outcome comes back', async () => {
    const { c, range, kv } = await newClient();
    const fake = new FakeKv();
    let dropNextReply = false;
    // Applies the cas but loses its reply; the retry (on <p>.kv after the attempt timed
    // out) gets the recorded outcome instead of applying it again.
    const onRange = await serve(range, (ops) => {
      const res = ops.map((op) => fake.apply(op));
      if (dropNextReply) return undefined;
      return { v: protocolVersion, cid, res };
    });
    const onKv = await serve(kv, fake.handler());
    await c.set('k', 'old');
    dropNextReply = true;
    const r = await c.cas('k', 'old', 'new', { timeoutMs: 4000 });
    expect(r).toEqual({ success: true, value: Buffer.from('new') });
    expect(onRange.length).toBe(2);
    expect(onKv.length).toBe(1);
    expect(hex(onKv[0]!.request.ops[0]!.id)).toBe(hex(onRange[1]!.request.ops[0]!.id));
  });
});

describe('client: deadlines, aborts and errors', () => {
  it('rejects with TimeoutError at the deadline when no reply comes', async () => {
    const { c, range } = await newClient();
    await serve(range, silent);
    const startedMs = performance.now();
    const err = await rejection(c.set('k', 'v', { timeoutMs: 300 }));
    const elapsedMs = performance.now() - startedMs;
    expect(err).toBeInstanceOf(TimeoutError);
    expect(err.name).toBe('TimeoutError');
    expect((err as TimeoutError).code).toBe('Timeout');
    expect(err.message).toMatch(/outcome is unknown/);
    expect(elapsedMs).toBeGreaterThanOrEqual(290);
    expect(elapsedMs).toBeLessThan(1000);
  });

  it('reuses the request id on every retry until the deadline', async () => {
    const { c, range, kv } = await newClient();
    // No reply on either subject: attempts of ~1000 ms, then the other subject.
    const seen = await serve(range, silent);
    const onKv = await serve(kv, silent);
    const err = await rejection(c.del('k', { timeoutMs: 2500 }));
    expect(err).toBeInstanceOf(TimeoutError);
    const all = [...seen, ...onKv];
    expect(all.length).toBeGreaterThanOrEqual(3);
    expect(seen.length).toBeGreaterThanOrEqual(2);
    expect(onKv.length).toBeGreaterThanOrEqual(1);
    const ids = new Set(all.map((r) => hex(r.request.ops[0]!.id)));
    expect(ids.size).toBe(1);
    expect([...ids][0]!.length).toBe(32);
    expect(c.stats.retries).toBe(all.length - 1);
  });

  it('keeps retrying while nobody listens, then times out', async () => {
    const { c } = await newClient();
    const err = await rejection(c.get('k', { timeoutMs: 400 }));
    expect(err).toBeInstanceOf(TimeoutError);
    expect(err.cause).toBeDefined();
    expect(c.stats.requests).toBeGreaterThan(2);
  });

  it('an already aborted signal rejects before sending', async () => {
    const { c, range } = await newClient();
    const seen = await serve(range, new FakeKv().handler());
    const ac = new AbortController();
    ac.abort();
    const err = await rejection(c.set('k', 'v', { signal: ac.signal }));
    expect(err.name).toBe('AbortError');
    expect(err).toBeInstanceOf(AbortedError);
    expect((err as AbortedError).outcomeUnknown).toBe(false);
    // Aborted in the same turn: never sent either.
    const ac2 = new AbortController();
    const pending = c.set('k', 'v', { signal: ac2.signal });
    ac2.abort();
    expect((await rejection(pending)).message).toMatch(/before it was sent/);
    await sleep(50);
    expect(seen.length).toBe(0);
    expect(c.stats.requests).toBe(0);
  });

  it('aborting a call in flight rejects promptly; writes: outcome unknown', async () => {
    const { c, range } = await newClient();
    await serve(range, silent);
    const ac = new AbortController();
    const write = c.set('k', 'v', { signal: ac.signal, timeoutMs: 10_000 });
    const read = c.get('k', { signal: ac.signal, timeoutMs: 10_000 });
    await sleep(50);
    const abortedMs = performance.now();
    ac.abort(new Error('user gave up'));
    const writeErr = await rejection(write);
    const readErr = await rejection(read);
    expect(performance.now() - abortedMs).toBeLessThan(100);
    expect(writeErr.name).toBe('AbortError');
    expect(writeErr.message).toMatch(/outcome is unknown/);
    expect((writeErr as AbortedError).outcomeUnknown).toBe(true);
    expect((writeErr.cause as Error).message).toBe('user gave up');
    expect(readErr.name).toBe('AbortError');
    expect((readErr as AbortedError).outcomeUnknown).toBe(false);
  });

  it('a reply with a code and no results fails every op of the request, typed', async () => {
    const { c, range } = await newClient();
    const seen = await serve(range, () => ({
      v: protocolVersion,
      cid,
      code: 'BadRequest',
      msg: 'unsupported protocol version',
    }));
    const calls = [c.set('a', '1'), c.get('b'), c.cas('c', null, '3'), c.del('d')];
    for (const call of calls) {
      const err = await rejection(call);
      expect(err).toBeInstanceOf(BadRequestError);
      expect((err as BadRequestError).code).toBe('BadRequest');
      expect(err.message).toBe('unsupported protocol version');
    }
    expect(seen.length).toBe(1);
    expect(c.stats.retries).toBe(0);
  });

  it('fails one op on its own error and serves the others', async () => {
    const { c, range } = await newClient();
    const fake = new FakeKv();
    await serve(range, (ops) => ({
      v: protocolVersion,
      cid,
      res: ops.map((op) =>
        Buffer.from(op.key).toString() === 'bad'
          ? { ok: false, code: 'InvalidArgument', msg: 'reserved key', limit: 'systemKeys' }
          : fake.apply(op),
      ),
    }));
    const [good, bad] = await Promise.allSettled([c.set('good', 'v'), c.set('bad', 'v')]);
    expect(good.status).toBe('fulfilled');
    expect(bad.status).toBe('rejected');
    const err = (bad as PromiseRejectedResult).reason as InvalidArgumentError;
    expect(err).toBeInstanceOf(InvalidArgumentError);
    expect(err.limit).toBe('systemKeys');
  });

  it('an unreadable reply fails with InternalError', async () => {
    const { c, range } = await newClient();
    await serve(range, (_ops, msg) => {
      msg.respond(new Uint8Array([0xc1]));
      return undefined;
    });
    const err = await rejection(c.set('k', 'v'));
    expect(err).toBeInstanceOf(InternalError);
    expect(err.message).toMatch(/outcome is unknown/);
  });

  it('close fails exactly the calls still in flight, whatever order the others settled in', async () => {
    const { c, range } = await newClient();
    const fake = new FakeKv();
    // Keys a* are answered 30 ms late, b* never: each call goes alone, so they settle out of
    // the order they were made in, while later ones are in flight.
    await serve(range, (ops, msg) => {
      if (Buffer.from(ops[0]!.key).toString()[0] === 'a') {
        const body = { v: protocolVersion, cid, res: ops.map((op) => fake.apply(op)) };
        setTimeout(() => msg.respond(encode(body)), 30);
      }
      return undefined;
    });
    const keys = ['b0', 'a1', 'a2', 'b3', 'a4', 'b5', 'b6', 'a7', 'a8', 'b9'];
    const calls = new Map<string, Promise<unknown>>();
    for (const k of keys) {
      const call = c.get(k, { timeoutMs: 10_000 });
      // Settled or not, a call's outcome is read below (no unhandled rejection meanwhile).
      call.catch(() => {});
      calls.set(k, call);
      await sleep(5);
    }
    for (const k of keys.filter((k) => k[0] === 'a')) expect(await calls.get(k)).toBeNull();
    await c.close();
    for (const k of keys.filter((k) => k[0] === 'b')) {
      const err = await rejection(calls.get(k)!);
      expect(err).toBeInstanceOf(ClientClosedError);
      expect(err.message).toMatch(/before get completed/);
    }
  });

  it('close fails calls in flight and refuses new ones', async () => {
    const { c, range } = await newClient();
    await serve(range, silent);
    const pending = c.set('k', 'v', { timeoutMs: 10_000 });
    await sleep(50);
    await c.close();
    const err = await rejection(pending);
    expect(err).toBeInstanceOf(ClientClosedError);
    expect(err.message).toMatch(/outcome is unknown/);
    expect(await rejection(c.get('k'))).toBeInstanceOf(ClientClosedError);
    await c.close();
  });
});

describe('client: NATS outage', () => {
  it('survives a nats-server restart: calls during the outage retry until it is back', async () => {
    const own = await startNatsServer();
    const node = await connect({
      servers: own.url,
      maxReconnectAttempts: -1,
      reconnectTimeWait: 50,
    });
    const c = await Client.connect({ servers: own.url, prefix: 'outage' });
    try {
      await serve('outage.range.1', new FakeKv().handler(), node);
      await c.set('k', 'before');
      await own.stop();
      const during = c.cas('k', 'before', 'after', { timeoutMs: 15_000 });
      await sleep(300);
      await own.restart();
      expect(await during).toEqual({ success: true, value: Buffer.from('after') });
      expect((await c.get('k'))?.value.toString()).toBe('after');
    } finally {
      await c.close();
      await node.close();
      await own.stop();
    }
  });
});
