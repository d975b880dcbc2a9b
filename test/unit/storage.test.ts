// The node's LMDB storage and the replicated KV state machine, on a real LMDB environment
// in a temporary directory.

import { type ChildProcess, spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { open as lmdbOpen } from 'lmdb';
import { afterEach, describe, expect, it } from 'vitest';
import { InvariantViolation } from '../../ranges/core/assert.ts';
import type {
  Configuration,
  Entry,
  EntryKind,
  HardState,
  Snapshot,
} from '../../ranges/core/types.ts';
import {
  type ApplyResult,
  applyCommand,
  type Command,
  type DataRecord,
  decodeCommand,
  encodeCommand,
  encodeRangeCommand,
  inlineRequestsMax,
  keyBytesMax,
  packr,
} from '../../src/storage/commands.ts';
import {
  type RangeDescriptor,
  Store,
  StoreLockedError,
  type StoreOptions,
} from '../../src/storage/store.ts';

const config: Configuration = { voters: [1, 2, 3], outgoing: [], learners: [] };
const text = new TextEncoder();
const untext = new TextDecoder();

function b(s: string): Uint8Array {
  return text.encode(s);
}

function s(bytes: Uint8Array | null | undefined): string | null | undefined {
  return bytes === null || bytes === undefined ? bytes : untext.decode(bytes);
}

function descriptor(rangeId: number, start: string, end: string | null): RangeDescriptor {
  return {
    rangeId,
    start: b(start),
    end: end === null ? null : b(end),
    replicas: [{ nodeId: 'n1', replicaId: 1, role: 'voter' }],
    generation: 1,
  };
}

function entry(index: number, term: number, data: Uint8Array, kind: EntryKind = 'normal'): Entry {
  return { index, term, kind, data };
}

function set(key: string, value: string, id: string): Command {
  return { op: 'set', key: b(key), value: b(value), id: b(id) };
}

function cas(key: string, expect: string | null, value: string, id: string): Command {
  return {
    op: 'cas',
    key: b(key),
    expect: expect === null ? null : b(expect),
    value: b(value),
    id: b(id),
  };
}

function del(key: string, id: string): Command {
  return { op: 'del', key: b(key), id: b(id) };
}

/** A key's request records as [id, index, result view], in id order. */
function requestsOf(store: Store, key: string): unknown[] {
  return store.inspectRequests(b(key)).map((q) => [s(q.id), q.index, view(q.result)]);
}

/** A result with its byte fields as strings, for readable expectations. */
function view(r: ApplyResult | undefined): unknown {
  if (r === undefined || !r.ok) return r;
  const out: Record<string, unknown> = { ok: true };
  if (r.success !== undefined) out.success = r.success;
  if (r.value !== undefined) out.value = s(r.value);
  return out;
}

const dirs: string[] = [];
const stores: Store[] = [];
const children: ChildProcess[] = [];

function tempDir(): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'rasputin-storage-'));
  dirs.push(dir);
  return dir;
}

function openStore(dir: string, window?: number): Store {
  return openStoreWith(dir, window === undefined ? {} : { dedupWindowEntries: window });
}

/** A store with these options, closed after the test. */
function openStoreWith(dir: string, options: StoreOptions): Store {
  const store = Store.open(dir, options);
  stores.push(store);
  return store;
}

async function reopen(store: Store, dir: string): Promise<Store> {
  await store.close();
  return openStore(dir);
}

/** Installs `snapshot` on the range in a turn of its own (as a follower that receives one). */
async function installSnapshot(
  store: Store,
  rangeId: number,
  snapshot: Snapshot,
  hardState: HardState,
  id: number,
): Promise<void> {
  const turn = store.beginTurn();
  turn.write(rangeId, { id, hardState, entries: [], snapshot });
  await turn.commit().durable;
}

afterEach(async () => {
  for (const child of children.splice(0)) {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  }
  for (const store of stores.splice(0)) await store.close();
  for (const dir of dirs.splice(0)) fs.rmSync(dir, { recursive: true, force: true });
});

/** Drives one range the way a replica does: write entries durably, then apply them. */
class RangeDriver {
  next: number;
  writeId = 0;

  constructor(
    readonly store: Store,
    readonly rangeId: number,
    readonly term = 1,
  ) {
    this.next = (store.loadRange(rangeId)?.state.applied ?? 0) + 1;
  }

  /** Commands, raw bytes (garbage) or other entry kinds, as one turn; returns the results. */
  async run(...items: Array<Command | Uint8Array | 'noop' | 'config'>): Promise<ApplyResult[]> {
    const entries = items.map((item) => {
      const index = this.next++;
      if (item === 'noop' || item === 'config')
        return entry(index, this.term, new Uint8Array(), item);
      if (item instanceof Uint8Array) return entry(index, this.term, item);
      return entry(index, this.term, encodeCommand(item));
    });
    const turn = this.store.beginTurn();
    turn.write(this.rangeId, {
      id: ++this.writeId,
      hardState: { term: this.term, vote: 1, commit: this.next - 1 },
      entries,
      snapshot: null,
    });
    turn.apply(this.rangeId, entries);
    const { results, durable } = turn.commit();
    await durable;
    const out = (await results).get(this.rangeId);
    expect(out).toHaveLength(entries.length);
    return out!;
  }

  async one(item: Command | Uint8Array | 'noop'): Promise<unknown> {
    return view((await this.run(item))[0]);
  }
}

describe('store identity and meta', () => {
  it('keeps the store id and meta across a reopen', async () => {
    const dir = tempDir();
    let store = openStore(dir);
    const storeId = store.storeId;
    expect(storeId).toMatch(/^[0-9a-f-]{36}$/);
    expect(store.getMeta('clusterId')).toBeUndefined();
    await store.setMeta('clusterId', 'c-1');
    await store.setMeta('nodeId', 'n-1');
    expect(store.getMeta('clusterId')).toBe('c-1');
    store = await reopen(store, dir);
    expect(store.storeId).toBe(storeId);
    expect(store.getMeta('clusterId')).toBe('c-1');
    expect(store.getMeta('nodeId')).toBe('n-1');
    expect(openStore(tempDir()).storeId).not.toBe(storeId);
  });

  it('treats a storage dir with a dot in its name as a directory', async () => {
    const dir = path.join(tempDir(), 'node.1');
    const store = openStore(dir);
    await store.setMeta('nodeId', 'n-1');
    expect(fs.statSync(dir).isDirectory()).toBe(true);
    expect(fs.existsSync(path.join(dir, 'data.mdb'))).toBe(true);
  });
});

