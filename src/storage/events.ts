// Mutation events: what a range's stream (subscribe, DESIGN.md "Streams") is made of, as
// the store keeps them (docs/streams.md, "Storage of mutation events").
//
// Every applied entry that changed user data leaves one event, stored under the range and
// the entry's log index, its revision, in the apply's own transaction:
//   set  {key, value, prevValue?}   a set, or a cas that succeeded
//   del  {key, prevValue}           a del of a key that existed
// and an applied split leaves a marker in the parent's stream at the split entry:
//   split {left, right}             both new descriptors: the right-hand span continues in
//                                   range right.rangeId after this revision
// `prevValue` is the key's value before the mutation, absent when the key had none. A
// retried request that changed nothing, a failed cas, a del of an absent key and writes of
// system keys (the directory, the range id counter) leave no event.
//
// Events are stored in the binary form of binary.ts (layout 7; layout 6 wrote msgpack maps,
// still read); snapshots and subscribe pages carry them as plain msgpack maps (eventToWire).
// This module encodes, checks and measures them. The store (store.ts) writes, reads and
// compacts them.

import { assert } from '../../ranges/core/assert.ts';
import type { LogIndex } from '../../ranges/core/types.ts';
import { hasPrefix } from '../lib/bytes.ts';
import { isBinary, Reader, Writer } from './binary.ts';
import { compareBytes, isKey, packr } from './commands.ts';
import { asDescriptor, descriptorToWire, type RangeDescriptor } from './descriptor.ts';

/** A set of `key`, or a cas that succeeded. */
export interface SetEvent {
  readonly op: 'set';
  readonly key: Uint8Array;
  readonly value: Uint8Array;
  /** The value before this mutation; absent when the key did not exist. */
  readonly prevValue?: Uint8Array;
}

/** A del of a key that existed. */
export interface DelEvent {
  readonly op: 'del';
  readonly key: Uint8Array;
  /** The deleted value. */
  readonly prevValue: Uint8Array;
}

/**
 * The marker a split leaves in the parent range's stream at the split entry's revision:
 * after it, the parent holds `left`'s span, and the events of `right`'s span continue in
 * range `right.rangeId` (whose first event has a higher revision: its log continues the
 * parent's).
 */
export interface SplitEvent {
  readonly op: 'split';
  readonly left: RangeDescriptor;
  readonly right: RangeDescriptor;
}

export type RangeEvent = SetEvent | DelEvent | SplitEvent;

/** An event with its revision: the log index of the entry that caused it. */
export type StoredEvent = RangeEvent & { readonly revision: LogIndex };

/** Store.events: a page of a range's stream, or the news that the cursor was compacted. */
export type EventsRead =
  | {
      readonly compacted: false;
      /** Events with revision > afterRevision, ascending (split markers always included). */
      readonly events: StoredEvent[];
      /**
       * The revision to continue after: every event of the range up to `next` that matches
       * the prefix is in `events` (or was before `afterRevision`). Never below
       * afterRevision; equal to `applied` when this page reached the end of the stream.
       */
      readonly next: LogIndex;
      /** The oldest revision whose event is still retained (see Store.events). */
      readonly oldestRetained: LogIndex;
      /** The range's applied index in the state this page was read from. */
      readonly applied: LogIndex;
    }
  | {
      /** afterRevision < oldestRetained - 1: events the reader has not seen are gone. */
      readonly compacted: true;
      readonly oldestRetained: LogIndex;
      readonly applied: LogIndex;
    };

/** Options of Store.events. */
export interface EventsOptions {
  /** Only events of keys that start with these bytes (split markers always come). */
  readonly prefix?: Uint8Array;
  /** Stop before the event that would take the page over this many bytes (eventBytes). */
  readonly bytesMax?: number;
  /** Stop after examining this many stored events, matching the prefix or not. */
  readonly examinedMax?: number;
}

/** The default byte budget of a page: well under NATS's default max_payload (1 MiB). */
export const eventsPageBytesMax = 512 * 1024;
/** The default bound on stored events one read examines (a rare prefix costs no more). */
export const eventsExaminedMax = 10_000;
/**
 * Compacted events an applied entry may delete: more than the one event an entry can
 * add, so a compaction's backlog drains while writes go on, and a small constant, so no
 * apply does a burst of deletes. Not more: a load that comes back after a pause longer
 * than the retention finds all of the last load's events due at once, and at 8 per entry
 * its first seconds ran at a third to two thirds of its throughput at 256 ranges
 * (docs/architecture.md, "Cleanup after a pause").
 */
export const eventsDeletedPerEntry = 2;

/** A page's framing per event, generously (map header, field names, revision). */
const eventOverheadBytes = 48;

/** The bytes an event adds to a page (an upper bound of its msgpack size, for budgets). */
export function eventBytes(e: RangeEvent): number {
  switch (e.op) {
    case 'set':
      return eventOverheadBytes + e.key.length + e.value.length + (e.prevValue?.length ?? 0);
    case 'del':
      return eventOverheadBytes + e.key.length + e.prevValue.length;
    case 'split':
      return eventOverheadBytes + descriptorBytes(e.left) + descriptorBytes(e.right);
  }
}

function descriptorBytes(d: RangeDescriptor): number {
  let bytes = 64 + d.start.length + (d.end?.length ?? 0);
  for (const r of d.replicas) bytes += 48 + r.nodeId.length;
  return bytes;
}

/** Whether a reader of `prefix` gets `e`: its key starts with prefix, or it is a marker. */
export function eventMatches(e: RangeEvent, prefix: Uint8Array): boolean {
  return e.op === 'split' || hasPrefix(e.key, prefix);
}

