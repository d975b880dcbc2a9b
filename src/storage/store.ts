// The node's storage: one LMDB environment shared by every range on the node (DESIGN.md,
// "Storage"), with named databases:
//
//   meta   string -> string                      store id, cluster id, node id, peer store ids
//   state  rangeId (uint32) -> RangeRecord       descriptor, snapshot point, config, oldest
//                                                 retained event (written when they change)
//   progress rangeId (uint32) -> 48 bytes        hard state (term, vote, commit), applied,
//                                                 the applied entry's term, and logFromSeq
//                                                 (written every turn that changes them)
//   journal [seq u64 BE][rangeId u32 BE][index u64 BE] -> entry (binary: kind, term, data)
//                                                 every range's log, in write order (journal.ts)
//   data   user key bytes -> DataRecord {value, revision, requests?}   keys are global:
//                                           (binary.ts)                 a range owns a span
//   requests [ordered(user key)][0x00][request id] -> RequestRecord {index, result}
//   expiry [rangeId u32 BE][index u64 BE][requests key] -> (empty)
//   events [rangeId u32 BE][revision u64 BE] -> event (binary.ts, events.ts)
//   eventlog [seq u64 BE][rangeId u32 BE][revision u64 BE] -> event   pending events, in
//                                                 write order (events-pending.ts), in
//   eventlog1..3                                  segments: four trees used in turn, each
//                                                 emptied whole (below)
//
// Log entries' commands, data records and events are in the binary forms of binary.ts
// (layout 7); the msgpack maps of layout 6 are still read, so layout 6 upgrades by its
// number alone.
//
// At most once (DESIGN.md, "Client semantics"): each applied request id is recorded under
// its user key, in one of two places (placeRequests). A key's newest few (at most
// inlineRequestsMax, with at most inlineResultBytesMax value bytes in their results) live
// inside its data record: writing the key rewrites that record anyway, so they cost no
// other page write, and they move, travel in snapshots and are dropped (once out of the
// window) with the record. The others (older ones of a hot key, big results, those of a
// key with no value: a del leaves no tombstone) have a record of their own in `requests`,
// so applying a command reads and writes O(1) records however many requests its key has
// seen. At most one record per (key, id) exists in the two places. Keeping every request
// apart (layout 3) cost a put two more writes at random places (the record, and its
// deletion on expiry) and a queue item: in the steady state, about 60% of a put's disk
// writes (docs/architecture.md).
//
// `ordered(key)` is an order-preserving, prefix-free encoding of the user key (orderedKey
// below: 7 bits per byte, top bit set, so it never holds 0x00), so the separate request
// records of one key are contiguous and those of a span [start, end) are the key range
// [ordered(start), ordered(end)): they move with the span and travel in its snapshots.
// `expiry` is each range's queue of its separate request records by the log index they
// were applied at: applying entry i deletes up to expiryPerEntry queue items (and the
// request records they name) with index < i - dedupWindowEntries. Every replica applies
// the same entries to the same queue, so all expire the same ids at the same indexes; a
// snapshot carries the separate request records with their indexes and the installing
// replica rebuilds the same queue from them (invariant: the queue holds exactly one item
// per separate request record of the range, at the record's index).
//
// Mutation events (DESIGN.md, "Streams"; docs/streams.md): applying entry i of a range
// writes at most one event, under (rangeId, i), in the apply's transaction: a set or a cas
// that succeeded ({key, op: set, value, prevValue?}), a del of an existing key ({key, op:
// del, prevValue}), or, for a split, a marker {op: split, left, right} in the parent's
// stream. A revision is the log index of the entry that caused the event (the data
// record's revision too); the right-hand range of a split continues the parent's log, so
// its events have higher revisions than the marker. Retries that changed nothing, failed
// cas, dels of absent keys and system-key writes leave none. Each range's state records
// `eventsOldestRetained`: events below it are compacted (a reader after a revision below
// eventsOldestRetained - 1 is told so, never given a gap). The replicated command
// compactEvents{upTo} raises it to upTo + 1 at once, identically on every replica; the
// compacted events are then deleted eventsDeletedPerEntry per applied entry (as the
// expiry queue is), so no apply does a burst of deletes. Invariant, per range: every
// event with a revision in [eventsOldestRetained, applied] is stored; stored events below
// eventsOldestRetained are ones not deleted yet, at or after `eventsFloor` (derived at
// open) and never read. Snapshots carry the retained events and eventsOldestRetained; the
// parent of a split keeps its events, and the right-hand range starts with none and
// eventsOldestRetained = split index + 1. An event goes first to the node-wide eventlog
// in write order (and memory), and moves to `events` with the rest of its range's pending
// events later (events-pending.ts; moveEvents): "stored" means in either.
//
// The eventlog is four trees used in turn (segments): the newest (the head) takes new
// records until it holds eventlogSegmentRecords sequence numbers' worth, then the next
// one, which must be empty, becomes the head. A segment whose records are all dead (moved,
// fenced or of ranges gone: below the oldest live pending event) is emptied whole, an
// mdb_drop that frees its pages (clearSync), in the transaction of the turn that found it
// dead. Deleting the front record by record cost about 25 us of server CPU per put at 256
// ranges (docs/architecture.md). The segments hold disjoint runs of sequence numbers, the
// older ones in the trees after the head in turn order; an apply that would need a tree
// still in use writes its range's events to the events tree directly instead (after
// moving the range's pending ones there).
//
// The log (journal.ts): entries of all ranges are appended to one tree in write order, so
// a turn that appends to many ranges changes one place of it, not one per range. A range
// maps its indexes to journal sequence numbers in memory (LogSeqs, rebuilt at open by
// reading the journal in order: an entry at an index the range holds already replaces it
// and every later one, as the write did). Compacting a range's log, or dropping it for a
// snapshot, deletes nothing at once: records older than every range's oldest held entry
// are deleted from the front of the journal, a bounded number per turn (purgeJournal)
// and in the node's idle time (tidy),
// and a range whose oldest entry holds the front back too far has its entries written
// again at the end. `logFromSeq` (in progress) fences a range's records from before its
// log was last dropped (a snapshot, or the range created anew), so reading the journal
// never brings them back.
//
// A range's state is two records: `progress` (term, vote, commit, applied, ...: f64 BE,
// encoded without msgpack) changes in nearly every turn that touches the range, and the
// rest (`state`, msgpack) changes at splits, snapshots and compactions. With hundreds of
// ranges in a turn, re-encoding and rewriting the whole record per range per turn cost
// about 10 us of CPU per put on every node (layout 4). `state` still holds the hard state
// and applied of when it was last written; `progress` overrides them (readRangeRecord).
// A turn that moves only the commit index does not rewrite `progress`: Raft needs the
// term and the vote durable, not the commit index (a restarted replica learns it from its
// leader). The record gets the commit index the range has at its next write of anything
// else, so a stored commit index may be older than the range's, even below its applied
// index (as before: the core hands over its commit index only with a write of entries, a
// term or a vote, so an apply after a commit notice alone wrote an older one already);
// a replica starts from the larger of the two (RaftCore's constructor). At 256 busy
// ranges this skips about half of the progress writes (5.0 per put over three nodes).
//
// All writes of one event-loop turn, for all ranges, go into ONE LMDB write transaction
// (Turn.commit), an asynchronous lmdb-js transaction: lmdb-js commits it and fsyncs on
// its writer thread (overlappingSync), batching the transactions of several turns under
// load, and resolves `durable` when it is on disk. The event loop never waits for fsync.
//
// Durability trap (DESIGN.md): with overlappingSync, a *synchronous* transaction
// (transactionSync) commits WITHOUT fsync and `root.flushed` does not wait for it (strace:
// 2 fdatasync calls for 400 such commits). The few synchronous writes here (meta, range
// creation) therefore sync the environment explicitly (mdb_env_sync: fdatasync on a
// libuv thread) before they resolve.

// Invariants, per range:
// - the log holds exactly the entries (snapshot.index, log.last], contiguous: the journal
//   records LogSeqs names, each at or after logFromSeq;
// - snapshot.index <= applied <= log.last;
// - the data of the range's span is the state machine after applying (0, applied];
// - eventsFloor <= eventsOldestRetained <= applied + 1, and the events database with the
//   range's pending events holds its events of (eventsOldestRetained - 1, applied]
//   exactly, the pending ones all after those of the events database;
// - the spans of the ranges on one node are disjoint.

import { randomUUID } from 'node:crypto';
import fs from 'node:fs';
import { type Database, open, type RootDatabase } from 'lmdb';
import { assert } from '../../ranges/core/assert.ts';
import type { StorageWrite } from '../../ranges/core/ready.ts';
import type {
  Configuration,
  Entry,
  EntryKind,
  HardState,
  LogIndex,
  PersistedState,
  Snapshot,
  SnapshotMeta,
  Term,
} from '../../ranges/core/types.ts';
import {
  type ApplyResult,
  applyCommand,
  asDataRecord,
  asRequestRecord,
  bytesEqual,
  type Command,
  compareBytes,
  type DataRecord,
  decodeCommand,
  decodeRangeCommand,
  decodeRecord,
  decodeRecordValue,
  decodeRequest,
  dedupWindowEntries,
  encodeRecord,
  encodeRequest,
  type InlineRequest,
  inlineRequestsMax,
  inlineResultBytesMax,
  isRemembered,
  keyBytesMax,
  packr,
  type RequestRecord,
  requestIdBytesMax,
  resultValueBytes,
} from './commands.ts';
import {
  asDescriptor,
  descriptorToWire,
  inSpan,
  isSystemKey,
  makeDescriptor,
  metaRangeId,
  type RangeDescriptor,
  rangeIdMax,
  spansOverlap,
  systemPrefixEnd,
} from './descriptor.ts';
import {
  asRangeEvent,
  copyEvent,
  decodeEvent,
  type EventsOptions,
  type EventsRead,
  encodeEvent,
  eventBytes,
  eventMatches,
  eventsDeletedPerEntry,
  eventsExaminedMax,
  eventsPageBytesMax,
  eventToWire,
  type RangeEvent,
  type StoredEvent,
} from './events.ts';
import { PendingRange } from './events-pending.ts';
import { journalKey, LogSeqs, parseJournalKey, seqKey } from './journal.ts';

export type { RangeDescriptor, ReplicaDescriptor } from './descriptor.ts';
export type { EventsOptions, EventsRead, RangeEvent, StoredEvent } from './events.ts';

/** LMDB's initial map: address space, not memory or disk (see the constructor). 256 GiB. */
const mapSizeBytes = 2 ** 38;

export interface StoreOptions {
  /** Log positions a request id is remembered for; every replica must use the same. */
  readonly dedupWindowEntries?: number;
  /**
   * Journal records a range's oldest held entry may lag the newest by before its entries
   * are written again at the end (so the journal's front can be deleted). Default 500,000.
   */
  readonly journalLagMax?: number;
  /**
   * Journal records appended between two scans for what can be deleted from its front (at
   * least one per range). Default 4,096.
   */
  readonly journalScanRecords?: number;
  /**
   * Pending events (events-pending.ts) held over all ranges before the oldest move to
   * the events tree. Default 16,384.
   */
  readonly eventsPendingMax?: number;
  /** Pending events a turn moves at most (oldest first, in part if need be). Default 1,024. */
  readonly eventsMoveMax?: number;
  /**
   * An apply of at least this many entries to a range writes their events to the events
   * tree directly (they share its pages anyway), once it has moved the range's pending
   * events there (up to eventsMoveMax per apply). Default 8.
   */
  readonly eventsDirectMin?: number;
  /**
   * A turn that applies entries of at most this many ranges writes their events to the
   * events tree directly, the same way (a few append points cost a few pages). Default 4.
   */
  readonly eventsDirectRanges?: number;
  /**
   * Sequence numbers an eventlog segment takes before the next tree becomes the head.
   * Default 32,768.
   */
  readonly eventlogSegmentRecords?: number;
}

export interface StoreStats {
  /** LMDB write transactions. */
  commits: number;
  /** Durable points reached (one per commit: each transaction is synced). */
  flushes: number;
  /**
   * LMDB records read by applies: data records (once per key per turn), request records,
   * expiry queue items. A diagnostic: its growth per applied entry is bounded.
   */
  applyReads: number;
  /** Expiry queue lookups (LMDB cursors) by applied entries: none while nothing is due. */
  expiryScans: number;
  /** Journal records deleted from the front (no range needs them any more). */
  journalPurged: number;
  /** Log entries written again at the journal's end (their range held its front back). */
  journalRewritten: number;
  /** Events written to the eventlog (pending), and moved from it to the events tree. */
  eventsPended: number;
  eventsMoved: number;
  /** Eventlog records dropped with their segment (all dead), and segments dropped. */
  eventlogPurged: number;
  eventlogSegmentsCleared: number;
  /** Applies that wrote their events directly because every eventlog segment was in use. */
  eventlogFull: number;
  /**
   * Where a turn's transaction spends its time, summed in milliseconds over the commits:
   * from Turn.commit to its body starting (waiting for the transactions before it on
   * lmdb-js's writer), the body (the turn's ops, on the event loop), and from the body's
   * end to durable (the commit and its sync). Divided by `turnCommits` (the turns'
   * transactions that reached disk): the means.
   */
  turnCommits: number;
  txnWaitMs: number;
  txnBodyMs: number;
  txnSyncMs: number;
}

/**
 * Snapshot.data, plain msgpack: the state machine of one range's span at `applied`. Both
 * lists are in key order; a request's index says where it sits in the expiry queue.
 */
interface SnapshotData {
  readonly applied: LogIndex;
  /** The range's descriptor at `applied` (a snapshot taken after a split has the new span). */
  readonly descriptor: RangeDescriptor;
  readonly records: ReadonlyArray<readonly [key: Uint8Array, record: DataRecord]>;
  readonly requests: ReadonlyArray<
    readonly [key: Uint8Array, id: Uint8Array, index: LogIndex, result: ApplyResult]
  >;
  /** The range's eventsOldestRetained at `applied`. */
  readonly oldestRetained: LogIndex;
  /** The range's requestsForgottenBelow at `applied` (0 in snapshots of older versions). */
  readonly requestsForgottenBelow: LogIndex;
  /** The range's retained events, by ascending revision (keys may lie outside the span). */
  readonly events: ReadonlyArray<readonly [revision: LogIndex, event: RangeEvent]>;
}

/** A request record with the key and id it is stored under (Store.inspectRequests). */
export interface StoredRequest {
  readonly key: Uint8Array;
  readonly id: Buffer;
  readonly index: LogIndex;
  readonly result: ApplyResult;
  /** In the key's data record (else a record of its own in `requests`). */
  readonly inline: boolean;
}

/** What the `state` database holds per range. */
interface RangeRecord {
  readonly descriptor: RangeDescriptor;
  readonly hardState: HardState;
  /** The state machine's applied index, written with the data it covers. */
  readonly applied: LogIndex;
  /** The point the log was compacted to, or the installed snapshot. */
  readonly snapshot: SnapshotMeta;
  /** The configuration as of `applied` (what takeSnapshot reports). */
  readonly config: Configuration;
  /**
   * The oldest revision whose event is retained: the events of (eventsOldestRetained - 1,
   * applied] are all stored; older ones are compacted. 1 for a new range.
   */
  readonly eventsOldestRetained: LogIndex;
  /**
   * Request ids applied below this position are forgotten (forgetRequests, commands.ts):
   * 0 for none (a new range, and records of older versions). The right-hand range of a
   * split starts with its parent's.
   */
  readonly requestsForgottenBelow: LogIndex;
}