describe('log and hard state', () => {
  it('returns written entries and hard state after a reopen', async () => {
    const dir = tempDir();
    let store = openStore(dir);
    await store.createRange(descriptor(1, '', null), config);
    let loaded = store.loadRange(1);
    expect(loaded?.state).toEqual({
      hardState: { term: 0, vote: 0, commit: 0 },
      snapshot: { index: 0, term: 0, config },
      entries: [],
      applied: 0,
    });

    const entries = [1, 2, 3, 4, 5].map((i) => entry(i, 1, b(`e${i}`)));
    entries[1] = entry(2, 1, new Uint8Array(), 'noop');
    const turn = store.beginTurn();
    turn.write(1, { id: 1, hardState: { term: 1, vote: 2, commit: 3 }, entries, snapshot: null });
    expect(turn.isEmpty()).toBe(false);
    await turn.commit().durable;

    store = await reopen(store, dir);
    expect(store.ranges().map((d) => d.rangeId)).toEqual([1]);
    loaded = store.loadRange(1);
    expect(loaded?.descriptor.rangeId).toBe(1);
    expect(s(loaded?.descriptor.start)).toBe('');
    expect(loaded?.descriptor.end).toBeNull();
    expect(loaded?.state.hardState).toEqual({ term: 1, vote: 2, commit: 3 });
    expect(loaded?.state.applied).toBe(0);
    expect(loaded?.state.entries.map((e) => [e.index, e.term, e.kind, s(e.data)])).toEqual([
      [1, 1, 'normal', 'e1'],
      [2, 1, 'noop', ''],
      [3, 1, 'normal', 'e3'],
      [4, 1, 'normal', 'e4'],
      [5, 1, 'normal', 'e5'],
    ]);
    expect(store.loadRange(2)).toBeUndefined();
  });

  it("writes a commit index that moved alone with the range's next other change", async () => {
    const dir = tempDir();
    let store = openStore(dir);
    await store.createRange(descriptor(1, '', null), config);
    const entries = [1, 2, 3, 4, 5].map((i) =>
      entry(i, 1, encodeCommand(set(`k${i}`, 'v', `i${i}`))),
    );
    /** A turn that writes entries [from, to) at hard state (term, vote, commit), and applies `applied`. */
    let writes = 0;
    const write = async (hs: [number, number, number], from: number, to: number, applied = 0) => {
      const turn = store.beginTurn();
      const hardState = { term: hs[0], vote: hs[1], commit: hs[2] };
      turn.write(1, { id: ++writes, hardState, entries: entries.slice(from, to), snapshot: null });
      if (applied > 0) turn.apply(1, entries.slice(0, applied));
      await turn.commit().durable;
      store = await reopen(store, dir);
      return store.loadRange(1)!.state;
    };
    await write([1, 1, 0], 0, 2);
    // A follower's next append: entries, and a commit index that moved (term and vote did
    // not). The entries are durable; the commit index is not written for itself.
    let state = await write([1, 1, 2], 2, 4);
    expect(state.entries.map((e) => e.index)).toEqual([1, 2, 3, 4]);
    expect(state.hardState).toEqual({ term: 1, vote: 1, commit: 0 });
    // The next change of the applied index writes the commit index the range has then.
    state = await write([1, 1, 3], 4, 5, 3);
    expect(state.hardState).toEqual({ term: 1, vote: 1, commit: 3 });
    expect(state.applied).toBe(3);
    expect(state.entries.map((e) => e.index)).toEqual([1, 2, 3, 4, 5]);
    // A new term is written at once, with the commit index of its write.
    state = await write([2, 0, 4], 5, 5);
    expect(state.hardState).toEqual({ term: 2, vote: 0, commit: 4 });
    await store.close();
  });

  it('replaces a conflicting suffix from the first written index on', async () => {
    const dir = tempDir();
    let store = openStore(dir);
    await store.createRange(descriptor(1, '', null), config);
    let turn = store.beginTurn();
    const old = [1, 2, 3, 4, 5].map((i) => entry(i, 1, b(`old${i}`)));
    turn.write(1, {
      id: 1,
      hardState: { term: 1, vote: 1, commit: 0 },
      entries: old,
      snapshot: null,
    });
    await turn.commit().durable;
    // A new leader at term 2 overwrites from index 3 with a shorter log.
    turn = store.beginTurn();
    const fresh = [entry(3, 2, b('new3')), entry(4, 2, b('new4'))];
    turn.write(1, {
      id: 2,
      hardState: { term: 2, vote: 0, commit: 2 },
      entries: fresh,
      snapshot: null,
    });
    await turn.commit().durable;
    store = await reopen(store, dir);
    const loaded = store.loadRange(1)!;
    expect(loaded.state.entries.map((e) => [e.index, e.term, s(e.data)])).toEqual([
      [1, 1, 'old1'],
      [2, 1, 'old2'],
      [3, 2, 'new3'],
      [4, 2, 'new4'],
    ]);
    // Appending after the replaced suffix continues contiguously.
    turn = store.beginTurn();
    turn.write(1, {
      id: 3,
      hardState: { term: 2, vote: 0, commit: 2 },
      entries: [entry(5, 2, b('new5'))],
      snapshot: null,
    });
    await turn.commit().durable;
    expect(store.loadRange(1)!.state.entries.map((e) => e.index)).toEqual([1, 2, 3, 4, 5]);
  });

  it('commits a turn with writes for 100 ranges in one LMDB transaction', async () => {
    const store = openStore(tempDir());
    for (let r = 1; r <= 100; r++) {
      await store.createRange(
        descriptor(r, `r${String(r).padStart(3, '0')}`, `r${String(r).padStart(3, '0')}~`),
        config,
      );
    }
    const commits = store.stats.commits;
    const flushes = store.stats.flushes;
    const { turnCommits, txnBodyMs, txnSyncMs } = store.stats;
    const turn = store.beginTurn();
    for (let r = 1; r <= 100; r++) {
      const key = `r${String(r).padStart(3, '0')}/k`;
      const e = entry(1, 1, encodeCommand(set(key, `v${r}`, `id${r}`)));
      turn.write(r, {
        id: 1,
        hardState: { term: 1, vote: 1, commit: 1 },
        entries: [e],
        snapshot: null,
      });
      turn.apply(r, [e]);
    }
    const { results: pending, durable } = turn.commit();
    await durable;
    expect(store.stats.commits).toBe(commits + 1);
    const results = await pending;
    expect(store.stats.flushes).toBe(flushes + 1);
    // The turn's transaction is counted with its time: a body of 200 ops and a sync take
    // some (the ranges' creations before it were not turns).
    expect(store.stats.turnCommits).toBe(turnCommits + 1);
    expect(turnCommits).toBe(0);
    expect(store.stats.txnBodyMs).toBeGreaterThan(txnBodyMs);
    expect(store.stats.txnSyncMs).toBeGreaterThan(txnSyncMs);
    expect(results.size).toBe(100);
    for (let r = 1; r <= 100; r++) {
      expect(results.get(r)).toEqual([{ ok: true }]);
      expect(s(store.get(b(`r${String(r).padStart(3, '0')}/k`))?.value)).toBe(`v${r}`);
      expect(store.loadRange(r)?.state.applied).toBe(1);
    }
  });

  it('writes nothing of a turn whose op breaks an invariant', async () => {
    const store = openStore(tempDir());
    await store.createRange(descriptor(1, 'a', 'b'), config);
    await store.createRange(descriptor(2, 'b', 'c'), config);
    const commits = store.stats.commits;
    const e1 = entry(1, 1, encodeCommand(set('a1', 'v', 'i1')));
    const turn = store.beginTurn();
    turn.write(1, {
      id: 1,
      hardState: { term: 1, vote: 1, commit: 1 },
      entries: [e1],
      snapshot: null,
    });
    turn.apply(1, [e1]);
    // Range 2 has no entry 1 in its log: applying it is a programmer error.
    turn.apply(2, [entry(1, 1, encodeCommand(set('b1', 'v', 'i2')))]);
    await expect(turn.commit().results).rejects.toThrow(InvariantViolation);
    expect(store.stats.commits).toBe(commits);
    expect(store.get(b('a1'))).toBeUndefined();
    expect(store.loadRange(1)?.state.entries).toEqual([]);
    expect(store.loadRange(1)?.state.applied).toBe(0);
    // The store keeps working after the aborted turn.
    const ok = store.beginTurn();
    ok.write(1, {
      id: 2,
      hardState: { term: 1, vote: 1, commit: 1 },
      entries: [e1],
      snapshot: null,
    });
    ok.apply(1, [e1]);
    const committed = ok.commit();
    await committed.durable;
    expect((await committed.results).get(1)).toEqual([{ ok: true }]);
    expect(s(store.get(b('a1'))?.value)).toBe('v');
  });

  it('an empty turn commits nothing', async () => {
    const store = openStore(tempDir());
    const commits = store.stats.commits;
    const turn = store.beginTurn();
    expect(turn.isEmpty()).toBe(true);
    const { results, durable } = turn.commit();
    await durable;
    expect((await results).size).toBe(0);
    expect(store.stats.commits).toBe(commits);
  });
});

