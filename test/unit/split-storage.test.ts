// Splits, the directory commands and snapshots after a split, on a real LMDB environment.

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import type { Configuration, Entry } from '../../ranges/core/types.ts';
import {
  type ApplyResult,
  applyCommand,
  type Command,
  encodeCommand,
} from '../../src/storage/commands.ts';
import {
  decodeCounter,
  directoryKey,
  encodeDescriptor,
  type RangeDescriptor,
  rangeIdCounterKey,
  systemPrefix,
} from '../../src/storage/descriptor.ts';
import { Store } from '../../src/storage/store.ts';
import { del, set, split } from './commands-fixture.ts';

const config: Configuration = { voters: [1, 2, 3], outgoing: [], learners: [] };
const b = (s: string) => Buffer.from(s);
const dirs: string[] = [];
const stores: Store[] = [];

afterEach(async () => {
  for (const s of stores.splice(0)) await s.close();
  for (const d of dirs.splice(0)) fs.rmSync(d, { recursive: true, force: true });
});

function openStore(dir = fs.mkdtempSync(path.join(os.tmpdir(), 'rasputin-split-'))): Store {
  if (!dirs.includes(dir)) dirs.push(dir);
  const store = Store.open(dir);
  stores.push(store);
  return store;
}

const whole: RangeDescriptor = {
  rangeId: 1,
  start: new Uint8Array(0),
  end: null,
  replicas: [
    { nodeId: 'a', replicaId: 1, role: 'voter' },
    { nodeId: 'b', replicaId: 2, role: 'voter' },
    { nodeId: 'c', replicaId: 3, role: 'voter' },
  ],
  generation: 1,
};

/** Writes and applies entries of one range in one turn, as a replica does. */
async function run(
  store: Store,
  rangeId: number,
  cmds: Command[],
  term = 2,
): Promise<ApplyResult[]> {
  const state = store.loadRange(rangeId)!.state;
  let index = state.applied;
  const entries: Entry[] = cmds.map((c) => ({
    index: ++index,
    term,
    kind: 'normal',
    data: encodeCommand(c),
  }));
  const turn = store.beginTurn();
  turn.write(rangeId, {
    id: 1,
    hardState: { term, vote: 0, commit: index },
    entries,
    snapshot: null,
  });
  turn.apply(rangeId, entries);
  const { results, durable } = turn.commit();
  await durable;
  return (await results).get(rangeId)!;
}

