// The events tail of a range led here (node.ts, "subscribe"): the newest events of its
// stream, each encoded once in its wire form, so that subscribe polls at the head of the
// stream are answered from memory. Without it, every poll read its page from LMDB,
// decoded, copied and encoded it again: with 100 subscribers in two processes (two polls
// per page), about 12 µs of the leader's CPU per write (profiled).
//
// The leader's turns hand the tail the events their applies wrote (Store's
// TurnCommit.mutations) as the applies run; a poll sees those up to the range's durable
// applied index only, so it never gets an event that is not on disk. A tail starts empty
// at the last apply its node has seen (events up to there are read from LMDB, as before),
// and holds every event of the range after `from` that its node applied since. It is
// bounded (tailItemsMax events, tailBytesMax bytes: the oldest go first), made only for
// ranges that are polled, and dropped when its range stops leading or no poll used it for
// a while (node.ts, expireTails).

import { Packr } from 'msgpackr';
import { assert } from '../../ranges/core/assert.ts';
import type { LogIndex } from '../../ranges/core/types.ts';
import { hasPrefix } from '../lib/bytes.ts';
import { limits, type WireEvent, writeBin, writeUint } from '../protocol/wire.ts';
import { descriptorToWire } from '../storage/descriptor.ts';
import { type DelEvent, eventBytes, type SetEvent } from '../storage/events.ts';
import type { RangeEvent, StoredEvent } from '../storage/store.ts';

/** Events one tail keeps at most: a few hundred ms of a busy range's writes. */
export const tailItemsMax = 1024;
/** Bytes of wire events one tail keeps at most (the newest event is always kept). */
export const tailBytesMax = 512 * 1024;

/** One event of the tail. */
export interface TailItem {
  readonly revision: number;
  /** The event's key, for prefix matching; undefined for a split marker (always sent). */
  readonly key: Uint8Array | undefined;
  /** The event as one element of a page's `events` array (msgpack, docs/protocol.md). */
  readonly bytes: Uint8Array;
  /** What the event counts against a page's byte budget (storage's eventBytes). */
  readonly size: number;
}

/** A page of the tail: `items` match the prefix; continue after `next`. */
export interface TailPage {
  readonly items: TailItem[];
  readonly next: number;
}

export class EventsTail {
  private items: TailItem[] = [];
  /** items[head] is the oldest held (dropping from the front moves head, not the array). */
  private head = 0;
  private bytes = 0;
  /** The last applied entry handed to the tail (with an event or not). */
  private seen: LogIndex;
  /** When a poll last used the tail (for expiry). */
  usedAtMs: number;

  constructor(
    /** Every event with from < revision <= the last seen is held. */
    public from: LogIndex,
    /** The oldest revision the range retains (events before it are compacted). */
    public oldest: LogIndex,
    /** A set event over this many bytes goes without its prevValue (limits.eventBytesMax). */
    private readonly eventBytesMax: number,
    nowMs: number,
  ) {
    this.seen = from;
    this.usedAtMs = nowMs;
  }

  get size(): number {
    return this.items.length - this.head;
  }

  get heldBytes(): number {
    return this.bytes;
  }

  /**
   * Applied entries `first`..`last` of the range, with the events `events` holds for them
   * (by log index); drops the oldest events past the bounds.
   */
  applied(
    first: LogIndex,
    last: LogIndex,
    events: ReadonlyMap<LogIndex, RangeEvent> | undefined,
  ): void {
    assert(first === this.seen + 1 && last >= first, 'applied entries reach the tail in order');
    if (events !== undefined) {
      for (let index = first; index <= last; index++) {
        const event = events.get(index);
        if (event === undefined) continue;
        const item = tailItem(event, index, this.eventBytesMax);
        this.items.push(item);
        this.bytes += item.bytes.length;
      }
    }
    this.seen = last;
    while (this.size > 1 && (this.size > tailItemsMax || this.bytes > tailBytesMax)) {
      const dropped = this.items[this.head++]!;
      this.bytes -= dropped.bytes.length;
      this.from = dropped.revision;
    }
    // Compact the array once the dropped front is as long as what is held.
    if (this.head > 64 && this.head >= this.size) {
      this.items = this.items.slice(this.head);
      this.head = 0;
    }
  }

  /**
   * Whether a poll after `after` can be answered from the tail, when the range's applies
   * are durable up to `durable`: `after` is neither before the tail (nor the retained
   * history) nor past what is durable.
   */
  covers(after: LogIndex, durable: LogIndex): boolean {
    return after >= this.from && after >= this.oldest - 1 && after <= Math.min(durable, this.seen);
  }

