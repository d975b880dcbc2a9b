// RaftLog.memoryBytes: the sum over the entries held of entryMemoryBytes, through every
// way the log changes (the node's log memory budget reads it: docs/ranges.md, "Log memory").

import { describe, expect, it } from 'vitest';
import { entryMemoryBytes, entryMemoryOverheadBytes, RaftLog } from '../../ranges/core/log.ts';
import type { Entry, SnapshotMeta } from '../../ranges/core/types.ts';

const config: SnapshotMeta['config'] = { voters: [1, 2, 3], outgoing: [], learners: [] };
const meta = (index: number, term: number): SnapshotMeta => ({ index, term, config });
const entry = (index: number, term: number, bytes: number): Entry => ({
  index,
  term,
  kind: 'normal',
  data: new Uint8Array(bytes),
});

/** What memoryBytes must be: counted from the entries the log holds. */
function counted(log: RaftLog): number {
  let n = 0;
  for (let i = log.firstIndex(); i <= log.lastIndex(); i++) n += entryMemoryBytes(log.entry(i)!);
  return n;
}

describe('RaftLog.memoryBytes', () => {
  it('counts each entry as its data plus the overhead', () => {
    expect(entryMemoryBytes(entry(1, 1, 100))).toBe(100 + entryMemoryOverheadBytes);
    const log = new RaftLog(meta(0, 0), [entry(1, 1, 10), entry(2, 1, 20)], 0);
    expect(log.memoryBytes).toBe(30 + 2 * entryMemoryOverheadBytes);
  });

  it('follows appends, a conflicting suffix, compaction and a snapshot install', () => {
    const log = new RaftLog(meta(0, 0), [], 0);
    expect(log.memoryBytes).toBe(0);
    log.appendOwn([entry(1, 1, 100), entry(2, 1, 200), entry(3, 1, 300)]);
    expect(log.memoryBytes).toBe(600 + 3 * entryMemoryOverheadBytes);
    // A new leader's entries replace 2 and 3 (a conflicting suffix) and add 4.
    log.appendAfterMatch([entry(2, 2, 7), entry(3, 2, 8), entry(4, 2, 9)]);
    expect(log.memoryBytes).toBe(counted(log));
    expect(log.memoryBytes).toBe(100 + 7 + 8 + 9 + 4 * entryMemoryOverheadBytes);
    // Entries already held change nothing.
    log.appendAfterMatch([entry(3, 2, 8), entry(4, 2, 9)]);
    expect(log.memoryBytes).toBe(counted(log));
    log.commitTo(3);
    log.stable = 4;
    log.nextToApply();
    log.compact(2, meta(2, 2));
    expect(log.memoryBytes).toBe(8 + 9 + 2 * entryMemoryOverheadBytes);
    expect(log.memoryBytes).toBe(counted(log));
    log.restore(meta(10, 3));
    expect(log.memoryBytes).toBe(0);
    log.appendOwn([entry(11, 3, 5)]);
    expect(log.memoryBytes).toBe(5 + entryMemoryOverheadBytes);
  });
});