describe('split', () => {
  it('shrinks the range and creates the right-hand one at the split entry, moving no data', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'rasputin-split-'));
    let store = openStore(dir);
    await store.createRange(whole, config);
    await run(store, 1, [set('a', '1'), set('m', '2'), set('z', '3')]);
    const [r] = await run(store, 1, [split('m', 1, 7)], 3);
    expect(r).toMatchObject({ ok: true });
    const ranges = store.ranges();
    expect(
      ranges.map((d) => [d.rangeId, String(d.start), d.end && String(d.end), d.generation]),
    ).toEqual([
      [1, '', 'm', 2],
      [7, 'm', null, 2],
    ]);
    expect(ranges[1]!.replicas).toEqual(whole.replicas);
    // The new range's log starts at the split entry (index 4, term 3).
    const right = store.loadRange(7)!.state;
    expect(right.snapshot).toMatchObject({ index: 4, term: 3, config });
    expect(right.applied).toBe(4);
    expect(right.hardState).toEqual({ term: 3, vote: 0, commit: 4 });
    // Data stays where it is: both ranges read the shared keyspace.
    expect(String(store.get(b('z'))!.value)).toBe('3');
    // The left range refuses keys it no longer owns; the right one takes them.
    const [left] = await run(store, 1, [set('q', 'x')], 3);
    expect(left).toMatchObject({ ok: false, code: 'RangeKeyMismatch' });
    expect(await run(store, 7, [set('q', 'y')], 3)).toEqual([{ ok: true }]);
    expect(store.get(b('q'))!.revision).toBe(5); // the right range's log continues from 4
    // Survives a reopen.
    await store.close();
    stores.splice(stores.indexOf(store), 1);
    store = openStore(dir);
    expect(store.ranges().map((d) => d.rangeId)).toEqual([1, 7]);
    expect(store.loadRange(7)!.state.applied).toBe(5);
  });

  it('refuses stale generations and keys not strictly inside, the same way everywhere', async () => {
    const store = openStore();
    await store.createRange(whole, config);
    const results = await run(store, 1, [
      split('m', 2, 7), // the range is at generation 1
      split('', 1, 7), // at the start (an empty key is not even a command)
      { ...split('x', 1, 7), key: Buffer.concat([systemPrefix, b('range/')]) }, // a system key
      { ...split('x', 1, 7), key: Buffer.from([0x00, 0x01]) }, // before the system keys
    ]);
    expect(results.map((r) => !r.ok && r.code)).toEqual([
      'RangeKeyMismatch',
      'BadRequest',
      'RangeKeyMismatch',
      'RangeKeyMismatch',
    ]);
    expect(store.ranges().map((d) => d.generation)).toEqual([1]);
    // After a split, a second split proposed at the old generation is refused too.
    await run(store, 1, [split('m', 1, 7)]);
    const [again] = await run(store, 1, [split('f', 1, 8)]);
    expect(again).toMatchObject({ ok: false, code: 'RangeKeyMismatch' });
    // The right-hand range refuses a split at its own start.
    const [atStart] = await run(store, 7, [split('m', 2, 8)]);
    expect(atStart).toMatchObject({ ok: false, code: 'RangeKeyMismatch' });
    expect(store.ranges().map((d) => d.rangeId)).toEqual([1, 7]);
  });

  it('moves request records of the right-hand span to the new range, so retries still dedupe', async () => {
    const store = openStore();
    await store.createRange(whole, config);
    // a's and y's requests stay inside their data records; x's del moves x's to records of
    // their own (x has no data record left), queued for expiry.
    await run(store, 1, [
      set('a', '1', 'id-a'),
      set('x', '1', 'id-x'),
      del('x', 'del-x'),
      set('y', '1', 'id-y'),
      del('b', 'del-b'),
    ]);
    await run(store, 1, [split('m', 1, 9)]);
    expect(store.inspectExpiry(1).map((q) => [String(q.key), q.index])).toEqual([['b', 5]]);
    expect(store.inspectExpiry(9).map((q) => [String(q.key), String(q.id), q.index])).toEqual([
      ['x', 'id-x', 2],
      ['x', 'del-x', 3],
    ]);
    // Retries of the writes to x and y, now in range 9, return the first result and change
    // nothing.
    await run(store, 9, [set('x', '2', 'other'), set('y', '2', 'other-y')]);
    const retries = await run(store, 9, [
      set('x', 'retried', 'id-x'),
      del('x', 'del-x'),
      set('y', 'retried', 'id-y'),
    ]);
    expect(retries).toEqual([
      { ok: true, duplicate: true },
      { ok: true, value: b('1'), duplicate: true },
      { ok: true, duplicate: true },
    ]);
    expect(String(store.get(b('x'))!.value)).toBe('2');
    expect(String(store.get(b('y'))!.value)).toBe('2');
    const [retryA] = await run(store, 1, [set('a', 'retried', 'id-a')]);
    expect(retryA).toEqual({ ok: true, duplicate: true });
  });

  it('a snapshot taken after a split carries the shrunk span; installing it shrinks a lagging replica', async () => {
    const source = openStore();
    await source.createRange(whole, config);
    await run(source, 1, [set('a', '1'), set('z', '2')]);
    await run(source, 1, [split('m', 1, 7)]);
    const snap = source.takeSnapshot(1);

    const lagging = openStore();
    await lagging.createRange(whole, config);
    await run(lagging, 1, [set('a', 'old'), set('z', 'old')]);
    const turn = lagging.beginTurn();
    turn.write(1, {
      id: 1,
      hardState: { term: 2, vote: 0, commit: snap.meta.index },
      entries: [],
      snapshot: snap,
    });
    await turn.commit().durable;
    const d = lagging.descriptor(1)!;
    expect([String(d.end), d.generation]).toEqual(['m', 2]);
    expect(String(lagging.get(b('a'))!.value)).toBe('1');
    // z belongs to range 7, which this node does not have yet: its stale copy is gone.
    expect(lagging.get(b('z'))).toBeUndefined();
    expect(lagging.overlapping({ start: b('m'), end: null })).toBeUndefined();
  });
});

describe('directory commands', () => {
  const id = b('req');
  it('alloc hands out increasing range ids from the stored counter', () => {
    const alloc: Command = { op: 'alloc', key: rangeIdCounterKey, id };
    const first = applyCommand(
      alloc,
      5,
      { value: Buffer.from([0, 0, 0, 1]), revision: 0 },
      undefined,
    );
    expect(first.result.ok && decodeCounter(first.result.value!)).toBe(2);
    const rec = first.record as { value: Uint8Array; revision: number };
    const second = applyCommand({ ...alloc, id: b('r2') }, 6, rec, undefined);
    expect(second.result.ok && decodeCounter(second.result.value!)).toBe(3);
  });

  it('desc writes a descriptor only over an absent or older one', () => {
    const key = directoryKey(1);
    const g2 = encodeDescriptor({ ...whole, generation: 2 });
    const put = (value: Uint8Array, generation: number): Command => ({
      op: 'desc',
      key,
      value,
      generation,
      id,
    });
    expect(applyCommand(put(g2, 2), 3, undefined, undefined).result).toMatchObject({
      success: true,
    });
    const current = { value: g2, revision: 3 };
    const older = encodeDescriptor(whole);
    expect(applyCommand(put(older, 1), 4, current, undefined)).toMatchObject({
      result: { success: false },
      record: 'unchanged',
    });
    expect(applyCommand(put(g2, 2), 4, current, undefined).record).toBe('unchanged');
    const g3 = encodeDescriptor({ ...whole, generation: 3 });
    expect(applyCommand(put(g3, 3), 4, current, undefined).result).toMatchObject({ success: true });
  });
});