  /**
   * The events after `after` up to `durable` whose key starts with `prefix` (and every
   * split marker), at most `limit`, stopping before the one that would take the page's
   * size over `bytesMax` (a page holds at least one). `next` is the last revision looked
   * at, or the end when the page reached it: as Store.events pages are.
   */
  page(
    after: LogIndex,
    durable: LogIndex,
    limit: number,
    prefix: Uint8Array,
    bytesMax: number,
  ): TailPage {
    assert(this.covers(after, durable), 'a tail page starts inside the tail');
    const end = Math.min(durable, this.seen);
    const items: TailItem[] = [];
    // The first held event after `after`.
    let lo = this.head;
    let hi = this.items.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (this.items[mid]!.revision <= after) lo = mid + 1;
      else hi = mid;
    }
    let next = after;
    let size = 0;
    for (let i = lo; i < this.items.length; i++) {
      const item = this.items[i]!;
      if (item.revision > end) break;
      if (items.length === limit) return { items, next };
      if (item.key === undefined || hasPrefix(item.key, prefix)) {
        if (items.length > 0 && size + item.size > bytesMax) return { items, next };
        items.push(item);
        size += item.size;
      }
      next = item.revision;
    }
    return { items, next: end };
  }
}

const packr = new Packr({ useRecords: false, mapsAsObjects: true, moreTypes: false });

/** The msgpack encoding of `x` (for the constant parts of a reply). */
function packed(x: unknown): Buffer {
  return Buffer.from(packr.pack(x));
}

function arrayHeader(n: number): Buffer {
  if (n < 16) return Buffer.from([0x90 | n]);
  if (n < 0x10000) return Buffer.from([0xdc, n >> 8, n & 0xff]);
  const b = Buffer.alloc(5);
  b[0] = 0xdd;
  b.writeUInt32BE(n, 1);
  return b;
}

const afterName = packed('after');
const oldestName = packed('oldest');

/**
 * The reply to a request whose only op was an events op, answered from a tail page:
 * the bytes of `encode({ ...envelope, res: [{ ok: true, events, after, oldest }] })`
 * (protocol/wire.ts) with the events' encodings copied in, not encoded again.
 * `envelope` is the reply's fields before `res` (v, cid, node).
 */
export class TailReplyEncoder {
  private readonly prefix: Buffer;

  constructor(envelope: Readonly<Record<string, string | number>>) {
    const fields = Object.entries(envelope);
    assert(fields.length + 1 < 16, 'a small envelope');
    this.prefix = Buffer.concat([
      Buffer.from([0x80 | (fields.length + 1)]),
      ...fields.flatMap(([k, v]) => [packed(k), packed(v)]),
      packed('res'),
      // res: one result, a map of four: ok, events, after, oldest.
      Buffer.from([0x91, 0x84]),
      packed('ok'),
      packed(true),
      packed('events'),
    ]);
  }

  encode(items: readonly TailItem[], after: number, oldest: number): Buffer {
    const parts: Uint8Array[] = [this.prefix, arrayHeader(items.length)];
    for (const item of items) parts.push(item.bytes);
    parts.push(afterName, packed(after), oldestName, packed(oldest));
    return Buffer.concat(parts);
  }
}

/**
 * An event of revision `revision` as the tail holds it: its element of a page's `events`
 * array, the wire form (protocol/wire.ts WireEvent, docs/protocol.md) in msgpack, exactly
 * the bytes msgpackr makes of it; `key` is a view of the key inside those bytes.
 *
 * Sets and dels, nearly every event, are written field by field into a slab (writeEvent):
 * msgpackr's path (spread the event into a wire object, pack it, copy its key out) took
 * about 2.8 µs per event in a micro-benchmark, this about 0.3 µs. Split markers go through
 * msgpackr (toWireEvent, as pages read from the store). Neither writes over bytes it returned (msgpackr moves on in
 * its buffer and takes a new one when that is full, as the slab does), so the tail keeps
 * them where they were written. (The events-tail tests in test/unit/events-storage.test.ts
 * decode held events after thousands of later encodings: an encoder that reused its buffer
 * would fail them.)
 */
export function tailItem(event: RangeEvent, revision: LogIndex, eventBytesMax: number): TailItem {
  const size = eventBytes(event);
  if (event.op === 'split') {
    const bytes = packr.pack(toWireEvent({ ...event, revision }, eventBytesMax));
    return { revision, key: undefined, bytes, size };
  }
  return writeEvent(event, revision, omitsPrevValue(event, size, eventBytesMax), size);
}

