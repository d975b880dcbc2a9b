// Pending events (store.ts): a range's newest mutation events, held in the node-wide
// eventlog (an LMDB tree in write order, like the log journal) and here in memory, until
// they move to the events tree keyed by (range, revision) in a batch.
//
// Why: the events tree keeps each range's events together, so a turn that applies one
// entry to each of 100 ranges rewrites 100 of its pages (at 256 ranges, about one 4 KiB
// page write per put on every node, and a third of the puts per second). The eventlog
// takes them at one place; a range's pending events then move together, many per page.
//
// Memory holds each item's revision and eventlog sequence number, not its bytes: those are
// read back from the eventlog when the item moves or is read (store.ts, eventlogRead).
// Held here, each event's bytes lived seconds, long enough to be copied by the young
// generation's collections and promoted (about 7 us of store CPU per put at 256 ranges,
// docs/architecture.md).
//
// A range's items are in revision order (which is also their eventlog order), in three
// parts: those of an earlier incarnation of the range (seq < fromSeq: it was created anew
// or installed a snapshot since), those moved to the events tree, and the live ones, a
// suffix. Moved and fenced items are dropped from memory only once
// the transaction that moved or fenced them is committed, so a reader whose read
// transaction predates that commit still finds every event in the tree or here.

/** One range's pending events; the store changes it only between turn bodies. */
export class PendingRange {
  readonly revisions: number[] = [];
  readonly seqs: number[] = [];
  /** Items before this index were dropped. */
  start = 0;
  /** Items with a lower eventlog sequence number are not this incarnation's. */
  fromSeq = 0;
  /** The live items: the last `live` ones. */
  live = 0;

  constructor(readonly rangeId: number) {}

  get length(): number {
    return this.revisions.length;
  }

  push(revision: number, seq: number): void {
    this.revisions.push(revision);
    this.seqs.push(seq);
    this.live++;
  }

  /**
   * Drops the leading items that are fenced (seq < belowSeq) or moved (revision <=
   * upTo): what a committed transaction made the events tree hold or not need.
   */
  drop(upTo: number, belowSeq: number): void {
    let i = this.start;
    const n = this.revisions.length - this.live;
    while (i < n && (this.seqs[i]! < belowSeq || this.revisions[i]! <= upTo)) i++;
    this.start = i;
    if (this.start > 1024 && this.start * 2 > this.revisions.length) {
      this.revisions.splice(0, this.start);
      this.seqs.splice(0, this.start);
      this.start = 0;
    }
  }

  /** No item is held. */
  empty(): boolean {
    return this.start === this.revisions.length;
  }
}
