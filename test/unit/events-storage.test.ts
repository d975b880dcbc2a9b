// Mutation events in the store (subscribe's storage, docs/streams.md): written with the
// apply, read in revision order, carried across splits, compacted by a replicated command,
// carried by snapshots. On real LMDB environments in temporary directories.

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { open as lmdbOpen } from 'lmdb';
import { afterEach, describe, expect, it } from 'vitest';
import { assert, InvariantViolation } from '../../ranges/core/assert.ts';
import type { Configuration, Entry, Snapshot } from '../../ranges/core/types.ts';
import { Prng } from '../../src/lib/prng.ts';
import {
  EventsTail,
  encodeTailEvent,
  type TailItem,
  TailReplyEncoder,
  tailItem,
  tailItemsMax,
} from '../../src/node/events-tail.ts';
import { decode, limits, type WireEvent } from '../../src/protocol/wire.ts';
import {
  type ApplyResult,
  type Command,
  decodeCommand,
  decodeRangeCommand,
  decodeRecord,
  encodeCommand,
  encodeRangeCommand,
  packr,
  type RangeCommand,
} from '../../src/storage/commands.ts';
import {
  directoryKey,
  encodeDescriptor,
  inSpan,
  type RangeDescriptor,
  rangeIdCounterKey,
  showSpan,
  spansOverlap,
  systemPrefix,
} from '../../src/storage/descriptor.ts';
import {
  decodeEvent,
  eventBytes,
  eventsDeletedPerEntry,
  eventToWire,
} from '../../src/storage/events.ts';
import {
  type EventsRead,
  type RangeEvent,
  Store,
  type StoredEvent,
  type StoreOptions,
  type TurnCommit,
} from '../../src/storage/store.ts';
import { cas, del, set, split } from './commands-fixture.ts';

const config: Configuration = { voters: [1, 2, 3], outgoing: [], learners: [] };
const b = (s: string): Buffer => Buffer.from(s);
const str = (x: Uint8Array | undefined): string | undefined =>
  x === undefined ? undefined : Buffer.from(x).toString();

const dirs: string[] = [];
const stores: Store[] = [];

afterEach(async () => {
  for (const s of stores.splice(0)) await s.close();
  for (const d of dirs.splice(0)) fs.rmSync(d, { recursive: true, force: true });
});

function tempDir(): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'rasputin-events-'));
  dirs.push(dir);
  return dir;
}

function openStore(dir = tempDir(), options: StoreOptions = {}): Store {
  const store = Store.open(dir, options);
  stores.push(store);
  return store;
}

async function closeStore(store: Store): Promise<void> {
  stores.splice(stores.indexOf(store), 1);
  await store.close();
}

function range(rangeId: number, start: string, end: string | null): RangeDescriptor {
  return {
    rangeId,
    start: b(start),
    end: end === null ? null : b(end),
    replicas: [
      { nodeId: 'a', replicaId: 1, role: 'voter' },
      { nodeId: 'b', replicaId: 2, role: 'voter' },
      { nodeId: 'c', replicaId: 3, role: 'voter' },
    ],
    generation: 1,
  };
}

const whole = range(1, '', null);

type Item = Command | RangeCommand | 'noop' | Uint8Array;

const compact = (upTo: number): RangeCommand => ({ op: 'compactEvents', upTo });

function encodeItem(item: Exclude<Item, 'noop'>): Uint8Array {
  if (item instanceof Uint8Array) return item;
  return item.op === 'compactEvents' || item.op === 'forgetRequests'
    ? encodeRangeCommand(item)
    : encodeCommand(item);
}

/**
 * Appends and applies entries to a store's ranges as a replica does (write, then apply,
 * in one turn), keeping each range's last index; every turn is recorded so that another
 * store can replay the same log with other batching.
 */
class Replica {
  private readonly last = new Map<number, number>();
  readonly turns: Array<{ rangeId: number; entries: Entry[] }> = [];
  /** The last turn's entries and the events it recorded (TurnCommit). */
  lastTurn:
    | {
        first: number;
        last: number;
        mutations: TurnCommit['mutations'];
        eventsOldest: TurnCommit['eventsOldest'];
      }
    | undefined;

  constructor(
    public store: Store,
    private readonly dir?: string,
    private readonly options: StoreOptions = {},
  ) {}

  /** Closes the store and opens it again, as a restarted node does. */
  async reopen(): Promise<void> {
    assert(this.dir !== undefined, 'a replica made by newReplica');
    await closeStore(this.store);
    this.store = openStore(this.dir, this.options);
  }

  lastIndex(rangeId: number): number {
    let last = this.last.get(rangeId);
    if (last === undefined) {
      last = this.store.loadRange(rangeId)!.state.applied;
      this.last.set(rangeId, last);
    }
    return last;
  }

  async run(rangeId: number, items: Item[], term = 1): Promise<ApplyResult[]> {
    let index = this.lastIndex(rangeId);
    const entries: Entry[] = items.map((item) =>
      item === 'noop'
        ? { index: ++index, term, kind: 'noop', data: new Uint8Array(0) }
        : { index: ++index, term, kind: 'normal', data: encodeItem(item) },
    );
    return this.apply(rangeId, entries);
  }

  async apply(rangeId: number, entries: Entry[]): Promise<ApplyResult[]> {
    const turn = this.store.beginTurn();
    turn.write(rangeId, {
      id: 1,
      hardState: { term: entries.at(-1)!.term, vote: 0, commit: entries.at(-1)!.index },
      entries,
      snapshot: null,
    });
    turn.apply(rangeId, entries);
    const { results, mutations, eventsOldest, durable } = turn.commit();
    const out = (await results).get(rangeId)!;
    this.lastTurn = {
      first: entries[0]!.index,
      last: entries.at(-1)!.index,
      mutations,
      eventsOldest,
    };
    await durable;
    expect(out).toHaveLength(entries.length);
    this.last.set(rangeId, entries.at(-1)!.index);
    this.turns.push({ rangeId, entries });
    for (const r of out) {
      if (r.ok && r.split) this.last.set(r.split.right.rangeId, entries.at(-1)!.index);
    }
    return out;
  }
}

async function newReplica(
  d: RangeDescriptor = whole,
  options: StoreOptions = {},
): Promise<Replica> {
  const dir = tempDir();
  const store = openStore(dir, options);
  await store.createRange(d, config);
  return new Replica(store, dir, options);
}

/** An event as a short readable row. */
function row(e: StoredEvent): unknown[] {
  switch (e.op) {
    case 'set':
      return e.prevValue === undefined
        ? [e.revision, 'set', str(e.key), str(e.value)]
        : [e.revision, 'set', str(e.key), str(e.value), `prev ${str(e.prevValue)}`];
    case 'del':
      return [e.revision, 'del', str(e.key), `prev ${str(e.prevValue)}`];
    case 'split':
      return [
        e.revision,
        'split',
        `${e.left.rangeId} ${showSpan(e.left)} g${e.left.generation}`,
        `${e.right.rangeId} ${showSpan(e.right)} g${e.right.generation}`,
      ];
  }
}

function page(read: EventsRead | undefined): Extract<EventsRead, { compacted: false }> {
  expect(read).toBeDefined();
  expect(read!.compacted).toBe(false);
  return read as Extract<EventsRead, { compacted: false }>;
}

/** Every event after `after`, following `next` in pages of `limit`. */
function readAll(store: Store, rangeId: number, after: number, limit = 1000, prefix?: string) {
  const events: StoredEvent[] = [];
  for (;;) {
    const p = page(store.events(rangeId, after, limit, prefix ? { prefix: b(prefix) } : {}));
    for (const e of p.events) expect(e.revision).toBeGreaterThan(after);
    expect(p.next).toBeGreaterThanOrEqual(after);
    events.push(...p.events);
    if (p.next === p.applied) return events;
    expect(p.next).toBeGreaterThan(after); // a page that is not the last makes progress
    after = p.next;
  }
}