/** A range's state and progress records together. */
interface StoredRange extends RangeRecord {
  /** The term of the entry at `applied` (the snapshot's when applied is its index). */
  readonly appliedTerm: Term;
  /** Journal records of the range below this sequence number are not its log (fenced). */
  readonly logFromSeq: number;
}

/**
 * The cached state of a range; `log`, `eventsFloor` and `expiryFloor` are derived at open.
 */
interface RangeState extends StoredRange {
  /** Where the entries (snapshot.index, log.last] are in the journal. */
  readonly log: LogSeqs;
  /**
   * No event of the range below this revision is stored. Compacted events in [eventsFloor,
   * eventsOldestRetained) are still to be deleted. Invariant: eventsFloor <=
   * eventsOldestRetained. Local bookkeeping, not replicated (a snapshot install resets it).
   */
  readonly eventsFloor: LogIndex;
  /**
   * No expiry queue item of the range has an index below this (a lower bound; Infinity
   * when the queue is known to be empty), so an applied entry whose horizon is at or
   * below it looks for nothing to expire. Local bookkeeping, like eventsFloor.
   */
  readonly expiryFloor: LogIndex;
}

/**
 * A copy of a range's state, its fields always in one order: every state then has one
 * shape. A spread ({ ...s }) of states made in different places (open, createRange, a
 * split) went megamorphic and cost about 3 us per range per turn at 256 ranges (profile).
 */
function copyState(s: RangeState): Mutable<RangeState> {
  return {
    descriptor: s.descriptor,
    hardState: s.hardState,
    applied: s.applied,
    snapshot: s.snapshot,
    config: s.config,
    eventsOldestRetained: s.eventsOldestRetained,
    requestsForgottenBelow: s.requestsForgottenBelow,
    appliedTerm: s.appliedTerm,
    logFromSeq: s.logFromSeq,
    log: s.log,
    eventsFloor: s.eventsFloor,
    expiryFloor: s.expiryFloor,
  };
}

/**
 * A record's bytes: in the running write transaction without `transaction` (lmdb-js's
 * shared buffer, valid until its next read), else in that read transaction (a copy).
 */
function readBytes(
  db: Database<Buffer, Buffer>,
  key: Buffer,
  transaction: ReturnType<RootDatabase['useReadTransaction']> | undefined,
): Buffer | undefined {
  return transaction === undefined
    ? (db.getBinaryFast(key) as Buffer | undefined)
    : (db.get(key, { transaction }) as Buffer | undefined);
}

/**
 * Resolves once the LMDB write transaction that the last write queued (a childTransaction
 * just called) is on disk. lmdb-js's `flushed` names the transaction being assembled when
 * its `then` is called, so it is called here, at once. Called once the queued transaction
 * had committed, it named whatever transaction was being assembled by then: under load a
 * later one, whose fsync a turn then waited for as well (docs/architecture.md, "A turn
 * waits for its own flush"). lmdb-js may still report a flush only with the transactions
 * its writer took on after it, so this shortens the wait; it does not bound it.
 */
function flushOfLastWrite(root: RootDatabase): Promise<void> {
  const flushed = root.flushed.then(() => {});
  // A failed commit is reported by the transaction's own promise, which its caller awaits
  // first: this one may then never be awaited.
  flushed.catch(() => {});
  return flushed;
}

/**
 * Deletes the records of a tree keyed like the journal ([seq u64 BE]...) with a sequence
 * number in [from, below), at most `max` of them (inside the caller's write transaction).
 * Returns how many went and the new front: `below`, or past the last one deleted.
 */
function purgeFront(
  db: Database<Buffer, Buffer>,
  from: number,
  below: number,
  max: number,
): { deleted: number; front: number } {
  const due = Array.from(db.getKeys({ start: seqKey(from), end: seqKey(below), limit: max }));
  for (const key of due) db.removeSync(key);
  const last = due[due.length - 1];
  const front = due.length < max || last === undefined ? below : parseJournalKey(last).seq + 1;
  return { deleted: due.length, front };
}

export interface TurnCommit {
  /**
   * Per range, one result per applied entry, in order; resolves when the transaction
   * body has run (before it is committed), rejects if an op broke an invariant (then
   * nothing of the turn is written).
   */
  readonly results: Promise<Map<number, ApplyResult[]>>;
  /**
   * The events the turn's applies wrote to the ranges' streams, per range by log index:
   * user-data mutations (none for retries, failed cas, absent dels, system keys) and split
   * markers. Filled when `results` resolves; watch publishes the mutations, and a leader's
   * events tail takes them all (node/events-tail.ts).
   */
  readonly mutations: ReadonlyMap<number, ReadonlyMap<LogIndex, RangeEvent>>;
  /**
   * Per range whose events the turn compacted: the oldest revision it retains now. Filled
   * when `results` resolves.
   */
  readonly eventsOldest: ReadonlyMap<number, LogIndex>;
  /** Resolves when the turn's transaction is committed (visible to reads) and on disk. */
  readonly durable: Promise<void>;
}

/** A turn's view of the records it applies to, by key bytes as a latin1 string. */
type RecordCache = Map<
  string,
  { readonly key: Buffer; record: DataRecord | undefined; dirty: boolean }
>;

type Mutable<T> = { -readonly [P in keyof T]: T[P] };

type TurnOp =
  | { readonly kind: 'write'; readonly rangeId: number; readonly write: StorageWrite }
  | { readonly kind: 'apply'; readonly rangeId: number; readonly entries: readonly Entry[] }
  | { readonly kind: 'compact'; readonly rangeId: number; readonly meta: SnapshotMeta };

/**
 * The layout of data, requests, expiry and events (stored in meta; see Store's
 * constructor). 2 had no events database and no eventsOldestRetained in range records; 3
 * kept every request record in `requests` (its stores are upgraded in place: they are
 * layout-4 stores whose data records hold no inline requests); 4 kept the hard state and
 * applied index only inside the range record (no `progress` database); 5 kept the log in
 * a tree keyed by (range, index); 6 wrote commands, data records and events as msgpack maps
 * (7 writes the binary forms of binary.ts, and reads both); 7 had no eventlog (pending
 * events: events-pending.ts), which 8 adds; 8 kept the eventlog in one tree (9 cuts it
 * into segments, the first of them in the same tree).
 */
const storageFormat = '9';
/**
 * Layouts this code upgrades at open, in one transaction. Layouts 6 and 7 need nothing but
 * the new number: 6's msgpack items are read as they are and replaced as they are
 * rewritten, 7's eventlog is empty, and 8's is one segment of 9's.
 * Layouts 3 to 5 also need upgradeLog: their per-range `log` entries move to the journal,
 * and each range gets a progress record (layouts 3 and 4 kept progress in the `state`
 * record, 5 in 32 bytes without the applied term).
 */
const upgradableLayouts: ReadonlySet<string | undefined> = new Set(['3', '4', '5', '6', '7', '8']);
const logTreeLayouts: ReadonlySet<string | undefined> = new Set(['3', '4', '5']);
/** Older layouts this code recognizes (and refuses while they hold ranges), by format. */
const olderLayouts: ReadonlyMap<string | undefined, string> = new Map([
  [undefined, 'request ids inside data records'],
  ['2', 'no mutation events'],
  ['3', 'every request record apart from its data record'],
  ['4', 'hard state and applied index inside the range record'],
  ['5', 'a log tree per range'],
  ['6', 'commands, data records and events as msgpack maps'],
  ['7', 'no eventlog'],
  ['8', 'the eventlog in one tree'],
]);
/**
 * Journal records a turn deletes at most: twice what it appended, and at least this many,
 * so the front keeps up with a load and a compaction's backlog drains while it goes on
 * without making every turn long (docs/architecture.md, "Cleanup after a pause"); what is
 * left goes in the node's idle time (Store.tidy).
 */
const journalPurgeMin = 128;
/** Journal records one tidy transaction deletes at most (Store.tidy). */
const journalTidyMax = 8192;
/** See StoreOptions.journalScanRecords. */
const journalScanRecords = 4096;
/** Log entries a scan writes again at most (of ranges that hold the journal's front back). */
const journalRewriteMax = 20_000;
/** See StoreOptions.journalLagMax. */
const journalLagMax = 500_000;
/** See StoreOptions.eventsPendingMax, eventsMoveMax, eventsDirectMin, eventsDirectRanges. */
const eventsPendingMax = 16_384;
const eventsMoveMax = 1024;
const eventsDirectMin = 8;
const eventsDirectRanges = 4;
/** See StoreOptions.eventlogSegmentRecords. */
const eventlogSegmentRecords = 32_768;
/** The eventlog's trees, used in turn (segments; see the header). */
const eventlogNames = ['eventlog', 'eventlog1', 'eventlog2', 'eventlog3'] as const;

/** What one eventlog tree holds: records with sequence numbers in [first, last]. */
interface EventlogSegment {
  readonly first: number;
  last: number;
  records: number;
}

/**
 * Expiry queue items an applied entry may delete: more than the one request an entry can
 * record, so the queue drains after a backlog (a snapshot, a bigger window before), and a
 * small constant, so no apply does a burst of deletes.
 */
const expiryPerEntry = 2;
const entryHeaderBytes = 9;
const kindCodes: Record<EntryKind, number> = { normal: 0, noop: 1, config: 2 };
const kindsByCode: readonly EntryKind[] = ['normal', 'noop', 'config'];

const emptyValue = Buffer.alloc(0);

function asBuffer(bytes: Uint8Array): Buffer {
  return Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.length);
}

/** Log keys sort by range, then index: [rangeId u32 BE][index u64 BE]. */
function logKey(rangeId: number, index: LogIndex): Buffer {
  assert(Number.isSafeInteger(index) && index >= 0, 'log indexes are safe integers');
  const key = Buffer.allocUnsafe(12);
  key.writeUInt32BE(rangeId, 0);
  key.writeUInt32BE(Math.floor(index / 0x1_0000_0000), 4);
  key.writeUInt32BE(index >>> 0, 8);
  return key;
}

function logKeyIndex(key: Uint8Array): LogIndex {
  const b = asBuffer(key);
  assert(b.length === 12, 'log keys are 12 bytes');
  return b.readUInt32BE(4) * 0x1_0000_0000 + b.readUInt32BE(8);
}

/** Every log key of `rangeId` is in [logKey(rangeId, 0), logKeyEnd(rangeId)). */
function logKeyEnd(rangeId: number): Buffer {
  return logKey(rangeId + 1, 0);
}

/**
 * An order-preserving, prefix-free encoding of a user key: its bits in groups of 7, each
 * group (the last one padded with zero bits) in a byte with the top bit set. For keys a, b:
 * a < b iff orderedKey(a) + x < orderedKey(b) + y for any x, y starting with 0x00; a key of
 * L bytes takes ceil(8L / 7) bytes (escaping zero bytes instead could double a key).
 */
function orderedKey(key: Uint8Array): Buffer {
  const out = Buffer.allocUnsafe(Math.ceil((key.length * 8) / 7));
  let acc = 0;
  let bits = 0;
  let o = 0;
  for (let i = 0; i < key.length; i++) {
    acc = (acc << 8) | key[i]!;
    bits += 8;
    while (bits >= 7) {
      bits -= 7;
      out[o++] = 0x80 | ((acc >>> bits) & 0x7f);
    }
    acc &= (1 << bits) - 1;
  }
  if (bits > 0) out[o++] = 0x80 | ((acc << (7 - bits)) & 0x7f);
  assert(o === out.length, 'an ordered key fills its groups');
  return out;
}

function orderedKeyDecode(groups: Uint8Array): Buffer {
  const out = Buffer.allocUnsafe(Math.floor((groups.length * 7) / 8));
  let acc = 0;
  let bits = 0;
  let o = 0;
  for (let i = 0; i < groups.length; i++) {
    const g = groups[i]!;
    assert(g >= 0x80, 'ordered key groups have the top bit set');
    acc = (acc << 7) | (g & 0x7f);
    bits += 7;
    if (bits >= 8) {
      bits -= 8;
      out[o++] = (acc >>> bits) & 0xff;
      acc &= (1 << bits) - 1;
    }
  }
  assert(o === out.length && acc === 0, 'an ordered key decodes (zero padding)');
  return out;
}

/** The `requests` key of (user key, request id): orderedKey(key), 0x00, id. */
function requestKey(key: Uint8Array, id: Uint8Array): Buffer {
  const ordered = orderedKey(key);
  const out = Buffer.allocUnsafe(ordered.length + 1 + id.length);
  ordered.copy(out, 0);
  out[ordered.length] = 0;
  out.set(id, ordered.length + 1);
  return out;
}

function parseRequestKey(bytes: Uint8Array): { key: Buffer; id: Buffer } {
  const b = asBuffer(bytes);
  const end = b.indexOf(0);
  assert(end > 0, 'a request key has its user key and separator');
  return { key: orderedKeyDecode(b.subarray(0, end)), id: Buffer.from(b.subarray(end + 1)) };
}

/** The `requests` keys of a span's keys are in [ordered(start), ordered(end)). */
function requestBounds(d: RangeDescriptor): { start?: Buffer; end?: Buffer } {
  const bounds: { start?: Buffer; end?: Buffer } = {};
  if (d.start.length > 0) bounds.start = orderedKey(d.start);
  if (d.end !== null) bounds.end = orderedKey(d.end);
  return bounds;
}

/** A range's expiry queue item of the request record stored under `reqKey`, by index. */
function expiryKey(rangeId: number, index: LogIndex, reqKey: Uint8Array): Buffer {
  return Buffer.concat([logKey(rangeId, index), reqKey]);
}

function expiryKeyIndex(key: Uint8Array): LogIndex {
  return logKeyIndex(key.subarray(0, 12));
}

function decodeEntry(index: LogIndex, bytes: Uint8Array): Entry {
  const b = asBuffer(bytes);
  assert(b.length >= entryHeaderBytes, 'a stored entry has its header');
  const kind = kindsByCode[b[0]!];
  assert(kind !== undefined, 'a stored entry has a known kind');
  const term = b.readUInt32BE(1) * 0x1_0000_0000 + b.readUInt32BE(5);
  return { index, term, kind, data: b.subarray(entryHeaderBytes) };
}

function entryTerm(bytes: Uint8Array): Term {
  const b = asBuffer(bytes);
  assert(b.length >= entryHeaderBytes, 'a stored entry has its header');
  return b.readUInt32BE(1) * 0x1_0000_0000 + b.readUInt32BE(5);
}

export function scanEntryBytes(key: Uint8Array, value: Uint8Array): number {
  return key.length + value.length + scanEntryOverheadBytes;
}

/** An entry's msgpack framing in a scan result: array header and two bin headers (<= 11). */
const scanEntryOverheadBytes = 16;

/** getRange/getKeys bounds of a span (LMDB refuses an empty key, the keyspace start). */
function spanBounds(d: RangeDescriptor): { start?: Buffer; end?: Buffer } {
  const bounds: { start?: Buffer; end?: Buffer } = {};
  if (d.start.length > 0) bounds.start = asBuffer(d.start);
  if (d.end !== null) bounds.end = asBuffer(d.end);
  return bounds;
}

/** An LMDB tree's records, pages (branch, leaf and overflow), depth and page size. */
function treeStats(db: { getStats(): unknown }): {
  entries: number;
  pages: number;
  depth: number;
  pageSize: number;
} {
  const st = db.getStats() as {
    pageSize: number;
    treeDepth: number;
    treeBranchPageCount: number;
    treeLeafPageCount: number;
    overflowPages: number;
    entryCount: number;
  };
  return {
    entries: st.entryCount,
    pages: st.treeBranchPageCount + st.treeLeafPageCount + st.overflowPages,
    depth: st.treeDepth,
    pageSize: st.pageSize,
  };
}