/**
 * A stored event as it goes on the wire. A set whose key, value and prevValue would pass
 * eventBytesMax goes without its prevValue, flagged, so any event fits one reply.
 */
export function toWireEvent(e: StoredEvent, eventBytesMax = limits.eventBytesMax): WireEvent {
  switch (e.op) {
    case 'set':
      if (e.prevValue === undefined) {
        return { revision: e.revision, op: 'set', key: e.key, value: e.value };
      }
      if (omitsPrevValue(e, eventBytes(e), eventBytesMax)) {
        return {
          revision: e.revision,
          op: 'set',
          key: e.key,
          value: e.value,
          prevValueOmitted: true,
        };
      }
      return {
        revision: e.revision,
        op: 'set',
        key: e.key,
        value: e.value,
        prevValue: e.prevValue,
      };
    case 'del':
      return { revision: e.revision, op: 'del', key: e.key, prevValue: e.prevValue };
    case 'split':
      return {
        revision: e.revision,
        op: 'split',
        left: descriptorToWire(e.left),
        right: descriptorToWire(e.right),
      };
  }
}

/** Whether event `e`, of eventBytes `size`, goes on the wire without its prevValue. */
function omitsPrevValue(e: RangeEvent, size: number, eventBytesMax: number): boolean {
  return e.op === 'set' && e.prevValue !== undefined && size > eventBytesMax;
}

/** Slabs the field-by-field encoder writes into; a new one when the current is full. */
const slabBytes = 64 * 1024;
let slab = Buffer.allocUnsafeSlow(slabBytes);
let slabAt = 0;

const revisionName = packed('revision');
const opSet = Buffer.concat([packed('op'), packed('set')]);
const opDel = Buffer.concat([packed('op'), packed('del')]);
const keyName = packed('key');
const valueName = packed('value');
const prevValueName = packed('prevValue');
const prevValueOmittedTrue = Buffer.concat([packed('prevValueOmitted'), Buffer.from([0xc3])]);

/** A bin header's bytes for `n` bytes. */
const binHeaderBytes = (n: number) => (n < 0x100 ? 2 : n < 0x10000 ? 3 : 5);

function writeEvent(
  e: SetEvent | DelEvent,
  revision: LogIndex,
  omitted: boolean,
  size: number,
): TailItem {
  const prev = e.prevValue;
  const value = e.op === 'set' ? e.value : undefined;
  let n = 3 + revisionName.length + 9 + opSet.length + keyName.length;
  n += binHeaderBytes(e.key.length) + e.key.length;
  if (value !== undefined) n += valueName.length + binHeaderBytes(value.length) + value.length;
  if (omitted) n += prevValueOmittedTrue.length;
  else if (prev !== undefined)
    n += prevValueName.length + binHeaderBytes(prev.length) + prev.length;
  if (slabAt + n > slab.length) {
    slab = Buffer.allocUnsafeSlow(Math.max(slabBytes, n));
    slabAt = 0;
  }
  const b = slab;
  const start = slabAt;
  let at = start;
  // A map of 3 to 5 fields, in toWireEvent's order; map16, as msgpackr writes objects.
  const fields = 3 + (value !== undefined ? 1 : 0) + (omitted || prev !== undefined ? 1 : 0);
  b[at++] = 0xde;
  b[at++] = 0;
  b[at++] = fields;
  at += revisionName.copy(b, at);
  at = writeUint(b, at, revision);
  at += (e.op === 'set' ? opSet : opDel).copy(b, at);
  at += keyName.copy(b, at);
  at = writeBin(b, at, e.key);
  const keyAt = at - e.key.length;
  if (value !== undefined) {
    at += valueName.copy(b, at);
    at = writeBin(b, at, value);
  }
  if (omitted) at += prevValueOmittedTrue.copy(b, at);
  else if (prev !== undefined) {
    at += prevValueName.copy(b, at);
    at = writeBin(b, at, prev);
  }
  slabAt = at;
  return {
    revision,
    key: b.subarray(keyAt, keyAt + e.key.length),
    bytes: b.subarray(start, at),
    size,
  };
}

/** An event's wire form in msgpack, through msgpackr (tests compare tailItem with it). */
export function encodeTailEvent(e: WireEvent): Uint8Array {
  return packr.pack(e);
}