describe('events of applied entries', () => {
  it('one event per change of user data, with the previous value; none for no-ops', async () => {
    const r = await newReplica(range(1, '', 'm'));
    const results = await r.run(1, [
      set('a', '1', 'i1'), // 1
      set('a', '2', 'i2'), // 2
      cas('a', '2', '3', 'i3'), // 3: succeeds
      cas('a', 'x', '4', 'i4'), // 4: fails
      cas('f', null, 'new', 'i5'), // 5: creates
      del('a', 'i6'), // 6
      del('a', 'i7'), // 7: absent
      set('a', '2', 'i2'), // 8: a retry of 2, which applied already
      del('f'), // 9: no request id
      cas('a', 'x', '4', 'i4'), // 10: a retry of the failed cas
      { op: 'alloc', key: rangeIdCounterKey, id: b('i11') }, // 11: system key
      {
        op: 'desc',
        key: directoryKey(1),
        value: encodeDescriptor(whole),
        generation: 1,
        id: b('i12'),
      }, // 12: system key
      'noop', // 13
      b('garbage'), // 14
      set('z', 'outside'), // 15: outside the span
      set('k', 'same', 'i16'), // 16
      set('k', 'same', 'i17'), // 17: the same value is still a set
      // 18: a system key (the node refuses these from clients; the store applies them)
      { op: 'set', key: Buffer.concat([systemPrefix, b('x')]), value: b('v'), id: b('') },
    ]);
    // Only the garbage and the key outside the span fail.
    expect(results.flatMap((x, i) => (x.ok ? [] : [i + 1]))).toEqual([14, 15]);
    const read = page(r.store.events(1, 0, 100));
    expect(read.events.map(row)).toEqual([
      [1, 'set', 'a', '1'],
      [2, 'set', 'a', '2', 'prev 1'],
      [3, 'set', 'a', '3', 'prev 2'],
      [5, 'set', 'f', 'new'],
      [6, 'del', 'a', 'prev 3'],
      [9, 'del', 'f', 'prev new'],
      [16, 'set', 'k', 'same'],
      [17, 'set', 'k', 'same', 'prev same'],
    ]);
    expect(read).toMatchObject({ next: 18, applied: 18, oldestRetained: 1 });
    // The revision is the data record's revision: the log index of the change.
    expect(r.store.get(b('k'))!.revision).toBe(17);
  });

  it('a failed turn writes no events', async () => {
    const r = await newReplica();
    await r.run(1, [set('a', '1')]);
    const turn = r.store.beginTurn();
    const e2: Entry = { index: 2, term: 1, kind: 'normal', data: encodeCommand(set('b', '2')) };
    turn.write(1, {
      id: 1,
      hardState: { term: 1, vote: 0, commit: 2 },
      entries: [e2],
      snapshot: null,
    });
    turn.apply(1, [e2]);
    turn.apply(1, [e2]); // applied twice: an invariant violation, the turn rolls back
    await expect(turn.commit().results).rejects.toThrow(InvariantViolation);
    expect(r.store.inspectEvents(1).revisions).toEqual([1]);
    expect(page(r.store.events(1, 0, 10)).applied).toBe(1);
  });
});

describe('reading events', () => {
  async function filled(): Promise<{ r: Replica; all: StoredEvent[] }> {
    const r = await newReplica();
    const keys = ['x1', 'y1', 'x2'];
    await r.run(
      1,
      Array.from({ length: 20 }, (_, i) => set(keys[i % 3]!, `v${i}`.padEnd(100, '.'))),
    );
    await r.run(1, ['noop', 'noop']); // applied runs past the last event
    const all = page(r.store.events(1, 0, 1000)).events;
    return { r, all };
  }

  it('pages follow `next` in revision order, up to a limit, to the applied index', async () => {
    const { r, all } = await filled();
    expect(all.map((e) => e.revision)).toEqual(Array.from({ length: 20 }, (_, i) => i + 1));
    const first = page(r.store.events(1, 0, 7));
    expect(first.events.map((e) => e.revision)).toEqual([1, 2, 3, 4, 5, 6, 7]);
    expect(first).toMatchObject({ next: 7, applied: 22, oldestRetained: 1 });
    for (const limit of [1, 3, 7, 19, 20, 21]) {
      expect(readAll(r.store, 1, 0, limit)).toEqual(all);
    }
    // The last page reaches the end of the stream: next is the applied index.
    expect(page(r.store.events(1, 15, 100))).toMatchObject({ next: 22, applied: 22 });
  });

  it('a prefix keeps its keys only; next moves past events it skips', async () => {
    const { r, all } = await filled();
    const xs = all.filter((e) => e.op === 'set' && str(e.key)!.startsWith('x'));
    expect(xs).toHaveLength(13);
    for (const limit of [1, 2, 5]) expect(readAll(r.store, 1, 0, limit, 'x')).toEqual(xs);
    const p = page(r.store.events(1, 0, 2, { prefix: b('x') }));
    expect(p.events.map((e) => [e.revision, str((e as { key: Uint8Array }).key)])).toEqual([
      [1, 'x1'],
      [3, 'x2'],
    ]);
    expect(p.next).toBe(3);
    expect(page(r.store.events(1, 0, 100, { prefix: b('x2') })).events).toHaveLength(6);
    // A prefix that matches nothing reads to the end and reports it.
    expect(page(r.store.events(1, 0, 100, { prefix: b('q') }))).toMatchObject({
      events: [],
      next: 22,
    });
  });

  it('a page stays within its byte budget, but holds at least one event', async () => {
    const { r, all } = await filled();
    const two = eventBytes(all[0]!) + eventBytes(all[1]!);
    expect(page(r.store.events(1, 0, 100, { bytesMax: two })).events).toEqual(all.slice(0, 2));
    expect(page(r.store.events(1, 0, 100, { bytesMax: two - 1 })).events).toEqual(all.slice(0, 1));
    const tiny = page(r.store.events(1, 0, 100, { bytesMax: 1 }));
    expect(tiny.events).toEqual(all.slice(0, 1));
    expect(tiny.next).toBe(1);
  });

  it('examinedMax bounds the work of a rare prefix; next says how far it got', async () => {
    const { r } = await filled();
    const p = page(r.store.events(1, 0, 100, { prefix: b('q'), examinedMax: 5 }));
    expect(p).toMatchObject({ events: [], next: 5, applied: 22 });
    const q = page(r.store.events(1, 5, 100, { prefix: b('y'), examinedMax: 5 }));
    expect(q.events.map((e) => e.revision)).toEqual([8]);
    expect(q.next).toBe(10);
  });

  it('tells "nothing yet" by applied, never moves a cursor back, and knows no foreign range', async () => {
    const { r } = await filled();
    expect(page(r.store.events(1, 22, 10))).toMatchObject({ events: [], next: 22, applied: 22 });
    // A cursor from a replica that is ahead of this one stays where it is.
    expect(page(r.store.events(1, 30, 10))).toMatchObject({ events: [], next: 30, applied: 22 });
    await r.run(1, ['noop']);
    expect(page(r.store.events(1, 22, 10))).toMatchObject({ events: [], next: 23, applied: 23 });
    await r.run(1, [set('x9', 'new')]);
    expect(page(r.store.events(1, 23, 10)).events.map(row)).toEqual([[24, 'set', 'x9', 'new']]);
    expect(r.store.events(99, 0, 10)).toBeUndefined();
  });

  it('returned events share no memory with the store', async () => {
    const r = await newReplica();
    await r.run(1, [set('a', 'one'), set('a', 'two')]);
    const first = page(r.store.events(1, 0, 10)).events;
    (first[1] as { value: Uint8Array }).value.fill(0);
    const again = page(r.store.events(1, 0, 10)).events;
    expect(again.map(row)).toEqual([
      [1, 'set', 'a', 'one'],
      [2, 'set', 'a', 'two', 'prev one'],
    ]);
  });
});

describe('events across a split', () => {
  it('the parent keeps a marker; the right-hand range continues with higher revisions', async () => {
    const r = await newReplica();
    await r.run(1, [set('a', '1'), set('x', '1')]);
    const [refused] = await r.run(1, [split('m', 5, 7)]); // stale generation: no marker
    expect(refused!.ok).toBe(false);
    await r.run(1, [split('m', 1, 7)], 2); // 4
    expect(r.store.inspectEvents(7)).toEqual({ revisions: [], oldestRetained: 5 });
    await r.run(7, [set('x', '2')], 2); // 5 in range 7
    await r.run(1, [set('a', '2')], 2); // 5 in range 1
    expect(readAll(r.store, 1, 0).map(row)).toEqual([
      [1, 'set', 'a', '1'],
      [2, 'set', 'x', '1'],
      [4, 'split', '1 [\'\', "m") g2', '7 ["m", ∞) g2'],
      [5, 'set', 'a', '2', 'prev 1'],
    ]);
    // A reader of x's prefix in the parent learns where x went, and continues there.
    const parent = page(r.store.events(1, 0, 10, { prefix: b('x') }));
    expect(parent.events.map(row)).toEqual([
      [2, 'set', 'x', '1'],
      [4, 'split', '1 [\'\', "m") g2', '7 ["m", ∞) g2'],
    ]);
    const marker = parent.events[1]!;
    expect(marker.op === 'split' && marker.right.rangeId).toBe(7);
    expect(page(r.store.events(7, marker.revision, 10)).events.map(row)).toEqual([
      [5, 'set', 'x', '2', 'prev 1'],
    ]);
    // The right-hand range holds nothing before the split: an older cursor is told so.
    expect(r.store.events(7, 3, 10)).toEqual({ compacted: true, oldestRetained: 5, applied: 5 });
  });
});