/**
 * The event as a plain map with its fields in one fixed order, so that equal events encode
 * to equal bytes (a snapshot taken of an installed snapshot is the same bytes).
 */
export function eventToWire(e: RangeEvent): RangeEvent {
  switch (e.op) {
    case 'set':
      return e.prevValue === undefined
        ? { op: 'set', key: e.key, value: e.value }
        : { op: 'set', key: e.key, value: e.value, prevValue: e.prevValue };
    case 'del':
      return { op: 'del', key: e.key, prevValue: e.prevValue };
    case 'split':
      return { op: 'split', left: descriptorToWire(e.left), right: descriptorToWire(e.right) };
  }
}

/** Opcodes of the binary event form (binary.ts). */
const eventOps = { set: 1, del: 2, split: 3 } as const;

/** An event as stored (binary.ts); the bytes may come from Buffer's shared pool. */
export function encodeEvent(e: RangeEvent): Uint8Array {
  let w: Writer;
  switch (e.op) {
    case 'set': {
      const prev = e.prevValue === undefined ? 0 : 4 + e.prevValue.length;
      w = new Writer(1 + 2 + e.key.length + 4 + e.value.length + 1 + prev, false);
      w.u8(eventOps.set);
      w.bytes16(e.key);
      w.bytes32(e.value);
      w.u8(e.prevValue === undefined ? 0 : 1);
      if (e.prevValue !== undefined) w.bytes32(e.prevValue);
      break;
    }
    case 'del':
      w = new Writer(1 + 2 + e.key.length + 4 + e.prevValue.length, false);
      w.u8(eventOps.del);
      w.bytes16(e.key);
      w.bytes32(e.prevValue);
      break;
    case 'split': {
      // Rare: the marker keeps its msgpack map (descriptors have a form of their own).
      const packed = packr.pack(eventToWire(e));
      w = new Writer(1 + 4 + packed.length, false);
      w.u8(eventOps.split);
      w.bytes32(packed);
      break;
    }
  }
  return w.done();
}

function decodeBinaryEvent(bytes: Uint8Array): RangeEvent | undefined {
  const r = new Reader(bytes);
  switch (r.u8()) {
    case eventOps.set: {
      const key = r.bytes16();
      const value = r.bytes32();
      const hasPrev = r.u8();
      if (hasPrev > 1) return undefined;
      const e: RangeEvent =
        hasPrev === 1
          ? { op: 'set', key, value, prevValue: r.bytes32() }
          : { op: 'set', key, value };
      return r.end() && isKey(key) ? e : undefined;
    }
    case eventOps.del: {
      const key = r.bytes16();
      const prevValue = r.bytes32();
      return r.end() && isKey(key) ? { op: 'del', key, prevValue } : undefined;
    }
    case eventOps.split: {
      const packed = r.bytes32();
      if (!r.end()) return undefined;
      try {
        const e = asRangeEvent(packr.unpack(packed));
        return e?.op === 'split' ? e : undefined;
      } catch {
        return undefined;
      }
    }
    default:
      return undefined;
  }
}

function isBytes(x: unknown): x is Uint8Array {
  return x instanceof Uint8Array;
}

/** An event checked for shape (untrusted input, e.g. a snapshot), or undefined. */
export function asRangeEvent(x: unknown): RangeEvent | undefined {
  if (typeof x !== 'object' || x === null || Array.isArray(x)) return undefined;
  const r = x as Record<string, unknown>;
  switch (r.op) {
    case 'set':
    case 'del': {
      const { key, value, prevValue } = r;
      if (!isKey(key)) return undefined;
      if (prevValue !== undefined && !isBytes(prevValue)) return undefined;
      if (r.op === 'del') {
        if (value !== undefined || prevValue === undefined) return undefined;
        return { op: 'del', key, prevValue };
      }
      if (!isBytes(value)) return undefined;
      return prevValue === undefined
        ? { op: 'set', key, value }
        : { op: 'set', key, value, prevValue };
    }
    case 'split': {
      const left = asDescriptor(r.left);
      const right = asDescriptor(r.right);
      if (left === undefined || right === undefined || left.end === null) return undefined;
      if (compareBytes(left.end, right.start) !== 0) return undefined;
      return { op: 'split', left, right };
    }
    default:
      return undefined;
  }
}

/** An event this store wrote. */
export function decodeEvent(bytes: Uint8Array): RangeEvent {
  const e = isBinary(bytes) ? decodeBinaryEvent(bytes) : asRangeEvent(packr.unpack(bytes));
  assert(e !== undefined, 'a stored event decodes');
  return e;
}

/** A copy of `e` that shares no buffer with LMDB or msgpackr, with its revision. */
export function copyEvent(e: RangeEvent, revision: LogIndex): StoredEvent {
  switch (e.op) {
    case 'set':
      return e.prevValue === undefined
        ? { revision, op: 'set', key: Buffer.from(e.key), value: Buffer.from(e.value) }
        : {
            revision,
            op: 'set',
            key: Buffer.from(e.key),
            value: Buffer.from(e.value),
            prevValue: Buffer.from(e.prevValue),
          };
    case 'del':
      return { revision, op: 'del', key: Buffer.from(e.key), prevValue: Buffer.from(e.prevValue) };
    case 'split':
      return {
        revision,
        op: 'split',
        left: copyDescriptor(e.left),
        right: copyDescriptor(e.right),
      };
  }
}

function copyDescriptor(d: RangeDescriptor): RangeDescriptor {
  return {
    ...descriptorToWire(d),
    start: Buffer.from(d.start),
    end: d.end === null ? null : Buffer.from(d.end),
  };
}