/** Whether x is a log position (a safe integer) in [min, max]. */
function isPositionIn(x: unknown, min: number, max: number): x is number {
  return typeof x === 'number' && Number.isSafeInteger(x) && x >= min && x <= max;
}

function decodeRangeRecord(bytes: Uint8Array): RangeRecord {
  const r = packr.unpack(bytes) as Omit<RangeRecord, 'requestsForgottenBelow'> & {
    requestsForgottenBelow?: LogIndex;
  };
  assert(typeof r === 'object' && r !== null, 'a stored range record decodes');
  assert(Number.isSafeInteger(r.applied) && r.descriptor !== undefined, 'range record shape');
  assert(
    isPositionIn(r.eventsOldestRetained, 1, r.applied + 1),
    'a range record has its oldest retained event revision',
  );
  const forgottenBelow = r.requestsForgottenBelow ?? 0;
  assert(
    isPositionIn(forgottenBelow, 0, r.applied + 1),
    'a range record forgets requests below a position it applied',
  );
  return { ...r, requestsForgottenBelow: forgottenBelow };
}

const progressBytes = 48;
/** Layout 5's progress records: no applied term, no logFromSeq. */
const progressBytesV5 = 32;

/**
 * A range's progress record: term, vote, commit, applied, appliedTerm, logFromSeq (f64 BE:
 * safe integers).
 */
function encodeProgress(s: StoredRange): Buffer {
  const b = Buffer.allocUnsafe(progressBytes);
  b.writeDoubleBE(s.hardState.term, 0);
  b.writeDoubleBE(s.hardState.vote, 8);
  b.writeDoubleBE(s.hardState.commit, 16);
  b.writeDoubleBE(s.applied, 24);
  b.writeDoubleBE(s.appliedTerm, 32);
  b.writeDoubleBE(s.logFromSeq, 40);
  return b;
}

function decodeProgressFields(progress: Uint8Array, count: number): number[] {
  const b = asBuffer(progress);
  const fields: number[] = [];
  for (let i = 0; i < count; i++) {
    const x = b.readDoubleBE(8 * i);
    assert(Number.isSafeInteger(x) && x >= 0, 'progress fields are safe integers');
    fields.push(x);
  }
  return fields;
}

/** `record` with its progress record (layout 6). */
function withProgress(record: RangeRecord, progress: Uint8Array | undefined): StoredRange {
  assert(progress !== undefined && progress.length === progressBytes, 'a progress record');
  const [term, vote, commit, applied, appliedTerm, logFromSeq] = decodeProgressFields(
    progress,
    6,
  ) as [number, number, number, number, number, number];
  assert(applied >= record.applied, 'progress is at or after the range record');
  return { ...record, hardState: { term, vote, commit }, applied, appliedTerm, logFromSeq };
}

/** Layouts 3 to 5: the progress of a range, from its state record or a 32-byte one. */
function olderProgress(record: RangeRecord, progress: Uint8Array | undefined): RangeRecord {
  if (progress === undefined) return record;
  assert(progress.length === progressBytesV5, 'a layout-5 progress record is 32 bytes');
  const [term, vote, commit, applied] = decodeProgressFields(progress, 4) as [
    number,
    number,
    number,
    number,
  ];
  assert(applied >= record.applied, 'progress is at or after the range record');
  return { ...record, hardState: { term, vote, commit }, applied };
}

/** A log entry as stored: [kind u8][term u64 BE][data]. The hot path: no msgpack here. */
function encodeEntry(e: Entry): Buffer {
  assert(Number.isSafeInteger(e.term) && e.term >= 0, 'terms are safe integers');
  const out = Buffer.allocUnsafe(entryHeaderBytes + e.data.length);
  out[0] = kindCodes[e.kind];
  out.writeUInt32BE(Math.floor(e.term / 0x1_0000_0000), 1);
  out.writeUInt32BE(e.term >>> 0, 5);
  out.set(e.data, entryHeaderBytes);
  return out;
}

function encodeRangeRecord(s: RangeState): Buffer {
  const record: RangeRecord = {
    descriptor: s.descriptor,
    hardState: s.hardState,
    applied: s.applied,
    snapshot: s.snapshot,
    config: s.config,
    eventsOldestRetained: s.eventsOldestRetained,
    requestsForgottenBelow: s.requestsForgottenBelow,
  };
  return packr.pack(record);
}

function isSnapshotKey(x: unknown): x is Uint8Array {
  return x instanceof Uint8Array && x.length > 0 && x.length <= keyBytesMax;
}

function decodeSnapshotData(bytes: Uint8Array): SnapshotData {
  const raw = packr.unpack(bytes) as {
    applied?: unknown;
    records?: unknown;
    requests?: unknown;
    oldestRetained?: unknown;
    requestsForgottenBelow?: unknown;
    events?: unknown;
  };
  assert(typeof raw === 'object' && raw !== null, 'snapshot data is a map');
  assert(typeof raw.applied === 'number', 'snapshot data has its applied index');
  assert(
    asDescriptor((raw as { descriptor?: unknown }).descriptor) !== undefined,
    'snapshot data has its descriptor',
  );
  assert(Array.isArray(raw.records), 'snapshot data has its records');
  assert(Array.isArray(raw.requests), 'snapshot data has its request records');
  const records: Array<SnapshotData['records'][number]> = [];
  /** Keys and ids of inline requests: none may also have a separate record. */
  const inlineIds = new Set<string>();
  for (const pair of raw.records as unknown[]) {
    assert(Array.isArray(pair) && pair.length === 2, 'snapshot records are pairs');
    const key = pair[0];
    assert(isSnapshotKey(key), 'snapshot keys are bytes');
    const record = asDataRecord(pair[1], raw.applied);
    assert(record !== undefined, 'snapshot records are data records');
    for (const [id] of record.requests ?? []) {
      inlineIds.add(requestKey(key, id).toString('latin1'));
    }
    records.push([key, record]);
  }
  let previous: Buffer | undefined;
  for (const q of raw.requests as unknown[]) {
    assert(Array.isArray(q) && q.length === 4, 'snapshot requests are [key, id, index, result]');
    assert(isSnapshotKey(q[0]), 'snapshot request keys are bytes');
    assert(
      q[1] instanceof Uint8Array && q[1].length > 0 && q[1].length <= requestIdBytesMax,
      'snapshot request ids are bytes',
    );
    const request = asRequestRecord({ index: q[2], result: q[3] });
    assert(request !== undefined && request.index <= raw.applied, 'snapshot request records');
    // Ascending and unique, so the rebuilt queue has one item per record.
    const reqKey = requestKey(q[0], q[1]);
    assert(previous === undefined || Buffer.compare(previous, reqKey) < 0, 'requests ascend');
    assert(!inlineIds.has(reqKey.toString('latin1')), 'a request is recorded once per key');
    previous = reqKey;
  }
  const oldest = raw.oldestRetained;
  assert(
    isPositionIn(oldest, 1, raw.applied + 1),
    'snapshot data has its oldest retained event revision, at most applied + 1',
  );
  assert(Array.isArray(raw.events), 'snapshot data has its events');
  const events: Array<SnapshotData['events'][number]> = [];
  let revision = oldest - 1;
  for (const pair of raw.events as unknown[]) {
    assert(Array.isArray(pair) && pair.length === 2, 'snapshot events are [revision, event]');
    const r = pair[0];
    // Ascending and unique (one event per entry), all retained and applied.
    assert(
      typeof r === 'number' && Number.isSafeInteger(r) && r > revision && r <= raw.applied,
      'snapshot event revisions ascend within the retained, applied window',
    );
    revision = r;
    const event = asRangeEvent(pair[1]);
    assert(event !== undefined, 'snapshot events are events');
    events.push([r, event]);
  }
  // Absent from the snapshots of versions before forgetRequests: nothing forgotten.
  const forgottenBelow = raw.requestsForgottenBelow ?? 0;
  assert(
    isPositionIn(forgottenBelow, 0, raw.applied + 1),
    'snapshot data forgets requests below a position it applied',
  );
  return { ...(raw as SnapshotData), records, events, requestsForgottenBelow: forgottenBelow };
}

/**
 * The event of an applied set, cas or del that changed `key` from `before` to `after`, or
 * undefined for commands that leave none (system keys: the directory, the id counter).
 */
function mutationEvent(
  cmd: Command,
  key: Buffer,
  before: DataRecord | undefined,
  after: DataRecord | undefined,
): RangeEvent | undefined {
  if (isSystemKey(key)) return undefined;
  switch (cmd.op) {
    case 'set':
    case 'cas':
      assert(after !== undefined, 'a set or cas that changed its key leaves a value');
      return before === undefined
        ? { op: 'set', key, value: after.value }
        : { op: 'set', key, value: after.value, prevValue: before.value };
    case 'del':
      assert(before !== undefined && after === undefined, 'a del that changed its key had one');
      return { op: 'del', key, prevValue: before.value };
    default:
      return undefined;
  }
}

export class StoreLockedError extends Error {
  override name = 'StoreLockedError';
}

/**
 * One live process per storage directory: LMDB itself lets several processes share an
 * environment, but two replicas with one identity would vote twice. The lock file holds
 * the owner's pid; a lock whose process is gone (kill -9, power loss) is taken over.
 */
function lockDir(dir: string): string {
  const file = `${dir}/rasputin.lock`;
  for (let attempt = 0; attempt < 3; attempt++) {
    try {
      fs.writeFileSync(file, String(process.pid), { flag: 'wx' });
      return file;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    }
    const owner = Number(fs.readFileSync(file, 'utf8').trim());
    if (owner === process.pid) return file;
    if (Number.isInteger(owner) && owner > 0 && processAlive(owner)) {
      throw new StoreLockedError(
        `storage dir ${dir} is in use by process ${owner}; stop it first (lock: ${file})`,
      );
    }
    fs.rmSync(file, { force: true }); // stale: its process is gone
  }
  throw new StoreLockedError(`could not lock storage dir ${dir}`);
}

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

export class Store {
  readonly storeId: string;
  readonly stats: StoreStats = {
    commits: 0,
    flushes: 0,
    applyReads: 0,
    expiryScans: 0,
    journalPurged: 0,
    journalRewritten: 0,
    eventsPended: 0,
    eventsMoved: 0,
    eventlogPurged: 0,
    eventlogSegmentsCleared: 0,
    eventlogFull: 0,
    turnCommits: 0,
    txnWaitMs: 0,
    txnBodyMs: 0,
    txnSyncMs: 0,
  };
  readonly dedupWindowEntries: number;
  private readonly journalLagMax: number;
  private readonly journalScanRecords: number;
  private readonly root: RootDatabase;
  private readonly metaDb: Database<string, string>;
  private readonly stateDb: Database<Buffer, number>;
  private readonly progressDb: Database<Buffer, number>;
  /** Layouts before 6 only: read once, by upgradeLog. */
  private readonly logDb: Database<Buffer, Buffer>;
  private readonly journalDb: Database<Buffer, Buffer>;
  /** The next journal sequence number (gaps are harmless: only the order counts). */
  private nextSeq = 1;
  /** Journal records below this are deleted. */
  private purgedTo = 1;
  /** Every journal record below this is one no range needs (recomputed now and then). */
  private purgeBelow = 1;
  /** nextSeq at the last scan for the purge point (none yet: the first turn scans). */
  private scannedAtSeq = Number.NEGATIVE_INFINITY;
  /**
   * A turn changed some range's log since tidy last scanned the journal (tidyDue). Only
   * tidy clears it: a turn's own scan reads the states from before the turn.
   */
  private journalChanged = false;
  private readonly dataDb: Database<Buffer, Buffer>;
  private readonly requestsDb: Database<Buffer, Buffer>;
  private readonly expiryDb: Database<Buffer, Buffer>;
  private readonly eventsDb: Database<Buffer, Buffer>;
  /** The data tree's bytes per key and when it was read (spanStats). */
  private dataBytesPerKey: { perKey: number; atMs: number } | undefined;
  /** Pending events of every range, in write order (events-pending.ts), in segments. */
  private readonly eventlogDbs: ReadonlyArray<Database<Buffer, Buffer>>;
  /** Per eventlog tree: the sequence numbers of its first and last record, and how many. */
  private eventlogSegments: Array<EventlogSegment | undefined>;
  /** The tree new eventlog records go to. */
  private eventlogHead = 0;
  private readonly eventlogSegmentRecords: number;
  private nextEventSeq = 1;
  /** Per range, its pending events; in about the order their oldest live one came. */
  private readonly pending = new Map<number, PendingRange>();
  /** Live pending events over all ranges. */
  private pendingLive = 0;
  private readonly eventsPendingMax: number;
  private readonly eventsMoveMax: number;
  private readonly eventsDirectMin: number;
  private readonly eventsDirectRanges: number;
  /** The committed state of every range, as stored; replaced only after a commit. */
  private readonly rangeStates = new Map<number, RangeState>();
  private closed = false;

  private readonly lockFile: string;

