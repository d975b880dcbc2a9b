// scan on a real 3-node cluster: every key of a span in order exactly once over small
// pages (text keys, keys sharing prefixes, binary keys with 0x00 and 0xff), inclusive
// start and exclusive end, a scan after deletes and cas sees the new state, scans that
// run concurrently with sequential writes see an acknowledged prefix of them (a single
// page is one linearizable read), large values split pages by the byte budget, bad
// input is refused with InvalidArgument naming the limit (by the client and by the node),
// the `rasputin scan` command, and scans retried across a leader kill.

import { connect, type NatsConnection } from '@nats-io/transport-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  type Client,
  InvalidArgumentError,
  limits,
  type ScanEntry,
  scanLimits,
} from '../../src/client/index.ts';
import { Prng } from '../../src/lib/prng.ts';
import { decode, encode, protocolVersion } from '../../src/protocol/wire.ts';
import { type Cluster, runRasputin } from './harness.ts';
import { clusterStartMsMax, connectClient, startServingCluster, waitForLeader } from './helpers.ts';

let cluster: Cluster;
let client: Client;
/** A second connection: scans that must see what the first client's writes did. */
let reader: Client;
let raw: NatsConnection;

beforeAll(async () => {
  cluster = await startServingCluster({ nodes: 3 });
  client = await connectClient(cluster.natsUrl, 10_000);
  reader = await connectClient(cluster.natsUrl, 10_000);
  raw = await connect({ servers: cluster.natsUrl, name: 'rasputin-it-scan-raw' });
}, clusterStartMsMax);

afterAll(async () => {
  await raw?.close();
  await reader?.close();
  await client?.close();
  await cluster?.stop();
});

function b(x: string | number[]): Buffer {
  return typeof x === 'string' ? Buffer.from(x, 'utf8') : Buffer.from(x);
}

/** The first key after every key starting with `prefix` (the prefix's last byte + 1). */
function prefixEnd(prefix: string): Buffer {
  const end = b(prefix);
  end[end.length - 1] = end[end.length - 1]! + 1;
  return end;
}

function sorted(keys: Buffer[]): Buffer[] {
  return [...keys].sort(Buffer.compare);
}

function hexes(keys: Uint8Array[]): string[] {
  return keys.map((k) => Buffer.from(k).toString('hex'));
}

/** Client.scan with `limit` per call, following `next` to the end; returns the pages. */
async function pagesOf(
  c: Client,
  start: string | Uint8Array,
  end: string | Uint8Array | null,
  limit: number,
): Promise<ScanEntry[][]> {
  const pages: ScanEntry[][] = [];
  let from: string | Uint8Array = start;
  for (let i = 0; i < 10_000; i++) {
    const r = await c.scan(from, end, { limit });
    pages.push(r.entries);
    if (r.next === undefined) return pages;
    from = r.next;
  }
  throw new Error('the scan did not end');
}

/** One raw scan op on `<p>.kv` (any node; forwarded to the leader): its result. */
async function rawScan(op: Record<string, unknown>): Promise<Record<string, unknown>> {
  const reply = await raw.request('rasputin.kv', encode({ v: protocolVersion, ops: [op] }), {
    timeout: 5000,
  });
  const body = decode(reply.data) as { res?: Record<string, unknown>[]; code?: string };
  expect(body.res, JSON.stringify(body)).toHaveLength(1);
  return body.res![0]!;
}

/** Sets every key (in batches, as the client cuts them) to its value. */
async function setAll(c: Client, entries: [Buffer, Buffer][]): Promise<void> {
  for (let i = 0; i < entries.length; i += 500) {
    await Promise.all(entries.slice(i, i + 500).map(([k, v]) => c.set(k, v)));
  }
}