describe('compaction of events', () => {
  it('compactEvents is a replicated command; keyed-command code never sees it', () => {
    const bytes = encodeRangeCommand(compact(30));
    expect(decodeRangeCommand(bytes)).toEqual({ op: 'compactEvents', upTo: 30 });
    // The msgpack map of earlier versions (in an upgraded store's journal) still reads.
    const old = packr.pack({ op: 'compactEvents', upTo: 30 });
    expect(decodeRangeCommand(old)).toEqual({ op: 'compactEvents', upTo: 30 });
    expect(decodeCommand(old)).toBeUndefined();
    expect(decodeCommand(bytes)).toBeUndefined();
    expect(decodeRangeCommand(encodeCommand(set('a', '1')))).toBeUndefined();
    for (const upTo of [-1, 1.5, '3', null]) {
      expect(decodeRangeCommand(packr.pack({ op: 'compactEvents', upTo }))).toBeUndefined();
    }
  });

  it('compacts at once, deletes a bounded number per entry, and refuses older cursors', async () => {
    const r = await newReplica();
    await r.run(
      1,
      Array.from({ length: 40 }, (_, i) => set(`k${i % 4}`, `${i + 1}`)),
    );
    expect(await r.run(1, [compact(30)])).toEqual([{ ok: true }]); // entry 41
    // Every reader sees the new window at once.
    expect(r.store.events(1, 29, 10)).toEqual({ compacted: true, oldestRetained: 31, applied: 41 });
    expect(r.store.events(1, 0, 10)).toEqual({ compacted: true, oldestRetained: 31, applied: 41 });
    const ok = page(r.store.events(1, 30, 100));
    expect(ok.events.map((e) => e.revision)).toEqual(revisions(31, 40));
    expect(ok.oldestRetained).toBe(31);
    // The deletes: eventsDeletedPerEntry (d) per applied entry, oldest first; more than
    // the one event an entry adds, so a backlog drains while writes go on.
    const d = eventsDeletedPerEntry;
    expect(d).toBeGreaterThan(1);
    const stored = () => r.store.inspectEvents(1).revisions;
    expect(stored()).toEqual(revisions(1 + d, 40)); // by the compaction's own entry
    await r.run(1, ['noop']);
    expect(stored()).toEqual(revisions(1 + 2 * d, 40));
    await r.run(1, ['noop', 'noop']); // per entry, not per turn
    expect(stored()).toEqual(revisions(Math.min(31, 1 + 4 * d), 40));
    // The rest goes with the next entries, and never an event of the window.
    const drain = async (first: number) => {
      for (let i = 0; i < 40 && stored()[0]! < first; i++) {
        const before = stored().length;
        await r.run(1, ['noop']);
        expect(before - stored().length).toBeLessThanOrEqual(d);
      }
    };
    await drain(31);
    expect(stored()).toEqual(revisions(31, 40));
    await r.run(1, ['noop']);
    expect(stored()).toEqual(revisions(31, 40));
    // An older point changes nothing; a point past the entry compacts up to the entry.
    await r.run(1, [compact(10)]);
    expect(r.store.inspectEvents(1).oldestRetained).toBe(31);
    await r.run(1, [compact(1000)]);
    const c = r.lastIndex(1); // the compaction's entry
    expect(r.store.inspectEvents(1).oldestRetained).toBe(c + 1);
    expect(page(r.store.events(1, c, 10))).toMatchObject({ events: [], next: c });
    expect(r.store.events(1, c - 1, 10)).toMatchObject({
      compacted: true,
      oldestRetained: c + 1,
    });
    await r.run(1, [set('k0', 'after')]);
    expect(page(r.store.events(1, c, 10)).events.map(row)).toEqual([
      [c + 1, 'set', 'k0', 'after', 'prev 37'],
    ]);
    await drain(c + 1);
    expect(stored()).toEqual([c + 1]);
  });

  it('replicas that batch entries differently retain and delete the same events', async () => {
    const a = await newReplica();
    const items: Item[] = [];
    for (let i = 0; i < 60; i++) {
      items.push(i % 7 === 3 ? del(`k${i % 5}`) : set(`k${i % 5}`, `${i}`));
      if (i === 25) items.push(compact(20));
      if (i === 50) items.push(compact(45));
    }
    await a.run(1, items);
    // One entry per turn, each event written to the events tree (as a's 62 in one apply
    // were): the same events stored and deleted.
    const b2 = await newReplica(whole, { eventsDirectMin: 1 });
    // One entry per turn, the events pending (in the eventlog): the same reads.
    const b3 = await newReplica(whole, { eventsDirectRanges: 0 });
    for (const { entries } of a.turns) {
      for (const e of entries) {
        await b2.apply(1, [e]);
        await b3.apply(1, [e]);
      }
    }
    expect(b2.store.inspectEvents(1)).toEqual(a.store.inspectEvents(1));
    expect(b3.store.stats.eventsPended).toBeGreaterThan(40);
    for (const after of [0, 19, 45, 46, 50, 62]) {
      expect(b2.store.events(1, after, 5)).toEqual(a.store.events(1, after, 5));
      expect(b3.store.events(1, after, 5)).toEqual(a.store.events(1, after, 5));
    }
  });

  it('eventsToCompact proposes a window of revisions, one batch at a time', async () => {
    const r = await newReplica();
    await r.run(
      1,
      Array.from({ length: 40 }, (_, i) => set('k', `${i}`)),
    );
    expect(r.store.eventsToCompact(1, 100)).toBeUndefined();
    expect(r.store.eventsToCompact(1, 40)).toBeUndefined();
    expect(r.store.eventsToCompact(1, 20)).toBe(20); // batch: a quarter of the window, 5
    expect(r.store.eventsToCompact(1, 36)).toBeUndefined(); // 4 revisions over, batch 9
    expect(r.store.eventsToCompact(1, 36, 4)).toBe(4);
    await r.run(1, [compact(20)]); // 41
    expect(r.store.eventsToCompact(1, 20)).toBeUndefined();
    await r.run(1, ['noop', 'noop', 'noop']); // 44
    expect(r.store.eventsToCompact(1, 20)).toBeUndefined(); // 24 - 20 = 4 < 5
    await r.run(1, ['noop']); // 45
    expect(r.store.eventsToCompact(1, 20)).toBe(25);
    expect(r.store.eventsToCompact(1, 0)).toBe(45);
  });
});

/** Installs `snap` into `store`'s range in one turn. */
async function install(store: Store, rangeId: number, snap: Snapshot): Promise<void> {
  const turn = store.beginTurn();
  turn.write(rangeId, {
    id: 1,
    hardState: { term: snap.meta.term, vote: 0, commit: snap.meta.index },
    entries: [],
    snapshot: snap,
  });
  await turn.commit().durable;
}

/** Every answer of events() a reader could get, for cursors 0..applied + 1. */
function answers(store: Store, rangeId: number, applied: number): unknown[] {
  const out: unknown[] = [];
  for (let after = 0; after <= applied + 1; after++) {
    out.push(store.events(rangeId, after, 3));
    out.push(store.events(rangeId, after, 100, { prefix: b('k1') }));
  }
  return out;
}