  private constructor(dir: string, options: StoreOptions) {
    this.dedupWindowEntries = options.dedupWindowEntries ?? dedupWindowEntries;
    this.journalLagMax = options.journalLagMax ?? journalLagMax;
    this.journalScanRecords = options.journalScanRecords ?? journalScanRecords;
    this.eventsPendingMax = options.eventsPendingMax ?? eventsPendingMax;
    this.eventsMoveMax = options.eventsMoveMax ?? eventsMoveMax;
    this.eventsDirectMin = options.eventsDirectMin ?? eventsDirectMin;
    this.eventsDirectRanges = options.eventsDirectRanges ?? eventsDirectRanges;
    this.eventlogSegmentRecords = options.eventlogSegmentRecords ?? eventlogSegmentRecords;
    assert(
      Number.isSafeInteger(this.eventlogSegmentRecords) && this.eventlogSegmentRecords >= 1,
      'eventlogSegmentRecords is a positive integer',
    );
    for (const [name, v] of [
      ['eventsPendingMax', this.eventsPendingMax],
      ['eventsMoveMax', this.eventsMoveMax],
      ['eventsDirectMin', this.eventsDirectMin],
      ['eventsDirectRanges', this.eventsDirectRanges],
    ] as const) {
      assert(
        v === Number.POSITIVE_INFINITY || (Number.isSafeInteger(v) && v >= 0),
        `${name} is a count`,
      );
    }
    assert(
      Number.isSafeInteger(this.journalScanRecords) && this.journalScanRecords >= 1,
      'journalScanRecords is a positive integer',
    );
    assert(
      Number.isSafeInteger(this.journalLagMax) && this.journalLagMax >= 1,
      'journalLagMax is a positive integer',
    );
    assert(
      Number.isSafeInteger(this.dedupWindowEntries) && this.dedupWindowEntries > 0,
      'the dedup window is a positive integer',
    );
    fs.mkdirSync(dir, { recursive: true });
    this.lockFile = lockDir(dir);
    // overlappingSync stays at its default (on): turns commit asynchronously and lmdb-js
    // flushes them on its writer thread (see the header).
    // noSubdir: lmdb-js would otherwise take a path with a dot ("node.1") for a file name.
    // mapSize: lmdb-js starts with a small map and, each time the file outgrows it, maps a
    // twice larger one and keeps the old mapping for the life of the process (readers may
    // still point into it); the pages read through every old mapping stay in the RSS. One
    // map large enough from the start (address space only: the file grows as it needs, and
    // past it lmdb-js still grows the map) keeps each page mapped once.
    this.root = open(dir, { maxDbs: 16, noSubdir: false, mapSize: mapSizeBytes });
    this.metaDb = this.root.openDB<string, string>('meta', { encoding: 'string' });
    // Keyed by range id (uint32) or by bytes; every value is bytes.
    const byRangeId = (name: string) =>
      this.root.openDB<Buffer, number>(name, { keyEncoding: 'uint32', encoding: 'binary' });
    const byBytes = (name: string) =>
      this.root.openDB<Buffer, Buffer>(name, { keyEncoding: 'binary', encoding: 'binary' });
    this.stateDb = byRangeId('state');
    this.progressDb = byRangeId('progress');
    this.logDb = byBytes('log');
    this.journalDb = byBytes('journal');
    this.dataDb = byBytes('data');
    this.requestsDb = byBytes('requests');
    this.expiryDb = byBytes('expiry');
    this.eventsDb = byBytes('events');
    this.eventlogDbs = eventlogNames.map(byBytes);
    this.eventlogSegments = eventlogNames.map(() => undefined);

    let storeId = this.metaDb.get('storeId');
    const format = this.metaDb.get('storageFormat');
    if (format !== storageFormat) {
      const older = olderLayouts.get(format);
      if (older === undefined) {
        throw new Error(`${dir}: unknown storage layout ${format} (expected ${storageFormat})`);
      }
      // A store without ranges has no state in any layout; one with ranges was written by
      // an older layout, which this code cannot read unless it is upgradable.
      if (
        !upgradableLayouts.has(format) &&
        storeId !== undefined &&
        this.stateDb.getKeysCount() > 0
      ) {
        throw new Error(
          `${dir}: the store holds ranges in an older storage layout ` +
            `(${format === undefined ? '' : `${format}: `}${older}); this version reads ` +
            `layout ${storageFormat}. Remove the directory and let the node rejoin (it ` +
            'catches up by snapshot).',
        );
      }
      const id = storeId ?? randomUUID();
      this.root.transactionSync(() => {
        if (logTreeLayouts.has(format)) this.upgradeLog();
        this.metaDb.putSync('storeId', id);
        this.metaDb.putSync('storageFormat', storageFormat);
      });
      this.stats.commits++;
      storeId = id;
    }
    assert(storeId !== undefined, 'a store has its id');
    this.storeId = storeId;

    const stored = new Map<number, StoredRange>();
    for (const { key, value } of this.stateDb.getRange({})) {
      const record = withProgress(decodeRangeRecord(value), this.progressDb.get(key));
      assert(record.descriptor.rangeId === key, 'a range record is stored under its id');
      stored.set(key, record);
    }
    const logs = this.readJournal(stored);
    for (const [key, record] of stored) {
      const log = logs.get(key) ?? LogSeqs.empty(record.snapshot.index);
      assert(log.last >= record.snapshot.index, 'the log ends at or after the snapshot');
      assert(record.applied >= record.snapshot.index, 'applied is at or after the snapshot');
      assert(record.applied <= log.last, 'applied entries are in the log');
      let eventsFloor = record.eventsOldestRetained;
      for (const first of this.eventsDb.getKeys({
        start: logKey(key, 0),
        end: logKey(key, record.eventsOldestRetained),
        limit: 1,
      })) {
        eventsFloor = logKeyIndex(first);
      }
      let expiryFloor = Number.POSITIVE_INFINITY;
      for (const first of this.expiryDb.getKeys({
        start: logKey(key, 0),
        end: logKeyEnd(key),
        limit: 1,
      })) {
        expiryFloor = expiryKeyIndex(first);
      }
      this.rangeStates.set(key, copyState({ ...record, log, eventsFloor, expiryFloor }));
    }
    this.readEventlog();
  }

  /**
   * Reads the eventlog's segments in order into the ranges' pending events: those after
   * what the events tree holds of the range, retained and applied. Records of ranges not
   * here, and ones moved already (their segment not emptied yet), are skipped.
   * A range's events are the same on every replica and incarnation of it (they follow
   * from its committed log), so a record an earlier incarnation left is either one the
   * range holds anyway or one it is about to write again.
   */
  private readEventlog(): void {
    // The segments in sequence order: the oldest first, the head last.
    const held: Array<{ tree: number; first: number; last: number }> = [];
    for (let tree = 0; tree < this.eventlogDbs.length; tree++) {
      const db = this.eventlogDbs[tree]!;
      const [first] = Array.from(db.getKeys({ limit: 1 }), (k) => parseJournalKey(k).seq);
      if (first === undefined) continue;
      const [last] = Array.from(
        db.getKeys({ reverse: true, limit: 1 }),
        (k) => parseJournalKey(k).seq,
      );
      held.push({ tree, first, last: last! });
    }
    held.sort((x, y) => x.first - y.first);
    for (let i = 1; i < held.length; i++) {
      assert(held[i]!.first > held[i - 1]!.last, 'eventlog segments hold disjoint runs');
      assert(
        held[i]!.tree === (held[i - 1]!.tree + 1) % this.eventlogDbs.length,
        'eventlog segments follow each other in turn order',
      );
    }
    /** Per range met: the newest revision its events tree holds, or the compacted ones. */
    const floors = new Map<number, LogIndex>();
    for (const h of held) {
      let records = 0;
      for (const key of this.eventlogDbs[h.tree]!.getKeys({})) {
        records++;
        this.pendEventlogRecord(key, floors);
      }
      this.eventlogSegments[h.tree] = { first: h.first, last: h.last, records };
      this.eventlogHead = h.tree;
    }
    this.nextEventSeq = (held[held.length - 1]?.last ?? 0) + 1;
  }

  /** One eventlog record read at open (readEventlog): pending if its range needs it. */
  private pendEventlogRecord(key: Buffer, floors: Map<number, LogIndex>): void {
    const { seq, rangeId, index } = parseJournalKey(key);
    const s = this.rangeStates.get(rangeId);
    if (s === undefined || index > s.applied) return;
    let floor = floors.get(rangeId);
    if (floor === undefined) {
      floor = s.eventsOldestRetained - 1;
      for (const k of this.eventsDb.getKeys({
        start: logKeyEnd(rangeId),
        end: logKey(rangeId, 0),
        reverse: true,
        limit: 1,
      })) {
        floor = Math.max(floor, logKeyIndex(k));
      }
      floors.set(rangeId, floor);
    }
    let p = this.pending.get(rangeId);
    if (index <= (p === undefined ? floor : p.revisions[p.length - 1]!)) return;
    if (p === undefined) this.pending.set(rangeId, (p = new PendingRange(rangeId)));
    p.push(index, seq);
    this.pendingLive++;
  }

  /**
   * Reads the journal in order into each range's LogSeqs (see the header). Sets nextSeq
   * past every record and every range's logFromSeq, and the purge point to the front.
   */
  private readJournal(ranges: ReadonlyMap<number, StoredRange>): Map<number, LogSeqs> {
    // Per range, the indexes and sequence numbers read so far, ascending. A record at an
    // index held already replaces that entry and every later one. A range's dead records
    // (replaced by later ones, whose older neighbours were purged) may leave a gap for a
    // while; the records that replace them close it.
    const read = new Map<number, { ix: number[]; sq: number[] }>();
    let front: number | undefined;
    let last = 0;
    for (const key of this.journalDb.getKeys({})) {
      const { seq, rangeId, index } = parseJournalKey(key);
      front ??= seq;
      last = seq;
      assert(index >= 1, 'a journal record names its index');
      const r = ranges.get(rangeId);
      // Records of a range not here (any more), from before its log was dropped, or
      // compacted into its snapshot.
      if (r === undefined || seq < r.logFromSeq || index <= r.snapshot.index) continue;
      let got = read.get(rangeId);
      if (got === undefined) read.set(rangeId, (got = { ix: [], sq: [] }));
      const { ix, sq } = got;
      if (ix.length > 0 && index <= ix[ix.length - 1]!) {
        let lo = 0;
        let hi = ix.length - 1;
        while (lo < hi) {
          const mid = (lo + hi) >>> 1;
          if (ix[mid]! >= index) hi = mid;
          else lo = mid + 1;
        }
        ix.length = lo;
        sq.length = lo;
      }
      ix.push(index);
      sq.push(seq);
    }
    const logs = new Map<number, LogSeqs>();
    for (const [rangeId, { ix, sq }] of read) {
      let log = LogSeqs.empty(ranges.get(rangeId)!.snapshot.index);
      for (let i = 0; i < ix.length; ) {
        assert(ix[i] === log.last + 1, 'a range log read from the journal has no gap');
        let n = 1;
        while (i + n < ix.length && ix[i + n] === ix[i]! + n && sq[i + n] === sq[i]! + n) n++;
        log = log.write(ix[i]!, sq[i]!, n);
        i += n;
      }
      logs.set(rangeId, log);
    }
    let fenced = 0;
    for (const r of ranges.values()) fenced = Math.max(fenced, r.logFromSeq);
    this.nextSeq = Math.max(last + 1, fenced, 1);
    this.purgedTo = front ?? this.nextSeq;
    this.purgeBelow = this.purgedTo;
    return logs;
  }

  /**
   * Layouts 3 to 5 (inside the transaction that records the current layout): every range's log
   * entries move from `log` to the journal, and every range gets a progress record.
   */
  private upgradeLog(): void {
    let seq = 1;
    for (const { key, value } of this.stateDb.getRange({})) {
      const record = olderProgress(decodeRangeRecord(value), this.progressDb.get(key));
      let appliedTerm = record.snapshot.term;
      for (const { key: lk, value: entry } of this.logDb.getRange({
        start: logKey(key, record.snapshot.index + 1),
        end: logKeyEnd(key),
      })) {
        const index = logKeyIndex(lk);
        const e = decodeEntry(index, entry);
        if (index === record.applied) appliedTerm = e.term;
        this.journalDb.putSync(journalKey(seq++, key, index), encodeEntry(e));
      }
      this.progressDb.putSync(key, encodeProgress({ ...record, appliedTerm, logFromSeq: 0 }));
    }
    for (const key of Array.from(this.logDb.getKeys({}))) this.logDb.removeSync(key);
  }

  /** Opens (creating if needed) the store in `dir`. */
  static open(dir: string, options: StoreOptions = {}): Store {
    return new Store(dir, options);
  }

  getMeta(key: string): string | undefined {
    return this.metaDb.get(key);
  }

  /** Durable when the promise resolves. */
  async setMeta(key: string, value: string): Promise<void> {
    assert(!this.closed, 'the store is open');
    this.root.transactionSync(() => this.metaDb.putSync(key, value));
    this.stats.commits++;
    await this.sync();
  }

  /** Every range with state on this node, by id. */
  ranges(): RangeDescriptor[] {
    return [...this.rangeStates.values()]
      .map((s) => s.descriptor)
      .sort((a, b) => a.rangeId - b.rangeId);
  }

  /** The committed descriptor of a range on this node. */
  descriptor(rangeId: number): RangeDescriptor | undefined {
    return this.rangeStates.get(rangeId)?.descriptor;
  }

  /** A local range whose span overlaps [start, end), if any. */
  overlapping(span: Pick<RangeDescriptor, 'start' | 'end'>): RangeDescriptor | undefined {
    for (const s of this.rangeStates.values()) {
      if (spansOverlap(s.descriptor, span)) return s.descriptor;
    }
    return undefined;
  }

  /** The durable state a replica of the range starts from. */
  loadRange(rangeId: number): { descriptor: RangeDescriptor; state: PersistedState } | undefined {
    const s = this.rangeStates.get(rangeId);
    if (s === undefined) return undefined;
    const entries: Entry[] = [];
    let index = s.snapshot.index;
    for (const [at, seq] of s.log.entries()) {
      index++;
      assert(at === index, 'stored log entries are contiguous');
      entries.push(this.journalEntry(rangeId, at, seq));
    }
    assert(index === s.log.last, 'the log ends at its last index');
    return {
      descriptor: s.descriptor,
      state: { hardState: s.hardState, snapshot: s.snapshot, entries, applied: s.applied },
    };
  }

  /**
   * A new replica of a range: empty log, term 0, an empty state machine (anything left in
   * the span, e.g. by an earlier replica of this node, is cleared) holding only
   * `records` (bootstrap writes the first directory entries there, the same on every
   * initial node). Durable when resolved.
   */
  async createRange(
    descriptor: RangeDescriptor,
    config: Configuration,
    records: ReadonlyArray<readonly [Uint8Array, Uint8Array]> = [],
  ): Promise<void> {
    assert(!this.closed, 'the store is open');
    assert(
      Number.isInteger(descriptor.rangeId) &&
        descriptor.rangeId >= 0 &&
        descriptor.rangeId <= rangeIdMax,
      'range ids are u32 (below the maximum)',
    );
    assert(!this.rangeStates.has(descriptor.rangeId), 'a range is created once per store');
    assert(
      descriptor.end === null || compareBytes(descriptor.start, descriptor.end) < 0,
      'a span is not empty',
    );
    for (const other of this.rangeStates.values()) {
      assert(!spansOverlap(other.descriptor, descriptor), 'spans on a node are disjoint');
    }
    const state: RangeState = {
      descriptor,
      hardState: { term: 0, vote: 0, commit: 0 },
      applied: 0,
      snapshot: { index: 0, term: 0, config },
      config,
      // Records an earlier replica of this range id left in the journal are not its log.
      appliedTerm: 0,
      logFromSeq: this.nextSeq,
      log: LogSeqs.empty(0),
      eventsOldestRetained: 1,
      requestsForgottenBelow: 0,
      eventsFloor: 1,
      expiryFloor: Number.POSITIVE_INFINITY,
    };
    this.root.transactionSync(() => {
      this.clearSpan(descriptor);
      this.clearExpiry(descriptor.rangeId);
      this.clearEvents(descriptor.rangeId);
      for (const [key, value] of records) {
        assert(inSpan(descriptor, key), 'initial records are in the span');
        this.dataDb.putSync(asBuffer(key), asBuffer(encodeRecord({ value, revision: 0 })));
      }
      this.stateDb.putSync(descriptor.rangeId, encodeRangeRecord(state));
      this.progressDb.putSync(descriptor.rangeId, encodeProgress(state));
    });
    this.stats.commits++;
    this.rangeStates.set(descriptor.rangeId, copyState(state));
    await this.sync();
  }

  beginTurn(): Turn {
    assert(!this.closed, 'the store is open');
    return new Turn((ops) => this.commitTurn(ops));
  }

  /** The latest committed record of a user key; undefined if absent. */
  get(key: Uint8Array): DataRecord | undefined {
    const bytes = this.dataDb.get(asBuffer(key));
    return bytes === undefined ? undefined : decodeRecord(bytes);
  }

  /**
   * The latest committed value of a user key (a buffer of its own), or undefined if absent:
   * a get's read. It reads lmdb-js's shared buffer and copies the value alone into Node's
   * buffer pool, where get() copies the whole record into a new ArrayBuffer (about 0.4 us
   * more for a record over 64 bytes, which V8 keeps off its heap) and decodes its inline
   * requests.
   */
  getValue(key: Uint8Array): Uint8Array | undefined {
    assert(!this.closed, 'the store is open');
    const bytes = this.dataDb.getBinaryFast(asBuffer(key)) as Buffer | undefined;
    return bytes === undefined ? undefined : decodeRecordValue(bytes);
  }