describe('scan over ~300 keys', () => {
  const prefix = 's1/';
  const expected = new Map<string, Buffer>();
  let keys: Buffer[] = [];

  beforeAll(async () => {
    const prng = new Prng(20_260_101);
    const all: Buffer[] = [];
    for (let i = 0; i < 200; i++) all.push(b(`${prefix}k/${String(i).padStart(3, '0')}`));
    // Keys that share prefixes with each other and with the keys above.
    for (const k of ['p', 'p/', 'p/a', 'p/a/b', 'p/ab', 'pp', 'k', 'k/', 'k/00', 'k/0000']) {
      all.push(b(prefix + k));
    }
    all.push(Buffer.concat([b(`${prefix}p`), b([0x00])]));
    all.push(Buffer.concat([b(`${prefix}p`), b([0xff])]));
    all.push(Buffer.concat([b(`${prefix}p`), b([0xff, 0xff])]));
    // Binary keys: 0x00 and 0xff included, random lengths, some sharing a first byte.
    while (all.length < 300) {
      const tail = Array.from({ length: 1 + prng.int(12) }, () => prng.int(256));
      if (all.length % 7 === 0) tail[0] = 0x00;
      if (all.length % 11 === 0) tail[0] = 0xff;
      all.push(Buffer.concat([b(prefix), b(tail)]));
    }
    const unique = new Map(all.map((k) => [k.toString('hex'), k]));
    keys = sorted([...unique.values()]);
    const writes: [Buffer, Buffer][] = keys.map((k, i) => [
      k,
      b(`value-${i}-${k.toString('hex')}`),
    ]);
    for (const [k, v] of writes) expected.set(k.toString('hex'), v);
    await setAll(client, writes);
  });

  it('returns every key in order exactly once over pages of 7', async () => {
    expect(keys.length).toBeGreaterThanOrEqual(290);
    const pages = await pagesOf(reader, prefix, prefixEnd(prefix), 7);
    expect(pages.every((p) => p.length <= 7)).toBe(true);
    expect(pages.length).toBe(Math.ceil(keys.length / 7));
    const got = pages.flat();
    expect(hexes(got.map((e) => e.key))).toEqual(hexes(keys));
    for (const e of got) expect(e.value).toEqual(expected.get(e.key.toString('hex')));
  });

  it('scanAll with pages of 7, and one scan call, give the same entries', async () => {
    const viaIterator: ScanEntry[] = [];
    for await (const e of reader.scanAll(prefix, prefixEnd(prefix), { pageSize: 7 })) {
      viaIterator.push(e);
    }
    expect(hexes(viaIterator.map((e) => e.key))).toEqual(hexes(keys));
    const once = await reader.scan(prefix, prefixEnd(prefix), { limit: 1000 });
    expect(once.next).toBeUndefined();
    expect(once.entries).toEqual(viaIterator);
  });

  it('start is inclusive, end exclusive; open ends; empty spans', async () => {
    const k = (i: number) => `${prefix}k/${String(i).padStart(3, '0')}`;
    const span = await reader.scan(k(10), k(20));
    expect(span.entries.map((e) => e.key.toString())).toEqual(
      Array.from({ length: 10 }, (_, i) => k(10 + i)),
    );
    // A start between keys; an end between keys.
    const between = await reader.scan(`${k(10)}~`, `${k(13)}!`);
    expect(between.entries.map((e) => e.key.toString())).toEqual([k(11), k(12), k(13)]);
    // Keys sharing a prefix: [p/, p0) holds p/, p/a, p/a/b, p/ab and not p, pp, p<00>.
    const shared = await reader.scan(`${prefix}p/`, prefixEnd(`${prefix}p/`));
    expect(shared.entries.map((e) => e.key.toString())).toEqual(
      ['p/', 'p/a', 'p/a/b', 'p/ab'].map((x) => prefix + x),
    );
    // From the start of the keyspace, and to the end of it.
    const head = await reader.scan('', prefix, { limit: 10_000 });
    expect(head.entries.every((e) => Buffer.compare(e.key, b(prefix)) < 0)).toBe(true);
    const tail = await reader.scan(keys.at(-3)!, null, { limit: 10_000 });
    expect(hexes(tail.entries.slice(0, 3).map((e) => e.key))).toEqual(hexes(keys.slice(-3)));
    // Empty spans: nothing in between, end = start, end before start.
    expect((await reader.scan(`${k(10)}~`, `${k(11)}`)).entries).toEqual([]);
    expect((await reader.scan(k(10), k(10))).entries).toEqual([]);
    expect((await reader.scan(k(20), k(10))).entries).toEqual([]);
  });

  it('a limit reached reports next; continuing from it resumes exactly there', async () => {
    const first = await reader.scan(prefix, prefixEnd(prefix), { limit: 50 });
    expect(first.entries).toHaveLength(50);
    expect(first.next?.toString('hex')).toBe(keys[50]!.toString('hex'));
    const rest = await reader.scan(first.next!, prefixEnd(prefix), { limit: 10_000 });
    expect(hexes([...first.entries, ...rest.entries].map((e) => e.key))).toEqual(hexes(keys));
  });
});