describe('snapshots carry events', () => {
  async function source(): Promise<Replica> {
    const r = await newReplica();
    await r.run(
      1,
      Array.from({ length: 30 }, (_, i) =>
        i % 6 === 5 ? del(`k${i % 3}`) : set(`k${i % 3}`, `${i}`),
      ),
    );
    await r.run(1, [split('k2', 1, 7)], 2); // 31
    await r.run(7, [set('k2', 'right'), del('k2'), set('k3', 'r')], 2); // 32..34
    await r.run(1, [set('k1', 'left'), compact(12)], 2); // 32, 33: 8 of 12 deleted so far
    return r;
  }

  it('a snapshot holds the retained events as plain msgpack; an install rebuilds them', async () => {
    const src = await source();
    // Compacted, not all deleted yet.
    expect(src.store.inspectEvents(1).revisions[0]).toBe(1 + eventsDeletedPerEntry);
    const snap = src.store.takeSnapshot(1);
    const data = packr.unpack(snap.data) as { oldestRetained: number; events: unknown[] };
    expect(data.oldestRetained).toBe(13);
    // Only the retained events travel, as [revision, event] with plain maps.
    expect(data.events.map((pair) => (pair as [number])[0])).toEqual(
      page(src.store.events(1, 12, 1000)).events.map((e) => e.revision),
    );
    expect(data.events[0]).toEqual([
      13,
      { op: 'set', key: b('k0'), value: b('12'), prevValue: b('9') },
    ]);

    // A replica with another history of the range: all of it is replaced.
    const dst = await newReplica();
    await dst.run(
      1,
      Array.from({ length: 50 }, (_, i) => set(`other${i}`, 'x')),
    );
    await install(dst.store, 1, snap);
    const installed = new Replica(dst.store);
    expect(dst.store.inspectEvents(1)).toEqual({
      revisions: data.events.map((pair) => (pair as [number])[0]),
      oldestRetained: 13,
    });
    expect(answers(dst.store, 1, 33)).toEqual(answers(src.store, 1, 33));
    expect(Buffer.from(dst.store.takeSnapshot(1).data).equals(Buffer.from(snap.data))).toBe(true);

    // The right-hand range's snapshot: its own events only, from the split on.
    const snap7 = src.store.takeSnapshot(7);
    const right = openStore();
    await right.createRange(src.store.descriptor(7)!, config);
    await install(right, 7, snap7);
    expect(right.inspectEvents(7)).toEqual({ revisions: [32, 33, 34], oldestRetained: 32 });
    expect(answers(right, 7, 34)).toEqual(answers(src.store, 7, 34));

    // Both go on alike.
    const more: Item[] = [set('k1', 'more'), 'noop', del('k1')];
    await src.run(1, more, 3);
    await installed.run(1, more, 3);
    expect(answers(dst.store, 1, 36)).toEqual(answers(src.store, 1, 36));
    // The source still holds compacted events it has not deleted yet; the installed replica
    // never had them.
    const retained = (store: Store) => {
      const { revisions, oldestRetained } = store.inspectEvents(1);
      return { revisions: revisions.filter((x) => x >= oldestRetained), oldestRetained };
    };
    expect(retained(dst.store)).toEqual(retained(src.store));
    expect(dst.store.inspectEvents(1).revisions[0]).toBe(13);
  });

  it('refuses a snapshot whose events are out of order, outside the window or malformed', async () => {
    const src = await source();
    const snap = src.store.takeSnapshot(1);
    const data = packr.unpack(snap.data) as Record<string, unknown> & { events: unknown[][] };
    const [e13, e14] = data.events as [unknown[], unknown[]];
    const order = /revisions ascend within the retained, applied window/;
    const bad: Array<[Record<string, unknown>, RegExp]> = [
      [{ events: [e14, e13] }, order],
      [{ events: [e13, e13] }, order],
      [{ events: [[12, e13[1]], e14] }, order], // below oldestRetained
      [{ events: [[34, e13[1]]] }, order], // past applied (33)
      [{ events: [[13, { op: 'set', key: b('k0') }]] }, /events are events/], // no value
      [{ events: [[13, { op: 'split', left: 1, right: 2 }]] }, /events are events/],
      [{ events: [[13, { op: 'del', key: b('k0') }]] }, /events are events/], // no prevValue
      [{ events: [13] }, /\[revision, event\]/],
      [{ oldestRetained: undefined }, /oldest retained/],
      [{ oldestRetained: 35 }, /oldest retained/], // past applied + 1
      [{ events: undefined }, /has its events/],
    ];
    const dst = await newReplica();
    await dst.run(1, [set('mine', '1')]);
    // The unchanged data installs (on another store): the cases differ from it in one field.
    const good = openStore();
    await good.createRange(whole, config);
    await install(good, 1, { meta: snap.meta, data: packr.pack(data) });
    for (const [change, why] of bad) {
      const broken = { ...data, ...change };
      const turn = dst.store.beginTurn();
      turn.write(1, {
        id: 1,
        hardState: { term: 2, vote: 0, commit: 33 },
        entries: [],
        snapshot: { meta: snap.meta, data: packr.pack(broken) },
      });
      const results = turn.commit().results;
      await expect(results).rejects.toThrow(InvariantViolation);
      await expect(results).rejects.toThrow(why);
    }
    expect(dst.store.inspectEvents(1)).toEqual({ revisions: [1], oldestRetained: 1 });
  });
});

