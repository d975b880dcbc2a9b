// Range descriptors and the meta directory's keys (DESIGN.md, "Ranges, the directory and
// splits"; docs/ranges.md).
//
// A descriptor says which span [start, end) a range owns, on which replicas, at which
// generation. The descriptor stored with a range's state on each replica is the
// authority; the meta directory, a copy of every descriptor under the reserved system
// prefix inside the first range, may lag behind it.
//
// System keys (never writable by clients; readable with get and scan):
//   <sys>range/<rangeId u32 BE>  -> descriptor (plain msgpack map)
//   <sys>next-range-id           -> u32 BE: the last range id handed out
// where <sys> is systemPrefix. The first range always starts at the empty key and no split
// key may lie in the system prefix, so the whole directory stays in the first range.

import { ownBytes } from '../lib/bytes.ts';
import { compareBytes, packr } from './commands.ts';

export interface ReplicaDescriptor {
  readonly nodeId: string;
  readonly replicaId: number;
  readonly role: 'voter' | 'learner';
}

export interface RangeDescriptor {
  readonly rangeId: number;
  /** Inclusive. The empty key is the start of the keyspace. */
  readonly start: Uint8Array;
  /** Exclusive; null = no end. */
  readonly end: Uint8Array | null;
  readonly replicas: readonly ReplicaDescriptor[];
  readonly generation: number;
}

/**
 * A descriptor. Every descriptor is made here, so all of them have one hidden class in V8:
 * made by object literals at several places (a spread among them), they had half a dozen,
 * and the span checks of every request (inSpan, findSpan) read `start` and `end` through
 * megamorphic inline caches once a node held more than one range.
 */
export function makeDescriptor(
  rangeId: number,
  start: Uint8Array,
  end: Uint8Array | null,
  replicas: readonly ReplicaDescriptor[],
  generation: number,
): RangeDescriptor {
  return { rangeId, start, end, replicas, generation };
}

/** The reserved prefix of system keys: 0x00 "sys/". */
export const systemPrefix: Uint8Array = Buffer.from([0x00, 0x73, 0x79, 0x73, 0x2f]);
/** The first key after every system key. */
export const systemPrefixEnd: Uint8Array = Buffer.from([0x00, 0x73, 0x79, 0x73, 0x30]);
/** The meta range: the first range, which holds the directory. */
export const metaRangeId = 1;
export const rangeIdMax = 0xffff_fffe;

const directoryPrefix = Buffer.concat([systemPrefix, Buffer.from('range/')]);
/** Directory keys: [directoryStart, directoryEnd). */
export const directoryStart: Uint8Array = directoryPrefix;
export const directoryEnd: Uint8Array = Buffer.concat([systemPrefix, Buffer.from('range0')]);
export const rangeIdCounterKey: Uint8Array = Buffer.concat([
  systemPrefix,
  Buffer.from('next-range-id'),
]);

/** The system records the first range starts with: its own directory entry and the id counter. */
export function bootstrapRecords(first: RangeDescriptor): [Uint8Array, Uint8Array][] {
  return [
    [directoryKey(first.rangeId), encodeDescriptor(first)],
    [rangeIdCounterKey, encodeCounter(first.rangeId)],
  ];
}

export function isSystemKey(key: Uint8Array): boolean {
  if (key.length < systemPrefix.length) return false;
  for (let i = 0; i < systemPrefix.length; i++) if (key[i] !== systemPrefix[i]) return false;
  return true;
}

/** The directory key of a range id. */
export function directoryKey(rangeId: number): Uint8Array {
  const key = Buffer.alloc(directoryPrefix.length + 4);
  directoryPrefix.copy(key, 0);
  key.writeUInt32BE(rangeId, directoryPrefix.length);
  return key;
}

/** The range id of a directory key, or undefined for another key. */
export function directoryKeyRangeId(key: Uint8Array): number | undefined {
  if (key.length !== directoryPrefix.length + 4) return undefined;
  for (let i = 0; i < directoryPrefix.length; i++)
    if (key[i] !== directoryPrefix[i]) return undefined;
  return Buffer.from(key.buffer, key.byteOffset, key.length).readUInt32BE(directoryPrefix.length);
}