describe("the journal (every range's log in one tree, in write order)", () => {
  const write = (store: Store, rangeId: number, entries: Entry[], term = 1, id = 1) => {
    const turn = store.beginTurn();
    turn.write(rangeId, {
      id,
      hardState: { term, vote: 1, commit: 0 },
      entries,
      snapshot: null,
    });
    return turn.commit().durable;
  };
  const logOf = (store: Store, rangeId: number) =>
    store.loadRange(rangeId)!.state.entries.map((e) => [e.index, e.term, s(e.data)]);

  it('gives each range its own log back after a reopen: interleaved, replaced, dropped for a snapshot', async () => {
    const dir = tempDir();
    let store = openStore(dir);
    for (const id of [1, 2, 3]) {
      await store.createRange(
        descriptor(id, String.fromCharCode(96 + id), `${String.fromCharCode(96 + id)}z`),
        config,
      );
    }
    // One turn with entries of all three ranges, then more turns that interleave.
    const turn = store.beginTurn();
    for (const id of [1, 2, 3]) {
      turn.write(id, {
        id: 1,
        hardState: { term: 1, vote: 1, commit: 0 },
        entries: [1, 2, 3].map((i) => entry(i, 1, b(`r${id}e${i}`))),
        snapshot: null,
      });
    }
    await turn.commit().durable;
    await write(store, 2, [entry(4, 1, b('r2e4')), entry(5, 1, b('r2e5'))]);
    await write(store, 1, [entry(4, 1, b('r1e4'))]);
    // Range 2: a new leader replaces entries from 3 on with a shorter suffix.
    await write(store, 2, [entry(3, 2, b('r2e3*'))], 2, 2);
    // Range 3: a snapshot at index 10 drops its log (entries 1..3 must not come back).
    const donor = openStore(tempDir());
    await donor.createRange(descriptor(3, 'c', 'cz'), config);
    const d = new RangeDriver(donor, 3, 1);
    for (let i = 0; i < 10; i++) await d.run('noop');
    const snap = donor.takeSnapshot(3);
    await installSnapshot(store, 3, snap, { term: 1, vote: 0, commit: 10 }, 2);
    await write(store, 3, [entry(11, 1, b('r3e11'))], 1, 3);
    await write(store, 1, [entry(5, 1, b('r1e5'))]);
    const before = [1, 2, 3].map((id) => logOf(store, id));
    expect(before).toEqual([
      [1, 2, 3, 4, 5].map((i) => [i, 1, `r1e${i}`]),
      [
        [1, 1, 'r2e1'],
        [2, 1, 'r2e2'],
        [3, 2, 'r2e3*'],
      ],
      [[11, 1, 'r3e11']],
    ]);
    store = await reopen(store, dir);
    expect([1, 2, 3].map((id) => logOf(store, id))).toEqual(before);
    expect(store.loadRange(3)!.state.snapshot.index).toBe(10);
    // Appends go on after the reopen, after the records already there.
    await write(store, 2, [entry(4, 2, b('r2e4*'))], 2, 3);
    store = await reopen(store, dir);
    expect(logOf(store, 2).map(([i]) => i)).toEqual([1, 2, 3, 4]);
  });

  it('reads a range log whose replaced records lost their older neighbours to the purge', async () => {
    const dir = tempDir();
    let store = openStore(dir);
    await store.createRange(descriptor(1, '', null), config);
    const old = [1, 2, 3, 4, 5, 6].map((i) => entry(i, 1, b(`old${i}`), 'noop'));
    const first = store.beginTurn();
    first.write(1, {
      id: 1,
      hardState: { term: 1, vote: 1, commit: 1 },
      entries: old,
      snapshot: null,
    });
    first.apply(1, [old[0]!]);
    await first.commit().durable;
    await write(
      store,
      1,
      [2, 3, 4, 5, 6].map((i) => entry(i, 2, b(`new${i}`))),
      2,
      2,
    );
    const compact = store.beginTurn();
    compact.compact(1, { index: 1, term: 1, config });
    await compact.commit().durable;
    await store.close();
    // A purge cut short: old 1..3 deleted, old 4..6 (replaced) still there, so the log
    // read in order has a gap (after the snapshot at 1, entry 4) until the new records.
    const raw = lmdbOpen(dir, { maxDbs: 12 });
    const journal = raw.openDB<Buffer, Buffer>('journal', {
      keyEncoding: 'binary',
      encoding: 'binary',
    });
    const keys = Array.from(journal.getKeys({})).slice(0, 3);
    await raw.transaction(() => {
      for (const k of keys) journal.removeSync(k);
    });
    await raw.close();
    store = openStore(dir);
    expect(logOf(store, 1)).toEqual([2, 3, 4, 5, 6].map((i) => [i, 2, `new${i}`]));
  });

  it('deletes records no range needs from the front, and rewrites a range that holds it back', async () => {
    const dir = tempDir();
    let store = openStoreWith(dir, { journalLagMax: 100, journalScanRecords: 64 });
    await store.createRange(descriptor(1, 'a', 'b'), config);
    await store.createRange(descriptor(2, 'b', 'c'), config);
    // Range 1 keeps three entries for good (never compacted); range 2 writes and compacts.
    await write(
      store,
      1,
      [1, 2, 3].map((i) => entry(i, 1, b(`keep${i}`))),
    );
    const r2 = new RangeDriver(store, 2, 1);
    for (let round = 0; round < 100; round++) {
      await r2.run(...Array.from({ length: 10 }, () => 'noop' as const));
      const c = store.beginTurn();
      c.compact(2, { index: r2.next - 1, term: 1, config });
      await c.commit().durable;
    }
    const journal = store.inspectJournal();
    // 1,003 records written; the front is found every 64 records: what is left is range
    // 1's entries and range 2's since the last scan.
    expect(store.stats.journalPurged).toBeGreaterThan(700);
    expect(journal.length).toBeLessThan(150);
    expect(store.stats.journalRewritten).toBeGreaterThanOrEqual(3);
    expect(journal.filter((r) => r.rangeId === 1).length).toBeGreaterThanOrEqual(3);
    store = await reopen(store, dir);
    expect(logOf(store, 1)).toEqual([1, 2, 3].map((i) => [i, 1, `keep${i}`]));
    expect(store.loadRange(2)!.state.entries).toEqual([]);
    expect(store.loadRange(2)!.state.snapshot.index).toBe(1000);
  });
});

describe('tidy (what the turns left of the journal, deleted while the node is idle)', () => {
  it('deletes what a pause made deletable, and keeps what a range still holds', async () => {
    const dir = tempDir();
    // A scan for the purge point every 64 records: the pause's own turn scans too.
    let store = openStoreWith(dir, { journalScanRecords: 64 });
    const ids = [1, 2, 3, 4, 5, 6, 7, 8];
    for (const id of ids) await store.createRange(descriptor(id, `r${id}`, `r${id}z`), config);
    await store.createRange(descriptor(9, 's', 't'), config);
    // A load: eight ranges append and apply 300 entries each, in interleaved turns.
    const drivers = ids.map((id) => new RangeDriver(store, id));
    for (let round = 0; round < 10; round++) {
      for (const d of drivers) await d.run(...Array.from({ length: 30 }, () => 'noop' as const));
    }
    // The pause: every range compacts its whole log in one turn (quiescence), in which
    // range 9 appends 100 entries that it keeps (as a range still awake would). The turn
    // scans for the purge point, from the states before it.
    const pause = store.beginTurn();
    for (const d of drivers) pause.compact(d.rangeId, { index: d.next - 1, term: 1, config });
    pause.write(9, {
      id: 1,
      hardState: { term: 1, vote: 1, commit: 0 },
      entries: Array.from({ length: 100 }, (_, i) => entry(i + 1, 1, b(`keep${i + 1}`))),
      snapshot: null,
    });
    await pause.commit().durable;
    const before = store.inspectJournal().length;
    const purgedBefore = store.stats.journalPurged;
    // The turns deleted some as they went (twice what they appended), far from all.
    expect(before).toBeGreaterThan(1_000);
    expect(store.tidyDue()).toBe(true);
    let tidies = 0;
    while (store.tidyDue() && tidies < 10) {
      await store.tidy();
      tidies++;
    }
    expect(store.tidyDue()).toBe(false);
    const after = store.inspectJournal();
    expect(after.map((r) => [r.rangeId, r.index])).toEqual(
      Array.from({ length: 100 }, (_, i) => [9, i + 1]),
    );
    expect(store.stats.journalPurged - purgedBefore).toBe(before - 100);
    // Nothing left to do: another tidy deletes nothing.
    await store.tidy();
    expect(store.inspectJournal()).toHaveLength(100);
    store = await reopen(store, dir);
    for (const d of drivers) {
      expect(store.loadRange(d.rangeId)!.state.entries).toEqual([]);
      expect(store.loadRange(d.rangeId)!.state.snapshot.index).toBe(300);
    }
    expect(store.loadRange(9)!.state.entries.map((e) => s(e.data))).toEqual(
      Array.from({ length: 100 }, (_, i) => `keep${i + 1}`),
    );
  });
});

