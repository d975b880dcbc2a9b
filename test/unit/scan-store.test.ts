// Store.scan on a real LMDB environment: bounds (inclusive start, exclusive end, open
// ends), the limit and the byte budget with `next`, empty spans, binary keys, and that it
// reads only user data (never the request or expiry records stored next to it).

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import type { Configuration, Entry } from '../../ranges/core/types.ts';
import { limits } from '../../src/protocol/wire.ts';
import { type Command, encodeCommand } from '../../src/storage/commands.ts';
import { Store, scanEntryBytes } from '../../src/storage/store.ts';

const config: Configuration = { voters: [1], outgoing: [], learners: [] };
const dirs: string[] = [];
const stores: Store[] = [];

afterEach(async () => {
  for (const store of stores.splice(0)) await store.close();
  for (const dir of dirs.splice(0)) fs.rmSync(dir, { recursive: true, force: true });
});

function b(x: string | number[]): Buffer {
  return typeof x === 'string' ? Buffer.from(x, 'utf8') : Buffer.from(x);
}

/** A store with range 1 over the whole keyspace, and a way to apply commands to it. */
async function openRange(): Promise<{ store: Store; run: (...cmds: Command[]) => Promise<void> }> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'rasputin-scan-'));
  dirs.push(dir);
  const store = Store.open(dir);
  stores.push(store);
  await store.createRange(
    {
      rangeId: 1,
      start: new Uint8Array(0),
      end: null,
      replicas: [{ nodeId: 'n1', replicaId: 1, role: 'voter' }],
      generation: 1,
    },
    config,
  );
  let next = 1;
  let writeId = 0;
  const run = async (...cmds: Command[]) => {
    const entries: Entry[] = cmds.map((c) => ({
      index: next++,
      term: 1,
      kind: 'normal',
      data: encodeCommand(c),
    }));
    const turn = store.beginTurn();
    turn.write(1, {
      id: ++writeId,
      hardState: { term: 1, vote: 1, commit: next - 1 },
      entries,
      snapshot: null,
    });
    turn.apply(1, entries);
    const { results, durable } = turn.commit();
    await durable;
    for (const r of (await results).get(1) ?? []) expect(r.ok).toBe(true);
  };
  return { store, run };
}

let ids = 0;
function set(key: Uint8Array | string, value: Uint8Array | string): Command {
  return {
    op: 'set',
    key: typeof key === 'string' ? b(key) : key,
    value: typeof value === 'string' ? b(value) : value,
    id: b(`id-${++ids}`),
  };
}

function del(key: string): Command {
  return { op: 'del', key: b(key), id: b(`id-${++ids}`) };
}

/** Entries as [key, value] strings; next as a string. */
function view(r: ReturnType<Store['scan']>): { entries: string[][]; next?: string } {
  const entries = r.entries.map(([k, v]) => [Buffer.from(k).toString(), Buffer.from(v).toString()]);
  return r.next === undefined ? { entries } : { entries, next: Buffer.from(r.next).toString() };
}

const big = 1 << 30;