  /**
   * The committed user data of [start, end) in key order, read in ONE read transaction
   * (one consistent state), from the `data` database only (never request or expiry
   * records). Stops after `limit` entries or before the entry that would take the entries'
   * bytes (scanEntryBytes each) over `bytesMax`, but returns at least one entry when the
   * span has any. `next`, present only when the span holds more, is the first key not
   * returned: scanning [next, end) continues where this one stopped. `start` may be empty
   * (the start of the keyspace); `end` null has no end; an end at or before the start is
   * an empty span.
   */
  scan(
    start: Uint8Array,
    end: Uint8Array | null,
    limit: number,
    bytesMax: number,
  ): { entries: [Uint8Array, Uint8Array][]; next?: Uint8Array } {
    assert(!this.closed, 'the store is open');
    assert(Number.isSafeInteger(limit) && limit >= 1, 'a scan limit is a positive integer');
    assert(bytesMax >= 0, 'a scan byte budget is not negative');
    const entries: [Uint8Array, Uint8Array][] = [];
    if (end !== null && compareBytes(end, start) <= 0) return { entries };
    const bounds: { start?: Buffer; end?: Buffer } = {};
    if (start.length > 0) bounds.start = asBuffer(start);
    if (end !== null) bounds.end = asBuffer(end);
    let bytes = 0;
    const transaction = this.root.useReadTransaction();
    try {
      // One more than the limit: whether the span holds more decides `next`.
      for (const { key, value } of this.dataDb.getRange({
        ...bounds,
        limit: limit + 1,
        transaction,
      })) {
        const record = decodeRecord(value);
        const size = scanEntryBytes(key, record.value);
        if (entries.length === limit || (entries.length > 0 && bytes + size > bytesMax)) {
          return { entries, next: Buffer.from(key) };
        }
        // Copies: nothing returned points into a buffer LMDB or msgpackr may reuse.
        entries.push([Buffer.from(key), Buffer.from(record.value)]);
        bytes += size;
      }
      return { entries };
    } finally {
      transaction.done();
    }
  }

  /**
   * For tests and debugging: the committed request records of a user key, by id, including
   * expired ones the expiry queue has not deleted yet.
   */
  inspectRequests(key: Uint8Array): StoredRequest[] {
    const prefix = requestKey(key, new Uint8Array());
    const end = Buffer.from(prefix);
    end[end.length - 1] = 1;
    const out: StoredRequest[] = [];
    for (const [id, index, result] of this.get(key)?.requests ?? []) {
      out.push({ key: Buffer.from(key), id: Buffer.from(id), index, result, inline: true });
    }
    for (const { key: k, value } of this.requestsDb.getRange({ start: prefix, end })) {
      const { id } = parseRequestKey(k);
      out.push({ key: Buffer.from(key), id, ...decodeRequest(value), inline: false });
    }
    return out.sort((a, b) => Buffer.compare(a.id, b.id));
  }

  /** For tests and debugging: a range's committed expiry queue, oldest first. */
  inspectExpiry(rangeId: number): Array<{ index: LogIndex; key: Uint8Array; id: Uint8Array }> {
    const out: Array<{ index: LogIndex; key: Uint8Array; id: Uint8Array }> = [];
    for (const k of this.expiryDb.getKeys({
      start: logKey(rangeId, 0),
      end: logKeyEnd(rangeId),
    })) {
      out.push({ index: expiryKeyIndex(k), ...parseRequestKey(k.subarray(12)) });
    }
    return out;
  }

  /**
   * A page of the range's stream of mutation events (docs/streams.md): its events with a
   * revision > afterRevision, ascending, read in ONE read transaction together with the
   * range's state, so `applied` and `oldestRetained` describe exactly the events seen.
   * With `prefix`, only events of keys that start with it, and every split marker. The
   * page stops after `limit` events, before the event that would take its eventBytes over
   * `bytesMax` (but holds at least one), or after examining `examinedMax` stored events
   * (a rare prefix costs a bounded read; `events` may then be empty with `next` moved on);
   * `next` is the revision to continue after, `applied` once the page reached the end.
   * - afterRevision < oldestRetained - 1 (events the reader has not seen were compacted):
   *   {compacted: true, oldestRetained}, never a page with a gap;
   * - afterRevision >= applied (nothing yet, or a cursor from a replica that is ahead):
   *   no events, next = afterRevision.
   * Undefined when the range has no committed state on this node.
   */
  events(
    rangeId: number,
    afterRevision: LogIndex,
    limit: number,
    options: EventsOptions = {},
  ): EventsRead | undefined {
    assert(!this.closed, 'the store is open');
    assert(Number.isSafeInteger(afterRevision) && afterRevision >= 0, 'a revision cursor');
    assert(Number.isSafeInteger(limit) && limit >= 1, 'an events limit is a positive integer');
    const prefix = options.prefix ?? emptyValue;
    const bytesMax = options.bytesMax ?? eventsPageBytesMax;
    const examinedMax = options.examinedMax ?? eventsExaminedMax;
    assert(bytesMax >= 0, 'an events byte budget is not negative');
    assert(Number.isSafeInteger(examinedMax) && examinedMax >= 1, 'examinedMax is positive');
    const transaction = this.root.useReadTransaction();
    try {
      const record = this.readRangeRecord(rangeId, transaction);
      if (record === undefined) return undefined;
      const { applied, eventsOldestRetained: oldestRetained } = record;
      if (afterRevision < oldestRetained - 1) return { compacted: true, oldestRetained, applied };
      const events: StoredEvent[] = [];
      if (afterRevision >= applied) {
        return { compacted: false, events, next: afterRevision, oldestRetained, applied };
      }
      let next = afterRevision;
      let bytes = 0;
      let examined = 0;
      // The range's events up to `applied` are exactly those of the state read here: each
      // is written in the transaction that applies its entry.
      for (const [revision, value] of this.storedEvents(
        rangeId,
        afterRevision,
        applied,
        transaction,
      )) {
        if (events.length === limit || examined === examinedMax) {
          return { compacted: false, events, next, oldestRetained, applied };
        }
        const event = decodeEvent(value);
        if (eventMatches(event, prefix)) {
          const size = eventBytes(event);
          if (events.length > 0 && bytes + size > bytesMax) {
            return { compacted: false, events, next, oldestRetained, applied };
          }
          // Copies: nothing returned points into a buffer LMDB or msgpackr may reuse.
          events.push(copyEvent(event, revision));
          bytes += size;
        }
        examined++;
        next = revision;
      }
      return { compacted: false, events, next: applied, oldestRetained, applied };
    } finally {
      transaction.done();
    }
  }