describe('state machine', () => {
  async function range(window?: number): Promise<RangeDriver> {
    const store = openStore(tempDir(), window);
    await store.createRange(descriptor(1, '', null), config);
    return new RangeDriver(store, 1);
  }

  it('set then get', async () => {
    const r = await range();
    expect(await r.one(set('k', 'v1', 'a'))).toEqual({ ok: true });
    expect(s(r.store.get(b('k'))?.value)).toBe('v1');
    expect(r.store.get(b('k'))?.revision).toBe(1);
    expect(await r.one(set('k', 'v2', 'b'))).toEqual({ ok: true });
    expect(s(r.store.get(b('k'))?.value)).toBe('v2');
    expect(r.store.get(b('k'))?.revision).toBe(2);
    expect(r.store.get(b('other'))).toBeUndefined();
  });

  it("a get's value is a copy of its own, whatever the reads after it", async () => {
    const r = await range();
    const big = 'x'.repeat(300_000);
    await r.run(set('a', 'value of a', 'i1'), set('b', 'bb', 'i2'), set('c', big, 'i3'));
    // getValue reads lmdb-js's shared buffer, which the next read reuses.
    const a = r.store.getValue(b('a'));
    const c = r.store.getValue(b('c'));
    const b2 = r.store.getValue(b('b'));
    expect(s(a)).toBe('value of a');
    expect(s(c)).toBe(big);
    expect(s(b2)).toBe('bb');
    expect(r.store.getValue(b('absent'))).toBeUndefined();
    // The record's inline request (its set's id) stays in the record: get() still sees it.
    expect(r.store.get(b('a'))?.requests).toHaveLength(1);
    expect(await r.one(set('a', '', 'i4'))).toEqual({ ok: true });
    expect(s(r.store.getValue(b('a')))).toBe('');
  });

  it('cas succeeds on a match and returns the current value on a mismatch', async () => {
    const r = await range();
    await r.run(set('k', 'v1', 'a'));
    expect(await r.one(cas('k', 'v1', 'v2', 'b'))).toEqual({
      ok: true,
      success: true,
      value: 'v2',
    });
    expect(await r.one(cas('k', 'v1', 'v3', 'c'))).toEqual({
      ok: true,
      success: false,
      value: 'v2',
    });
    expect(s(r.store.get(b('k'))?.value)).toBe('v2');
    expect(r.store.get(b('k'))?.revision).toBe(2);
    // Expecting a value of an absent key fails with null.
    expect(await r.one(cas('nope', 'x', 'y', 'd'))).toEqual({
      ok: true,
      success: false,
      value: null,
    });
    expect(r.store.get(b('nope'))).toBeUndefined();
  });

  it('cas expecting absent creates the key once', async () => {
    const r = await range();
    expect(await r.one(cas('k', null, 'v1', 'a'))).toEqual({
      ok: true,
      success: true,
      value: 'v1',
    });
    expect(await r.one(cas('k', null, 'v2', 'b'))).toEqual({
      ok: true,
      success: false,
      value: 'v1',
    });
    expect(s(r.store.get(b('k'))?.value)).toBe('v1');
  });

  it('del returns the last value and leaves the key absent', async () => {
    const r = await range();
    await r.run(set('k', 'v1', 'a'));
    expect(await r.one(del('k', 'b'))).toEqual({ ok: true, value: 'v1' });
    expect(r.store.get(b('k'))).toBeUndefined();
    expect(await r.one(del('k', 'c'))).toEqual({ ok: true, value: null });
    // A deleted key can be created again, also by a cas expecting absence.
    expect(await r.one(cas('k', null, 'v2', 'd'))).toEqual({
      ok: true,
      success: true,
      value: 'v2',
    });
  });

  it('a retried request returns its first result and applies once', async () => {
    const r = await range();
    expect(await r.one(cas('k', null, 'v1', 'req-A'))).toEqual({
      ok: true,
      success: true,
      value: 'v1',
    });
    await r.run(set('k', 'v2', 'req-B'));
    // The retry would fail now (k is v2), but it already succeeded: same answer, no change.
    expect(await r.one(cas('k', null, 'v1', 'req-A'))).toEqual({
      ok: true,
      success: true,
      value: 'v1',
    });
    expect(s(r.store.get(b('k'))?.value)).toBe('v2');
    expect(r.store.get(b('k'))?.revision).toBe(2);
    // A retried set does not overwrite a later write.
    await r.run(set('k', 'v3', 'req-C'));
    expect(await r.one(set('k', 'v2', 'req-B'))).toEqual({ ok: true });
    expect(s(r.store.get(b('k'))?.value)).toBe('v3');
    // A retried del returns the value it deleted, even after the key was recreated.
    expect(await r.one(del('k', 'req-D'))).toEqual({ ok: true, value: 'v3' });
    await r.run(set('k', 'v4', 'req-E'));
    expect(await r.one(del('k', 'req-D'))).toEqual({ ok: true, value: 'v3' });
    expect(s(r.store.get(b('k'))?.value)).toBe('v4');
    // Retries within one turn are caught too.
    const results = await r.run(cas('j', null, 'x', 'req-F'), cas('j', null, 'x', 'req-F'));
    expect(results.map(view)).toEqual([
      { ok: true, success: true, value: 'x' },
      { ok: true, success: true, value: 'x' },
    ]);
    // Ids are per key: the same id on another key is another request.
    expect(await r.one(cas('other', null, 'y', 'req-A'))).toEqual({
      ok: true,
      success: true,
      value: 'y',
    });
  });

  it('forgets request ids by log position, not by time', async () => {
    const window = 10;
    const r = await range(window);
    await r.run(set('k', 'v1', 'A')); // index 1
    await r.run(set('k', 'v2', 'B')); // index 2
    expect(await r.one(set('k', 'v1', 'A'))).toEqual({ ok: true }); // index 3: within the window
    expect(s(r.store.get(b('k'))?.value)).toBe('v2');
    // Entries on other keys and noops move the log on without touching k.
    for (let i = 0; i < window; i++)
      await r.run(i % 2 === 0 ? 'noop' : set(`pad${i}`, 'p', `P${i}`));
    expect(r.next).toBe(14);
    // At index 14, requests before 14 - 10 = 4 have expired: A (index 1) applies anew.
    expect(await r.one(set('k', 'v1', 'A'))).toEqual({ ok: true });
    expect(s(r.store.get(b('k'))?.value)).toBe('v1');
    expect(r.store.get(b('k'))?.revision).toBe(14);
    // Expired requests (A at 1, B at 2) were dropped from k's record when it was rewritten;
    // the new one is kept there.
    expect(requestsOf(r.store, 'k')).toEqual([['A', 14, { ok: true }]]);
    const record = r.store.get(b('k'));
    expect([s(record?.value), record?.revision, Object.keys(record ?? {}).sort()]).toEqual([
      'v1',
      14,
      ['requests', 'revision', 'value'],
    ]);
    expect(record?.requests?.map(([id, index]) => [s(id), index])).toEqual([['A', 14]]);
  });

  it('a del keeps no tombstone: its request record carries the result until it expires', async () => {
    const window = 5;
    const r = await range(window);
    await r.run(set('k', 'v1', 'A'), del('k', 'B')); // indexes 1, 2
    expect(r.store.get(b('k'))).toBeUndefined();
    let snap = decodeSnapshot(r.store.takeSnapshot(1).data);
    expect(snap.records).toEqual([]);
    expect(
      snap.requests.map(([key, id, index, result]) => [s(key), s(id), index, view(result)]),
    ).toEqual([
      ['k', 'A', 1, { ok: true }],
      ['k', 'B', 2, { ok: true, value: 'v1' }],
    ]);
    expect(await r.one(del('k', 'B'))).toEqual({ ok: true, value: 'v1' }); // index 3: the retry
    expect(requestsOf(r.store, 'k')).toEqual([
      ['A', 1, { ok: true }],
      ['B', 2, { ok: true, value: 'v1' }],
    ]);
    for (let i = 0; i < window; i++) await r.run('noop'); // indexes 4..8
    // Index 7 expired A (1 < 7 - 5) and index 8 expired B (2 < 8 - 5).
    expect(requestsOf(r.store, 'k')).toEqual([]);
    expect(r.store.inspectExpiry(1)).toEqual([]);
    snap = decodeSnapshot(r.store.takeSnapshot(1).data);
    expect(snap).toMatchObject({ applied: 8, records: [], requests: [] });
    // B is forgotten: it applies anew (the key is absent now) and is recorded at index 9.
    expect(await r.one(del('k', 'B'))).toEqual({ ok: true, value: null });
    expect(requestsOf(r.store, 'k')).toEqual([['B', 9, { ok: true, value: null }]]);
    expect(r.store.get(b('k'))).toBeUndefined();
  });

  it('garbage commands give an error result and change nothing; the range goes on', async () => {
    const r = await range();
    await r.run(set('k', 'v1', 'a'));
    const garbage = [
      new Uint8Array(),
      new Uint8Array([0xc1, 0xff, 0x00]),
      b('not msgpack at all'),
      encodeCommand(set('k', 'x', 'b')).subarray(0, 5),
      encodeCommand({ op: 'set', key: new Uint8Array(), value: b('v'), id: b('c') }),
      encodeCommand({ op: 'set', key: new Uint8Array(3000), value: b('v'), id: b('d') }),
      packr.pack({ op: 'nope', key: b('k'), id: b('e') }),
      packr.pack({ op: 'cas', key: b('k'), value: b('v'), id: b('f') }),
      packr.pack({ op: 'set', key: 'k', value: b('v'), id: b('g') }),
      packr.pack([1, 2, 3]),
    ];
    const results = await r.run(...garbage);
    for (const result of results) {
      expect(result.ok).toBe(false);
      if (!result.ok) expect(result.code).toBe('BadRequest');
    }
    expect(s(r.store.get(b('k'))?.value)).toBe('v1');
    expect(r.store.loadRange(1)?.state.applied).toBe(1 + garbage.length);
    expect(await r.one(set('k', 'v2', 'g'))).toEqual({ ok: true });
    expect(s(r.store.get(b('k'))?.value)).toBe('v2');
  });

  it('noop and config entries only advance the applied index', async () => {
    const r = await range();
    expect((await r.run('noop', 'config', set('k', 'v', 'a'))).map(view)).toEqual([
      { ok: true },
      { ok: true },
      { ok: true },
    ]);
    expect(r.store.loadRange(1)?.state.applied).toBe(3);
    expect(r.store.get(b('k'))?.revision).toBe(3);
  });

  it('refuses keys outside the range span', async () => {
    const store = openStore(tempDir());
    await store.createRange(descriptor(1, 'b', 'd'), config);
    const r = new RangeDriver(store, 1);
    const results = await r.run(set('a', 'v', '1'), set('d', 'v', '2'), set('c', 'v', '3'));
    expect(results.map((x) => (x.ok ? 'ok' : x.code))).toEqual([
      'RangeKeyMismatch',
      'RangeKeyMismatch',
      'ok',
    ]);
    expect(store.get(b('a'))).toBeUndefined();
    expect(store.get(b('d'))).toBeUndefined();
  });

  it('applied index and data survive a reopen together', async () => {
    const dir = tempDir();
    let store = openStore(dir);
    await store.createRange(descriptor(1, '', null), config);
    await new RangeDriver(store, 1).run(set('k', 'v', 'a'), cas('k', 'v', 'w', 'b'));
    store = await reopen(store, dir);
    expect(store.loadRange(1)?.state.applied).toBe(2);
    expect(s(store.get(b('k'))?.value)).toBe('w');
    // A retry after the restart still finds its first result.
    const r = new RangeDriver(store, 1);
    expect(await r.one(cas('k', 'v', 'w', 'b'))).toEqual({ ok: true, success: true, value: 'w' });
  });

  it('the pure apply function records nothing for an empty id', async () => {
    const cmd: Command = { op: 'set', key: b('k'), value: b('v'), id: new Uint8Array() };
    const first = applyCommand(cmd, 1, undefined, undefined, 10);
    expect(first).toEqual({ result: { ok: true }, record: { value: b('v'), revision: 1 } });
    expect(first.request).toBeUndefined();
    const current = first.record === 'unchanged' ? undefined : first.record;
    // A prior request record is ignored without an id: an empty id is never a retry.
    const again = applyCommand(cmd, 2, current, { index: 1, result: { ok: true } }, 10);
    expect(again.record).toEqual({ value: b('v'), revision: 2 });
    expect(again.request).toBeUndefined();
    // With an id: recorded; a remembered prior makes it a retry; an expired one does not.
    const withId: Command = { ...cmd, id: b('x') };
    expect(applyCommand(withId, 3, current, undefined, 10).request).toEqual({
      index: 3,
      result: { ok: true },
    });
    const prior = { index: 2, result: { ok: true, success: false, value: null } } as const;
    expect(applyCommand(withId, 12, current, prior, 10)).toEqual({
      result: { ...prior.result, duplicate: true },
      record: 'unchanged',
      request: undefined,
    });
    expect(applyCommand(withId, 13, current, prior, 10)).toEqual({
      result: { ok: true },
      record: { value: b('v'), revision: 13 },
      request: { index: 13, result: { ok: true } },
    });
    const decoded = decodeCommand(encodeCommand(cas('k', null, 'v', 'id')));
    expect(decoded?.op).toBe('cas');
    if (decoded?.op === 'cas') {
      expect([s(decoded.key), decoded.expect, s(decoded.value), s(decoded.id)]).toEqual([
        'k',
        null,
        'v',
        'id',
      ]);
    }
  });
});