describe('scan sees every acknowledged write', () => {
  it('after sets, deletes and cas, a scan started after the acks sees the new state', async () => {
    const prefix = 's2/';
    const model = new Map<string, string>();
    const check = async (what: string) => {
      const r = await reader.scan(prefix, prefixEnd(prefix), { limit: 1000 });
      const want = [...model.entries()].sort(([a], [c]) => Buffer.compare(b(a), b(c)));
      expect(
        r.entries.map((e) => [e.key.toString(), e.value.toString()]),
        what,
      ).toEqual(want);
    };
    for (let i = 0; i < 40; i++) {
      const key = `${prefix}${String(i).padStart(2, '0')}`;
      await client.set(key, `v${i}`);
      model.set(key, `v${i}`);
    }
    await check('after the sets');
    for (let i = 0; i < 40; i += 3) {
      const key = `${prefix}${String(i).padStart(2, '0')}`;
      expect((await client.del(key)).value?.toString()).toBe(`v${i}`);
      model.delete(key);
      await check(`after del ${key}`);
    }
    for (let i = 1; i < 40; i += 4) {
      const key = `${prefix}${String(i).padStart(2, '0')}`;
      const expect_ = model.get(key) ?? null;
      const r = await client.cas(key, expect_, `cas${i}`);
      expect(r.success).toBe(true);
      model.set(key, `cas${i}`);
      await check(`after cas ${key}`);
      // A failed cas changes nothing.
      expect((await client.cas(key, 'wrong', 'never')).success).toBe(false);
    }
    // cas on a deleted key, expecting it absent, brings it back.
    expect((await client.cas(`${prefix}00`, null, 'back')).success).toBe(true);
    model.set(`${prefix}00`, 'back');
    await check('after the cas that recreated 00');
  });

  it('scans concurrent with sequential writes see an acknowledged prefix of them', async () => {
    // One writer sets c/000, c/001, ... one at a time; scans on another connection run
    // meanwhile. A single page is one linearizable read, so each scan must see exactly
    // the first j keys, j at least the writes acknowledged before the scan started and at
    // most those started before it ended.
    const prefix = 's3/';
    const count = 120;
    const key = (i: number) => `${prefix}c/${String(i).padStart(3, '0')}`;
    let acked = 0;
    let started = 0;
    const writer = (async () => {
      for (let i = 0; i < count; i++) {
        started = i + 1;
        await client.set(key(i), `w${i}`);
        acked = i + 1;
      }
    })();
    let scans = 0;
    let writing = true;
    void writer.finally(() => {
      writing = false;
    });
    while (writing) {
      const ackedBefore = acked;
      const r = await reader.scan(prefix, prefixEnd(prefix), { limit: 1000 });
      const startedAfter = started;
      const seen = r.entries.map((e) => e.key.toString());
      expect(seen).toEqual(Array.from({ length: seen.length }, (_, i) => key(i)));
      expect(seen.length).toBeGreaterThanOrEqual(ackedBefore);
      expect(seen.length).toBeLessThanOrEqual(startedAfter);
      scans++;
    }
    await writer;
    expect(scans).toBeGreaterThan(5);
    expect((await reader.scan(prefix, prefixEnd(prefix), { limit: 1000 })).entries).toHaveLength(
      count,
    );
  });
});