export function encodeCounter(n: number): Uint8Array {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n, 0);
  return b;
}

export function decodeCounter(bytes: Uint8Array): number | undefined {
  if (bytes.length !== 4) return undefined;
  return Buffer.from(bytes.buffer, bytes.byteOffset, 4).readUInt32BE(0);
}

/** Whether d's span [start, end) holds `key` (d: a descriptor, or anything with a span). */
export function inSpan(d: Pick<RangeDescriptor, 'start' | 'end'>, key: Uint8Array): boolean {
  return compareBytes(key, d.start) >= 0 && (d.end === null || compareBytes(key, d.end) < 0);
}

/**
 * The item whose span holds `key`, in items sorted by start with disjoint spans (a node's
 * ranges, a client's range cache); binary search.
 */
export function findSpan<T>(
  sorted: readonly T[],
  key: Uint8Array,
  spanOf: (item: T) => Pick<RangeDescriptor, 'start' | 'end'>,
): T | undefined {
  // The last item starting at or before key (one comparison a step, where checking the
  // span at every step took two), then its end.
  let lo = 0;
  let hi = sorted.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (compareBytes(key, spanOf(sorted[mid]!).start) < 0) hi = mid;
    else lo = mid + 1;
  }
  if (lo === 0) return undefined;
  const item = sorted[lo - 1]!;
  const end = spanOf(item).end;
  return end === null || compareBytes(key, end) < 0 ? item : undefined;
}

/**
 * Spans that change are packed again at most this often (PackedSpans' users): a split
 * storm changes a node's descriptors, and a client learning thousands of ranges its cache,
 * faster than packing them all each time would be worth. Meanwhile they look up spans
 * unpacked.
 */
export const packSpansEveryMs = 1000;

/**
 * A value made from spans that change (PackedSpans and what goes with them), made again
 * on the first `get` after `invalidate`, at most every packSpansEveryMs: `get` answers
 * undefined meanwhile, and the caller searches the spans unpacked. Node and client both
 * keep their packed spans in one.
 */
export class Repacked<T> {
  private value: T | undefined;
  private madeAtMs = Number.NEGATIVE_INFINITY;

  constructor(private readonly make: () => T) {}

  get(): T | undefined {
    if (this.value === undefined) {
      const now = performance.now();
      if (now - this.madeAtMs < packSpansEveryMs) return undefined;
      this.madeAtMs = now;
      this.value = this.make();
    }
    return this.value;
  }

  invalidate(): void {
    this.value = undefined;
  }
}

/**
 * Sorted disjoint spans (as findSpan takes them) with their keys packed for lookups: every
 * start key in one buffer and every end key in another (an empty slot for no end, told
 * apart by `open`), with the offsets of each. `find`'s binary search then reads a few
 * kilobytes that stay in the CPU's caches. Reading each span's own key buffers touched
 * some two dozen places in memory a lookup over 256 ranges, most of them out of cache
 * when every lookup is for another range (docs/architecture.md, "Lookups over packed
 * keys"). Immutable: made again when the spans change.
 */
export class PackedSpans {
  private readonly starts: Uint8Array;
  private readonly startAt: Int32Array;
  private readonly ends: Uint8Array;
  private readonly endAt: Int32Array;
  private readonly open: Uint8Array;
  /**
   * Each start key's first 8 bytes (zero-padded), as two big-endian words: `find` compares
   * those numbers first and the bytes only on a tie. Over 256 spans of keys that differ
   * in their first 8 bytes, a lookup took about a tenth of a microsecond comparing bytes.
   */
  private readonly startHi: Uint32Array;
  private readonly startLo: Uint32Array;

