// The scan op: its validation (checkOp) and the client's scan/scanAll against a real
// nats-server and a fake node in this test that answers scan ops per docs/protocol.md,
// with small pages and a pretend range boundary, so continuations are exercised. The real
// node is tested by test/integration/scan.test.ts.

import { describe, expect, it } from 'vitest';
import {
  AbortedError,
  Client,
  InternalError,
  InvalidArgumentError,
  limits,
  scanLimits,
} from '../../src/client/index.ts';
import { checkOp, decode, encode, protocolVersion } from '../../src/protocol/wire.ts';
import { useFakeNodeNats } from './fake-node-nats.ts';

interface ScanOp {
  op: string;
  key: Uint8Array;
  end?: Uint8Array | null;
  limit?: number;
}

const cid = 'scan-test';

/**
 * A sorted KV answering scans like a node: at most `pageMax` entries per page (its own
 * byte budget), and `boundary` pretends a range ends there: a scan starting before it
 * stops at it with next = boundary (the client then continues in the "next range").
 */
class FakeScanKv {
  readonly data = new Map<string, Buffer>();
  constructor(
    readonly pageMax = 1000,
    readonly boundary?: Buffer,
  ) {}

  put(key: string | Buffer, value: string): void {
    const k = typeof key === 'string' ? Buffer.from(key) : key;
    this.data.set(k.toString('hex'), Buffer.from(value));
  }

  scan(op: ScanOp): unknown {
    const start = Buffer.from(op.key);
    let end: Buffer | null = op.end ? Buffer.from(op.end) : null;
    let clampedTo: Buffer | undefined;
    if (this.boundary && start.compare(this.boundary) < 0) {
      if (end === null || end.compare(this.boundary) > 0) {
        end = this.boundary;
        clampedTo = this.boundary;
      }
    }
    const keys = [...this.data.keys()]
      .map((h) => Buffer.from(h, 'hex'))
      .sort(Buffer.compare)
      .filter((k) => k.compare(start) >= 0 && (end === null || k.compare(end) < 0));
    const take = Math.min(op.limit!, this.pageMax);
    const entries = keys.slice(0, take).map((k) => [k, this.data.get(k.toString('hex'))!]);
    const next: Buffer | undefined = keys.length > take ? keys[take] : clampedTo;
    return next === undefined ? { ok: true, entries } : { ok: true, entries, next };
  }
}

const env = useFakeNodeNats();

/** A client on a fresh prefix and a fake node on its `<p>.range.1`; returns the requests. */
async function setUp(
  answer: (op: ScanOp, n: number) => unknown,
): Promise<{ c: Client; p: string; seen: ScanOp[] }> {
  const p = env.nextPrefix('s');
  const c = env.track(await Client.connect({ servers: env.nats.url, prefix: p, timeoutMs: 3000 }));
  const seen: ScanOp[] = [];
  const sub = env.server.subscribe(`${p}.range.1`, {
    callback: (err, msg) => {
      if (err) return;
      const request = decode(msg.data) as { ops: ScanOp[] };
      const res = request.ops.map((op) => {
        seen.push(op);
        return answer(op, seen.length);
      });
      // An answer of undefined: no reply at all (a node that went silent).
      if (res.some((r) => r === undefined)) return;
      msg.respond(encode({ v: protocolVersion, cid, res }));
    },
  });
  env.trackSubscription(sub);
  await env.server.flush();
  return { c, p, seen };
}

function keysOf(entries: { key: Buffer }[]): string[] {
  return entries.map((e) => e.key.toString());
}

async function rejection(p: Promise<unknown>): Promise<Error> {
  try {
    await p;
  } catch (err) {
    return err as Error;
  }
  throw new Error('expected a rejection');
}

const k = (i: number) => `k${String(i).padStart(3, '0')}`;