describe('events on disk', () => {
  it('survive a restart, and a compaction goes on deleting after it', async () => {
    const dir = tempDir();
    let store = openStore(dir);
    await store.createRange(whole, config);
    let r = new Replica(store);
    await r.run(
      1,
      Array.from({ length: 30 }, (_, i) => set(`k${i % 2}`, `${i}`)),
    );
    const d = eventsDeletedPerEntry;
    await r.run(1, [compact(25)]); // 31: d deleted
    const before = answers(store, 1, 31);
    const stored = store.inspectEvents(1);
    expect(stored.revisions[0]).toBe(1 + d);
    await closeStore(store);
    store = openStore(dir);
    expect(answers(store, 1, 31)).toEqual(before);
    expect(store.inspectEvents(1)).toEqual(stored);
    r = new Replica(store);
    await r.run(1, ['noop']);
    expect(store.inspectEvents(1).revisions[0]).toBe(1 + 2 * d);
    // The rest goes with the next entries, d each, and never an event of the window.
    const left = Math.ceil((26 - (1 + 2 * d)) / d);
    await r.run(
      1,
      Array.from({ length: left }, () => 'noop' as const),
    );
    expect(store.inspectEvents(1).revisions).toEqual(revisions(26, 30));
  });

  it('refuses a store with ranges in layout 2 (no events), upgrades 3 and one without ranges', async () => {
    const dir = tempDir();
    let store = openStore(dir, olderWrites);
    await store.createRange(whole, config);
    await closeStore(store);
    await setStorageFormat(dir, '2');
    expect(() => Store.open(dir)).toThrow(/older storage layout \(2: no mutation events\)/);
    await setStorageFormat(dir, '10');
    expect(() => Store.open(dir)).toThrow(/unknown storage layout 10/);
    // Layout 3 (every request record apart) is layout 4 without inline requests: upgraded.
    await asOlderLayout(dir, '3');
    store = openStore(dir);
    expect(store.getMeta('storageFormat')).toBe('9');
    expect(store.ranges()).toEqual([whole]);
    await closeStore(store);

    const empty = tempDir();
    store = openStore(empty);
    const storeId = store.storeId;
    await closeStore(store);
    await setStorageFormat(empty, '2');
    store = openStore(empty);
    expect(store.storeId).toBe(storeId);
    expect(store.getMeta('storageFormat')).toBe('9');
  });

  for (const format of ['4', '5'] as const) {
    it(`upgrades layout ${format} (a log tree per range) and goes on from its progress`, async () => {
      const dir = tempDir();
      let store = openStore(dir, olderWrites);
      await store.createRange(whole, config);
      let r = new Replica(store);
      await r.run(1, [set('a', '1'), set('b', '2'), 'noop'], 3);
      await r.run(1, ['noop', set('c', '3')], 4);
      const before = logOf(store);
      expect(before.applied).toBe(5);
      const snapshot = store.takeSnapshot(1);
      await closeStore(store);
      await asOlderLayout(dir, format);
      store = openStore(dir);
      expect(store.getMeta('storageFormat')).toBe('9');
      expect(logOf(store)).toEqual(before);
      // The applied entry's term comes from the old log: snapshots carry it.
      expect(store.takeSnapshot(1).meta).toEqual(snapshot.meta);
      r = new Replica(store);
      await r.run(1, [set('d', '4')], 4);
      await closeStore(store);
      store = openStore(dir);
      expect(store.loadRange(1)!.state.applied).toBe(6);
      expect(store.loadRange(1)!.state.entries.map((e) => e.index)).toEqual([1, 2, 3, 4, 5, 6]);
      expect(store.loadRange(1)!.state.hardState).toEqual({ term: 4, vote: 0, commit: 6 });
      expect(store.get(new TextEncoder().encode('d'))?.revision).toBe(6);
    });
  }

  it('upgrades layout 6 (msgpack commands, records and events) by reading them as they are', async () => {
    const dir = tempDir();
    let store = openStore(dir, olderWrites);
    await store.createRange(whole, config);
    let r = new Replica(store);
    await r.run(1, [set('a', '1', 'i1'), set('b', '2', 'i2'), cas('a', '1', '3', 'i3')], 3);
    await r.run(1, [del('b', 'i4'), compact(1), set('c', '4', 'i5')], 3);
    const before = logOf(store);
    expect(before.entries).toHaveLength(6);
    const records = ['a', 'b', 'c'].map((k) => store.get(b(k)));
    const stream = readAll(store, 1, 1);
    expect(stream.map((e) => e.revision)).toEqual([2, 3, 4, 6]);
    await closeStore(store);
    await asOlderLayout(dir, '6');
    store = openStore(dir);
    expect(store.getMeta('storageFormat')).toBe('9');
    expect(logOf(store)).toEqual(before);
    expect(['a', 'b', 'c'].map((k) => store.get(b(k)))).toEqual(records);
    expect(readAll(store, 1, 1)).toEqual(stream);
    // A request recorded by layout 6 is still remembered: its retry changes nothing.
    r = new Replica(store);
    const retry = await r.run(1, [cas('a', '1', '3', 'i3'), set('d', '5', 'i6')], 3);
    expect(retry[0]).toEqual({ ok: true, success: true, value: b('3'), duplicate: true });
    await closeStore(store);
    store = openStore(dir);
    expect(str(store.get(b('a'))?.value)).toBe('3');
    expect(str(store.get(b('d'))?.value)).toBe('5');
    expect(readAll(store, 1, 1).map((e) => e.revision)).toEqual([2, 3, 4, 6, 8]);
  });

  it('upgrades layout 7 (no eventlog): events go on from the events tree, pending after', async () => {
    const dir = tempDir();
    let store = openStore(dir, olderWrites);
    await store.createRange(whole, config);
    await new Replica(store).run(1, [set('a', '1'), set('b', '2'), del('a')]);
    const stream = readAll(store, 1, 0);
    expect(stream.map((e) => e.revision)).toEqual([1, 2, 3]);
    await closeStore(store);
    await asOlderLayout(dir, '7');
    store = openStore(dir, { eventsDirectRanges: 0 });
    expect(store.getMeta('storageFormat')).toBe('9');
    expect(readAll(store, 1, 0)).toEqual(stream);
    const r = new Replica(store);
    await r.run(1, [set('c', '3')]);
    await r.run(1, [set('d', '4')]);
    expect(store.stats.eventsPended).toBe(2);
    expect(readAll(store, 1, 0).map((e) => e.revision)).toEqual([1, 2, 3, 4, 5]);
    await closeStore(store);
    store = openStore(dir);
    expect(readAll(store, 1, 2).map((e) => row(e))).toEqual([
      [3, 'del', 'a', 'prev 1'],
      [4, 'set', 'c', '3'],
      [5, 'set', 'd', '4'],
    ]);
  });

  it('upgrades layout 8 (one eventlog tree): its records are the first segment', async () => {
    const dir = tempDir();
    const pendAll: StoreOptions = { eventsDirectRanges: 0, eventsPendingMax: 100_000 };
    let store = openStore(dir, pendAll);
    await store.createRange(whole, config);
    let r = new Replica(store);
    for (const k of ['a', 'b', 'c', 'd', 'e']) await r.run(1, [set(k, k)]);
    expect(store.stats.eventsPended).toBe(5);
    const stream = readAll(store, 1, 0);
    expect(store.inspectEventlog()).toEqual({ records: [5, 0, 0, 0], head: 0 });
    await closeStore(store);
    await setStorageFormat(dir, '8');
    // Segments of 2: the old tree is full at once, and its events hold up the others.
    store = openStore(dir, { ...pendAll, eventlogSegmentRecords: 2 });
    expect(store.getMeta('storageFormat')).toBe('9');
    expect(readAll(store, 1, 0)).toEqual(stream);
    r = new Replica(store);
    for (const k of ['f', 'g', 'h', 'i', 'j', 'k', 'l']) await r.run(1, [set(k, k)]);
    expect(store.stats.eventlogSegmentsCleared).toBeGreaterThan(0);
    expect(store.stats.eventlogPurged).toBeGreaterThanOrEqual(5);
    const after = readAll(store, 1, 0);
    expect(after.map((e) => e.revision)).toEqual(revisions(1, 12));
    await closeStore(store);
    store = openStore(dir);
    expect(readAll(store, 1, 0)).toEqual(after);
  });

  it('empties eventlog segments whole, and writes directly when every tree is in use', async () => {
    const r = await newReplica(whole, smallSegments);
    const kv = (i: number) => set(`k${i}`, `v${i}`);
    const run = (from: number, n: number) =>
      r.run(
        1,
        Array.from({ length: n }, (_, i) => kv(from + i)),
      );
    // Four trees of two: room for 8 records. An apply of 9 writes to the events tree.
    await run(1, 9);
    expect(r.store.stats).toMatchObject({ eventlogFull: 1, eventsPended: 0 });
    expect(r.store.inspectEventlog()).toEqual({ records: [0, 0, 0, 0], head: 0 });
    await run(10, 3);
    expect(r.store.inspectEventlog()).toEqual({ records: [2, 1, 0, 0], head: 1 });
    await run(13, 3);
    expect(r.store.inspectEventlog()).toEqual({ records: [2, 2, 2, 0], head: 2 });
    expect(r.store.stats).toMatchObject({ eventsPended: 6, eventsMoved: 0 });
    // The last free tree taken: the oldest segment's live events (all seven: they are
    // one range's) move, and the three dead segments are emptied whole.
    await run(16, 1);
    expect(r.store.inspectEventlog()).toEqual({ records: [0, 0, 0, 1], head: 3 });
    expect(r.store.stats).toMatchObject({
      eventsPended: 7,
      eventsMoved: 7,
      eventlogSegmentsCleared: 3,
      eventlogPurged: 6,
    });
    // The head wraps around to tree 0.
    await run(17, 2);
    expect(r.store.inspectEventlog()).toEqual({ records: [1, 0, 0, 2], head: 0 });
    // Room for 5 (tree 3 is in use): an apply of 7 moves the range's two live events and
    // writes its own directly.
    await run(19, 7);
    expect(r.store.stats).toMatchObject({ eventlogFull: 2, eventsPended: 9, eventsMoved: 9 });
    const stream = readAll(r.store, 1, 0);
    expect(stream.map((e) => e.revision)).toEqual(revisions(1, 25));
    expect(stream.map((e) => row(e))).toEqual(
      revisions(1, 25).map((i) => [i, 'set', `k${i}`, `v${i}`]),
    );
    await r.reopen();
    expect(r.store.inspectEventlog()).toEqual({ records: [1, 0, 0, 2], head: 0 });
    expect(readAll(r.store, 1, 0)).toEqual(stream);
    await run(26, 2);
    expect(readAll(r.store, 1, 0).map((e) => e.revision)).toEqual(revisions(1, 27));
    expect(r.store.inspectEventlog()).toEqual({ records: [2, 1, 0, 2], head: 1 });
  });

  it('a read while a turn moves events and empties their segments sees each event once', async () => {
    const r = await newReplica(whole, smallSegments);
    for (let i = 1; i <= 6; i++) await r.run(1, [set(`k${i}`, `v${i}`)]);
    // Six pending events in three trees: the next turn takes the last free one, so it
    // moves all eight and empties the three. Reads once its body ran (`results`: the
    // store's memory says the trees are empty; a read transaction from before the commit
    // still finds the events there, one after it finds them in the events tree) and once
    // it is durable.
    expect(r.store.inspectEventlog()).toEqual({ records: [2, 2, 2, 0], head: 2 });
    const before = readAll(r.store, 1, 0);
    expect(before.map((e) => e.revision)).toEqual(revisions(1, 6));
    const entries: Entry[] = [
      { index: 7, term: 1, kind: 'normal', data: encodeItem(set('k7', 'v7')) },
      { index: 8, term: 1, kind: 'normal', data: encodeItem(set('k8', 'v8')) },
    ];
    const turn = r.store.beginTurn();
    turn.write(1, { id: 1, hardState: { term: 1, vote: 0, commit: 8 }, entries, snapshot: null });
    turn.apply(1, entries);
    const { results, durable } = turn.commit();
    await results;
    const during = readAll(r.store, 1, 0);
    expect(during.slice(0, 6)).toEqual(before);
    await durable;
    expect(r.store.stats).toMatchObject({ eventsMoved: 8, eventlogSegmentsCleared: 3 });
    expect(r.store.inspectEventlog()).toEqual({ records: [0, 0, 0, 2], head: 3 });
    const after = readAll(r.store, 1, 0);
    expect(after.slice(0, 6)).toEqual(before);
    expect(after.map((e) => row(e)).slice(6)).toEqual([
      [7, 'set', 'k7', 'v7'],
      [8, 'set', 'k8', 'v8'],
    ]);
  });

  it('keeps the range record when only progress changes, and reads progress after a restart', async () => {
    const dir = tempDir();
    let store = openStore(dir);
    await store.createRange(whole, config);
    await new Replica(store).run(1, [set('a', '1')], 2);
    await closeStore(store);
    const stateRecord = async () => {
      const env = lmdbOpen(dir, { maxDbs: 16 });
      const state = env.openDB<Buffer, number>('state', {
        keyEncoding: 'uint32',
        encoding: 'binary',
      });
      const bytes = Buffer.from(state.get(1)!);
      await env.close();
      return bytes;
    };
    const first = await stateRecord();
    store = openStore(dir);
    await new Replica(store).run(1, [set('a', '2'), set('b', '3')], 2);
    await closeStore(store);
    // Neither the descriptor, the snapshot point nor the events changed: no rewrite.
    expect(await stateRecord()).toEqual(first);
    store = openStore(dir);
    expect(store.loadRange(1)!.state.applied).toBe(3);
    expect(store.loadRange(1)!.state.hardState).toEqual({ term: 2, vote: 0, commit: 3 });
    await new Replica(store).run(1, [split('m', 1, 7)], 2);
    await closeStore(store);
    // A split changes the descriptor: the record is written again.
    expect(await stateRecord()).not.toEqual(first);
  });
});

/**
 * Every event pending (nothing direct, nothing moved by count), in eventlog segments of
 * two records: only a full eventlog moves events.
 */
const smallSegments: StoreOptions = {
  eventsDirectRanges: 0,
  eventsDirectMin: 100,
  eventsPendingMax: 100_000,
  eventlogSegmentRecords: 2,
};