/**
 * The snapshot format is plain msgpack:
 * { applied, records: [[key, DataRecord], ...], requests: [[key, id, index, result], ...],
 *   requestsForgottenBelow, ... }.
 */
function decodeSnapshot(data: Uint8Array): {
  applied: number;
  records: Array<[Uint8Array, DataRecord]>;
  requests: Array<[Uint8Array, Uint8Array, number, ApplyResult]>;
  requestsForgottenBelow: number;
} {
  return packr.unpack(data) as ReturnType<typeof decodeSnapshot>;
}

describe('compaction', () => {
  it('deletes compacted entries; after a reopen the log starts at the snapshot point', async () => {
    const dir = tempDir();
    let store = openStore(dir);
    await store.createRange(descriptor(1, '', null), config);
    const r = new RangeDriver(store, 1, 4);
    for (let i = 1; i <= 10; i++) await r.run(set(`k${i}`, `v${i}`, `id${i}`));
    const turn = store.beginTurn();
    turn.compact(1, { index: 6, term: 4, config });
    await turn.commit().durable;
    store = await reopen(store, dir);
    const loaded = store.loadRange(1)!;
    expect(loaded.state.snapshot).toEqual({ index: 6, term: 4, config });
    expect(loaded.state.entries.map((e) => e.index)).toEqual([7, 8, 9, 10]);
    expect(loaded.state.applied).toBe(10);
    // Compacting to an older point changes nothing; compacting everything empties the log.
    const again = store.beginTurn();
    again.compact(1, { index: 3, term: 4, config });
    again.compact(1, { index: 10, term: 4, config });
    await again.commit().durable;
    store = await reopen(store, dir);
    expect(store.loadRange(1)!.state.entries).toEqual([]);
    expect(store.loadRange(1)!.state.snapshot.index).toBe(10);
    // The log continues after the snapshot point.
    const more = new RangeDriver(store, 1, 4);
    expect(await more.one(set('k11', 'v11', 'id11'))).toEqual({ ok: true });
    expect(store.loadRange(1)!.state.entries.map((e) => e.index)).toEqual([11]);
    // The snapshot term comes from the stored snapshot point when nothing was applied since.
    const snap = store.takeSnapshot(1);
    expect(snap.meta).toEqual({ index: 11, term: 4, config });
  });
});

describe('snapshots', () => {
  async function populate(store: Store, keys: Record<number, string[]>): Promise<void> {
    await store.createRange(descriptor(1, '', 'b'), config);
    await store.createRange(descriptor(2, 'b', 'd'), config);
    await store.createRange(descriptor(3, 'd', null), config);
    for (const [rangeId, list] of Object.entries(keys)) {
      const r = new RangeDriver(store, Number(rangeId), 2);
      await r.run(...list.map((k, i) => set(k, `${k}@${store.storeId.slice(0, 4)}`, `${k}-${i}`)));
    }
  }

  it('installs a span into another store: same records, stale keys gone, others kept', async () => {
    const source = openStore(tempDir());
    await populate(source, { 1: ['a1'], 2: ['b1', 'b2', 'c1'], 3: ['d1'] });
    const sourceRange = new RangeDriver(source, 2, 2);
    await sourceRange.run(del('b2', 'del-b2'), cas('c1', null, 'never', 'cas-c1'));
    const snap = source.takeSnapshot(2);
    expect(snap.meta).toEqual({ index: 5, term: 2, config });
    const decoded = decodeSnapshot(snap.data);
    expect(decoded.applied).toBe(5);
    expect(decoded.records.map(([k, rec]) => [s(k), s(rec.value)])).toEqual([
      ['b1', `b1@${source.storeId.slice(0, 4)}`],
      ['c1', `c1@${source.storeId.slice(0, 4)}`],
    ]);
    // The span's request records travel in key order, with their indexes and results:
    // inside the data records of keys that have one, apart for b2 (deleted).
    expect(
      decoded.records.map(([k, rec]) => [s(k), rec.requests?.map(([id, i]) => [s(id), i])]),
    ).toEqual([
      ['b1', [['b1-0', 1]]],
      [
        'c1',
        [
          ['c1-2', 3],
          ['cas-c1', 5],
        ],
      ],
    ]);
    expect(decoded.requests.map(([k, id, index]) => [s(k), s(id), index])).toEqual([
      ['b2', 'b2-1', 2],
      ['b2', 'del-b2', 4],
    ]);

    const dir = tempDir();
    let target = openStore(dir);
    await populate(target, { 1: ['a1', 'a2'], 2: ['b9', 'c1'], 3: ['d1', 'z'] });
    const before = {
      a1: s(target.get(b('a1'))?.value),
      a2: s(target.get(b('a2'))?.value),
      d1: s(target.get(b('d1'))?.value),
      z: s(target.get(b('z'))?.value),
    };
    await installSnapshot(target, 2, snap, { term: 3, vote: 0, commit: 5 }, 9);
    target = await reopen(target, dir);

    // The span holds exactly the snapshot's records, with their request records.
    const installed = target.takeSnapshot(2);
    expect(installed.meta).toEqual(snap.meta);
    expect(Buffer.from(installed.data).equals(Buffer.from(snap.data))).toBe(true);
    expect(target.get(b('b9'))).toBeUndefined();
    expect(target.get(b('b2'))).toBeUndefined();
    expect(s(target.get(b('c1'))?.value)).toBe(`c1@${source.storeId.slice(0, 4)}`);
    // Keys outside the span are untouched.
    expect({
      a1: s(target.get(b('a1'))?.value),
      a2: s(target.get(b('a2'))?.value),
      d1: s(target.get(b('d1'))?.value),
      z: s(target.get(b('z'))?.value),
    }).toEqual(before);
    // Log and applied index were replaced.
    expect(target.loadRange(2)?.state).toEqual({
      hardState: { term: 3, vote: 0, commit: 5 },
      snapshot: snap.meta,
      entries: [],
      applied: 5,
    });
    // Request ids travelled with the records: a retry returns the first result.
    const r = new RangeDriver(target, 2, 3);
    expect(r.next).toBe(6);
    expect(await r.one(cas('c1', null, 'never', 'cas-c1'))).toEqual({
      ok: true,
      success: false,
      value: `c1@${source.storeId.slice(0, 4)}`,
    });
    expect(await r.one(del('b2', 'del-b2'))).toEqual({
      ok: true,
      value: `b2@${source.storeId.slice(0, 4)}`,
    });
  });

  it('installs a snapshot and appends entries after it in one write', async () => {
    const source = openStore(tempDir());
    await source.createRange(descriptor(1, '', null), config);
    await new RangeDriver(source, 1, 1).run(set('k', 'v', 'a'), set('j', 'w', 'b'));
    const snap = source.takeSnapshot(1);
    const target = openStore(tempDir());
    await target.createRange(descriptor(1, '', null), config);
    await new RangeDriver(target, 1, 1).run(set('stale', 'x', 'c'), 'noop', 'noop', 'noop');
    const e3 = entry(3, 2, encodeCommand(set('k', 'v2', 'd')));
    const turn = target.beginTurn();
    turn.write(1, {
      id: 5,
      hardState: { term: 2, vote: 0, commit: 3 },
      entries: [e3],
      snapshot: snap,
    });
    turn.apply(1, [e3]);
    const committed = turn.commit();
    await committed.durable;
    expect((await committed.results).get(1)).toEqual([{ ok: true }]);
    expect(target.get(b('stale'))).toBeUndefined();
    expect(s(target.get(b('k'))?.value)).toBe('v2');
    expect(s(target.get(b('j'))?.value)).toBe('w');
    expect(target.loadRange(1)?.state.entries.map((e) => e.index)).toEqual([3]);
    expect(target.takeSnapshot(1).meta).toEqual({ index: 3, term: 2, config });
  });
});