describe('checkOp: scan', () => {
  const key = Buffer.from('a');
  it('accepts an empty start, no end, a nil end, and limits within bounds', () => {
    for (const op of [
      { op: 'scan', key: Buffer.alloc(0), limit: 1 },
      { op: 'scan', key, end: null, limit: limits.scanLimitMax },
      { op: 'scan', key, end: Buffer.from('b'), limit: 10 },
      { op: 'scan', key: Buffer.alloc(limits.keyBytesMax), end: Buffer.alloc(1024), limit: 5 },
    ]) {
      const r = checkOp(op);
      expect(r.ok).toBe(true);
      if (r.ok) expect(r.value).toMatchObject({ op: 'scan', limit: op.limit });
    }
  });

  it('refuses bad scans: InvalidArgument naming the limit, or BadRequest', () => {
    const cases: [unknown, string, string | undefined][] = [
      [{ op: 'scan', key, limit: 0 }, 'InvalidArgument', 'scanLimitMin'],
      [{ op: 'scan', key, limit: -3 }, 'InvalidArgument', 'scanLimitMin'],
      [{ op: 'scan', key, limit: 1.5 }, 'InvalidArgument', 'scanLimitMin'],
      [{ op: 'scan', key, limit: limits.scanLimitMax + 1 }, 'InvalidArgument', 'scanLimitMax'],
      [
        { op: 'scan', key: Buffer.alloc(limits.keyBytesMax + 1), limit: 1 },
        'InvalidArgument',
        'keyBytesMax',
      ],
      [
        { op: 'scan', key, end: Buffer.alloc(limits.keyBytesMax + 1), limit: 1 },
        'InvalidArgument',
        'keyBytesMax',
      ],
      [{ op: 'scan', key, end: Buffer.alloc(0), limit: 1 }, 'InvalidArgument', 'keyBytesMin'],
      [{ op: 'scan', key }, 'BadRequest', undefined],
      [{ op: 'scan', key, limit: '5' }, 'BadRequest', undefined],
      [{ op: 'scan', key: 'a', limit: 5 }, 'BadRequest', undefined],
      [{ op: 'scan', key, end: 'b', limit: 5 }, 'BadRequest', undefined],
    ];
    for (const [op, code, limit] of cases) {
      const r = checkOp(op);
      expect(r.ok, JSON.stringify(op)).toBe(false);
      if (!r.ok) {
        expect(r.code).toBe(code);
        expect(r.limit).toBe(limit);
        if (limit) expect(r.msg).toContain(limit);
      }
    }
  });
});

