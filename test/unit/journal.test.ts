// LogSeqs (src/storage/journal.ts): where a range's log entries are in the node's journal.

import { describe, expect, it } from 'vitest';
import { journalKey, LogSeqs, parseJournalKey, seqKey } from '../../src/storage/journal.ts';

const pairs = (log: LogSeqs) => Array.from(log.entries(), ([i, s]) => [i, s]);

describe('LogSeqs', () => {
  it('maps indexes to sequence numbers across runs, replaced suffixes and compaction', () => {
    let log = LogSeqs.empty(10);
    expect(log.size).toBe(0);
    expect(log.firstSeq()).toBeUndefined();
    log = log.write(11, 100, 3); // 11..13 at 100..102
    log = log.write(14, 103, 2); // contiguous: the run grows
    log = log.write(16, 200, 1); // another range wrote in between
    expect(pairs(log)).toEqual([
      [11, 100],
      [12, 101],
      [13, 102],
      [14, 103],
      [15, 104],
      [16, 200],
    ]);
    // A new leader replaces 13 on.
    const replaced = log.write(13, 300, 2);
    expect(pairs(replaced)).toEqual([
      [11, 100],
      [12, 101],
      [13, 300],
      [14, 301],
    ]);
    expect(replaced.seqOf(15)).toBeUndefined();
    const compacted = replaced.compact(12);
    expect(compacted.first).toBe(13);
    expect(compacted.firstSeq()).toBe(300);
    expect(compacted.seqOf(12)).toBeUndefined();
    expect(compacted.compact(14).size).toBe(0);
  });

  it('never changes what an older view answers, whatever newer views write', () => {
    const base = LogSeqs.empty(0).write(1, 10, 2);
    // A turn that failed extended the shared run; the next one writes elsewhere.
    base.write(3, 12, 5);
    const next = base.write(3, 40, 1);
    expect(pairs(base)).toEqual([
      [1, 10],
      [2, 11],
    ]);
    expect(pairs(next)).toEqual([
      [1, 10],
      [2, 11],
      [3, 40],
    ]);
    expect(next.seqOf(3)).toBe(40);
    // Many compactions and writes: the shared array is trimmed, views stay right.
    let log = LogSeqs.empty(0);
    for (let i = 1; i <= 500; i++) log = log.write(i, 2 * i, 1).compact(Math.max(0, i - 3));
    expect(pairs(log)).toEqual([
      [498, 996],
      [499, 998],
      [500, 1000],
    ]);
  });

  it('keys sort in sequence order and name their entry', () => {
    const seqs = [0, 1, 255, 256, 2 ** 32 - 1, 2 ** 32, 2 ** 40 + 5];
    const keys = seqs.map((seq, i) => journalKey(seq, 1000 - i, 2 ** 33 + i));
    expect(keys.map((k) => parseJournalKey(k))).toEqual(
      seqs.map((seq, i) => ({ seq, rangeId: 1000 - i, index: 2 ** 33 + i })),
    );
    const sorted = [...keys].sort(Buffer.compare);
    expect(sorted.map((k) => parseJournalKey(k).seq)).toEqual(seqs);
    // The bound of a sequence number sorts before its keys and after the ones before.
    expect(Buffer.compare(seqKey(256), keys[3]!)).toBeLessThan(0);
    expect(Buffer.compare(seqKey(256), keys[2]!)).toBeGreaterThan(0);
  });
});