/** Events straight to the events tree, as layouts before 8 (no eventlog) wrote them. */
const olderWrites: StoreOptions = { eventsDirectMin: 1 };

/** Sets the layout number a closed store says it is in (its data is left as it is). */
async function setStorageFormat(dir: string, format: string): Promise<void> {
  const raw = lmdbOpen(dir, { maxDbs: 16 });
  await raw.openDB<string, string>('meta', { encoding: 'string' }).put('storageFormat', format);
  await raw.close();
}

/**
 * Rewrites a store of this layout (closed, every journal record live) the way layout 3,
 * 4, 5 or 6 kept it: commands (in log entries), data records and events as msgpack maps;
 * for 3 to 5 also the log in a tree keyed by (range, index), and progress in the range
 * record (3, 4) or in 32 bytes (5).
 */
async function asOlderLayout(dir: string, format: '3' | '4' | '5' | '6' | '7'): Promise<void> {
  const check = lmdbOpen(dir, { maxDbs: 16 });
  const eventlog = check.openDB<Buffer, Buffer>('eventlog', {
    keyEncoding: 'binary',
    encoding: 'binary',
  });
  expect(eventlog.getKeysCount()).toBe(0); // older layouts had none
  await check.close();
  if (format === '7') {
    await setStorageFormat(dir, '7');
    return;
  }
  await asMsgpackItems(dir);
  if (format === '6') {
    await setStorageFormat(dir, '6');
    return;
  }
  const raw = lmdbOpen(dir, { maxDbs: 16 });
  const byId = { keyEncoding: 'uint32', encoding: 'binary' } as const;
  const bytes = { keyEncoding: 'binary', encoding: 'binary' } as const;
  const state = raw.openDB<Buffer, number>('state', byId);
  const progress = raw.openDB<Buffer, number>('progress', byId);
  const journal = raw.openDB<Buffer, Buffer>('journal', bytes);
  const log = raw.openDB<Buffer, Buffer>('log', bytes);
  const meta = raw.openDB<string, string>('meta', { encoding: 'string' });
  await raw.transaction(() => {
    for (const { key, value } of Array.from(journal.getRange({}))) {
      // Journal key [seq u64][rangeId u32][index u64] -> log key [rangeId u32][index u64].
      log.putSync(Buffer.from(key).subarray(8), Buffer.from(value));
      journal.removeSync(key);
    }
    for (const { key, value } of Array.from(state.getRange({}))) {
      const p = Buffer.from(progress.get(key)!);
      const [term, vote, commit, applied] = [0, 8, 16, 24].map((at) => p.readDoubleBE(at));
      if (format === '5') {
        progress.putSync(key, p.subarray(0, 32));
      } else {
        const record = packr.unpack(value) as Record<string, unknown>;
        state.putSync(key, packr.pack({ ...record, hardState: { term, vote, commit }, applied }));
        progress.removeSync(key);
      }
    }
    meta.putSync('storageFormat', format);
  });
  await raw.close();
}

/** Range 1's stored state with each entry's command decoded (upgrades change their form). */
function logOf(store: Store) {
  const { state } = store.loadRange(1)!;
  const commands = state.entries.map((e) => [
    e.index,
    e.term,
    e.kind,
    decodeCommand(e.data) ?? decodeRangeCommand(e.data),
  ]);
  return { ...state, entries: commands };
}

/** Layout 6 and earlier: every command, data record and event as the msgpack map it was. */
async function asMsgpackItems(dir: string): Promise<void> {
  const raw = lmdbOpen(dir, { maxDbs: 16 });
  const bytes = { keyEncoding: 'binary', encoding: 'binary' } as const;
  const journal = raw.openDB<Buffer, Buffer>('journal', bytes);
  const data = raw.openDB<Buffer, Buffer>('data', bytes);
  const events = raw.openDB<Buffer, Buffer>('events', bytes);
  const entryHeaderBytes = 9; // [kind u8][term u64]
  await raw.transaction(() => {
    for (const { key, value } of Array.from(journal.getRange({}))) {
      const entry = Buffer.from(value);
      const body = entry.subarray(entryHeaderBytes);
      const cmd = decodeCommand(body) ?? decodeRangeCommand(body);
      if (cmd === undefined) continue; // noop and config entries
      const old = packr.pack({ ...cmd });
      journal.putSync(key, Buffer.concat([entry.subarray(0, entryHeaderBytes), old]));
    }
    for (const { key, value } of Array.from(data.getRange({}))) {
      const { value: v, revision, requests } = decodeRecord(Buffer.from(value));
      const old =
        requests === undefined ? { value: v, revision } : { value: v, revision, requests };
      data.putSync(key, packr.pack(old));
    }
    for (const { key, value } of Array.from(events.getRange({}))) {
      events.putSync(key, packr.pack(eventToWire(decodeEvent(Buffer.from(value)))));
    }
  });
  await raw.close();
}

/** A mutation the model says a range applied, and so its stream must carry. */
interface Mutation {
  readonly rangeId: number;
  readonly revision: number;
  readonly key: string;
  readonly op: 'set' | 'del';
  readonly value?: string;
  readonly prev?: string;
}

function mutationOf(rangeId: number, e: StoredEvent): Mutation {
  if (e.op === 'split') throw new Error('a split marker is no mutation');
  const m: { -readonly [K in keyof Mutation]: Mutation[K] } = {
    rangeId,
    revision: e.revision,
    key: str(e.key)!,
    op: e.op,
  };
  if (e.op === 'set') m.value = str(e.value);
  if (e.prevValue !== undefined) m.prev = str(e.prevValue);
  return m;
}

/**
 * A subscriber of one prefix, as a client would be: it starts at range 1 after revision
 * 0, follows `next`, and on a split marker whose right-hand span overlaps its prefix it
 * follows that range too, after the marker's revision. Told that it fell behind, it stops
 * following that range and remembers where.
 */
class Reader {
  readonly span: { start: Uint8Array; end: Uint8Array | null };
  readonly streams: Array<{ rangeId: number; from: number; after: number; behind?: number }> = [
    { rangeId: 1, from: 0, after: 0 },
  ];
  readonly received: Mutation[] = [];
  behind = 0;

  constructor(readonly prefix: string) {
    const end = b(prefix);
    if (prefix.length > 0) end[end.length - 1]! += 1;
    this.span = { start: b(prefix), end: prefix.length > 0 ? end : null };
  }

  live() {
    return this.streams.filter((x) => x.behind === undefined);
  }

  /** Reads one page of one of its streams; checks it against the model of the range. */
  read(
    store: Store,
    rng: Prng,
    model: { compactedThrough(id: number): number; applied(id: number): number },
    whole = false,
  ): void {
    const stream = rng.pick(this.live());
    const limit = whole ? 1000 : 1 + rng.int(4);
    const bytesMax = !whole && rng.chance(0.2) ? 1 + rng.int(200) : undefined;
    const read = store.events(stream.rangeId, stream.after, limit, {
      prefix: b(this.prefix),
      ...(bytesMax === undefined ? {} : { bytesMax }),
    })!;
    expect(read.applied).toBe(model.applied(stream.rangeId));
    expect(read.oldestRetained).toBe(model.compactedThrough(stream.rangeId) + 1);
    if (read.compacted) {
      // Told clearly, and only when events after its cursor are gone.
      expect(stream.after).toBeLessThan(read.oldestRetained - 1);
      stream.behind = stream.after;
      this.behind++;
      return;
    }
    let previous = stream.after;
    for (const e of read.events) {
      expect(e.revision).toBeGreaterThan(previous);
      previous = e.revision;
      if (e.op !== 'split') {
        expect(str(e.key)!.startsWith(this.prefix)).toBe(true);
        this.received.push(mutationOf(stream.rangeId, e));
      } else if (spansOverlap(e.right, this.span)) {
        expect(this.streams.some((x) => x.rangeId === e.right.rangeId)).toBe(false);
        this.streams.push({ rangeId: e.right.rangeId, from: e.revision, after: e.revision });
      }
    }
    expect(read.next).toBeGreaterThanOrEqual(previous);
    stream.after = read.next;
  }

  caughtUp(model: { applied(id: number): number }): boolean {
    return this.live().every((x) => x.after === model.applied(x.rangeId));
  }

  /** What it must have received: every mutation of its prefix in what it followed. */
  expected(history: readonly Mutation[]): Mutation[] {
    return history.filter(
      (m) =>
        m.key.startsWith(this.prefix) &&
        this.streams.some(
          (x) =>
            x.rangeId === m.rangeId &&
            m.revision > x.from &&
            (x.behind === undefined || m.revision <= x.behind),
        ),
    );
  }
}

/**
 * One seed: random writes (set, cas that succeed or fail, del of present and absent keys,
 * retries, misrouted writes), splits, compactions by a retention window, and readers that
 * read at a seed-chosen pace. The model predicts every event; the readers must see their
 * prefix's events once each, in revision order per key, or be told they fell behind.
 */