describe('request records', () => {
  async function range(window?: number, dir = tempDir()): Promise<RangeDriver> {
    const store = openStore(dir, window);
    await store.createRange(descriptor(1, '', null), config);
    return new RangeDriver(store, 1);
  }

  /**
   * Invariant: the expiry queue holds one item per request record apart from its data
   * record, at its index; no (key, id) is recorded twice.
   */
  function expectQueueMatchesRecords(store: Store, rangeId: number, keys: string[]): void {
    const queue = store
      .inspectExpiry(rangeId)
      .map((q) => `${s(q.key)}/${s(q.id)}@${q.index}`)
      .sort();
    const stored = keys.flatMap((k) => store.inspectRequests(b(k)).map((q) => ({ k, q })));
    const apart = stored
      .filter(({ q }) => !q.inline)
      .map(({ k, q }) => `${k}/${s(q.id)}@${q.index}`)
      .sort();
    expect(queue).toEqual(apart);
    const ids = stored.map(({ k, q }) => `${k}/${s(q.id)}`);
    expect(new Set(ids).size).toBe(ids.length);
  }

  it('forgetRequests forgets the ids applied below its point, alike through restarts, snapshots and splits', async () => {
    const dir = tempDir();
    const r = await range(undefined, dir); // the default window: only the command forgets
    const forget = (below: number) => encodeRangeCommand({ op: 'forgetRequests', below });
    await r.run(set('k', 'v1', 'A'), set('k', 'v2', 'B')); // 1, 2: inline in k's record
    await r.run(cas('j', null, 'x', 'C'), del('j', 'D')); // 3, 4: apart (j has no value)
    expect(await r.one(forget(3))).toEqual({ ok: true }); // 5
    expect(r.store.historyPoints(1).requestsForgottenBelow).toBe(3);
    // A (1) is forgotten: its retry applies anew. D (4) is remembered: its first result.
    expect(await r.one(set('k', 'v1', 'A'))).toEqual({ ok: true }); // 6
    expect(r.store.get(b('k'))?.revision).toBe(6);
    expect(await r.one(del('j', 'D'))).toEqual({ ok: true, value: 'x' }); // 7
    // k's record dropped B when it was rewritten; A is recorded again at 6.
    expect(requestsOf(r.store, 'k')).toEqual([['A', 6, { ok: true }]]);
    // A lower point changes nothing; one past the entry stops at the entry's index.
    await r.run(forget(2)); // 8
    expect(r.store.historyPoints(1).requestsForgottenBelow).toBe(3);
    await r.run(forget(1000)); // 9
    expect(r.store.historyPoints(1).requestsForgottenBelow).toBe(9);
    // The separate records below it (C at 3, D at 4) go a few per applied entry.
    await r.run('noop', 'noop'); // 10, 11
    expect(r.store.inspectExpiry(1)).toEqual([]);
    expect(requestsOf(r.store, 'j')).toEqual([]);

    // Kept through a restart, carried by a snapshot, inherited by a split's right half.
    const store = await reopen(r.store, dir);
    expect(store.historyPoints(1).requestsForgottenBelow).toBe(9);
    const snap = store.takeSnapshot(1);
    expect(decodeSnapshot(snap.data).requestsForgottenBelow).toBe(9);
    const target = openStore(tempDir());
    await target.createRange(descriptor(1, '', null), config);
    await installSnapshot(target, 1, snap, { term: 1, vote: 0, commit: 11 }, 1);
    expect(target.historyPoints(1).requestsForgottenBelow).toBe(9);
    const after = new RangeDriver(store, 1);
    await after.run(set('m1', 'y', 'E')); // 12
    const [split] = await after.run({
      op: 'split',
      key: b('m'),
      generation: 1,
      rightId: 2,
      id: b('S'),
    }); // 13
    expect(split?.ok).toBe(true);
    expect(store.historyPoints(2).requestsForgottenBelow).toBe(9);
    // E (12) moved right with its key and is still remembered there.
    expect(await new RangeDriver(store, 2).one(set('m1', 'z', 'E'))).toEqual({ ok: true });
    expect(s(store.get(b('m1'))?.value)).toBe('y');
  });

  it('a hot key with 20,000 request ids applies a command reading O(1) records', async () => {
    const r = await range(); // the default window: nothing expires here
    let before = 0;
    for (let t = 0; t < 20; t++) {
      before = r.store.stats.applyReads;
      const turn = Array.from({ length: 1000 }, (_, i) => set('hot', `v${t}.${i}`, `id${t}.${i}`));
      await r.run(...turn);
    }
    // The last turn of 1000 commands read the key's data record once and each new id once.
    expect(r.store.stats.applyReads - before).toBe(1 + 1000);
    // The 4 newest live inside the key's record, the others apart, queued for expiry.
    const stored = r.store.inspectRequests(b('hot'));
    expect(stored).toHaveLength(20_000);
    expect(stored.filter((q) => q.inline).map((q) => s(q.id))).toEqual([
      'id19.996',
      'id19.997',
      'id19.998',
      'id19.999',
    ]);
    expect(r.store.inspectExpiry(1)).toHaveLength(20_000 - inlineRequestsMax);

    // A new command reads the data record and its own request record; nothing more.
    before = r.store.stats.applyReads;
    expect(await r.one(cas('hot', 'v19.999', 'last', 'id-last'))).toEqual({
      ok: true,
      success: true,
      value: 'last',
    });
    expect(r.store.stats.applyReads - before).toBe(2);
    // So does a retry of the first id, which still gets its first result.
    before = r.store.stats.applyReads;
    expect(await r.one(set('hot', 'v0.0', 'id0.0'))).toEqual({ ok: true });
    expect(r.store.stats.applyReads - before).toBe(2);
    // The data record holds the value, revision and the 4 newest requests: its size does
    // not grow with the requests the key has seen.
    const record = r.store.get(b('hot'))!;
    expect(Object.keys(record).sort()).toEqual(['requests', 'revision', 'value']);
    expect([s(record.value), record.revision]).toEqual(['last', 20_001]);
    expect(record.requests?.map(([id]) => s(id))).toEqual([
      'id19.997',
      'id19.998',
      'id19.999',
      'id-last',
    ]);
    expect(packr.pack(record).length).toBeLessThan(160);
  });

  it('expiry deletes at most two queue items per applied entry, oldest first', async () => {
    const dir = tempDir();
    const keys = Array.from({ length: 20 }, (_, i) => `k${String(i + 1).padStart(2, '0')}`);
    // Results over inlineResultBytesMax: every request gets a record of its own, queued.
    const v = 'v'.repeat(300);
    let r = await range(100, dir);
    await r.run(...keys.map((k) => cas(k, null, v, `id-${k}`))); // indexes 1..20
    expect(r.store.inspectExpiry(1).map((q) => q.index)).toEqual(keys.map((_, i) => i + 1));
    // Reopened with a window of 5, entries 1..15 are out of it at index 21: a backlog.
    await r.store.close();
    r = new RangeDriver(openStore(dir, 5), 1);
    expect(r.next).toBe(21);
    await r.run('noop'); // index 21: deletes 1 and 2 only
    expect(r.store.inspectExpiry(1).map((q) => q.index)).toEqual(range3to20());
    expect(r.store.inspectRequests(b('k01'))).toEqual([]);
    expect(r.store.inspectRequests(b('k02'))).toEqual([]);
    expectQueueMatchesRecords(r.store, 1, keys);
    // Index 22 deletes 3 and 4; k10's request (index 10) is out of the window though not
    // deleted yet: the cas applies anew (and fails now), replacing record and queue item.
    expect(await r.one(cas('k10', null, v, 'id-k10'))).toEqual({
      ok: true,
      success: false,
      value: v,
    });
    expect(requestsOf(r.store, 'k10')).toEqual([
      ['id-k10', 22, { ok: true, success: false, value: v }],
    ]);
    expect(r.store.inspectExpiry(1).map((q) => q.index)).toEqual([
      5, 6, 7, 8, 9, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 22,
    ]);
    expectQueueMatchesRecords(r.store, 1, keys);
    // A retry inside the window is still answered from its record (k20 at index 20).
    expect(await r.one(cas('k20', null, v, 'id-k20'))).toEqual({
      ok: true,
      success: true,
      value: v,
    });
    // Index 23 deleted 5 and 6. Noops drain the rest: everything below i - 5 at index i.
    for (let i = 24; i <= 40; i++) {
      await r.run('noop');
      expectQueueMatchesRecords(r.store, 1, keys);
    }
    expect(r.store.inspectExpiry(1)).toEqual([]);
    expect(keys.flatMap((k) => r.store.inspectRequests(b(k)))).toEqual([]);
    // The data stays.
    expect(keys.map((k) => s(r.store.get(b(k))?.value))).toEqual(keys.map(() => v));

    function range3to20(): number[] {
      return Array.from({ length: 18 }, (_, i) => i + 3);
    }
  });

  it('replicas that batch entries differently reach the same state and expiry', async () => {
    const window = 4;
    const items: Array<Command | 'noop'> = [];
    for (let i = 0; i < 40; i++) {
      const key = `k${i % 3}`;
      if (i % 7 === 6) items.push('noop');
      else if (i % 5 === 4) items.push(del(key, `d${i}`));
      else if (i % 4 === 3) items.push(cas(key, `v${i - 1}`, `v${i}`, `c${i}`));
      else items.push(set(key, `v${i}`, `s${i}`));
      if (i % 6 === 5) items.push(set(key, 'retry?', `s${i - 5}`)); // some retries, some not
    }
    const one = await range(window);
    const results = await one.run(...items);
    const other = await range(window);
    const otherResults: ApplyResult[] = [];
    for (const item of items) otherResults.push(...(await other.run(item)));
    expect(otherResults.map(view)).toEqual(results.map(view));
    const a = one.store.takeSnapshot(1);
    const c = other.store.takeSnapshot(1);
    expect(Buffer.from(c.data).equals(Buffer.from(a.data))).toBe(true);
    expect(other.store.inspectExpiry(1)).toEqual(one.store.inspectExpiry(1));
    expect(decodeSnapshot(a.data).requests.length).toBeGreaterThan(0);
    expect(decodeSnapshot(a.data).records.some(([, r]) => r.requests !== undefined)).toBe(true);
    expectQueueMatchesRecords(one.store, 1, ['k0', 'k1', 'k2']);
  });

  it('a snapshot carries request records; the installed replica expires them in step', async () => {
    const window = 8;
    const source = openStore(tempDir(), window);
    await source.createRange(descriptor(1, '', 'b'), config);
    await source.createRange(descriptor(2, 'b', 'd'), config);
    const src = new RangeDriver(source, 2, 2);
    await src.run(set('b1', 'x', 'X'), cas('c1', null, 'y', 'Y'), del('b1', 'Z'), 'noop');

    const target = openStore(tempDir(), window);
    await target.createRange(descriptor(1, '', 'b'), config);
    await target.createRange(descriptor(2, 'b', 'd'), config);
    await new RangeDriver(target, 1).run(set('a1', 'keep', 'A')); // outside the span
    await new RangeDriver(target, 2).run(set('b9', 'stale', 'Q'), set('c1', 'stale', 'Y'));

    const snap = source.takeSnapshot(2);
    await installSnapshot(target, 2, snap, { term: 3, vote: 0, commit: 4 }, 7);
    // The span's stale records and requests are gone; the queue is the source's.
    expect(requestsOf(target, 'b9')).toEqual([]);
    expect(requestsOf(target, 'c1')).toEqual([['Y', 2, { ok: true, success: true, value: 'y' }]]);
    expect(requestsOf(target, 'a1')).toEqual([['A', 1, { ok: true }]]);
    expect(target.inspectRequests(b('c1')).map((q) => q.inline)).toEqual([true]);
    expect(target.inspectExpiry(1)).toEqual([]); // a1's request is inline
    expect(target.inspectExpiry(2)).toEqual(source.inspectExpiry(2));
    // b1 was deleted: its requests are apart and queued; c1's is inside its record.
    expect(target.inspectExpiry(2).map((q) => [s(q.key), s(q.id), q.index])).toEqual([
      ['b1', 'X', 1],
      ['b1', 'Z', 3],
    ]);

    // Both replicas apply the same entries; retries answer alike until the ids expire,
    // which happens at the same index on both.
    const dst = new RangeDriver(target, 2, 3);
    expect(dst.next).toBe(5);
    const retryY = cas('c1', null, 'y', 'Y');
    const retryZ = del('b1', 'Z');
    const expired: Array<[number, string[]]> = [];
    for (let index = 5; index <= 13; index++) {
      const item = index === 6 ? retryY : index === 7 ? retryZ : 'noop';
      const [a, c] = [await src.one(item), await dst.one(item)];
      expect(c).toEqual(a);
      if (index === 6) expect(a).toEqual({ ok: true, success: true, value: 'y' });
      if (index === 7) expect(a).toEqual({ ok: true, value: 'x' });
      const queue = target.inspectExpiry(2);
      expect(queue).toEqual(source.inspectExpiry(2));
      expired.push([index, queue.map((q) => s(q.id)!)]);
      const [sa, sc] = [source.takeSnapshot(2).data, target.takeSnapshot(2).data];
      expect(Buffer.from(sc).equals(Buffer.from(sa))).toBe(true);
    }
    // X (index 1) is deleted at index 10, Z (3) at 12: i - 8 > recorded index. Y (2) stays
    // in c1's record, forgotten from index 11 on all the same.
    expect(expired.map(([i, ids]) => `${i}:${ids.join('')}`)).toEqual([
      '5:XZ',
      '6:XZ',
      '7:XZ',
      '8:XZ',
      '9:XZ',
      '10:Z',
      '11:Z',
      '12:',
      '13:',
    ]);
    // Forgotten: a retry of Y applies anew on both and fails (c1 exists).
    const late = cas('c1', null, 'y', 'Y');
    expect(await dst.one(late)).toEqual({ ok: true, success: false, value: 'y' });
    expect(await src.one(late)).toEqual({ ok: true, success: false, value: 'y' });
  });

  it("keeps a key's newest requests inside its record, the rest apart, within the limits", async () => {
    const r = await range();
    const placed = (key: string) =>
      r.store.inspectRequests(b(key)).map((q) => `${s(q.id)}${q.inline ? '' : '*'}`);
    // Sets: results without values; the 4 newest stay inline, the oldest moves apart.
    await r.run(...['A', 'B', 'C', 'D', 'E'].map((id, i) => set('k', `v${i}`, id)));
    expect(placed('k')).toEqual(['A*', 'B', 'C', 'D', 'E']);
    expect(r.store.inspectExpiry(1).map((q) => [s(q.id), q.index])).toEqual([['A', 1]]);
    // Retries are answered from either place and change nothing.
    expect(await r.one(set('k', 'x', 'A'))).toEqual({ ok: true });
    expect(await r.one(set('k', 'x', 'D'))).toEqual({ ok: true });
    expect(s(r.store.get(b('k'))?.value)).toBe('v4');
    // Cas results carry the value: 100 bytes each, at most 256 bytes of them inline.
    const v = (c: string) => c.repeat(100);
    await r.run(cas('c', null, v('1'), 'P'), cas('c', v('1'), v('2'), 'Q'));
    expect(placed('c')).toEqual(['P', 'Q']);
    await r.run(cas('c', v('2'), v('3'), 'R'));
    expect(placed('c')).toEqual(['P*', 'Q', 'R']);
    // A failed cas's result carries the current value too (Q moves apart for S); a result
    // over the limit on its own goes apart at once, and the inline ones stay.
    await r.run(cas('c', 'wrong', 'x', 'S'), cas('c', v('3'), v('4').repeat(3), 'T'));
    expect(placed('c')).toEqual(['P*', 'Q*', 'R', 'S', 'T*']);
    // A write without a request id keeps the key's requests; a del moves them all apart,
    // its own too, so no record is left for the key.
    await r.run({ op: 'set', key: b('c'), value: b('plain'), id: new Uint8Array() });
    expect(placed('c')).toEqual(['P*', 'Q*', 'R', 'S', 'T*']);
    await r.run(del('c', 'U'));
    expect(r.store.get(b('c'))).toBeUndefined();
    expect(placed('c')).toEqual(['P*', 'Q*', 'R*', 'S*', 'T*', 'U*']);
    expect(await r.one(cas('c', v('1'), v('2'), 'Q'))).toEqual({
      ok: true,
      success: true,
      value: v('2'),
    });
    expect(r.store.get(b('c'))).toBeUndefined();
    // A failed cas on an absent key records its request apart (there is no record).
    expect(await r.one(cas('n', 'x', 'y', 'V'))).toEqual({ ok: true, success: false, value: null });
    expect(placed('n')).toEqual(['V*']);
    expect(r.store.get(b('n'))).toBeUndefined();
    expectQueueMatchesRecords(r.store, 1, ['k', 'c', 'n']);
  });

  it('looks for requests to expire only when some are queued below the horizon', async () => {
    const dir = tempDir();
    let r = await range(5, dir);
    // Inline requests only: the queue stays empty and no entry looks into it.
    await r.run(...Array.from({ length: 20 }, (_, i) => set(`k${i}`, 'v', `id${i}`)));
    expect(r.store.stats.expiryScans).toBe(0);
    // Index 21: the del moves k18's id18 (19, still remembered) apart, with its own D (21).
    await r.run(del('k18', 'D'));
    expect(r.store.inspectExpiry(1).map((q) => q.index)).toEqual([19, 21]);
    // Until the horizon (index - 5) passes 19, nothing is due and nothing is looked up.
    for (let i = 22; i <= 24; i++) await r.run('noop');
    expect(r.store.stats.expiryScans).toBe(0);
    await r.run('noop'); // index 25: horizon 20 deletes the item at 19
    expect(r.store.inspectExpiry(1).map((q) => q.index)).toEqual([21]);
    expect(r.store.stats.expiryScans).toBe(1);
    // A reopened store derives the same floor (21) from the queue.
    await r.store.close();
    r = new RangeDriver(openStore(dir, 5), 1);
    await r.run('noop'); // index 26: horizon 21, nothing due
    expect(r.store.stats.expiryScans).toBe(0);
    await r.run('noop'); // index 27: horizon 22 deletes D's item
    expect(r.store.inspectExpiry(1)).toEqual([]);
    expect(r.store.stats.expiryScans).toBe(1);
    for (let i = 28; i <= 40; i++) await r.run('noop');
    expect(r.store.stats.expiryScans).toBe(1);
    expect(await r.one(del('k18', 'D'))).toEqual({ ok: true, value: null }); // forgotten
  });

  it('refuses a snapshot whose inline requests are malformed or also kept apart', async () => {
    const source = openStore(tempDir());
    await source.createRange(descriptor(1, '', null), config);
    const src = new RangeDriver(source, 1);
    await src.run(set('k', 'v', 'A'), del('gone', 'B'));
    const good = packr.unpack(source.takeSnapshot(1).data) as {
      applied: number;
      records: Array<[Uint8Array, { value: Uint8Array; revision: number; requests: unknown[] }]>;
      requests: unknown[][];
    };
    expect(good.records[0]![1].requests).toHaveLength(1);
    const meta = source.takeSnapshot(1).meta;
    const variants: Array<(d: typeof good) => void> = [
      (d) => d.requests.push([b('k'), b('A'), 1, { ok: true }]), // also apart
      (d) => (d.records[0]![1].requests[0] = [b('A'), 3, { ok: true }]), // after applied
      (d) => (d.records[0]![1].requests[0] = [b(''), 1, { ok: true }]), // empty id
      (d) =>
        (d.records[0]![1].requests = [1, 2, 3, 4, 5].map((i) => [b(`i${i}`), 1, { ok: true }])),
      (d) =>
        (d.records[0]![1].requests = [
          [b('A'), 1, { ok: true }],
          [b('A'), 1, { ok: true }],
        ]),
      (d) => (d.records[0]![1].requests[0] = [b('A'), 1, { ok: 'yes' }]),
    ];
    const target = openStore(tempDir());
    await target.createRange(descriptor(1, '', null), config);
    // The unchanged snapshot installs.
    for (const variant of [undefined, ...variants]) {
      const data = structuredClone(good);
      variant?.(data);
      const turn = target.beginTurn();
      turn.write(1, {
        id: 1,
        hardState: { term: 1, vote: 0, commit: meta.index },
        entries: [],
        snapshot: { meta, data: packr.pack(data) },
      });
      if (variant === undefined) {
        await turn.commit().durable;
        expect(target.inspectRequests(b('k')).map((q) => [s(q.id), q.inline])).toEqual([
          ['A', true],
        ]);
      } else {
        await expect(turn.commit().results).rejects.toThrow(InvariantViolation);
      }
    }
  });

  it('refuses a snapshot whose request records repeat or leave the span', async () => {
    const store = openStore(tempDir());
    await store.createRange(descriptor(1, 'b', 'd'), config);
    const meta = { index: 3, term: 1, config };
    const request = (key: string, id: string) => [b(key), b(id), 2, { ok: true }];
    const bad = [
      [request('b1', 'X'), request('b1', 'X')],
      [request('c1', 'X'), request('b1', 'X')],
      [request('e1', 'X')],
    ];
    for (const requests of bad) {
      const turn = store.beginTurn();
      const data = packr.pack({ applied: 3, records: [], requests });
      turn.write(1, {
        id: 1,
        hardState: { term: 1, vote: 0, commit: 3 },
        entries: [],
        snapshot: { meta, data },
      });
      await expect(turn.commit().results).rejects.toThrow(InvariantViolation);
    }
    expect(store.loadRange(1)?.state.applied).toBe(0);
    expect(store.inspectExpiry(1)).toEqual([]);
  });

  it('request records of a span are exactly its keys, in key order (binary keys)', async () => {
    // Bytes near the edges of the encoding: 0x00, 0x01, 0x7f, 0x80, 0xfe, 0xff.
    const alphabet = [0x00, 0x01, 0x7f, 0x80, 0xfe, 0xff];
    let seed = 7;
    const rand = (n: number): number => {
      seed = (seed * 1_103_515_245 + 12_345) % 2_147_483_648;
      return seed % n;
    };
    const randomKey = (): Uint8Array =>
      Uint8Array.from({ length: 1 + rand(6) }, () => alphabet[rand(alphabet.length)]!);
    const hex = (k: Uint8Array): string => Buffer.from(k).toString('hex');
    for (let round = 0; round < 10; round++) {
      const split = randomKey();
      const store = openStore(tempDir());
      await store.createRange({ ...descriptor(1, '', null), end: split }, config);
      await store.createRange({ ...descriptor(2, '', null), start: split }, config);
      const keys = new Map<string, Uint8Array>();
      for (let i = 0; i < 30; i++) {
        const k = i === 0 ? split : randomKey();
        keys.set(hex(k), k);
      }
      keys.set(
        hex(Buffer.concat([split, Buffer.from([0])])),
        Buffer.concat([split, Buffer.from([0])]),
      );
      const drivers = [new RangeDriver(store, 1), new RangeDriver(store, 2)];
      for (const k of keys.values()) {
        const d = Buffer.compare(Buffer.from(k), Buffer.from(split)) < 0 ? 0 : 1;
        const id = Uint8Array.from([0, ...k]);
        // A result over inlineResultBytesMax: the request gets a record of its own.
        const value = b('v'.repeat(300));
        await drivers[d]!.run({ op: 'cas', key: k, expect: null, value, id });
        expect(store.inspectRequests(k).map((q) => hex(q.id))).toEqual([hex(id)]);
      }
      const sorted = [...keys.values()].sort((x, y) =>
        Buffer.compare(Buffer.from(x), Buffer.from(y)),
      );
      const left = sorted.filter((k) => Buffer.compare(Buffer.from(k), Buffer.from(split)) < 0);
      const right = sorted.filter((k) => Buffer.compare(Buffer.from(k), Buffer.from(split)) >= 0);
      for (const [rangeId, expected] of [
        [1, left],
        [2, right],
      ] as const) {
        const snap = decodeSnapshot(store.takeSnapshot(rangeId).data);
        expect(snap.requests.map(([k]) => hex(k))).toEqual(expected.map(hex));
        expect(snap.records.map(([k]) => hex(k))).toEqual(expected.map(hex));
      }
    }
  });

  it('the longest command key fits LMDB with the longest request id', async () => {
    const r = await range();
    const id = new Uint8Array(64).fill(0xff);
    const delId = new Uint8Array(64).fill(0xfe);
    for (const fill of [0x00, 0xff]) {
      const key = new Uint8Array(keyBytesMax).fill(fill);
      expect(await r.one({ op: 'set', key, value: b('v'), id })).toEqual({ ok: true });
      expect(await r.one({ op: 'del', key, id: delId })).toEqual({ ok: true, value: 'v' });
      expect(await r.one({ op: 'del', key, id: delId })).toEqual({ ok: true, value: 'v' });
      expect(r.store.inspectRequests(key).map((q) => q.id.length)).toEqual([64, 64]);
    }
    const tooLong = new Uint8Array(keyBytesMax + 1);
    const [result] = await r.run(encodeCommand({ op: 'set', key: tooLong, value: b('v'), id }));
    expect(result?.ok).toBe(false);
  });

  it('refuses to open a store with ranges in the old layout', async () => {
    const dir = tempDir();
    const store = openStore(dir);
    await store.createRange(descriptor(1, '', null), config);
    await store.close();
    const raw = lmdbOpen(dir, { maxDbs: 8 });
    const meta = raw.openDB<string, string>('meta', { encoding: 'string' });
    await meta.remove('storageFormat');
    await raw.close();
    expect(() => Store.open(dir)).toThrow(/older storage layout/);
  });
});