describe('client: scan', () => {
  it('follows next across small pages up to the limit, then reports where to continue', async () => {
    const kv = new FakeScanKv(3);
    for (let i = 0; i < 20; i++) kv.put(k(i), `v${i}`);
    const { c, seen } = await setUp((op) => kv.scan(op));
    const r = await c.scan('', null, { limit: 10 });
    expect(keysOf(r.entries)).toEqual(Array.from({ length: 10 }, (_, i) => k(i)));
    expect(r.entries[4]!.value.toString()).toBe('v4');
    expect(r.next?.toString()).toBe(k(10));
    // Pages ask for what is left: 10, 7, 4, 1; continue at each next; no end sent.
    expect(seen.map((op) => op.limit)).toEqual([10, 7, 4, 1]);
    expect(seen.map((op) => Buffer.from(op.key).toString())).toEqual(['', k(3), k(6), k(9)]);
    expect(seen.every((op) => op.end === undefined)).toBe(true);
    // From next on, to an exclusive end: done, no next.
    const rest = await c.scan(r.next, k(15), { limit: 100 });
    expect(keysOf(rest.entries)).toEqual([10, 11, 12, 13, 14].map(k));
    expect(rest.next).toBeUndefined();
    expect(Buffer.from(seen.at(-1)!.end!).toString()).toBe(k(15));
  });

  it('defaults to 100 entries and caps each page at scanLimitMax', async () => {
    const kv = new FakeScanKv();
    for (let i = 0; i < 150; i++) kv.put(k(i), 'v');
    const { c, seen } = await setUp((op) => kv.scan(op));
    const r = await c.scan();
    expect(r.entries).toHaveLength(scanLimits.scanCallLimitDefault);
    expect(r.next?.toString()).toBe(k(100));
    expect(seen.map((op) => op.limit)).toEqual([100]);
    const all = await c.scan('', null, { limit: 1500 });
    expect(all.entries).toHaveLength(150);
    expect(all.next).toBeUndefined();
    expect(seen.at(-1)!.limit).toBe(limits.scanLimitMax);
  });

  it('continues at a range boundary (next with no entries) into the next range', async () => {
    const kv = new FakeScanKv(1000, Buffer.from('m'));
    for (const key of ['a', 'b', 'l', 'm', 'n', 'z']) kv.put(key, key.toUpperCase());
    kv.data.delete(Buffer.from('l').toString('hex'));
    const { c, seen } = await setUp((op) => kv.scan(op));
    const r = await c.scan('c', null, { limit: 10 });
    expect(keysOf(r.entries)).toEqual(['m', 'n', 'z']);
    expect(seen.map((op) => Buffer.from(op.key).toString())).toEqual(['c', 'm']);
    const whole = await c.scan('', 'n');
    expect(keysOf(whole.entries)).toEqual(['a', 'b', 'm']);
  });

  it('retries a NotLeader like a get', async () => {
    const kv = new FakeScanKv();
    kv.put('a', '1');
    const { c, p } = await setUp((op, n) =>
      n === 1 ? { ok: false, code: 'NotLeader', msg: 'not the leader', leader: '' } : kv.scan(op),
    );
    // The retry goes to <p>.kv, where a fake node also answers.
    const sub = env.server.subscribe(`${p}.kv`, {
      callback: (_err, msg) => {
        const request = decode(msg.data) as { ops: ScanOp[] };
        const res = request.ops.map((op) => kv.scan(op));
        msg.respond(encode({ v: protocolVersion, cid, res }));
      },
    });
    env.trackSubscription(sub);
    await env.server.flush();
    const r = await c.scan();
    expect(keysOf(r.entries)).toEqual(['a']);
    expect(c.stats.retries).toBe(1);
  });

  it('scanAll yields every entry once, page by page, and stops when the loop breaks', async () => {
    const kv = new FakeScanKv(50);
    for (let i = 0; i < 250; i++) kv.put(k(i), `v${i}`);
    const { c, seen } = await setUp((op) => kv.scan(op));
    const got: string[] = [];
    for await (const e of c.scanAll(k(5), k(245), { pageSize: 7 })) got.push(e.key.toString());
    expect(got).toEqual(Array.from({ length: 240 }, (_, i) => k(i + 5)));
    expect(seen.every((op) => op.limit === 7)).toBe(true);
    expect(seen).toHaveLength(Math.ceil(240 / 7));
    const before = seen.length;
    let n = 0;
    for await (const _ of c.scanAll()) if (++n === 60) break;
    // 60 entries at the fake's 50 per page: two pages, nothing more.
    expect(seen.length - before).toBe(2);
  });

  it('refuses bad input before sending anything', async () => {
    const { c, seen } = await setUp(() => ({ ok: true, entries: [] }));
    const cases: [() => unknown, string | undefined][] = [
      [() => c.scan('', null, { limit: 0 }), 'scanLimitMin'],
      [() => c.scan('', null, { limit: 2.5 }), 'scanLimitMin'],
      [() => c.scan('', null, { limit: scanLimits.scanCallLimitMax + 1 }), 'scanCallLimitMax'],
      [() => c.scan(Buffer.alloc(limits.keyBytesMax + 1)), 'keyBytesMax'],
      [() => c.scan('a', Buffer.alloc(limits.keyBytesMax + 1)), 'keyBytesMax'],
      [() => c.scan('a', ''), 'keyBytesMin'],
      [() => c.scan('a', 'b', { timeoutMs: -1 }), 'timeoutMs'],
      [() => c.scanAll('', null, { pageSize: limits.scanLimitMax + 1 }), 'scanLimitMax'],
      [() => c.scanAll(Buffer.alloc(limits.keyBytesMax + 1)), 'keyBytesMax'],
      [() => c.scan(42 as unknown as string), undefined],
    ];
    for (const [call, limit] of cases) {
      let err: unknown;
      try {
        await call();
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(InvalidArgumentError);
      expect((err as InvalidArgumentError).limit).toBe(limit);
    }
    expect(seen).toHaveLength(0);
    expect(c.stats.requests).toBe(0);
  });

  it('refuses results a continuation cannot rely on', async () => {
    const bad = [
      { ok: true },
      {
        ok: true,
        entries: [
          [Buffer.from('b'), Buffer.from('1')],
          [Buffer.from('a'), Buffer.from('2')],
        ],
      },
      { ok: true, entries: [[Buffer.from('a'), Buffer.from('1')]], next: Buffer.from('a') },
      { ok: true, entries: [], next: Buffer.from('') },
      { ok: true, entries: [['a', 'b']] },
    ];
    for (const result of bad) {
      const { c } = await setUp(() => result);
      const err = await rejection(c.scan('', null, { limit: 5, timeoutMs: 500 }));
      expect(err).toBeInstanceOf(InternalError);
    }
  });

  it('an aborted scan fails with AbortError, outcome known (a read)', async () => {
    const { c } = await setUp(() => undefined);
    const ac = new AbortController();
    const pending = c.scan('', null, { signal: ac.signal });
    setTimeout(() => ac.abort(), 50);
    const err = await rejection(pending);
    expect(err).toBeInstanceOf(AbortedError);
    expect((err as AbortedError).outcomeUnknown).toBe(false);
  });
});