  /**
   * The range's events with revisions in (after, upTo], ascending, as [revision, encoded
   * event]: the events tree's as `transaction` sees it, then the pending ones after those.
   * A pending event moved to the tree stays in memory until the move is committed, so
   * whether `transaction` sees the move or not, each event is found once.
   */
  private *storedEvents(
    rangeId: number,
    after: LogIndex,
    upTo: LogIndex,
    transaction: ReturnType<RootDatabase['useReadTransaction']>,
  ): Generator<[LogIndex, Buffer]> {
    let last = after;
    for (const { key, value } of this.eventsDb.getRange({
      start: logKey(rangeId, after + 1),
      end: logKey(rangeId, upTo + 1),
      transaction,
    })) {
      last = logKeyIndex(key);
      yield [last, value];
    }
    const p = this.pending.get(rangeId);
    if (p === undefined) return;
    // The first item past `last` (revisions ascend: a fenced incarnation's are older).
    let lo = p.start;
    let hi = p.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (p.revisions[mid]! <= last) lo = mid + 1;
      else hi = mid;
    }
    for (let i = lo; i < p.length; i++) {
      const revision = p.revisions[i]!;
      if (revision > upTo) return;
      yield [revision, this.eventlogRead(rangeId, revision, p.seqs[i]!, transaction)];
    }
  }

  /**
   * For the range's leader: the `upTo` of a compactEvents command (encodeRangeCommand)
   * that keeps the stream's last `retainRevisions` revisions, or undefined while fewer
   * than `batchRevisions` revisions (by default a quarter of the window) have passed out
   * of the window, so a busy range proposes one compaction per batch, not one per entry.
   * Reads the latest applied state; the command itself is what every replica applies.
   */
  eventsToCompact(
    rangeId: number,
    retainRevisions: number,
    batchRevisions: number = Math.max(1, Math.ceil(retainRevisions / 4)),
  ): LogIndex | undefined {
    assert(Number.isSafeInteger(retainRevisions) && retainRevisions >= 0, 'a retention window');
    assert(Number.isSafeInteger(batchRevisions) && batchRevisions >= 1, 'a compaction batch');
    const s = this.rangeStates.get(rangeId);
    assert(s !== undefined, 'events of an existing range are compacted');
    const upTo = s.applied - retainRevisions;
    return upTo - (s.eventsOldestRetained - 1) >= batchRevisions ? upTo : undefined;
  }

  /** The range's replicated history points: the oldest event retained, ids forgotten below. */
  historyPoints(rangeId: number): {
    eventsOldestRetained: LogIndex;
    requestsForgottenBelow: LogIndex;
  } {
    const s = this.rangeStates.get(rangeId);
    assert(s !== undefined, 'history points of an existing range');
    return {
      eventsOldestRetained: s.eventsOldestRetained,
      requestsForgottenBelow: s.requestsForgottenBelow,
    };
  }

  /**
   * For tests and debugging: the revisions of the range's events as stored (the events
   * tree, then the live pending ones), including compacted ones not deleted yet, and the
   * committed oldest retained revision.
   */
  inspectEvents(rangeId: number): { revisions: LogIndex[]; oldestRetained: LogIndex } {
    const s = this.rangeStates.get(rangeId);
    assert(s !== undefined, 'events of an existing range');
    const revisions = Array.from(
      this.eventsDb.getKeys({ start: logKey(rangeId, 0), end: logKeyEnd(rangeId) }),
      logKeyIndex,
    );
    const p = this.pending.get(rangeId);
    if (p !== undefined) {
      for (let i = p.length - p.live; i < p.length; i++) revisions.push(p.revisions[i]!);
    }
    return { revisions, oldestRetained: s.eventsOldestRetained };
  }

  /**
   * For tests and debugging: the records each eventlog tree holds (read from it), and
   * the one new records go to.
   */
  inspectEventlog(): { records: number[]; head: number } {
    const records = this.eventlogDbs.map((db) => db.getKeysCount());
    for (let tree = 0; tree < records.length; tree++) {
      assert(
        records[tree] === (this.eventlogSegments[tree]?.records ?? 0),
        'the eventlog trees hold what the store counts',
      );
    }
    return { records, head: this.eventlogHead };
  }

  /**
   * For tests and debugging: the journal's records (sequence number, range, index), in
   * order, including those no range needs any more that are not deleted yet.
   */
  inspectJournal(): Array<{ seq: number; rangeId: number; index: LogIndex }> {
    return Array.from(this.journalDb.getKeys({}), parseJournalKey);
  }

  /**
   * The state machine of the range's span at its applied index, read in one read
   * transaction. meta.term is the term of the entry at `applied`. It carries the range's
   * retained events (and their oldest revision) too.
   */
  takeSnapshot(rangeId: number): Snapshot {
    const transaction = this.root.useReadTransaction();
    try {
      const s = this.readRangeRecord(rangeId, transaction);
      assert(s !== undefined, 'a snapshot is taken of an existing range');
      const term: Term = s.applied === s.snapshot.index ? s.snapshot.term : s.appliedTerm;
      const records: Array<SnapshotData['records'][number]> = [];
      for (const { key, value } of this.dataDb.getRange({
        ...spanBounds(s.descriptor),
        transaction,
      })) {
        records.push([key, decodeRecord(value)]);
      }
      const requests: Array<SnapshotData['requests'][number]> = [];
      for (const { key, value } of this.requestsDb.getRange({
        ...requestBounds(s.descriptor),
        transaction,
      })) {
        const { key: userKey, id } = parseRequestKey(key);
        const request = decodeRequest(value);
        requests.push([userKey, id, request.index, request.result]);
      }
      const events: Array<SnapshotData['events'][number]> = [];
      for (const [revision, value] of this.storedEvents(
        rangeId,
        s.eventsOldestRetained - 1,
        s.applied,
        transaction,
      )) {
        events.push([revision, eventToWire(decodeEvent(value))]);
      }
      const data: SnapshotData = {
        applied: s.applied,
        descriptor: descriptorToWire(s.descriptor),
        records,
        requests,
        oldestRetained: s.eventsOldestRetained,
        requestsForgottenBelow: s.requestsForgottenBelow,
        events,
      };
      return {
        meta: { index: s.applied, term, config: s.config },
        data: packr.pack(data),
      };
    } finally {
      transaction.done();
    }
  }

  /**
   * Keys in a range's span, and its approximate size: the data database's pages shared out
   * by entries (request records and the log are not counted). For inspection only.
   */
  spanStats(rangeId: number): { keys: number; bytes: number } {
    const s = this.rangeStates.get(rangeId);
    assert(s !== undefined, 'span stats of an existing range');
    const keys = this.dataDb.getKeysCount(spanBounds(s.descriptor));
    const now = performance.now();
    // The data tree's bytes per key, read at most once a second: a report counts thousands
    // of ranges in a row, and the tree's totals move little in a second.
    // (An empty tree's 0 is not kept: the first keys would count as nothing for a second.)
    if (
      this.dataBytesPerKey === undefined ||
      this.dataBytesPerKey.perKey === 0 ||
      now - this.dataBytesPerKey.atMs >= 1000
    ) {
      const st = treeStats(this.dataDb);
      const perKey = st.entries > 0 ? (st.pages * st.pageSize) / st.entries : 0;
      this.dataBytesPerKey = { perKey, atMs: now };
    }
    return { keys, bytes: Math.round(this.dataBytesPerKey.perKey * keys) };
  }

  /**
   * Each LMDB tree's records and pages (branch, leaf, overflow) and depth, for the admin
   * status: what holds the disk and what a write's path through each tree costs.
   */
  trees(): Record<string, { entries: number; pages: number; depth: number }> {
    const out: Record<string, { entries: number; pages: number; depth: number }> = {};
    const dbs: [string, { getStats(): unknown }][] = [
      ['state', this.stateDb],
      ['progress', this.progressDb],
      ['log', this.logDb],
      ['journal', this.journalDb],
      ['data', this.dataDb],
      ['requests', this.requestsDb],
      ['expiry', this.expiryDb],
      ['events', this.eventsDb],
      ...eventlogNames.map((name, i): [string, { getStats(): unknown }] => [
        name,
        this.eventlogDbs[i]!,
      ]),
    ];
    for (const [name, db] of dbs) {
      const { entries, pages, depth } = treeStats(db);
      out[name] = { entries, pages, depth };
    }
    return out;
  }

  /** The middle key of a range's span (a split point by size), when it has two keys or more. */
  medianKey(rangeId: number): Uint8Array | undefined {
    const s = this.rangeStates.get(rangeId);
    assert(s !== undefined, 'the median of an existing range');
    // (lmdb-js's getKeysCount writes `onlyCount` into the options it is given: fresh ones.)
    const keys = this.dataDb.getKeysCount(spanBounds(s.descriptor));
    if (keys < 2) return undefined;
    const middle = Math.floor(keys / 2);
    for (const key of this.dataDb.getKeys({ ...spanBounds(s.descriptor), offset: middle })) {
      return Buffer.from(key);
    }
    return undefined;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    await this.sync();
    this.closed = true;
    await this.root.close();
    fs.rmSync(this.lockFile, { force: true });
  }

  // ------------------------------------------------------------------ turn internals

  /** Runs a turn's ops in one write transaction; see Turn.commit. */
  private commitTurn(ops: readonly TurnOp[]): TurnCommit {
    assert(!this.closed, 'the store is open');
    const mutations = new Map<number, Map<LogIndex, RangeEvent>>();
    const eventsOldest = new Map<number, LogIndex>();
    if (ops.length === 0) {
      const results = Promise.resolve(new Map());
      return { results, mutations, eventsOldest, durable: Promise.resolve() };
    }
    let resolveResults!: (r: Map<number, ApplyResult[]>) => void;
    let rejectResults!: (err: unknown) => void;
    const results = new Promise<Map<number, ApplyResult[]>>((resolve, reject) => {
      resolveResults = resolve;
      rejectResults = reject;
    });
    // An asynchronous lmdb-js (child) transaction: the callback runs on this thread a moment
    // later, inside a write transaction that lmdb-js commits and flushes on its writer
    // thread (batched with other turns' transactions), so the event loop never waits for
    // fsync. Transactions run in call order; a callback that throws is rolled back whole.
    let drops: Array<[PendingRange, LogIndex, number]> = [];
    const calledAtMs = performance.now();
    let bodyEndMs = calledAtMs;
    const committed = this.root.childTransaction(() => {
      const bodyStartMs = performance.now();
      this.stats.txnWaitMs += bodyStartMs - calledAtMs;
      // What the eventlog's trees hold, as of the last commit: a failed body rolls back.
      const eventlogHead = this.eventlogHead;
      const eventlogSegments = this.eventlogSegments.map((x) => x && { ...x });
      try {
        this.turnEvents = { mutations, eventsOldest };
        const applying = new Set<number>();
        for (const op of ops) if (op.kind === 'apply') applying.add(op.rangeId);
        this.turnPending = {
          adds: new Map(),
          resets: new Map(),
          moves: new Map(),
          direct: false,
          fewRanges: applying.size <= this.eventsDirectRanges,
        };
        const byRange = this.runOps(ops);
        drops = this.commitPending();
        resolveResults(byRange);
      } catch (err) {
        this.eventlogHead = eventlogHead;
        this.eventlogSegments = eventlogSegments;
        rejectResults(err);
        throw err;
      } finally {
        this.turnEvents = undefined;
        this.turnPending = undefined;
        bodyEndMs = performance.now();
        this.stats.txnBodyMs += bodyEndMs - bodyStartMs;
      }
    });
    const flushed = flushOfLastWrite(this.root);
    const durable = committed.then(() => {
      this.stats.commits++;
      this.dropPending(drops);
      // The transaction's promise resolves once it is committed; flushed once it is on disk.
      return flushed.then(() => {
        this.stats.flushes++;
        this.stats.turnCommits++;
        this.stats.txnSyncMs += performance.now() - bodyEndMs;
      });
    });
    // A failed turn is reported through `results`; keep `durable` from being unhandled.
    durable.catch(() => {});
    return { results, mutations, eventsOldest, durable };
  }

  /** Where the running turn's body records its events (TurnCommit.mutations, eventsOldest). */
  private turnEvents:
    | {
        readonly mutations: Map<number, Map<LogIndex, RangeEvent>>;
        readonly eventsOldest: Map<number, LogIndex>;
      }
    | undefined;

  /**
   * What the running turn's body did to pending events, applied to `pending` once the
   * body succeeded (commitPending): events added per range, ranges whose events were reset
   * (with the new fence and what the events tree holds), and moves (the revision moved
   * up to, and how many live items went).
   */
  private turnPending:
    | {
        readonly adds: Map<number, { revisions: number[]; seqs: number[]; bytes: Buffer[] }>;
        /** Per range reset: its pending events from before this eventlog seq are fenced. */
        readonly resets: Map<number, number>;
        readonly moves: Map<number, { upTo: LogIndex; items: number }>;
        /** The apply running now writes its range's events to the events tree directly. */
        direct: boolean;
        /** The turn applies entries of few ranges (eventsDirectRanges): all go direct. */
        fewRanges: boolean;
      }
    | undefined;

  /** Writes the event of entry `index` of range `rangeId`, and records it for the turn. */
  private writeEvent(rangeId: number, index: LogIndex, event: RangeEvent): void {
    const bytes = asBuffer(encodeEvent(event));
    const tp = this.turnPending;
    if (tp === undefined || tp.direct) {
      this.eventsDb.putSync(logKey(rangeId, index), bytes);
    } else {
      const seq = this.appendEventlog(rangeId, index, bytes);
      let add = tp.adds.get(rangeId);
      if (add === undefined) tp.adds.set(rangeId, (add = { revisions: [], seqs: [], bytes: [] }));
      add.revisions.push(index);
      add.seqs.push(seq);
      add.bytes.push(bytes);
      this.stats.eventsPended++;
    }
    const mutations = this.turnEvents?.mutations;
    if (mutations === undefined) return;
    let ofRange = mutations.get(rangeId);
    if (ofRange === undefined) mutations.set(rangeId, (ofRange = new Map()));
    ofRange.set(index, event);
  }

  /** Writes a record at the eventlog's head (the next tree once the head is full). */
  private appendEventlog(rangeId: number, index: LogIndex, bytes: Buffer): number {
    const seq = this.nextEventSeq++;
    let head = this.eventlogSegments[this.eventlogHead];
    if (head !== undefined && seq >= head.first + this.eventlogSegmentRecords) {
      this.eventlogHead = (this.eventlogHead + 1) % this.eventlogDbs.length;
      assert(this.eventlogSegments[this.eventlogHead] === undefined, 'the next segment is empty');
      head = undefined;
    }
    this.eventlogDbs[this.eventlogHead]!.putSync(journalKey(seq, rangeId, index), bytes, {
      append: true,
    });
    if (head === undefined) {
      this.eventlogSegments[this.eventlogHead] = { first: seq, last: seq, records: 1 };
    } else {
      head.last = seq;
      head.records++;
    }
    return seq;
  }

  /**
   * A pending event's bytes, from the eventlog (events-pending.ts keeps none): in the
   * running write transaction (a move; the bytes are lmdb-js's shared buffer, valid until
   * its next read), or in a reader's `transaction` (a copy). Its tree is the segment that
   * holds `seq` when memory still says so; a reader's transaction may predate a turn that
   * emptied it (after moving the event), so the other trees and then the events tree are
   * tried: the event is in one of them as every transaction since its own sees it.
   */
  private eventlogRead(
    rangeId: number,
    revision: LogIndex,
    seq: number,
    transaction?: ReturnType<RootDatabase['useReadTransaction']>,
  ): Buffer {
    const key = journalKey(seq, rangeId, revision);
    const n = this.eventlogDbs.length;
    let first = 0;
    for (let t = 0; t < n; t++) {
      const held = this.eventlogSegments[t];
      if (held !== undefined && seq >= held.first && seq <= held.last) first = t;
    }
    for (let i = 0; i < n; i++) {
      const bytes = readBytes(this.eventlogDbs[(first + i) % n]!, key, transaction);
      if (bytes !== undefined) return bytes;
    }
    const moved = readBytes(this.eventsDb, logKey(rangeId, revision), transaction);
    assert(moved !== undefined, 'a pending event is in the eventlog or the events tree');
    return moved;
  }

  /** Records the eventlog takes before it would need a tree still in use (see the header). */
  private eventlogRoom(): number {
    const n = this.eventlogDbs.length;
    const head = this.eventlogSegments[this.eventlogHead];
    let room =
      head === undefined
        ? this.eventlogSegmentRecords
        : Math.max(0, head.first + this.eventlogSegmentRecords - this.nextEventSeq);
    for (let i = 1; i < n; i++) {
      if (this.eventlogSegments[(this.eventlogHead + i) % n] !== undefined) break;
      room += this.eventlogSegmentRecords;
    }
    return room;
  }

  /**
   * Empties the segments, oldest first, whose records are all below `below` (dead: the
   * oldest live pending event is at `below` or after). The head stays.
   */
  private clearEventlog(below: number): void {
    const n = this.eventlogDbs.length;
    for (let i = 1; i < n; i++) {
      const tree = (this.eventlogHead + i) % n;
      const held = this.eventlogSegments[tree];
      if (held === undefined) continue;
      if (held.last >= below) return;
      this.eventlogDbs[tree]!.clearSync();
      this.eventlogSegments[tree] = undefined;
      this.stats.eventlogPurged += held.records;
      this.stats.eventlogSegmentsCleared++;
    }
  }

  /**
   * The range's live pending events as the running turn sees them, oldest first: the
   * committed live ones (none if the turn reset the range), then the turn's adds; the
   * turn's moves took the first `moved` of them.
   */
  private turnView(rangeId: number): {
    p: PendingRange | undefined;
    committed: number;
    add: { revisions: number[]; seqs: number[]; bytes: Buffer[] } | undefined;
    total: number;
    moved: number;
  } {
    const tp = this.turnPending!;
    const p = tp.resets.has(rangeId) ? undefined : this.pending.get(rangeId);
    const committed = p?.live ?? 0;
    const add = tp.adds.get(rangeId);
    const total = committed + (add?.revisions.length ?? 0);
    return { p, committed, add, total, moved: tp.moves.get(rangeId)?.items ?? 0 };
  }

  /** Live pending events of the range not moved yet, as of the running turn. */
  private livePending(rangeId: number): number {
    const v = this.turnView(rangeId);
    return v.total - v.moved;
  }

  /**
   * Moves up to `n` of the range's oldest live pending events (turnView) to the events
   * tree; compacted ones are just dropped. Returns how many went.
   */
  private movePending(rangeId: number, s: Mutable<RangeState>, n: number): number {
    const tp = this.turnPending!;
    const { p, committed, add, total, moved } = this.turnView(rangeId);
    const end = Math.min(total, moved + n);
    let upTo = tp.moves.get(rangeId)?.upTo ?? 0;
    for (let k = moved; k < end; k++) {
      const added = k >= committed;
      const i = added ? k - committed : p!.length - committed + k;
      const revision = added ? add!.revisions[i]! : p!.revisions[i]!;
      upTo = revision;
      // Compacted ones are dropped: no need to read them back.
      if (revision < s.eventsOldestRetained) continue;
      const bytes = added ? add!.bytes[i]! : this.eventlogRead(rangeId, revision, p!.seqs[i]!);
      this.eventsDb.putSync(logKey(rangeId, revision), bytes);
    }
    if (end > moved) tp.moves.set(rangeId, { upTo, items: end });
    this.stats.eventsMoved += end - moved;
    return end - moved;
  }

  /** The eventlog sequence number of the range's oldest live event after the turn's moves. */
  private firstLiveSeq(rangeId: number): number | undefined {
    const { p, committed, add, total, moved } = this.turnView(rangeId);
    if (moved >= total) return undefined;
    return moved < committed
      ? p!.seqs[p!.length - committed + moved]
      : add!.seqs[moved - committed];
  }

  /**
   * Past eventsPendingMax live pending events: moves ranges' live events to the events
   * tree, those whose oldest came first, up to eventsMoveMax in all. Then deletes eventlog
   * records from the front that no range needs (bounded per turn).
   */
  private moveEvents(stateOf: (rangeId: number) => Mutable<RangeState>): void {
    const tp = this.turnPending!;
    let total = this.pendingLive;
    for (const rangeId of tp.resets.keys()) total -= this.pending.get(rangeId)?.live ?? 0;
    for (const add of tp.adds.values()) total += add.revisions.length;
    for (const move of tp.moves.values()) total -= move.items;
    const moving = total > this.eventsPendingMax;
    // The tree after the head holds the oldest segment; when it is in use, every tree is:
    // that segment's live events move now, so that it can be emptied before the head fills.
    const oldest = this.eventlogSegments[(this.eventlogHead + 1) % this.eventlogDbs.length];
    if (!moving && oldest === undefined && tp.resets.size === 0) return;
    const candidates = [...this.pending.keys(), ...tp.adds.keys()];
    if (moving) {
      let moved = 0;
      for (const rangeId of candidates) {
        if (moved >= this.eventsMoveMax) break;
        if (this.livePending(rangeId) === 0) continue;
        moved += this.movePending(rangeId, stateOf(rangeId), this.eventsMoveMax - moved);
      }
    }
    if (oldest !== undefined) {
      for (const rangeId of candidates) {
        const seq = this.firstLiveSeq(rangeId);
        if (seq === undefined || seq > oldest.last) continue;
        this.movePending(rangeId, stateOf(rangeId), Number.POSITIVE_INFINITY);
      }
    }
    // The front: below the oldest live event left, over all ranges.
    let below = this.nextEventSeq;
    for (const rangeId of candidates) {
      const seq = this.firstLiveSeq(rangeId);
      if (seq !== undefined) below = Math.min(below, seq);
    }
    this.clearEventlog(below);
  }

  /**
   * After a successful turn body: its resets, adds and moves reach `pending`. Returns what
   * to drop from memory once the turn's transaction is committed (drops).
   */
  private commitPending(): Array<[PendingRange, LogIndex, number]> {
    const tp = this.turnPending!;
    const drops: Array<[PendingRange, LogIndex, number]> = [];
    for (const [rangeId, fromSeq] of tp.resets) {
      const p = this.pending.get(rangeId);
      if (p === undefined) continue;
      this.pendingLive -= p.live;
      p.live = 0;
      p.fromSeq = fromSeq;
      drops.push([p, 0, fromSeq]);
    }
    for (const [rangeId, add] of tp.adds) {
      let p = this.pending.get(rangeId);
      if (p === undefined) this.pending.set(rangeId, (p = new PendingRange(rangeId)));
      for (let i = 0; i < add.revisions.length; i++) {
        p.push(add.revisions[i]!, add.seqs[i]!);
      }
      this.pendingLive += add.revisions.length;
    }
    for (const [rangeId, { upTo, items }] of tp.moves) {
      const p = this.pending.get(rangeId)!;
      assert(items <= p.live, 'a move takes live pending events of its range');
      this.pendingLive -= items;
      p.live -= items;
      drops.push([p, upTo, p.fromSeq]);
    }
    return drops;
  }

  /** Once a turn's transaction is committed: what it moved or fenced leaves memory. */
  private dropPending(drops: ReadonlyArray<[PendingRange, LogIndex, number]>): void {
    for (const [p, upTo, belowSeq] of drops) {
      p.drop(upTo, belowSeq);
      if (p.empty() && this.pending.get(p.rangeId) === p) this.pending.delete(p.rangeId);
    }
  }

  /** The body of a turn's transaction; runs inside the write transaction. */
  private runOps(ops: readonly TurnOp[]): Map<number, ApplyResult[]> {
    const results = new Map<number, ApplyResult[]>();
    // Working copies: the cache changes only once every op of the turn succeeded.
    const dirty = new Map<number, Mutable<RangeState>>();
    const stateOf = (rangeId: number): Mutable<RangeState> => {
      let s = dirty.get(rangeId);
      if (s === undefined) {
        const committed = this.rangeStates.get(rangeId);
        assert(committed !== undefined, 'turn ops name existing ranges');
        s = copyState(committed);
        dirty.set(rangeId, s);
      }
      return s;
    };
    // Records touched by this turn's applies, decoded once and encoded once per turn.
    const records: RecordCache = new Map();
    const turnFirstSeq = this.nextSeq;
    for (const op of ops) {
      const s = stateOf(op.rangeId);
      switch (op.kind) {
        case 'write':
          // A snapshot replaces data: cached records must reach LMDB before it does.
          if (op.write.snapshot !== null) this.writeRecords(records);
          this.writeOp(s, op.write);
          break;
        case 'apply': {
          let out = results.get(op.rangeId);
          if (out === undefined) results.set(op.rangeId, (out = []));
          this.applyOp(s, op.entries, out, records, (right) => {
            assert(!dirty.has(right.descriptor.rangeId), 'a range is created once');
            dirty.set(right.descriptor.rangeId, right);
          });
          break;
        }
        case 'compact':
          this.compactOp(s, op.meta);
          break;
      }
    }
    this.writeRecords(records);
    this.purgeJournal(turnFirstSeq, stateOf);
    this.moveEvents(stateOf);
    for (const [rangeId, s] of dirty) {
      const before = this.rangeStates.get(rangeId);
      if (
        before === undefined ||
        s.descriptor !== before.descriptor ||
        s.snapshot !== before.snapshot ||
        s.config !== before.config ||
        s.eventsOldestRetained !== before.eventsOldestRetained ||
        s.requestsForgottenBelow !== before.requestsForgottenBelow
      ) {
        this.stateDb.putSync(rangeId, encodeRangeRecord(s));
      }
      // The commit index alone is not worth a write (see the header): a follower's append
      // moves it in nearly every turn, half the progress writes at 256 busy ranges.
      if (
        before === undefined ||
        s.hardState.term !== before.hardState.term ||
        s.hardState.vote !== before.hardState.vote ||
        s.applied !== before.applied ||
        s.appliedTerm !== before.appliedTerm ||
        s.logFromSeq !== before.logFromSeq
      ) {
        this.progressDb.putSync(rangeId, encodeProgress(s));
      }
    }
    for (const [rangeId, s] of dirty) this.rangeStates.set(rangeId, s);
    return results;
  }

  private writeOp(s: Mutable<RangeState>, w: StorageWrite): void {
    assert(w.hardState.term >= s.hardState.term, 'the term never goes back');
    if (w.snapshot !== null) this.installSnapshot(s, w.snapshot);
    s.hardState = w.hardState;
    const first = w.entries[0];
    if (first === undefined) return;
    assert(first.index > s.snapshot.index, 'entries are written after the snapshot point');
    assert(first.index > s.applied, 'an applied entry is never overwritten');
    assert(first.index <= s.log.last + 1, 'entries leave no gap in the log');
    // Entries after the new last one belonged to a conflicting suffix: they are no longer
    // the range's (reading the journal drops them the same way).
    this.appendLog(s, w.entries);
  }

  /**
   * Appends contiguous entries of the range at the journal's end (sequence numbers only
   * grow: each record goes at the end of the tree), replacing any it held from the first.
   */
  private appendLog(s: Mutable<RangeState>, entries: readonly Entry[]): void {
    const rangeId = s.descriptor.rangeId;
    const first = entries[0]!;
    const seq = this.nextSeq;
    // Records of a replaced suffix are no range's now.
    if (first.index <= s.log.last) this.journalChanged = true;
    for (let i = 0; i < entries.length; i++) {
      const e = entries[i]!;
      assert(e.index === first.index + i, 'written entries are contiguous');
      this.journalDb.putSync(journalKey(this.nextSeq++, rangeId, e.index), encodeEntry(e), {
        append: true,
      });
    }
    s.log = s.log.write(first.index, seq, entries.length);
  }

  private applyOp(
    s: Mutable<RangeState>,
    entries: readonly Entry[],
    out: ApplyResult[],
    records: RecordCache,
    created: (right: Mutable<RangeState>) => void,
  ): void {
    const tp = this.turnPending!;
    // A busy range, or any in a turn of few ranges, writes straight to the events tree
    // (its events share pages anyway), after moving what it has pending there first, up to
    // eventsMoveMax per apply: a backlog drains over the next such applies.
    const rangeId = s.descriptor.rangeId;
    tp.direct = false;
    if (tp.fewRanges || entries.length >= this.eventsDirectMin) {
      const live = this.livePending(rangeId);
      tp.direct = live === 0 || this.movePending(rangeId, s, this.eventsMoveMax) === live;
    }
    if (!tp.direct && this.eventlogRoom() < entries.length) {
      // The eventlog's trees are all in use (moveEvents empties the oldest soon): this
      // apply writes directly, after all of the range's pending events.
      this.movePending(rangeId, s, Number.POSITIVE_INFINITY);
      tp.direct = true;
      this.stats.eventlogFull++;
    }
    for (const e of entries) {
      assert(e.index === s.applied + 1, 'entries apply in order, once');
      assert(e.index <= s.log.last, 'applied entries are in the log');
      s.applied = e.index;
      s.appliedTerm = e.term;
      // Per entry, not per turn: replicas batch entries into turns differently.
      this.expire(s, e.index);
      out.push(this.applyEntry(s, e, records, created));
      this.deleteCompactedEvents(s);
    }
  }

  private applyEntry(
    s: Mutable<RangeState>,
    e: Entry,
    records: RecordCache,
    created: (right: Mutable<RangeState>) => void,
  ): ApplyResult {
    if (e.kind !== 'normal') return { ok: true };
    const cmd = decodeCommand(e.data);
    if (cmd?.op === 'split') return this.applySplit(s, e, cmd, created);
    const rangeCmd = cmd === undefined ? decodeRangeCommand(e.data) : undefined;
    if (rangeCmd?.op === 'compactEvents') return this.applyCompactEvents(s, e, rangeCmd.upTo);
    if (rangeCmd?.op === 'forgetRequests') return this.applyForgetRequests(s, e, rangeCmd.below);
    return this.applyNormal(s, e, cmd, records);
  }

  /**
   * compactEvents (commands.ts): events with revision <= upTo are compacted at once (no
   * reader gets them), and deleted a few per applied entry (deleteCompactedEvents). Events
   * only exist up to this entry, so a later upTo compacts up to here. Reads only
   * replicated state: every replica ends at the same eventsOldestRetained.
   */
  private applyCompactEvents(s: Mutable<RangeState>, e: Entry, upTo: LogIndex): ApplyResult {
    const oldest = Math.min(upTo, e.index) + 1;
    if (oldest > s.eventsOldestRetained) {
      s.eventsOldestRetained = oldest;
      this.turnEvents?.eventsOldest.set(s.descriptor.rangeId, oldest);
    }
    return { ok: true };
  }

  /**
   * forgetRequests (commands.ts): the request ids applied below `below` (at most this
   * entry's index) are forgotten at once; the separate records among them are deleted a
   * few per applied entry (expire), inline ones when their key is written next. Reads only
   * replicated state: every replica forgets at the same position.
   */
  private applyForgetRequests(s: Mutable<RangeState>, e: Entry, below: LogIndex): ApplyResult {
    const floor = Math.min(below, e.index);
    if (floor > s.requestsForgottenBelow) s.requestsForgottenBelow = floor;
    return { ok: true };
  }

  /**
   * Deletes up to eventsDeletedPerEntry of the range's compacted events that are still
   * stored (those in [eventsFloor, eventsOldestRetained)), oldest first.
   */
  private deleteCompactedEvents(s: Mutable<RangeState>): void {
    if (s.eventsFloor >= s.eventsOldestRetained) return;
    const rangeId = s.descriptor.rangeId;
    const due = Array.from(
      this.eventsDb.getKeys({
        start: logKey(rangeId, s.eventsFloor),
        end: logKey(rangeId, s.eventsOldestRetained),
        limit: eventsDeletedPerEntry,
      }),
    );
    this.stats.applyReads += due.length;
    for (const key of due) this.eventsDb.removeSync(key);
    const last = due[due.length - 1];
    s.eventsFloor =
      due.length < eventsDeletedPerEntry || last === undefined
        ? s.eventsOldestRetained
        : logKeyIndex(last) + 1;
  }

  /**
   * A split (DESIGN.md, "Split"; docs/ranges.md): the range keeps [start, key), range
   * `rightId` is created over [key, end) with the same replicas and configuration, both at
   * generation + 1, in this transaction. No data moves (keys are global); the request
   * records of the right-hand span move to the new range's expiry queue with their
   * indexes. The new range's log starts at this entry (index and term), so its log
   * positions, and the revisions of its keys, continue the parent's. Every check here
   * reads only the replicated state, so every replica rejects the same splits.
   */
  private applySplit(
    s: Mutable<RangeState>,
    e: Entry,
    cmd: Extract<Command, { op: 'split' }>,
    created: (right: Mutable<RangeState>) => void,
  ): ApplyResult {
    const d = s.descriptor;
    const reject = (why: string): ApplyResult => ({
      ok: false,
      code: 'RangeKeyMismatch',
      msg: `entry ${e.index}: split of range ${d.rangeId} refused: ${why}`,
    });
    if (cmd.generation !== d.generation) {
      return reject(`proposed at generation ${cmd.generation}, the range is at ${d.generation}`);
    }
    if (!inSpan(d, cmd.key) || compareBytes(cmd.key, d.start) === 0) {
      return reject('the split key is not strictly inside the span');
    }
    if (isSystemKey(cmd.key) || compareBytes(cmd.key, systemPrefixEnd) < 0) {
      return reject('the split key is at or before the system keys (they stay in range 1)');
    }
    if (s.config.outgoing.length > 0) return reject('the configuration is joint');
    assert(cmd.rightId !== d.rangeId && cmd.rightId !== metaRangeId, 'a split makes a new id');
    assert(!this.rangeStates.has(cmd.rightId), 'a split never reuses a local range id');
    const generation = d.generation + 1;
    const left = makeDescriptor(d.rangeId, d.start, cmd.key, d.replicas, generation);
    const right = makeDescriptor(cmd.rightId, cmd.key, d.end, d.replicas, generation);
    s.descriptor = left;
    // The parent's stream says where the right-hand span went; the new range's own
    // stream starts after this entry.
    this.writeEvent(d.rangeId, e.index, { op: 'split', left, right });
    let rightExpiryFloor = Number.POSITIVE_INFINITY;
    for (const { key, value } of this.requestsDb.getRange(requestBounds(right))) {
      const index = decodeRequest(value).index;
      this.expiryDb.removeSync(expiryKey(d.rangeId, index, key));
      this.expiryDb.putSync(expiryKey(right.rangeId, index, key), emptyValue);
      rightExpiryFloor = Math.min(rightExpiryFloor, index);
    }
    this.clearEvents(right.rangeId);
    created(
      copyState({
        descriptor: right,
        hardState: { term: e.term, vote: 0, commit: e.index },
        applied: e.index,
        appliedTerm: e.term,
        snapshot: { index: e.index, term: e.term, config: s.config },
        config: s.config,
        // Records an earlier replica of this range id left in the journal are not its log.
        log: LogSeqs.empty(e.index),
        logFromSeq: this.nextSeq,
        eventsOldestRetained: e.index + 1,
        // The moved request records keep their indexes: what the parent forgot stays so.
        requestsForgottenBelow: s.requestsForgottenBelow,
        eventsFloor: e.index + 1,
        expiryFloor: rightExpiryFloor,
      }),
    );
    return { ok: true, split: { left, right } };
  }

  /**
   * Deletes up to expiryPerEntry of the range's expiry queue items that the entry at
   * `index` has put out of the window, with the request records they name.
   */
  private expire(s: Mutable<RangeState>, index: LogIndex): void {
    const horizon = Math.max(index - this.dedupWindowEntries, s.requestsForgottenBelow);
    // Nothing queued below the horizon: no cursor (most keys keep their requests inline).
    if (horizon <= 1 || horizon <= s.expiryFloor) return;
    const rangeId = s.descriptor.rangeId;
    this.stats.expiryScans++;
    // The oldest items, one more than may be deleted: the first one left is the new floor.
    const oldest = Array.from(
      this.expiryDb.getKeys({
        start: logKey(rangeId, 0),
        end: logKeyEnd(rangeId),
        limit: expiryPerEntry + 1,
      }),
    );
    this.stats.applyReads += oldest.length;
    let deleted = 0;
    for (const item of oldest) {
      if (deleted === expiryPerEntry || expiryKeyIndex(item) >= horizon) break;
      const reqKey = item.subarray(12);
      const stored = this.requestsDb.get(reqKey);
      this.stats.applyReads++;
      // The header's invariant makes the check always true today; it keeps a stale item
      // (say, of a span a split has moved to another range) from deleting a newer record,
      // the same way on every replica.
      if (stored !== undefined && decodeRequest(stored).index === expiryKeyIndex(item)) {
        this.requestsDb.removeSync(reqKey);
      }
      this.expiryDb.removeSync(item);
      deleted++;
    }
    const left = oldest[deleted];
    s.expiryFloor = left === undefined ? Number.POSITIVE_INFINITY : expiryKeyIndex(left);
  }

  private applyNormal(
    s: Mutable<RangeState>,
    e: Entry,
    cmd: Command | undefined,
    records: RecordCache,
  ): ApplyResult {
    if (cmd === undefined) {
      return { ok: false, code: 'BadRequest', msg: `entry ${e.index}: undecodable command` };
    }
    const d = s.descriptor;
    if (!inSpan(d, cmd.key)) {
      return {
        ok: false,
        code: 'RangeKeyMismatch',
        msg: `entry ${e.index}: key outside range ${d.rangeId} (generation ${d.generation})`,
      };
    }
    const key = asBuffer(cmd.key);
    const cacheKey = key.toString('latin1');
    let cached = records.get(cacheKey);
    if (cached === undefined) {
      cached = { key, record: this.readRecord(key), dirty: false };
      records.set(cacheKey, cached);
    }
    // A request id is looked up inside the key's record first, then in `requests`. At most
    // one record per (key, id) exists in the two (placeRequests keeps it so).
    const before = cached.record;
    let prior: RequestRecord | undefined;
    let priorReqKey: Buffer | undefined;
    if (cmd.id.length > 0) {
      const inline = before?.requests?.find(([id]) => bytesEqual(id, cmd.id));
      if (inline !== undefined) {
        prior = { index: inline[1], result: inline[2] };
      } else {
        const reqKey = requestKey(key, cmd.id);
        const stored = this.requestsDb.get(reqKey);
        this.stats.applyReads++;
        if (stored !== undefined) {
          prior = decodeRequest(stored);
          priorReqKey = reqKey;
        }
      }
    }
    const outcome = applyCommand(
      cmd,
      e.index,
      before,
      prior,
      this.dedupWindowEntries,
      s.requestsForgottenBelow,
    );
    if (outcome.record === 'unchanged' && outcome.request === undefined) return outcome.result;
    const after = outcome.record === 'unchanged' ? before : outcome.record;
    if (outcome.record !== 'unchanged') {
      const event = mutationEvent(cmd, key, before, outcome.record);
      if (event !== undefined) this.writeEvent(d.rangeId, e.index, event);
    }
    if (priorReqKey !== undefined && prior !== undefined && outcome.request !== undefined) {
      // An expired separate record the queue has not reached yet: replaced below.
      this.requestsDb.removeSync(priorReqKey);
      this.expiryDb.removeSync(expiryKey(d.rangeId, prior.index, priorReqKey));
    }
    cached.record = this.placeRequests(
      s,
      key,
      before,
      after,
      outcome.request === undefined ? undefined : [cmd.id, e.index, outcome.request.result],
      e.index,
    );
    // (A key absent before and after, a failed cas say, has no record to write.)
    if (before !== undefined || cached.record !== undefined) cached.dirty = true;
    return outcome.result;
  }

  /**
   * The key's record after a command at `index` changed its value from `before` to
   * `after` or recorded `request` (or both), with the key's request ids placed: those
   * still remembered stay inline, the new one is appended inline, and the oldest move to
   * `requests` (with an expiry queue item) while the inline ones are over
   * inlineRequestsMax or inlineResultBytesMax. A key without a value after the command
   * keeps none inline: they all move (so a del leaves no tombstone). A request whose
   * result alone is over the byte limit goes to `requests` directly. Deterministic: every
   * replica places the same requests the same way. Invariant kept: at most one record per
   * (key, id), inline or separate (the caller removed a separate prior one).
   */
  private placeRequests(
    s: Mutable<RangeState>,
    key: Buffer,
    before: DataRecord | undefined,
    after: DataRecord | undefined,
    request: InlineRequest | undefined,
    index: LogIndex,
  ): DataRecord | undefined {
    const inline: InlineRequest[] = [];
    for (const q of before?.requests ?? []) {
      // Forgotten: dropped.
      if (!isRemembered(q[1], index, this.dedupWindowEntries, s.requestsForgottenBelow)) continue;
      if (request !== undefined && bytesEqual(q[0], request[0])) continue; // replaced
      inline.push(q);
    }
    if (after === undefined) {
      for (const q of inline) this.putSeparateRequest(s, key, q);
      if (request !== undefined) this.putSeparateRequest(s, key, request);
      return undefined;
    }
    if (request !== undefined) {
      if (resultValueBytes(request[2]) > inlineResultBytesMax) {
        this.putSeparateRequest(s, key, request);
      } else {
        inline.push(request);
      }
    }
    let bytes = 0;
    for (const q of inline) bytes += resultValueBytes(q[2]);
    while (inline.length > inlineRequestsMax || bytes > inlineResultBytesMax) {
      const oldest = inline.shift()!;
      bytes -= resultValueBytes(oldest[2]);
      this.putSeparateRequest(s, key, oldest);
    }
    const { value, revision } = after;
    return inline.length === 0 ? { value, revision } : { value, revision, requests: inline };
  }

  /** Stores a request of `key` in `requests`, queued for expiry at its index. */
  private putSeparateRequest(
    s: Mutable<RangeState>,
    key: Buffer,
    [id, index, result]: InlineRequest,
  ): void {
    const reqKey = requestKey(key, id);
    this.requestsDb.putSync(reqKey, asBuffer(encodeRequest({ index, result })));
    this.expiryDb.putSync(expiryKey(s.descriptor.rangeId, index, reqKey), emptyValue);
    s.expiryFloor = Math.min(s.expiryFloor, index);
  }

  /** Writes the changed cached records (inside the turn's transaction) and forgets them. */
  private writeRecords(records: RecordCache): void {
    for (const cached of records.values()) {
      if (!cached.dirty) continue;
      if (cached.record === undefined) this.dataDb.removeSync(cached.key);
      else this.dataDb.putSync(cached.key, asBuffer(encodeRecord(cached.record)));
    }
    records.clear();
  }

  private compactOp(s: Mutable<RangeState>, meta: SnapshotMeta): void {
    // Compacting to an older point than the current one changes nothing (as in the core).
    if (meta.index <= s.snapshot.index) return;
    assert(meta.index <= s.applied, 'only applied entries are compacted');
    assert(meta.index <= s.log.last, 'compaction stays within the log');
    const seq = s.log.seqOf(meta.index);
    assert(seq !== undefined, 'a compaction point is in the log');
    const stored = this.journalDb.get(journalKey(seq, s.descriptor.rangeId, meta.index));
    assert(stored !== undefined && entryTerm(stored) === meta.term, 'compact meta matches log');
    // The records stay in the journal until purgeJournal (or tidy) reaches them.
    s.log = s.log.compact(meta.index);
    this.journalChanged = true;
    s.snapshot = meta;
  }

  /**
   * Replaces the span's data, the applied index and the whole log with the snapshot, in
   * the turn's transaction. Huge snapshots will need several transactions and a persisted
   * "installing" marker that makes the install restartable (DESIGN.md, "Storage").
   */
  private installSnapshot(
    s: Mutable<RangeState>,
    snapshot: { readonly meta: SnapshotMeta; readonly data: Uint8Array },
  ): void {
    const data = decodeSnapshotData(snapshot.data);
    assert(data.applied === snapshot.meta.index, 'snapshot data matches its meta');
    const rangeId = s.descriptor.rangeId;
    // A snapshot taken after a split carries the shrunk span: this replica never applies
    // the split entry, and the right-hand range reaches this node by a snapshot of its own.
    const incoming = asDescriptor(data.descriptor);
    assert(incoming !== undefined && incoming.rangeId === rangeId, 'a snapshot of this range');
    assert(incoming.generation >= s.descriptor.generation, 'generations never go back');
    // Spans on a node stay disjoint: crash rather than overwrite another range's data.
    for (const other of this.rangeStates.values()) {
      if (other.descriptor.rangeId === rangeId) continue;
      assert(!spansOverlap(other.descriptor, incoming), 'a snapshot overlaps no other local range');
    }
    this.clearSpan(s.descriptor);
    s.descriptor = incoming;
    this.clearExpiry(rangeId);
    for (const [key, record] of data.records) {
      assert(inSpan(s.descriptor, key), 'snapshot records are in the range span');
      this.dataDb.putSync(asBuffer(key), asBuffer(encodeRecord(record)));
    }
    // The expiry queue is rebuilt from the records' indexes: the same queue as the source's.
    s.expiryFloor = Number.POSITIVE_INFINITY;
    for (const [key, id, index, result] of data.requests) {
      assert(inSpan(s.descriptor, key), 'snapshot request records are in the range span');
      this.putSeparateRequest(s, asBuffer(key), [id, index, result]);
    }
    // The range's stream: the retained events, whatever this replica had before.
    this.clearEvents(rangeId);
    for (const [revision, event] of data.events) {
      this.eventsDb.putSync(logKey(rangeId, revision), asBuffer(encodeEvent(event)));
    }
    s.eventsOldestRetained = data.oldestRetained;
    s.requestsForgottenBelow = data.requestsForgottenBelow;
    s.eventsFloor = data.oldestRetained;
    // The whole log goes: its records in the journal are fenced off.
    s.log = LogSeqs.empty(snapshot.meta.index);
    this.journalChanged = true;
    s.logFromSeq = this.nextSeq;
    s.applied = snapshot.meta.index;
    s.appliedTerm = snapshot.meta.term;
    s.snapshot = snapshot.meta;
    s.config = snapshot.meta.config;
  }

  /** Deletes the data and request records of the span (inside the caller's transaction). */
  private clearSpan(d: RangeDescriptor): void {
    const keys = Array.from(this.dataDb.getKeys(spanBounds(d)));
    for (const key of keys) this.dataDb.removeSync(key);
    const requests = Array.from(this.requestsDb.getKeys(requestBounds(d)));
    for (const key of requests) this.requestsDb.removeSync(key);
  }

  /** Deletes a range's expiry queue (inside the caller's write transaction). */
  private clearExpiry(rangeId: number): void {
    const keys = Array.from(
      this.expiryDb.getKeys({ start: logKey(rangeId, 0), end: logKeyEnd(rangeId) }),
    );
    for (const key of keys) this.expiryDb.removeSync(key);
  }

  /**
   * Deletes every stored event of a range (inside the caller's write transaction): the
   * events tree's, and (by a fence) its pending ones.
   */
  private clearEvents(rangeId: number): void {
    const keys = Array.from(
      this.eventsDb.getKeys({ start: logKey(rangeId, 0), end: logKeyEnd(rangeId) }),
    );
    for (const key of keys) this.eventsDb.removeSync(key);
    const tp = this.turnPending;
    if (tp !== undefined) {
      tp.adds.delete(rangeId);
      tp.moves.delete(rangeId);
      tp.resets.set(rangeId, this.nextEventSeq);
    } else {
      // Outside turns (createRange): no range has pending events of this id.
      assert(!this.pending.has(rangeId), 'a range created anew has no pending events');
    }
  }

  /** Entry `index` of the range, stored at journal sequence number `seq`. */
  private journalEntry(rangeId: number, index: LogIndex, seq: number): Entry {
    const stored = this.journalDb.get(journalKey(seq, rangeId, index));
    assert(stored !== undefined, 'a held log entry is in the journal');
    return decodeEntry(index, stored);
  }

  /**
   * Deletes journal records no range needs, up to twice what the turn appended (at least
   * journalPurgeMin; the rest goes in tidy, while the node is idle), and every
   * journalScanRecords records appended (or one per range, if more) finds how far that
   * is: below every range's oldest held entry. A scan visits every range (about 4 ms at
   * 10,000 ranges), so it runs per records appended, not per turn.
   * A range whose oldest entry is more than journalLagMax records behind has its entries
   * written again at the end (at most journalRewriteMax per turn), so a range that keeps
   * a few entries for long (a follower down, so it never quiesces) does not make the
   * journal grow without bound.
   */
  private purgeJournal(
    turnFirstSeq: number,
    stateOf: (rangeId: number) => Mutable<RangeState>,
  ): void {
    const every = Math.max(this.journalScanRecords, this.rangeStates.size);
    if (this.nextSeq - this.scannedAtSeq >= every) this.scanJournal(turnFirstSeq, stateOf);
    const max = Math.max(journalPurgeMin, 2 * (this.nextSeq - turnFirstSeq));
    this.purgeFront(max);
  }

  /**
   * Finds how far the journal's front may be deleted (purgeBelow): below every range's
   * oldest held entry. With `stateOf` (in a turn), a range that holds the front back by
   * more than journalLagMax records has its entries written again at the end first.
   */
  private scanJournal(
    turnFirstSeq: number,
    stateOf?: (rangeId: number) => Mutable<RangeState>,
  ): void {
    this.scannedAtSeq = this.nextSeq;
    // The committed states: a range's oldest held entry only gets newer, and what this
    // turn wrote is at turnFirstSeq or after.
    let below = turnFirstSeq;
    let rewritten = 0;
    for (const [rangeId, committed] of this.rangeStates) {
      let first = committed.log.firstSeq();
      if (first === undefined) continue;
      if (
        stateOf !== undefined &&
        first < this.nextSeq - this.journalLagMax &&
        rewritten < journalRewriteMax
      ) {
        const s = stateOf(rangeId);
        rewritten += this.rewriteLog(s);
        first = s.log.firstSeq();
        if (first === undefined) continue;
      }
      below = Math.min(below, first);
    }
    this.purgeBelow = Math.max(this.purgeBelow, below);
  }

  /**
   * Whether the journal may hold records no range needs that the turns did not delete
   * (tidy): a turn changed some range's log since tidy last scanned, or a scan found more
   * than the turns and tidies deleted.
   */
  tidyDue(): boolean {
    return this.journalChanged || this.purgedTo < this.purgeBelow;
  }

  /**
   * For a node with nothing else to do (docs/architecture.md, "Cleanup after a pause"):
   * deletes journal records no range needs, up to journalTidyMax, in a write transaction
   * of its own. A turn deletes at most twice what it appends, so what a pause made
   * deletable at once (every quiescent range truncates its log) would otherwise be
   * deleted by the turns of the next load. Resolves when the transaction is durable.
   */
  tidy(): Promise<void> {
    assert(!this.closed, 'the store is open');
    const committed = this.root.childTransaction(() => {
      if (this.journalChanged) {
        this.journalChanged = false;
        this.scanJournal(this.nextSeq);
      }
      this.purgeFront(journalTidyMax);
    });
    const flushed = flushOfLastWrite(this.root);
    return committed.then(() => flushed);
  }

  /** Deletes up to `max` journal records below purgeBelow from the front. */
  private purgeFront(max: number): void {
    if (this.purgedTo >= this.purgeBelow) return;
    const purged = purgeFront(this.journalDb, this.purgedTo, this.purgeBelow, max);
    this.stats.journalPurged += purged.deleted;
    this.purgedTo = purged.front;
  }

  /** Writes the range's held entries again at the journal's end; returns how many. */
  private rewriteLog(s: Mutable<RangeState>): number {
    const rangeId = s.descriptor.rangeId;
    const entries = Array.from(s.log.entries(), ([index, seq]) =>
      this.journalEntry(rangeId, index, seq),
    );
    if (entries.length === 0) return 0;
    this.appendLog(s, entries);
    this.stats.journalRewritten += entries.length;
    return entries.length;
  }

  /** A range's committed state record and progress, read in `transaction`. */
  private readRangeRecord(
    rangeId: number,
    transaction: ReturnType<RootDatabase['useReadTransaction']>,
  ): StoredRange | undefined {
    const stored = this.stateDb.get(rangeId, { transaction });
    if (stored === undefined) return undefined;
    return withProgress(decodeRangeRecord(stored), this.progressDb.get(rangeId, { transaction }));
  }

  private readRecord(key: Uint8Array): DataRecord | undefined {
    this.stats.applyReads++;
    return this.get(key);
  }

  private syncInFlight = false;
  private syncWaiters: { resolve: () => void; reject: (err: Error) => void }[] = [];

  /**
   * Resolves once every transaction committed before the call is on disk. Calls while a
   * sync runs wait for the next one (the running one may not cover their commits); the
   * next one covers all of them.
   */
  private sync(): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      this.syncWaiters.push({ resolve, reject });
      if (!this.syncInFlight) this.startSync();
    });
  }

  private startSync(): void {
    const batch = this.syncWaiters;
    this.syncWaiters = [];
    this.syncInFlight = true;
    // lmdb-js has env sync on the root database, missing from its type declarations.
    const root = this.root as unknown as { sync(done: (err?: Error) => void): void };
    root.sync((err?: Error) => {
      this.syncInFlight = false;
      this.stats.flushes++;
      for (const w of batch) {
        if (err) w.reject(err);
        else w.resolve();
      }
      if (this.syncWaiters.length > 0) this.startSync();
    });
  }
}

