// The replicated log of one replica, as the core sees it: a snapshot point followed by the
// entries after it, all in memory (log truncation keeps this bounded: the host compacts
// it, and keeps the sum of memoryBytes over its ranges under a budget). Pure bookkeeping.

import { assert } from './assert.ts';
import type { Entry, LogIndex, SnapshotMeta, Term } from './types.ts';

/** Approximate bytes an entry costs on the wire and in memory. */
export function entryBytes(entry: Entry): number {
  return entry.data.length + 24;
}

/**
 * What an entry held in memory costs beyond its data, about: the entry object, its own
 * buffer (an ArrayBuffer with a backing store), and the host's record of where it is
 * stored. Measured as resident memory per entry kept by a node under load (docs/ranges.md,
 * "Log memory").
 */
export const entryMemoryOverheadBytes = 1024;

/** Approximate memory an entry held in the log costs. */
export function entryMemoryBytes(entry: Entry): number {
  return entry.data.length + entryMemoryOverheadBytes;
}

/** nextToApply's answer when nothing is to apply (shared, never written to). */
const noEntries: readonly Entry[] = [];

export class RaftLog {
  /** The point the log was compacted to; entries start right after it. */
  snapshot: SnapshotMeta;
  /** Entries (snapshot.index, lastIndex]. Invariant: entries[i].index === snapshot.index + 1 + i. */
  private entries: Entry[];
  /** Highest index known committed. Invariant: snapshot.index <= committed <= lastIndex(). */
  committed: LogIndex;
  /** Highest index durable in this replica's storage. Invariant: stable <= lastIndex(). */
  stable: LogIndex;
  /** Highest index handed to the state machine. Invariant: applying <= min(committed, stable). */
  applying: LogIndex;
  /** Sum of entryMemoryBytes over the entries held. */
  memoryBytes = 0;

  constructor(snapshot: SnapshotMeta, entries: readonly Entry[], committed: LogIndex) {
    this.snapshot = snapshot;
    this.entries = [...entries];
    for (let i = 0; i < this.entries.length; i++) {
      assert(this.entries[i]!.index === snapshot.index + 1 + i, 'log entries are contiguous');
      this.memoryBytes += entryMemoryBytes(this.entries[i]!);
    }
    this.stable = this.lastIndex();
    this.committed = Math.min(Math.max(committed, snapshot.index), this.lastIndex());
    this.applying = snapshot.index;
  }

  firstIndex(): LogIndex {
    return this.snapshot.index + 1;
  }

  lastIndex(): LogIndex {
    return this.snapshot.index + this.entries.length;
  }

  lastTerm(): Term {
    return this.term(this.lastIndex())!;
  }

  /** The term of the entry at `index`, or undefined when compacted away or beyond the end. */
  term(index: LogIndex): Term | undefined {
    if (index === this.snapshot.index) return this.snapshot.term;
    if (index < this.snapshot.index || index > this.lastIndex()) return undefined;
    return this.entries[index - this.snapshot.index - 1]!.term;
  }

  entry(index: LogIndex): Entry | undefined {
    if (index <= this.snapshot.index || index > this.lastIndex()) return undefined;
    return this.entries[index - this.snapshot.index - 1];
  }

  matchTerm(index: LogIndex, term: Term): boolean {
    return this.term(index) === term;
  }

  /** Raft's election restriction: is (lastIndex, lastTerm) at least as up to date as ours? */
  isUpToDate(lastIndex: LogIndex, lastTerm: Term): boolean {
    const ourTerm = this.lastTerm();
    return lastTerm > ourTerm || (lastTerm === ourTerm && lastIndex >= this.lastIndex());
  }

  /**
   * Appends entries that follow a matched prefix, dropping a conflicting suffix. Returns the
   * index of the first entry that was written (the caller persists from there), or
   * undefined when every entry was already present.
   */
  appendAfterMatch(entries: readonly Entry[]): LogIndex | undefined {
    let firstNew = -1;
    for (let i = 0; i < entries.length; i++) {
      const e = entries[i]!;
      if (e.index <= this.snapshot.index) continue;
      const ours = this.term(e.index);
      if (ours !== e.term) {
        firstNew = i;
        break;
      }
    }
    if (firstNew < 0) return undefined;
    const from = entries[firstNew]!.index;
    assert(from > this.committed, 'a committed entry is never overwritten');
    this.truncateFrom(from);
    for (let i = firstNew; i < entries.length; i++) {
      this.entries.push(entries[i]!);
      this.memoryBytes += entryMemoryBytes(entries[i]!);
    }
    return from;
  }

  /** Leader append of its own new entries. */
  appendOwn(entries: readonly Entry[]): void {
    for (const e of entries) {
      assert(e.index === this.lastIndex() + 1, 'leader appends contiguously');
      this.entries.push(e);
      this.memoryBytes += entryMemoryBytes(e);
    }
  }

  private truncateFrom(index: LogIndex): void {
    assert(index > this.snapshot.index, 'cannot truncate into the snapshot');
    const keep = Math.min(this.entries.length, index - this.snapshot.index - 1);
    for (let i = keep; i < this.entries.length; i++) {
      this.memoryBytes -= entryMemoryBytes(this.entries[i]!);
    }
    this.entries.length = keep;
    this.stable = Math.min(this.stable, index - 1);
  }

  /** Entries [lo, hi] limited to `bytesMax` (at least one entry when any exists). */
  slice(lo: LogIndex, hi: LogIndex, bytesMax: number): Entry[] {
    assert(lo > this.snapshot.index, 'slice starts after the snapshot');
    // The end first, then one copy of exactly that many: pushing onto [] reserves room for
    // 16 or more, and at many busy ranges most slices hold one entry.
    const first = lo - this.snapshot.index - 1;
    const last = Math.min(hi, this.lastIndex()) - this.snapshot.index - 1;
    let end = first;
    let bytes = 0;
    while (end <= last) {
      bytes += entryBytes(this.entries[end]!);
      if (end > first && bytes > bytesMax) break;
      end++;
    }
    return end > first ? this.entries.slice(first, end) : [];
  }

  /** Entries committed and durable locally that the state machine has not been given. */
  nextToApply(): readonly Entry[] {
    const hi = Math.min(this.committed, this.stable);
    if (hi <= this.applying) return noEntries;
    const out = this.entries.slice(this.applying - this.snapshot.index, hi - this.snapshot.index);
    this.applying = hi;
    return out;
  }

  commitTo(index: LogIndex): boolean {
    if (index <= this.committed) return false;
    assert(index <= this.lastIndex(), 'commit within the log');
    this.committed = index;
    return true;
  }

  /** Drops entries up to `index`, which the state machine has applied durably. */
  compact(index: LogIndex, meta: SnapshotMeta): void {
    assert(index <= this.applying && index <= this.stable, 'compact only applied, durable entries');
    if (index <= this.snapshot.index) return;
    const dropped = index - this.snapshot.index;
    for (let i = 0; i < dropped; i++) this.memoryBytes -= entryMemoryBytes(this.entries[i]!);
    this.entries = this.entries.slice(dropped);
    this.snapshot = meta;
  }

  /** Replaces the whole log with an installed snapshot. */
  restore(meta: SnapshotMeta): void {
    this.entries = [];
    this.memoryBytes = 0;
    this.snapshot = meta;
    this.committed = meta.index;
    this.stable = Math.min(this.stable, meta.index);
    this.applying = meta.index;
  }

  uncommittedBytes(): number {
    let bytes = 0;
    for (let i = this.committed + 1; i <= this.lastIndex(); i++)
      bytes += entryBytes(this.entry(i)!);
    return bytes;
  }
}
