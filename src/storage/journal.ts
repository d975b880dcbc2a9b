// The node-wide log journal (store.ts): every range's log entries in one LMDB tree, in the
// order the node wrote them, keyed by a node-wide sequence number. A turn that appends one
// entry to each of 100 ranges then changes the tree's last page or two, where a tree keyed
// by (range, index) changes 100 pages at 100 places (TiKV's raft engine keeps its log the
// same way, for the same reason).
//
// A range finds its entries through LogSeqs, an in-memory map from its log indexes to
// journal sequence numbers, rebuilt at open by reading the journal in order. The journal
// is only ever appended to; what a range no longer needs (entries compacted, overwritten
// by a conflicting suffix, or dropped with its log when a snapshot is installed) stays in
// the journal until the oldest entry any range still needs is newer, and is then deleted
// from the front (Store.purgeJournal).

import { assert } from '../../ranges/core/assert.ts';
import type { LogIndex } from '../../ranges/core/types.ts';

/** Entries index, index + 1, ... of a range, at journal sequence numbers seq, seq + 1, ... */
interface Run {
  readonly index: LogIndex;
  readonly seq: number;
  readonly n: number;
}

/**
 * Where a range's log entries (first, last] live in the journal: an immutable view. Views
 * share one append-only array of runs; a view only reads its own slice and never an index
 * past its `last`, so a newer view (made in a turn that later failed, say) never changes
 * what an older one answers.
 */
export class LogSeqs {
  private constructor(
    private readonly runs: Run[],
    private readonly from: number,
    private readonly to: number,
    /** The first index held (the snapshot index + 1); the log is empty when last < first. */
    readonly first: LogIndex,
    readonly last: LogIndex,
  ) {}

  /** An empty log after `index` (a new range, or one that installed a snapshot at it). */
  static empty(index: LogIndex): LogSeqs {
    return new LogSeqs([], 0, 0, index + 1, index);
  }

  get size(): number {
    return this.last - this.first + 1;
  }

  /** The journal sequence number of entry `index`, if the log holds it. */
  seqOf(index: LogIndex): number | undefined {
    if (index < this.first || index > this.last) return undefined;
    let lo = this.from;
    let hi = this.to - 1;
    // The last run that starts at or before `index`.
    while (lo < hi) {
      const mid = (lo + hi + 1) >>> 1;
      if (this.runs[mid]!.index <= index) lo = mid;
      else hi = mid - 1;
    }
    const run = this.runs[lo]!;
    assert(run.index <= index && index < run.index + run.n, 'a held entry is in a run');
    return run.seq + (index - run.index);
  }

  /** The sequence number of the oldest entry held, if any. */
  firstSeq(): number | undefined {
    return this.seqOf(this.first);
  }

  /**
   * Entries index .. index + n - 1 written at seq .. seq + n - 1; entries from `index` on
   * held before are replaced (a conflicting suffix).
   */
  write(index: LogIndex, seq: number, n: number): LogSeqs {
    assert(n >= 1 && index >= this.first && index <= this.last + 1, 'a write leaves no gap');
    const last = index + n - 1;
    if (index <= this.last) {
      // Rare (a new leader's entries replace a follower's): copy the runs that stay.
      const kept: Run[] = [];
      for (let i = this.from; i < this.to; i++) {
        const run = this.runs[i]!;
        if (run.index >= index) break;
        kept.push(run.index + run.n > index ? { ...run, n: index - run.index } : run);
      }
      kept.push({ index, seq, n });
      return new LogSeqs(kept, 0, kept.length, this.first, last);
    }
    const tail = this.to > this.from ? this.runs[this.to - 1]! : undefined;
    if (
      tail !== undefined &&
      this.to === this.runs.length &&
      tail.index + tail.n === index &&
      tail.seq + tail.n === seq
    ) {
      // Extends the last run: a view that ends before `index` reads it as before.
      this.runs[this.to - 1] = { index: tail.index, seq: tail.seq, n: tail.n + n };
      return new LogSeqs(this.runs, this.from, this.to, this.first, last);
    }
    // The shared array grows only at its end; a view whose slice ends earlier copies.
    const runs = this.to === this.runs.length ? this.runs : this.runs.slice(this.from, this.to);
    const from = runs === this.runs ? this.from : 0;
    runs.push({ index, seq, n });
    return new LogSeqs(runs, from, runs.length, this.first, last);
  }