describe('scan limits', () => {
  it('large values: the byte budget cuts pages, next continues, every value arrives', async () => {
    const prefix = 's4/';
    const values = [0, 1, 2, 3, 4, 5].map((i) => Buffer.alloc(200 * 1024, 0x61 + i));
    for (let i = 0; i < values.length; i++) await client.set(`${prefix}${i}`, values[i]!);
    // On the wire: one scan op asking for 100 entries gets the two that fit in
    // scanBytesMax (3 x 200 KiB would not) and next = the third key.
    const page = await rawScan({ op: 'scan', key: b(prefix), end: prefixEnd(prefix), limit: 100 });
    expect(page.ok).toBe(true);
    const entries = page.entries as [Uint8Array, Uint8Array][];
    expect(entries.map(([k]) => Buffer.from(k).toString())).toEqual([`${prefix}0`, `${prefix}1`]);
    expect(Buffer.from(page.next as Uint8Array).toString()).toBe(`${prefix}2`);
    // The client follows next: all six, in order, intact.
    const r = await reader.scan(prefix, prefixEnd(prefix));
    expect(r.next).toBeUndefined();
    expect(r.entries.map((e) => e.key.toString())).toEqual(values.map((_, i) => `${prefix}${i}`));
    for (let i = 0; i < values.length; i++)
      expect(r.entries[i]!.value.equals(values[i]!)).toBe(true);
    // A value bigger than the whole budget still comes, one per page.
    const huge = Buffer.alloc(limits.valueBytesMax, 0x7a);
    await client.set(`${prefix}huge`, huge);
    const one = await rawScan({ op: 'scan', key: b(`${prefix}huge`), limit: 10 });
    expect((one.entries as unknown[]).length).toBe(1);
    expect(Buffer.from((one.entries as Uint8Array[][])[0]![1]!).equals(huge)).toBe(true);
    // Several large scans in one request: the reply stays under max_payload (results that
    // do not fit come back Overloaded and the client retries them).
    const parallel = await Promise.all(
      [0, 1, 2, 3].map(() => reader.scan(prefix, prefixEnd(prefix))),
    );
    for (const p of parallel) expect(p.entries).toHaveLength(7);
  });

  it('a scan call over more than scanLimitMax entries follows continuations', async () => {
    const prefix = 's5/';
    const count = limits.scanLimitMax + 234;
    const writes: [Buffer, Buffer][] = Array.from({ length: count }, (_, i) => [
      b(`${prefix}${String(i).padStart(5, '0')}`),
      b(`${i}`),
    ]);
    await setAll(client, writes);
    const r = await reader.scan(prefix, prefixEnd(prefix), { limit: scanLimits.scanCallLimitMax });
    expect(r.entries).toHaveLength(count);
    expect(r.next).toBeUndefined();
    expect(r.entries.map((e) => e.value.toString())).toEqual(writes.map(([, v]) => v.toString()));
    const capped = await reader.scan(prefix, prefixEnd(prefix), { limit: 1100 });
    expect(capped.entries).toHaveLength(1100);
    expect(capped.next?.toString()).toBe(`${prefix}01100`);
  });

  it('bad input fails with InvalidArgumentError naming the limit (client and node)', async () => {
    const cases: [() => Promise<unknown>, string][] = [
      [() => client.scan('a', 'b', { limit: 0 }), 'scanLimitMin'],
      [() => client.scan('a', 'b', { limit: scanLimits.scanCallLimitMax + 1 }), 'scanCallLimitMax'],
      [() => client.scan(Buffer.alloc(limits.keyBytesMax + 1, 0x61)), 'keyBytesMax'],
      [() => client.scan('a', Buffer.alloc(limits.keyBytesMax + 1, 0x62)), 'keyBytesMax'],
    ];
    for (const [call, limit] of cases) {
      const err = await call().then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(err).toBeInstanceOf(InvalidArgumentError);
      expect((err as InvalidArgumentError).limit).toBe(limit);
      expect((err as Error).message).toContain(limit);
    }
    // The node checks the same on the wire (for clients in other languages).
    const wire: [Record<string, unknown>, string][] = [
      [{ op: 'scan', key: b('a'), limit: 0 }, 'scanLimitMin'],
      [{ op: 'scan', key: b('a'), limit: limits.scanLimitMax + 1 }, 'scanLimitMax'],
      [{ op: 'scan', key: Buffer.alloc(limits.keyBytesMax + 1), limit: 1 }, 'keyBytesMax'],
      [
        { op: 'scan', key: b('a'), end: Buffer.alloc(limits.keyBytesMax + 1), limit: 1 },
        'keyBytesMax',
      ],
    ];
    for (const [op, limit] of wire) {
      const r = await rawScan(op);
      expect(r).toMatchObject({ ok: false, code: 'InvalidArgument', limit });
      expect(r.msg).toContain(limit);
    }
    expect((await rawScan({ op: 'scan', key: b('a') })).code).toBe('BadRequest');
    // Every node is still up and serving.
    expect(cluster.nodes.every((n) => n.running())).toBe(true);
    const after = await reader.scan('s1/k/000', 's1/k/002');
    expect(after.entries.map((e) => e.key.toString())).toEqual([
      's1/k/000',
      's1/k/0000',
      's1/k/001',
    ]);
  });
});