async function runSeed(seed: number) {
  const rng = new Prng(seed);
  // Events written to the tree at once, or pending and moved in batches of every size.
  const options: StoreOptions = {
    eventsDirectMin: rng.pick([1, 2, 8]),
    // Each turn here applies to one range: 0 lets the others decide.
    eventsDirectRanges: rng.pick([0, 0, 1]),
    eventsPendingMax: rng.pick([0, 3, 20, 100_000]),
    eventsMoveMax: rng.pick([1, 4, 1000]),
    // Segments of a few records fill every tree, so applies go direct and moves are forced.
    eventlogSegmentRecords: rng.pick([1, 3, 10, 32_768]),
  };
  const restartChance = rng.pick([0, 0.03]);
  const a = await newReplica(whole, options);
  const keys = ['a1', 'a2', 'b', 'b1', 'b2', 'ba1', 'bb', 'c1', 'c2', 'd1'];
  const splitKeys = ['a2', 'b', 'b2', 'ba', 'c', 'c2', 'd'];
  const values = new Map<string, string>();
  const recordedIds = new Set<string>();
  const sent: Command[] = [];
  const history: Mutation[] = [];
  const compacted = new Map<number, number>([[1, 0]]);
  const model = {
    compactedThrough: (id: number) => compacted.get(id)!,
    applied: (id: number) => a.lastIndex(id),
  };
  const readers = [new Reader('b'), new Reader(''), new Reader('c2')];
  const readChance = rng.pick([0.05, 0.3, 1]);
  const windowRevisions = rng.pick([4, 15, 60, 1000]);
  let nextRangeId = 2;
  let nextId = 0;
  let splits = 0;
  let restarts = 0;

  for (let step = 0; step < 120; step++) {
    const ranges = a.store.ranges();
    const roll = rng.next();
    if (roll < 0.75) {
      const retry = sent.length > 0 && rng.chance(0.15);
      let cmd: Command;
      if (retry) {
        cmd = rng.pick(sent);
      } else {
        const key = rng.pick(keys);
        const id = rng.chance(0.8) ? `id${nextId++}` : '';
        const current = values.get(key);
        const kind = rng.int(4);
        if (kind === 0) cmd = set(key, `v${step}`, id);
        else if (kind === 1) cmd = cas(key, current ?? null, `c${step}`, id);
        else if (kind === 2) cmd = cas(key, rng.chance(0.5) ? null : 'nope', `w${step}`, id);
        else cmd = del(key, id);
        sent.push(cmd);
      }
      const key = str(cmd.key)!;
      const owner = ranges.find((d) => inSpan(d, cmd.key))!;
      const misrouted = ranges.length > 1 && rng.chance(0.1);
      const target = misrouted ? rng.pick(ranges.filter((d) => d !== owner)) : owner;
      // Now and then after a no-op in the same apply: two entries, a batch that may write
      // its events straight to the tree (eventsDirectMin 2).
      const results = await a.run(target.rangeId, rng.chance(0.25) ? ['noop', cmd] : [cmd]);
      const result = results.at(-1);
      const revision = a.lastIndex(target.rangeId);
      if (misrouted) {
        expect(result).toMatchObject({ ok: false, code: 'RangeKeyMismatch' });
        continue;
      }
      const id = str(cmd.id)!;
      if (id !== '' && recordedIds.has(id)) continue; // a retry: nothing changes
      if (id !== '') recordedIds.add(id);
      const prev = values.get(key);
      let change: Pick<Mutation, 'op' | 'value'> | undefined;
      if (cmd.op === 'set') change = { op: 'set', value: str(cmd.value)! };
      else if (cmd.op === 'cas') {
        const matches = cmd.expect === null ? prev === undefined : prev === str(cmd.expect);
        if (matches) change = { op: 'set', value: str(cmd.value)! };
      } else if (prev !== undefined) change = { op: 'del' };
      if (change === undefined) continue;
      if (change.op === 'set') values.set(key, change.value!);
      else values.delete(key);
      history.push({
        rangeId: target.rangeId,
        revision,
        key,
        ...change,
        ...(prev === undefined ? {} : { prev }),
      });
    } else if (roll < 0.82) {
      const d = rng.pick(ranges);
      const inside = splitKeys.filter(
        (k) => inSpan(d, b(k)) && Buffer.compare(b(k), Buffer.from(d.start)) !== 0,
      );
      if (inside.length === 0) continue;
      const rightId = nextRangeId++;
      const [result] = await a.run(d.rangeId, [split(rng.pick(inside), d.generation, rightId)]);
      expect(result).toMatchObject({ ok: true });
      compacted.set(rightId, a.lastIndex(d.rangeId));
      splits++;
    } else if (roll < 0.87) {
      await a.run(rng.pick(ranges).rangeId, ['noop']);
    } else {
      const d = rng.pick(ranges);
      const upTo = a.store.eventsToCompact(d.rangeId, windowRevisions);
      if (upTo === undefined) continue;
      await a.run(d.rangeId, [compact(upTo)]);
      compacted.set(d.rangeId, Math.max(model.compactedThrough(d.rangeId), upTo));
    }
    for (const reader of readers) {
      if (reader.live().length > 0 && rng.chance(readChance)) reader.read(a.store, rng, model);
    }
    if (rng.chance(restartChance)) {
      await a.reopen();
      restarts++;
    }
  }
  // The readers catch up with what is left.
  for (const reader of readers) {
    for (let i = 0; i < 1000 && !reader.caughtUp(model); i++) {
      reader.read(a.store, rng, model, true);
    }
    expect(reader.caughtUp(model)).toBe(true);
  }
  for (const reader of readers) {
    const byRevision = (x: Mutation, y: Mutation) =>
      x.rangeId - y.rangeId || x.revision - y.revision;
    // Exactly once: what it got is what its streams hold, each once.
    expect([...reader.received].sort(byRevision)).toEqual(
      reader.expected(history).sort(byRevision),
    );
    // Never behind: that is every mutation of its prefix.
    if (reader.behind === 0) {
      expect(reader.received.length).toBe(
        history.filter((m) => m.key.startsWith(reader.prefix)).length,
      );
    }
    // In order per key (a key's revisions grow across the ranges it moves through).
    const last = new Map<string, number>();
    for (const m of reader.received) {
      expect(m.revision).toBeGreaterThan(last.get(m.key) ?? 0);
      last.set(m.key, m.revision);
    }
  }
  return { a, readers, history, splits, restarts };
}

/** Every range's events() answers on `other` equal those on `store`. */
function sameStreams(store: Store, other: Store): void {
  for (const d of store.ranges()) {
    const applied = store.loadRange(d.rangeId)!.state.applied;
    const { oldestRetained } = store.inspectEvents(d.rangeId);
    for (const after of [
      0,
      oldestRetained - 2,
      oldestRetained - 1,
      Math.floor(applied / 2),
      applied,
    ]) {
      if (after < 0) continue;
      expect(other.events(d.rangeId, after, 1000)).toEqual(store.events(d.rangeId, after, 1000));
      const prefix = { prefix: b('b') };
      expect(other.events(d.rangeId, after, 2, prefix)).toEqual(
        store.events(d.rangeId, after, 2, prefix),
      );
    }
  }
}

describe('readers of random histories (property)', () => {
  it('see every mutation of their prefix once, in order, or are told they fell behind', async () => {
    const totals = {
      behind: 0,
      complete: 0,
      splits: 0,
      delivered: 0,
      mutations: 0,
      restarts: 0,
      pended: 0,
      moved: 0,
      purged: 0,
      cleared: 0,
      full: 0,
    };
    for (let seed = 1; seed <= 24; seed++) {
      const { a, readers, history, splits, restarts } = await runSeed(seed);
      totals.splits += splits;
      totals.restarts += restarts;
      totals.pended += a.store.stats.eventsPended;
      totals.moved += a.store.stats.eventsMoved;
      totals.purged += a.store.stats.eventlogPurged;
      totals.cleared += a.store.stats.eventlogSegmentsCleared;
      totals.full += a.store.stats.eventlogFull;
      totals.mutations += history.length;
      for (const reader of readers) {
        if (reader.behind > 0) totals.behind++;
        else totals.complete++;
        totals.delivered += reader.received.length;
      }
      if (seed % 6 === 0) {
        // Another replica, one entry per turn, and one that installs every range's snapshot.
        const other = openStore();
        await other.createRange(whole, config);
        const replay = new Replica(other);
        for (const turn of a.turns) {
          for (const e of turn.entries) await replay.apply(turn.rangeId, [e]);
        }
        sameStreams(a.store, other);
        const installed = openStore();
        for (const d of a.store.ranges()) {
          await installed.createRange(d, config);
          await install(installed, d.rangeId, a.store.takeSnapshot(d.rangeId));
        }
        sameStreams(a.store, installed);
      }
      await closeStore(a.store);
    }
    // The seeds cover both outcomes, and real histories.
    expect(totals.complete).toBeGreaterThan(30);
    expect(totals.behind).toBeGreaterThan(10);
    expect(totals.splits).toBeGreaterThan(50);
    expect(totals.delivered).toBeGreaterThan(1000);
    // Pending events, moved and dropped from the eventlog, across restarts (the counts
    // are of the last store of each seed: since its last restart).
    expect(totals.restarts).toBeGreaterThan(10);
    expect(totals.pended).toBeGreaterThan(300);
    expect(totals.moved).toBeGreaterThan(100);
    expect(totals.purged).toBeGreaterThan(50);
    // Segments emptied whole, and applies that found every eventlog tree in use.
    expect(totals.cleared).toBeGreaterThan(20);
    expect(totals.full).toBeGreaterThan(5);
  });
});