/**
 * The writes of one event-loop turn, for all ranges, queued in call order and run in one
 * LMDB write transaction by commit(). Per range, the caller follows the core's order:
 * write (log, hard state, snapshot) before applying the entries it made durable.
 */
export class Turn {
  private readonly ops: TurnOp[] = [];
  private committed = false;

  constructor(private readonly run: (ops: readonly TurnOp[]) => TurnCommit) {}

  /** Hard state; entries replace every stored entry from entries[0].index on; a snapshot
   * replaces the span's data, the applied index and the whole log of the range. */
  write(rangeId: number, w: StorageWrite): void {
    assert(!this.committed, 'a turn commits once');
    this.ops.push({ kind: 'write', rangeId, write: w });
  }

  /** Queues applying committed entries; their results come from commit(). */
  apply(rangeId: number, entries: readonly Entry[]): void {
    assert(!this.committed, 'a turn commits once');
    if (entries.length > 0) this.ops.push({ kind: 'apply', rangeId, entries });
  }

  /** Deletes log entries <= meta.index and makes meta the range's snapshot point. */
  compact(rangeId: number, meta: SnapshotMeta): void {
    assert(!this.committed, 'a turn commits once');
    this.ops.push({ kind: 'compact', rangeId, meta });
  }

  isEmpty(): boolean {
    return this.ops.length === 0;
  }

  /**
   * Runs every queued op in ONE synchronous LMDB write transaction. Returns the apply
   * results per range (one per applied entry, in order) and a promise that resolves when
   * the transaction is durable. If an op violates an invariant, nothing of the turn is
   * written and the error propagates.
   */
  commit(): TurnCommit {
    assert(!this.committed, 'a turn commits once');
    this.committed = true;
    return this.run(this.ops);
  }
}