describe('rasputin scan', () => {
  const rasputin = (...args: string[]) =>
    runRasputin([...args, '--nats', cluster.natsUrl], { timeoutMs: 30_000 });

  it('prints key<TAB>value lines in key order and exits 0', async () => {
    for (const [k, v] of [
      ['s6/b', 'beta'],
      ['s6/a', 'alpha'],
      ['s6/c', 'gamma ray'],
      ['s6/d', 'delta'],
    ]) {
      await client.set(k!, v!);
    }
    const all = await rasputin('scan', 's6/', 's60');
    expect(all).toMatchObject({ code: 0, timedOut: false });
    expect(all.stdout.split('\n')).toEqual([
      's6/a\talpha',
      's6/b\tbeta',
      's6/c\tgamma ray',
      's6/d\tdelta',
    ]);
    const bounded = await rasputin('scan', 's6/b', 's6/d');
    expect(bounded.stdout.split('\n')).toEqual(['s6/b\tbeta', 's6/c\tgamma ray']);
    const limited = await rasputin('scan', 's6/', 's60', '--limit', '2');
    expect(limited).toMatchObject({ code: 0, stdout: 's6/a\talpha\ns6/b\tbeta' });
    expect(limited.stderr).toContain('s6/c');
    const open = await rasputin('scan', 's6/c');
    expect(open.code).toBe(0);
    expect(open.stdout.split('\n').slice(0, 2)).toEqual(['s6/c\tgamma ray', 's6/d\tdelta']);
    const none = await rasputin('scan', 's6/x', 's6/y');
    expect(none).toMatchObject({ code: 0, stdout: '' });
    const usage = await rasputin('scan', 'a', 'b', 'c');
    expect(usage.code).toBe(2);
    const badLimit = await rasputin('scan', '--limit', '0');
    expect(badLimit.code).toBe(2);
  });
});

describe('scan across a leader failover', () => {
  it('a scan sent right after kill -9 of the leader retries and returns every key', async () => {
    const prefix = 's1/';
    const before = await reader.scan(prefix, prefixEnd(prefix), { limit: 1000 });
    const leader = await waitForLeader(cluster.natsUrl);
    const retriesBefore = reader.stats.retries;
    await cluster.stopNode(leader.node, 'SIGKILL');
    // Pages of 7 while the old leader's subject has no responders and an election runs:
    // the client retries each page (NotLeader, no responders) like a get.
    const pages = await Promise.all(
      [0, 1].map(async () => {
        const got: ScanEntry[] = [];
        for await (const e of reader.scanAll(prefix, prefixEnd(prefix), {
          pageSize: 7,
          timeoutMs: 15_000,
        })) {
          got.push(e);
        }
        return got;
      }),
    );
    for (const got of pages) expect(got).toEqual(before.entries);
    expect(reader.stats.retries).toBeGreaterThan(retriesBefore);
    const now = await waitForLeader(cluster.natsUrl, { exclude: [leader.node] });
    expect(now.node).not.toBe(leader.node);
  });
});