function revisions(from: number, to: number): number[] {
  return Array.from({ length: to - from + 1 }, (_, i) => from + i);
}

describe('the events tail of a leader (src/node/events-tail.ts)', () => {
  /** The tail takes the replica's last turn, as the node does when its results arrive. */
  const feed = (tail: EventsTail, r: Replica, rangeId = 1) => {
    const t = r.lastTurn!;
    tail.applied(t.first, t.last, t.mutations.get(rangeId));
    const oldest = t.eventsOldest.get(rangeId);
    if (oldest !== undefined) tail.oldest = Math.max(tail.oldest, oldest);
  };
  const revisions = (items: readonly TailItem[]) => items.map((i) => i.revision);

  it('pages exactly as the store does, wherever it covers, while it is bounded', async () => {
    const r = await newReplica();
    const prng = new Prng(11);
    const keys = ['a/1', 'a/2', 'a/3', 'b/1', 'b/2', 'c'];
    const tail = new EventsTail(0, 1, limits.eventBytesMax, 0);
    let trimmed = false;
    for (let turn = 0; turn < 80; turn++) {
      const items: Item[] = [];
      for (let n = 1 + prng.int(40); n > 0; n--) {
        const key = keys[prng.int(keys.length)]!;
        const x = prng.int(10);
        if (x < 6) items.push(set(key, `v${turn}.${n}${'x'.repeat(prng.int(200))}`));
        else if (x < 8) items.push(del(key));
        else if (x < 9) items.push(cas(key, 'no such value', 'v'));
        else items.push('noop');
      }
      await r.run(1, items);
      feed(tail, r);
      const applied = r.lastIndex(1);
      expect(tail.size).toBeLessThanOrEqual(tailItemsMax);
      if (tail.from > 0) trimmed = true;
      expect(tail.covers(tail.from - 1, applied)).toBe(false);
      expect(tail.covers(applied + 1, applied + 1)).toBe(false);
      for (let k = 0; k < 25; k++) {
        const after = tail.from + prng.int(applied - tail.from + 1);
        expect(tail.covers(after, applied)).toBe(true);
        const limit = 1 + prng.int(30);
        const prefix = b(['', 'a/', 'b/', 'zz'][prng.int(4)]!);
        const bytesMax = [1 << 20, 300, 1][prng.int(3)]!;
        const want = page(r.store.events(1, after, limit, { prefix, bytesMax }));
        const got = tail.page(after, applied, limit, prefix, bytesMax);
        expect(revisions(got.items)).toEqual(want.events.map((e) => e.revision));
        expect(got.next).toBe(want.next);
        for (const [i, item] of got.items.entries()) {
          expect(decode(item.bytes)).toEqual({
            ...eventToWire(want.events[i]!),
            revision: item.revision,
          });
        }
      }
    }
    // 80 turns of about 20 entries: more events than a tail holds, so its front moved.
    expect(trimmed).toBe(true);
  });

  it('serves only what is durable, takes split markers, and honours compaction', async () => {
    const r = await newReplica();
    await r.run(1, [set('a', '1'), set('b', '2')]);
    const tail = new EventsTail(r.lastIndex(1), 1, limits.eventBytesMax, 0);
    expect(tail.covers(1, 2)).toBe(false); // older cursors are read from the store
    await r.run(1, [split('m', 1, 2), set('a', '3'), 'noop']);
    feed(tail, r);
    // Applied up to 5, durable only up to 3: the set at 4 is not served yet.
    expect(tail.covers(4, 3)).toBe(false);
    let p = tail.page(2, 3, 10, b('a'), 1 << 20);
    expect(p.items.map((i) => (decode(i.bytes) as { op: string }).op)).toEqual(['split']);
    expect(p.next).toBe(3);
    p = tail.page(3, 5, 10, b('a'), 1 << 20);
    expect(revisions(p.items)).toEqual([4]);
    expect(p.next).toBe(5);
    await r.run(1, [set('a', '4'), compact(5), set('a', '5')]);
    feed(tail, r);
    expect(tail.oldest).toBe(6);
    expect(tail.covers(4, 8)).toBe(false); // compacted: the store answers Compacted
    expect(revisions(tail.page(5, 8, 10, b(''), 1 << 20).items)).toEqual([6, 8]);
  });

  it('encodes each event to the bytes msgpackr makes of its wire form', () => {
    const prng = new Prng(5);
    // Lengths and revisions at every boundary of msgpack's bin and uint forms.
    const lengths = [0, 1, 31, 32, 255, 256, 65_535, 65_536, 70_000];
    const revisionsAt = [1, 127, 128, 255, 256, 65_535, 65_536, 2 ** 32 - 1, 2 ** 32, 2 ** 50];
    const bytes = (n: number) => {
      const x = Buffer.alloc(n, prng.int(256));
      for (let i = 0; i < Math.min(n, 64); i++) x[i] = prng.int(256);
      return x;
    };
    const held: [TailItem, Buffer][] = [];
    for (let i = 0; i < 2000; i++) {
      const len = () => (prng.int(4) === 0 ? lengths[prng.int(lengths.length)]! : prng.int(300));
      const key = bytes(1 + Math.min(len(), 1000));
      const revision =
        prng.int(3) === 0 ? revisionsAt[prng.int(revisionsAt.length)]! : 1 + prng.int(1e6);
      const x = prng.int(3);
      const event: RangeEvent =
        x === 0
          ? { op: 'set', key, value: bytes(len()) }
          : x === 1
            ? { op: 'set', key, value: bytes(len()), prevValue: bytes(len()) }
            : { op: 'del', key, prevValue: bytes(len()) };
      // Now and then a limit the event passes: its prevValue is left out, flagged.
      const max = prng.int(5) === 0 ? eventBytes(event) - 1 : limits.eventBytesMax;
      const item = tailItem(event, revision, max);
      const omitted =
        event.op === 'set' && event.prevValue !== undefined && eventBytes(event) > max;
      const wire = omitted
        ? { revision, op: 'set', key, value: event.value, prevValueOmitted: true }
        : { revision, ...eventToWire(event) };
      const want = Buffer.from(encodeTailEvent(wire as WireEvent));
      expect(Buffer.from(item.bytes).equals(want)).toBe(true);
      expect(Buffer.from(item.key!).equals(key)).toBe(true);
      expect(item.revision).toBe(revision);
      expect(item.size).toBe(eventBytes(event));
      held.push([item, want]);
    }
    // Bytes handed out earlier are never written over by later events.
    for (const [item, want] of held) expect(Buffer.from(item.bytes).equals(want)).toBe(true);
    // A split marker, through msgpackr; it carries no key (every subscriber gets it).
    const left: RangeDescriptor = {
      rangeId: 1,
      start: b(''),
      end: b('m'),
      generation: 2,
      replicas: [],
    };
    const right: RangeDescriptor = {
      rangeId: 2,
      start: b('m'),
      end: null,
      generation: 2,
      replicas: [],
    };
    const marker = tailItem({ op: 'split', left, right }, 9, limits.eventBytesMax);
    expect(marker.key).toBeUndefined();
    expect(decode(marker.bytes)).toMatchObject({ revision: 9, op: 'split' });
  });

  it('assembles the reply a store page would be encoded to', () => {
    const enc = new TailReplyEncoder({ v: 1, cid: 'c1d-uuid', node: 'n1' });
    for (const n of [0, 1, 15, 16, 1000]) {
      const items = Array.from({ length: n }, (_, i) => {
        const event = { revision: 1000 + i, op: 'set' as const, key: b(`k${i}`), value: b('v') };
        return { revision: 1000 + i, key: b(`k${i}`), bytes: encodeTailEvent(event), size: 1 };
      });
      const reply = enc.encode(items, 5_000_000_000, 7);
      expect(decode(reply)).toEqual({
        v: 1,
        cid: 'c1d-uuid',
        node: 'n1',
        res: [
          { ok: true, events: items.map((i) => decode(i.bytes)), after: 5_000_000_000, oldest: 7 },
        ],
      });
    }
  });
});