  constructor(sorted: readonly Pick<RangeDescriptor, 'start' | 'end'>[]) {
    const n = sorted.length;
    this.startHi = new Uint32Array(n);
    this.startLo = new Uint32Array(n);
    this.startAt = new Int32Array(n + 1);
    this.endAt = new Int32Array(n + 1);
    this.open = new Uint8Array(n);
    for (let i = 0; i < n; i++) {
      const s = sorted[i]!;
      this.startAt[i + 1] = this.startAt[i]! + s.start.length;
      this.endAt[i + 1] = this.endAt[i]! + (s.end === null ? 0 : s.end.length);
      this.open[i] = s.end === null ? 1 : 0;
      this.startHi[i] = word(s.start, 0);
      this.startLo[i] = word(s.start, 4);
    }
    this.starts = new Uint8Array(this.startAt[n]!);
    this.ends = new Uint8Array(this.endAt[n]!);
    for (let i = 0; i < n; i++) {
      const s = sorted[i]!;
      this.starts.set(s.start, this.startAt[i]!);
      if (s.end !== null) this.ends.set(s.end, this.endAt[i]!);
    }
  }

  /** Whether the span at position i holds `key` (inSpan). */
  holdsAt(i: number, key: Uint8Array): boolean {
    return (
      compareSlice(key, this.starts, this.startAt[i]!, this.startAt[i + 1]!) >= 0 &&
      (this.open[i] === 1 || compareSlice(key, this.ends, this.endAt[i]!, this.endAt[i + 1]!) < 0)
    );
  }

  /** The position of the span holding `key`, or -1 (findSpan's search and answer). */
  find(key: Uint8Array): number {
    const at = this.startAt;
    const keyHi = word(key, 0);
    const keyLo = word(key, 4);
    let lo = 0;
    let hi = this.open.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      // Keys whose padded first 8 bytes differ are ordered as those bytes are (a shorter
      // key's padding sorts it first, as compareBytes does); equal ones are compared whole.
      let c = keyHi - this.startHi[mid]!;
      if (c === 0) c = keyLo - this.startLo[mid]!;
      if (c === 0) c = compareSlice(key, this.starts, at[mid]!, at[mid + 1]!);
      if (c < 0) hi = mid;
      else lo = mid + 1;
    }
    const i = lo - 1;
    if (i < 0) return -1;
    return this.open[i] === 1 ||
      compareSlice(key, this.ends, this.endAt[i]!, this.endAt[i + 1]!) < 0
      ? i
      : -1;
  }
}

/** Bytes [from, from + 4) of `b` as a big-endian unsigned word, zero past its end. */
function word(b: Uint8Array, from: number): number {
  const n = b.length;
  return (
    (from < n ? b[from]! : 0) * 0x100_0000 +
    (((from + 1 < n ? b[from + 1]! : 0) << 16) |
      ((from + 2 < n ? b[from + 2]! : 0) << 8) |
      (from + 3 < n ? b[from + 3]! : 0))
  );
}

/** compareBytes(key, bytes[from, to)). */
function compareSlice(key: Uint8Array, bytes: Uint8Array, from: number, to: number): number {
  const len = to - from;
  const n = Math.min(key.length, len);
  for (let i = 0; i < n; i++) {
    const d = key[i]! - bytes[from + i]!;
    if (d !== 0) return d;
  }
  return key.length - len;
}

export function spansOverlap(
  a: Pick<RangeDescriptor, 'start' | 'end'>,
  b: Pick<RangeDescriptor, 'start' | 'end'>,
): boolean {
  const aBeforeB = a.end !== null && compareBytes(a.end, b.start) <= 0;
  const bBeforeA = b.end !== null && compareBytes(b.end, a.start) <= 0;
  return !aBeforeB && !bBeforeA;
}

/** A descriptor as a plain map (msgpack-able by any implementation). */
export function descriptorToWire(d: RangeDescriptor): RangeDescriptor {
  return makeDescriptor(
    d.rangeId,
    d.start,
    d.end,
    d.replicas.map((r) => ({ nodeId: r.nodeId, replicaId: r.replicaId, role: r.role })),
    d.generation,
  );
}

export function encodeDescriptor(d: RangeDescriptor): Uint8Array {
  return packr.pack(descriptorToWire(d));
}