  /** The log without entries up to `index` (compacted into a snapshot). */
  compact(index: LogIndex): LogSeqs {
    assert(index >= this.first - 1 && index <= this.last, 'compaction stays within the log');
    let from = this.from;
    while (from < this.to && this.runs[from]!.index + this.runs[from]!.n - 1 <= index) from++;
    if (from > 64 && from > this.to - from) {
      // Drop the compacted prefix of the shared array now and then (a fresh array: views
      // of the old one keep reading it).
      const runs = this.runs.slice(from, this.to);
      return new LogSeqs(runs, 0, runs.length, index + 1, this.last);
    }
    return new LogSeqs(this.runs, from, this.to, index + 1, this.last);
  }

  /** [index, seq] of every entry held, in index order. */
  *entries(): IterableIterator<readonly [LogIndex, number]> {
    for (let i = this.from; i < this.to; i++) {
      const run = this.runs[i]!;
      const next = i + 1 < this.to ? this.runs[i + 1]!.index : Number.POSITIVE_INFINITY;
      const start = Math.max(run.index, this.first);
      // A run may reach past the next one's start (extended by a turn that failed): the
      // later run is the one that holds those indexes, as in seqOf.
      const end = Math.min(run.index + run.n - 1, next - 1, this.last);
      for (let index = start; index <= end; index++) {
        yield [index, run.seq + (index - run.index)];
      }
    }
  }
}

/**
 * Journal keys: [seq u64 BE][rangeId u32 BE][index u64 BE] (20 bytes): in write order by
 * the sequence number, and naming the entry, so reading the journal at open reads keys
 * only. seqKey(seq) (its first 8 bytes) sorts before every key of that sequence number.
 */
export function journalKey(seq: number, rangeId: number, index: number): Buffer {
  assert(Number.isSafeInteger(seq) && seq >= 0, 'journal sequence numbers are safe integers');
  assert(Number.isSafeInteger(index) && index >= 0, 'log indexes are safe integers');
  const key = Buffer.allocUnsafe(journalKeyBytes);
  key.writeUInt32BE(Math.floor(seq / 0x1_0000_0000), 0);
  key.writeUInt32BE(seq >>> 0, 4);
  key.writeUInt32BE(rangeId, 8);
  key.writeUInt32BE(Math.floor(index / 0x1_0000_0000), 12);
  key.writeUInt32BE(index >>> 0, 16);
  return key;
}

export const journalKeyBytes = 20;

/** The bound of the journal keys with sequence numbers below `seq`. */
export function seqKey(seq: number): Buffer {
  assert(Number.isSafeInteger(seq) && seq >= 0, 'journal sequence numbers are safe integers');
  const key = Buffer.allocUnsafe(8);
  key.writeUInt32BE(Math.floor(seq / 0x1_0000_0000), 0);
  key.writeUInt32BE(seq >>> 0, 4);
  return key;
}

export function parseJournalKey(key: Uint8Array): { seq: number; rangeId: number; index: number } {
  assert(key.length === journalKeyBytes, 'journal keys are 20 bytes');
  const b = Buffer.from(key.buffer, key.byteOffset, key.length);
  return {
    seq: b.readUInt32BE(0) * 0x1_0000_0000 + b.readUInt32BE(4),
    rangeId: b.readUInt32BE(8),
    index: b.readUInt32BE(12) * 0x1_0000_0000 + b.readUInt32BE(16),
  };
}