describe('Store.scan', () => {
  it('scans in key order within [start, end)', async () => {
    const { store, run } = await openRange();
    await run(set('b', '2'), set('a', '1'), set('d', '4'), set('c', '3'), set('ab', '12'));
    expect(view(store.scan(b(''), null, 100, big))).toEqual({
      entries: [
        ['a', '1'],
        ['ab', '12'],
        ['b', '2'],
        ['c', '3'],
        ['d', '4'],
      ],
    });
    // Start inclusive, end exclusive.
    expect(view(store.scan(b('ab'), b('c'), 100, big)).entries).toEqual([
      ['ab', '12'],
      ['b', '2'],
    ]);
    // A start between keys, an end past the last key.
    expect(view(store.scan(b('aa'), b('zz'), 100, big)).entries.map((e) => e[0])).toEqual([
      'ab',
      'b',
      'c',
      'd',
    ]);
    // Open end from a start.
    expect(view(store.scan(b('c'), null, 100, big)).entries.map((e) => e[0])).toEqual(['c', 'd']);
  });

  it('returns empty results for empty spans and an empty store', async () => {
    const { store, run } = await openRange();
    expect(store.scan(b(''), null, 10, big)).toEqual({ entries: [] });
    await run(set('a', '1'), set('c', '3'));
    expect(store.scan(b('b'), b('c'), 10, big)).toEqual({ entries: [] }); // no key inside
    expect(store.scan(b('c'), b('c'), 10, big)).toEqual({ entries: [] }); // end = start
    expect(store.scan(b('c'), b('a'), 10, big)).toEqual({ entries: [] }); // end before start
    expect(store.scan(b('d'), null, 10, big)).toEqual({ entries: [] }); // past the last key
  });

  it('stops at the limit with next = the first key not returned', async () => {
    const { store, run } = await openRange();
    const keys = Array.from({ length: 10 }, (_, i) => `k${String(i).padStart(2, '0')}`);
    await run(...keys.map((k) => set(k, `v-${k}`)));
    const first = view(store.scan(b(''), null, 3, big));
    expect(first).toEqual({
      entries: [
        ['k00', 'v-k00'],
        ['k01', 'v-k01'],
        ['k02', 'v-k02'],
      ],
      next: 'k03',
    });
    // Exactly as many as remain: no next (the span is done).
    expect(view(store.scan(b('k07'), null, 3, big)).next).toBeUndefined();
    expect(view(store.scan(b('k07'), b('k09'), 2, big)).next).toBeUndefined();
    expect(view(store.scan(b('k07'), b('k10'), 2, big)).next).toBe('k09');
    // Following next visits every key once, in order.
    const seen: string[] = [];
    let from: Uint8Array = b('');
    for (let pages = 0; pages < 20; pages++) {
      const r = store.scan(from, null, 3, big);
      for (const [k] of r.entries) seen.push(Buffer.from(k).toString());
      if (r.next === undefined) break;
      from = r.next;
    }
    expect(seen).toEqual(keys);
  });

  it('stops before the byte budget with next, but returns at least one entry', async () => {
    const { store, run } = await openRange();
    const value = 'x'.repeat(100);
    await run(set('a', value), set('b', value), set('c', value), set('d', value));
    const one = scanEntryBytes(b('a'), b(value));
    expect(one).toBeGreaterThan(101);
    // Room for exactly two entries.
    expect(view(store.scan(b(''), null, 100, 2 * one)).entries.map((e) => e[0])).toEqual([
      'a',
      'b',
    ]);
    expect(view(store.scan(b(''), null, 100, 2 * one)).next).toBe('c');
    expect(view(store.scan(b(''), null, 100, 2 * one + one - 1)).next).toBe('c');
    // A budget smaller than one entry still returns one.
    expect(view(store.scan(b('b'), null, 100, 1))).toEqual({ entries: [['b', value]], next: 'c' });
    expect(view(store.scan(b('b'), null, 100, 0)).entries).toHaveLength(1);
    // The last entry within budget: no next.
    expect(view(store.scan(b('c'), null, 100, 2 * one)).next).toBeUndefined();
  });

  it('keeps the protocol budget: large values need several pages', async () => {
    const { store, run } = await openRange();
    const value = Buffer.alloc(200 * 1024, 0x61);
    await run(...[0, 1, 2, 3, 4].map((i) => set(`big-${i}`, value)));
    const pages: number[] = [];
    let from: Uint8Array = b('');
    for (let i = 0; i < 10; i++) {
      const r = store.scan(from, null, limits.scanLimitMax, limits.scanBytesMax);
      let bytes = 0;
      for (const [k, v] of r.entries) bytes += scanEntryBytes(k, v);
      expect(bytes).toBeLessThanOrEqual(limits.scanBytesMax);
      pages.push(r.entries.length);
      if (r.next === undefined) break;
      from = r.next;
    }
    expect(pages).toEqual([2, 2, 1]);
  });

  it('orders binary keys bytewise, including 0x00 and 0xff and shared prefixes', async () => {
    const { store, run } = await openRange();
    const keys = [
      [0x00],
      [0x00, 0x00],
      [0x00, 0x01],
      [0x01],
      [0x61],
      [0x61, 0x00],
      [0x61, 0x61],
      [0x7f, 0xff],
      [0x80],
      [0xff],
      [0xff, 0x00],
      [0xff, 0xff, 0xff],
    ].map((k) => b(k));
    // Applied in reverse order: the scan's order is the keys', not the writes'.
    await run(...[...keys].reverse().map((k, i) => set(k, b([i]))));
    const all = store.scan(new Uint8Array(0), null, 100, big);
    expect(all.entries.map(([k]) => Buffer.from(k))).toEqual(keys);
    // [0x00, 0x01) holds 0x00 and 0x00 0x00 and 0x00 0x01, not 0x01.
    const span = store.scan(b([0x00]), b([0x01]), 100, big);
    expect(span.entries.map(([k]) => Buffer.from(k))).toEqual(keys.slice(0, 3));
    // [0xff, end of keyspace).
    const tail = store.scan(b([0xff]), null, 2, big);
    expect(tail.entries.map(([k]) => Buffer.from(k))).toEqual(keys.slice(9, 11));
    expect(Buffer.from(tail.next!)).toEqual(keys[11]);
  });

  it('sees deletes and overwrites, and only user data', async () => {
    const { store, run } = await openRange();
    await run(set('a', '1'), set('b', '2'), set('c', '3'));
    await run(del('b'), set('c', '33'), set('d', '4'));
    // Request records and expiry items exist for every command; the scan sees none of them.
    expect(store.inspectRequests(b('b'))).toHaveLength(2);
    expect(store.inspectExpiry(1).length).toBeGreaterThan(0);
    expect(view(store.scan(b(''), null, 100, big))).toEqual({
      entries: [
        ['a', '1'],
        ['c', '33'],
        ['d', '4'],
      ],
    });
  });

  it('returns copies that stay valid after later writes', async () => {
    const { store, run } = await openRange();
    await run(set('a', 'first'));
    const r = store.scan(b(''), null, 10, big);
    await run(set('a', 'second'), set('b', 'other'));
    expect(Buffer.from(r.entries[0]![1]).toString()).toBe('first');
    expect(view(store.scan(b(''), null, 10, big)).entries).toEqual([
      ['a', 'second'],
      ['b', 'other'],
    ]);
  });
});