/** A descriptor checked for shape (untrusted input), or undefined. */
export function asDescriptor(x: unknown): RangeDescriptor | undefined {
  if (typeof x !== 'object' || x === null) return undefined;
  const r = x as Record<string, unknown>;
  const isU32 = (n: unknown): n is number =>
    typeof n === 'number' && Number.isInteger(n) && n >= 0 && n <= rangeIdMax;
  if (!isU32(r.rangeId) || r.rangeId === 0) return undefined;
  if (!(r.start instanceof Uint8Array)) return undefined;
  if (r.end !== null && !(r.end instanceof Uint8Array)) return undefined;
  if (r.end !== null && compareBytes(r.start, r.end as Uint8Array) >= 0) return undefined;
  if (typeof r.generation !== 'number' || !Number.isSafeInteger(r.generation)) return undefined;
  if (r.generation < 1) return undefined;
  if (!Array.isArray(r.replicas) || r.replicas.length === 0 || r.replicas.length > 64) {
    return undefined;
  }
  const replicas: ReplicaDescriptor[] = [];
  let signature = '';
  for (const x of r.replicas as unknown[]) {
    if (typeof x !== 'object' || x === null) return undefined;
    const p = x as Record<string, unknown>;
    if (typeof p.nodeId !== 'string' || p.nodeId.length === 0 || p.nodeId.length > 64) {
      return undefined;
    }
    if (!isU32(p.replicaId) || p.replicaId === 0) return undefined;
    if (p.role !== 'voter' && p.role !== 'learner') return undefined;
    replicas.push({ nodeId: p.nodeId, replicaId: p.replicaId, role: p.role });
    signature += `${p.nodeId}\0${p.replicaId}\0${p.role}\0`;
  }
  // Copies of the keys: decoded bytes are views into the whole message or page they came
  // in, which a descriptor (kept as long as its range) would keep alive (and not into a
  // shared pool either: lib/bytes.ts).
  return makeDescriptor(
    r.rangeId,
    ownBytes(r.start),
    r.end === null ? null : ownBytes(r.end as Uint8Array),
    internReplicas(signature, replicas),
    r.generation,
  );
}

/**
 * Replica lists by their contents: thousands of ranges share a few replica sets, and each
 * descriptor is held in several places (the range, the store, the node's index, the
 * placement driver), so each of them holding its own list cost about 180 bytes a copy.
 * The lists are frozen: nobody changes a descriptor's replicas in place.
 */
const internedReplicas = new Map<string, readonly ReplicaDescriptor[]>();
const internedReplicasMax = 4096;

function internReplicas(
  signature: string,
  replicas: ReplicaDescriptor[],
): readonly ReplicaDescriptor[] {
  const known = internedReplicas.get(signature);
  if (known !== undefined) return known;
  if (internedReplicas.size >= internedReplicasMax) internedReplicas.clear();
  for (const r of replicas) Object.freeze(r);
  const list = Object.freeze(replicas);
  internedReplicas.set(signature, list);
  return list;
}

/** Whether two descriptors say the same thing (id, generation, span and replicas). */
export function sameDescriptor(a: RangeDescriptor, b: RangeDescriptor): boolean {
  if (a === b) return true;
  if (a.rangeId !== b.rangeId || a.generation !== b.generation) return false;
  if (compareBytes(a.start, b.start) !== 0) return false;
  if (a.end === null || b.end === null ? a.end !== b.end : compareBytes(a.end, b.end) !== 0) {
    return false;
  }
  if (a.replicas === b.replicas) return true;
  if (a.replicas.length !== b.replicas.length) return false;
  return a.replicas.every((r, i) => {
    const o = b.replicas[i]!;
    return r.nodeId === o.nodeId && r.replicaId === o.replicaId && r.role === o.role;
  });
}

export function decodeDescriptor(bytes: Uint8Array): RangeDescriptor | undefined {
  try {
    return asDescriptor(packr.unpack(bytes));
  } catch {
    return undefined;
  }
}

/** "[start, end)" for logs and errors: printable keys as text, others as hex. */
export function showSpan(d: Pick<RangeDescriptor, 'start' | 'end'>): string {
  return `[${showKey(d.start)}, ${d.end === null ? '∞' : showKey(d.end)})`;
}

export function showKey(key: Uint8Array): string {
  if (key.length === 0) return "''";
  const b = Buffer.from(key.buffer, key.byteOffset, key.length);
  const printable = b.every((c) => c >= 0x20 && c < 0x7f);
  return printable ? JSON.stringify(b.toString('latin1')) : `0x${b.toString('hex')}`;
}