describe('one process per storage dir', () => {
  it('refuses a dir locked by a live process and takes over a stale lock', async () => {
    const dir = tempDir();
    // Another live process holds the lock.
    const holder = spawn(process.execPath, ['-e', 'setTimeout(() => {}, 60000)'], {
      stdio: 'ignore',
    });
    children.push(holder);
    fs.writeFileSync(path.join(dir, 'rasputin.lock'), String(holder.pid));
    expect(() => Store.open(dir)).toThrow(StoreLockedError);
    expect(() => Store.open(dir)).toThrow(`in use by process ${holder.pid}`);
    // Once it is gone (kill -9), its lock is stale and the dir opens.
    const exited = new Promise((done) => holder.once('exit', done));
    holder.kill('SIGKILL');
    await exited;
    const store = Store.open(dir);
    expect(fs.readFileSync(path.join(dir, 'rasputin.lock'), 'utf8')).toBe(String(process.pid));
    await store.close();
    expect(fs.existsSync(path.join(dir, 'rasputin.lock'))).toBe(false);
  });
});

describe('durability', () => {
  it('a turn is on disk once `durable` resolves, across a kill -9', async () => {
    const dir = tempDir();
    const here = path.dirname(fileURLToPath(import.meta.url));
    const repo = path.resolve(here, '../..');
    const child = spawn(
      process.execPath,
      ['--import', 'tsx', path.join(here, 'fixtures/storage-crash-child.ts'), dir],
      { cwd: repo, stdio: ['pipe', 'pipe', 'pipe'] },
    );
    children.push(child);
    let stderr = '';
    child.stderr.on('data', (chunk: Buffer) => {
      stderr += chunk.toString();
    });
    const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
    const line = await new Promise<string>((resolve, reject) => {
      let out = '';
      child.stdout.on('data', (chunk: Buffer) => {
        out += chunk.toString();
        const newline = out.indexOf('\n');
        if (newline >= 0) resolve(out.slice(0, newline));
      });
      child.once('exit', (code) => reject(new Error(`child exited (${code}): ${stderr}`)));
    });
    expect(child.pid).toBeTypeOf('number');
    process.kill(child.pid!, 'SIGKILL');
    await exited;
    expect(child.signalCode).toBe('SIGKILL');

    const [word, storeId] = line.split(' ');
    expect(word).toBe('durable');
    const store = openStore(dir);
    expect(store.storeId).toBe(storeId);
    const loaded = store.loadRange(7)!;
    expect(loaded.state.applied).toBe(50);
    expect(loaded.state.hardState).toEqual({ term: 3, vote: 1, commit: 50 });
    expect(loaded.state.entries).toHaveLength(50);
    for (let i = 0; i < 50; i++) expect(s(store.get(b(`key-${i}`))?.value)).toBe(`value-${i}`);
  });
});
