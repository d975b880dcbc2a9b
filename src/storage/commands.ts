// The replicated KV state machine: the commands carried in `normal` log entries and the
// pure function that applies one of them to the record of the key it touches.
//
// Determinism: every replica applies the same entries to the same records and must reach
// the same records and results, so nothing here reads a clock, a random source or any state
// but the records handed in and the entry's index. Undecodable bytes are a deterministic
// error result.
//
// At most once (DESIGN.md, "Client semantics"): an applied request id and its first result
// are kept under the user key: the key's few most recent ones inside its data record
// (DataRecord.requests), older ones, big results and those of absent keys in a request
// record of their own next to the key (store.ts), so a hot key's cost per command does not
// grow with the requests it has seen. Request records expire by log position, never by a
// replica's clock: a command at index i treats as forgotten the requests recorded before
// i - dedupWindowEntries, and those before the range's forgetRequests point (a replicated
// command whose position the leader picks by its clock, --dedup-window-s). The store drops
// forgotten ones from a data record when it rewrites it, and deletes the separate ones a
// few per applied entry.

import { Packr } from 'msgpackr';
import { assert } from '../../ranges/core/assert.ts';
import type { LogIndex } from '../../ranges/core/types.ts';
import { isBinary, Reader, Writer } from './binary.ts';
import type { RangeDescriptor } from './descriptor.ts';

export type Command =
  | {
      readonly op: 'set';
      readonly key: Uint8Array;
      readonly value: Uint8Array;
      readonly id: Uint8Array;
    }
  | {
      readonly op: 'cas';
      readonly key: Uint8Array;
      /** null expects the key to be absent. */
      readonly expect: Uint8Array | null;
      readonly value: Uint8Array;
      readonly id: Uint8Array;
    }
  | { readonly op: 'del'; readonly key: Uint8Array; readonly id: Uint8Array }
  /** System: hands out the next range id (key: the counter's system key). */
  | { readonly op: 'alloc'; readonly key: Uint8Array; readonly id: Uint8Array }
  /**
   * System: a conditional directory write (key: the range's directory key, value: its
   * encoded descriptor); applies only over an absent entry or one of a lower generation.
   */
  | {
      readonly op: 'desc';
      readonly key: Uint8Array;
      readonly value: Uint8Array;
      readonly generation: number;
      readonly id: Uint8Array;
    }
  /**
   * A split of the range at `key` (DESIGN.md, "Split"), proposed under `generation`; the
   * right-hand side becomes range `rightId`. Applied by the store, not by applyCommand.
   */
  | {
      readonly op: 'split';
      readonly key: Uint8Array;
      readonly generation: number;
      readonly rightId: number;
      readonly id: Uint8Array;
    };

/**
 * A command about the range itself rather than a key, applied by the store, the same on
 * every replica (store.ts). Encoded apart from Command (encodeRangeCommand) and never
 * returned by decodeCommand, so code that handles keyed commands never meets one.
 *
 * compactEvents: deletes the range's mutation events with revision <= upTo (an upTo past
 * the entry's own index means the entry's index) and makes upTo + 1 the oldest retained
 * revision; an upTo below the current point changes nothing (docs/streams.md).
 * forgetRequests: the request ids applied below `below` are forgotten (an earlier retry is
 * applied again), as those more than dedupWindowEntries positions back are: the range's
 * leader proposes it for the positions applied more than --dedup-window-s ago (its clock
 * picks the position; every replica forgets at the same one). A `below` past the entry's
 * own index means the entry's index; one below the current point changes nothing.
 */
export type RangeCommand =
  | { readonly op: 'compactEvents'; readonly upTo: LogIndex }
  | { readonly op: 'forgetRequests'; readonly below: LogIndex };

/**
 * set: {ok}; cas: {ok, success, value: the current value after the op (the new one on
 * success)}; del: {ok, value: the last value or null}. noop and config entries, and
 * compactEvents: {ok}.
 */
export type ApplyResult =
  | {
      readonly ok: true;
      readonly value?: Uint8Array | null;
      readonly success?: boolean;
      /** A retried request: this result is the first one's, and nothing changed now. */
      readonly duplicate?: boolean;
      /** An applied split: both sides' new descriptors. */
      readonly split?: { readonly left: RangeDescriptor; readonly right: RangeDescriptor };
    }
  | { readonly ok: false; readonly code: string; readonly msg: string };

/** What the `requests` database holds under (user key, request id). */
export interface RequestRecord {
  /** Log index the request was applied at. */
  readonly index: LogIndex;
  /** Its first result, returned to every retry while the record lives. */
  readonly result: ApplyResult;
}

/** A request remembered inside its key's data record: [id, index applied at, result]. */
export type InlineRequest = readonly [id: Uint8Array, index: LogIndex, result: ApplyResult];

/** What the `data` database holds under a user key. A deleted key has no record. */
export interface DataRecord {
  readonly value: Uint8Array;
  /** Log index of the last change of `value`. */
  readonly revision: LogIndex;
  /**
   * The key's most recent request ids, oldest first (absent when none): at most
   * inlineRequestsMax, whose results carry at most inlineResultBytesMax value bytes in all.
   * Entries out of the dedup window may linger until the record is next rewritten; they
   * are forgotten all the same (isRemembered).
   */
  readonly requests?: readonly InlineRequest[];
}

/**
 * Requests a data record keeps inline: writing the key rewrites its record anyway, so a
 * request kept there costs no other page write; more would make a hot key's record (and
 * every read of it) bigger. Every replica must use the same limits.
 */
export const inlineRequestsMax = 4;
/** Value bytes (cas and del results) the inline requests of one record may carry in all. */
export const inlineResultBytesMax = 256;

/** The value bytes a request's result carries (what keeping it inline costs). */
export function resultValueBytes(result: ApplyResult): number {
  return result.ok && result.value instanceof Uint8Array ? result.value.length : 0;
}

/** How many log positions a request id is remembered for (see the header). */
export const dedupWindowEntries = 100_000;

/**
 * Longest key a command may carry. The store keys request records by the key's
 * order-preserving encoding (8/7 of its length, store.ts) plus the request id, and the
 * expiry queue adds 12 bytes: 12 + ceil(1600 * 8 / 7) + 1 + 64 = 1906 bytes, under LMDB's
 * 1978-byte key limit with 4 KiB pages (a longer key would fail the whole turn). Clients
 * are held to a smaller limit (protocol/wire.ts).
 */
export const keyBytesMax = 1600;
/** Request ids are client-chosen (16 random bytes in our client); bound them. */
export const requestIdBytesMax = 64;

/**
 * Plain msgpack maps, no records: any msgpack implementation can read what we write (the
 * hot stored forms are binary.ts's; this packs results that have no binary form, descriptors
 * and snapshots, and reads what layout 6 wrote).
 */
export const packr = new Packr({ useRecords: false, mapsAsObjects: true, moreTypes: false });

/** Opcodes of the binary command form (binary.ts). */
const opCodes = {
  set: 1,
  cas: 2,
  del: 3,
  alloc: 4,
  desc: 5,
  split: 6,
  compactEvents: 7,
  forgetRequests: 8,
} as const;

/** A command as log entry data (binary.ts): bytes of their own, kept by the log. */
export function encodeCommand(cmd: Command): Uint8Array {
  const k = cmd.key.length;
  const i = cmd.id.length;
  let w: Writer;
  switch (cmd.op) {
    case 'set':
      w = new Writer(1 + 2 + k + 4 + cmd.value.length + 1 + i, true);
      w.u8(opCodes.set);
      w.bytes16(cmd.key);
      w.bytes32(cmd.value);
      break;
    case 'cas': {
      const e = cmd.expect === null ? 0 : 4 + cmd.expect.length;
      w = new Writer(1 + 2 + k + 1 + e + 4 + cmd.value.length + 1 + i, true);
      w.u8(opCodes.cas);
      w.bytes16(cmd.key);
      w.u8(cmd.expect === null ? 0 : 1);
      if (cmd.expect !== null) w.bytes32(cmd.expect);
      w.bytes32(cmd.value);
      break;
    }
    case 'del':
    case 'alloc':
      w = new Writer(1 + 2 + k + 1 + i, true);
      w.u8(opCodes[cmd.op]);
      w.bytes16(cmd.key);
      break;
    case 'desc':
      assert(Number.isSafeInteger(cmd.generation), 'generations are safe integers');
      w = new Writer(1 + 2 + k + 4 + cmd.value.length + 8 + 1 + i, true);
      w.u8(opCodes.desc);
      w.bytes16(cmd.key);
      w.bytes32(cmd.value);
      w.u64(cmd.generation);
      break;
    case 'split':
      assert(Number.isSafeInteger(cmd.generation), 'generations are safe integers');
      w = new Writer(1 + 2 + k + 8 + 4 + 1 + i, true);
      w.u8(opCodes.split);
      w.bytes16(cmd.key);
      w.u64(cmd.generation);
      w.u32(cmd.rightId);
      break;
  }
  w.bytes8(cmd.id);
  return w.done();
}

export function encodeRangeCommand(cmd: RangeCommand): Uint8Array {
  const at = cmd.op === 'compactEvents' ? cmd.upTo : cmd.below;
  assert(Number.isSafeInteger(at) && at >= 0, 'log positions are safe integers');
  const w = new Writer(1 + 8, true);
  w.u8(opCodes[cmd.op]);
  w.u64(at);
  return w.done();
}

/** The msgpack map in `bytes`, or undefined for anything else (never throws). */
function unpackMap(bytes: Uint8Array): Record<string, unknown> | undefined {
  let raw: unknown;
  try {
    // From a view of its own: msgpackr caches a DataView on the buffer it reads (a
    // property of about 150 bytes), and `bytes` is a log entry's data, which the log
    // keeps as long as the entry.
    raw = packr.unpack(bytes.subarray(0));
  } catch {
    return undefined;
  }
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) return undefined;
  return raw as Record<string, unknown>;
}

/** The range command in `bytes`, or undefined for anything else (keyed commands too). */
export function decodeRangeCommand(bytes: Uint8Array): RangeCommand | undefined {
  if (isBinary(bytes)) {
    const r = new Reader(bytes);
    const code = r.u8();
    if (code !== opCodes.compactEvents && code !== opCodes.forgetRequests) return undefined;
    const at = r.u64();
    if (!r.end()) return undefined;
    return code === opCodes.compactEvents
      ? { op: 'compactEvents', upTo: at }
      : { op: 'forgetRequests', below: at };
  }
  const raw = unpackMap(bytes);
  if (raw === undefined) return undefined;
  const { op, upTo } = raw;
  if (op !== 'compactEvents') return undefined;
  if (typeof upTo !== 'number' || !Number.isSafeInteger(upTo) || upTo < 0) return undefined;
  return { op, upTo };
}

function isCount(x: unknown): x is number {
  return typeof x === 'number' && Number.isSafeInteger(x) && x >= 1;
}

function isBytes(x: unknown): x is Uint8Array {
  return x instanceof Uint8Array;
}

/** A key a stored item may hold: bytes, not empty, at most keyBytesMax. */
export function isKey(x: unknown): x is Uint8Array {
  return isBytes(x) && x.length > 0 && x.length <= keyBytesMax;
}

/** Whether log entry data is a split command (cheap for the binary form: its op byte). */
export function isSplitCommand(bytes: Uint8Array): boolean {
  if (isBinary(bytes)) return bytes[1] === opCodes.split;
  return decodeCommand(bytes)?.op === 'split';
}

/** The command in `bytes`, or undefined for anything that is not a well-formed command. */
export function decodeCommand(bytes: Uint8Array): Command | undefined {
  if (isBinary(bytes)) return decodeBinaryCommand(bytes);
  const r = unpackMap(bytes);
  if (r === undefined) return undefined;
  const { op, key, id } = r;
  if (!isKey(key)) return undefined;
  if (!isBytes(id) || id.length > requestIdBytesMax) return undefined;
  switch (op) {
    case 'set': {
      const value = r.value;
      if (!isBytes(value)) return undefined;
      return { op, key, value, id };
    }
    case 'cas': {
      const { value, expect } = r;
      if (!isBytes(value)) return undefined;
      if (expect !== null && !isBytes(expect)) return undefined;
      return { op, key, expect, value, id };
    }
    case 'del':
    case 'alloc':
      return { op, key, id };
    case 'desc': {
      const { value, generation } = r;
      if (!isBytes(value) || !isCount(generation)) return undefined;
      return { op, key, value, generation, id };
    }
    case 'split': {
      const { generation, rightId } = r;
      if (!isCount(generation) || !isCount(rightId) || rightId > 0xffff_fffe) return undefined;
      return { op, key, generation, rightId, id };
    }
    default:
      return undefined;
  }
}

function decodeBinaryCommand(bytes: Uint8Array): Command | undefined {
  const r = new Reader(bytes);
  const op = r.u8();
  const key = r.bytes16();
  let cmd: Command;
  switch (op) {
    case opCodes.set: {
      const value = r.bytes32();
      cmd = { op: 'set', key, value, id: r.bytes8() };
      break;
    }
    case opCodes.cas: {
      const hasExpect = r.u8();
      if (hasExpect > 1) return undefined;
      const expect = hasExpect === 1 ? r.bytes32() : null;
      const value = r.bytes32();
      cmd = { op: 'cas', key, expect, value, id: r.bytes8() };
      break;
    }
    case opCodes.del:
      cmd = { op: 'del', key, id: r.bytes8() };
      break;
    case opCodes.alloc:
      cmd = { op: 'alloc', key, id: r.bytes8() };
      break;
    case opCodes.desc: {
      const value = r.bytes32();
      const generation = r.u64();
      if (!isCount(generation)) return undefined;
      cmd = { op: 'desc', key, value, generation, id: r.bytes8() };
      break;
    }
    case opCodes.split: {
      const generation = r.u64();
      const rightId = r.u32();
      if (!isCount(generation) || !isCount(rightId) || rightId > 0xffff_fffe) return undefined;
      cmd = { op: 'split', key, generation, rightId, id: r.bytes8() };
      break;
    }
    default:
      return undefined;
  }
  if (!r.end() || !isKey(cmd.key) || cmd.id.length > requestIdBytesMax) return undefined;
  return cmd;
}

export function bytesEqual(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

export function compareBytes(a: Uint8Array, b: Uint8Array): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) {
    const d = a[i]! - b[i]!;
    if (d !== 0) return d;
  }
  return a.length - b.length;
}

export interface ApplyOutcome {
  readonly result: ApplyResult;
  /**
   * The key's record after the command: `unchanged` writes nothing (a duplicate request),
   * undefined deletes the key's LMDB entry, a record replaces it.
   */
  readonly record: DataRecord | undefined | 'unchanged';
  /** The request record to store under (key, id); undefined stores nothing. */
  readonly request: RequestRecord | undefined;
}

/**
 * Whether a request recorded at `recordedAt` is still remembered at log index `index`, in
 * a range that forgot those below `forgottenBelow` (forgetRequests; 0: none).
 */
export function isRemembered(
  recordedAt: LogIndex,
  index: LogIndex,
  windowEntries: number,
  forgottenBelow: LogIndex = 0,
) {
  return recordedAt >= index - windowEntries && recordedAt >= forgottenBelow;
}

/**
 * Applies `cmd`, committed at log index `index`, to `current`, the key's record before it.
 * `prior` is the stored request record of (cmd.key, cmd.id), if any; a remembered one makes
 * the command a retry: it returns the first result and changes nothing. Pure. An empty
 * request id opts out of at-most-once: nothing is recorded for it. `forgottenBelow`: the
 * range's forgetRequests point (isRemembered).
 */
export function applyCommand(
  cmd: Command,
  index: LogIndex,
  current: DataRecord | undefined,
  prior: RequestRecord | undefined,
  windowEntries: number = dedupWindowEntries,
  forgottenBelow: LogIndex = 0,
): ApplyOutcome {
  assert(index > 0, 'entries start at index 1');
  assert(windowEntries > 0, 'the dedup window is positive');
  assert(current === undefined || current.revision < index, 'records change in log order');
  if (cmd.id.length > 0 && prior !== undefined) {
    assert(prior.index < index, 'a request was recorded before this command');
    if (isRemembered(prior.index, index, windowEntries, forgottenBelow)) {
      // A retry: the first result, marked so that nobody reports the mutation twice.
      const result: ApplyResult = prior.result.ok
        ? { ...prior.result, duplicate: true }
        : prior.result;
      return { result, record: 'unchanged', request: undefined };
    }
  }

  const before = current?.value ?? null;
  let record: DataRecord | undefined | 'unchanged' = 'unchanged';
  let result: ApplyResult;
  switch (cmd.op) {
    case 'set':
      record = { value: cmd.value, revision: index };
      result = { ok: true };
      break;
    case 'cas': {
      const matches =
        cmd.expect === null ? before === null : before !== null && bytesEqual(before, cmd.expect);
      if (matches) {
        record = { value: cmd.value, revision: index };
        result = { ok: true, success: true, value: cmd.value };
      } else {
        result = { ok: true, success: false, value: before };
      }
      break;
    }
    case 'del':
      // No tombstone: the request record carries the result a retry needs.
      if (before !== null) record = undefined;
      result = { ok: true, value: before };
      break;
    case 'alloc': {
      // The counter is 4 bytes big-endian; bootstrap stores 1 (the first range's id).
      const last = before !== null && before.length === 4 ? readU32(before) : 1;
      if (last >= 0xffff_fffe) {
        result = { ok: false, code: 'Exhausted', msg: 'no range ids left' };
        break;
      }
      const value = u32(last + 1);
      record = { value, revision: index };
      result = { ok: true, value };
      break;
    }
    case 'desc': {
      // Compare-and-set by generation: an older or equal descriptor never replaces a newer one.
      const stored = before === null ? undefined : generationOf(before);
      if (stored !== undefined && stored >= cmd.generation) {
        result = { ok: true, success: false, value: before };
      } else {
        record = { value: cmd.value, revision: index };
        result = { ok: true, success: true, value: cmd.value };
      }
      break;
    }
    case 'split':
      throw new Error('split commands are applied by the store');
  }
  return { result, record, request: cmd.id.length > 0 ? { index, result } : undefined };
}

function u32(n: number): Uint8Array {
  const b = new Uint8Array(4);
  new DataView(b.buffer).setUint32(0, n);
  return b;
}

function readU32(b: Uint8Array): number {
  return new DataView(b.buffer, b.byteOffset, 4).getUint32(0);
}

/** The generation of an encoded descriptor, or undefined when it does not decode. */
function generationOf(bytes: Uint8Array): number | undefined {
  try {
    const d = packr.unpack(bytes) as { generation?: unknown } | null;
    const g = d?.generation;
    return typeof g === 'number' && Number.isSafeInteger(g) ? g : undefined;
  } catch {
    return undefined;
  }
}

/** A data record as stored (binary.ts); the bytes may come from Buffer's shared pool. */
export function encodeRecord(record: DataRecord): Uint8Array {
  const { value, revision, requests } = record;
  assert(Number.isSafeInteger(revision) && revision >= 0, 'revisions are safe integers');
  const n = requests?.length ?? 0;
  assert(n <= 0xff, 'a record keeps few requests inline');
  let size = 8 + 4 + value.length + 1;
  const packed: (Uint8Array | undefined)[] = [];
  for (let i = 0; i < n; i++) {
    const [id, , result] = requests![i]!;
    const p = isPlainResult(result) ? undefined : packr.pack(result);
    packed.push(p);
    size += 1 + id.length + 8 + 1 + resultBytes(result, p);
  }
  const w = new Writer(size, false);
  w.u64(revision);
  w.bytes32(value);
  w.u8(n);
  for (let i = 0; i < n; i++) {
    const [id, index, result] = requests![i]!;
    w.bytes8(id);
    w.u64(index);
    const p = packed[i];
    if (p !== undefined) {
      w.u8(resultFlags.other);
      w.bytes32(p);
      continue;
    }
    const r = result as { value?: Uint8Array | null; success?: boolean };
    let flags = resultFlags.ok;
    if (r.value instanceof Uint8Array) flags |= resultFlags.value;
    else if (r.value === null) flags |= resultFlags.valueNull;
    if (r.success !== undefined) flags |= resultFlags.success;
    if (r.success === true) flags |= resultFlags.successTrue;
    w.u8(flags);
    if (r.value instanceof Uint8Array) w.bytes32(r.value);
  }
  return w.done();
}

const resultFlags = {
  ok: 0x01,
  value: 0x02,
  valueNull: 0x04,
  success: 0x08,
  successTrue: 0x10,
  other: 0x80,
} as const;

/** An ok result of only value and success (what applyCommand records): flags, no msgpack. */
function isPlainResult(result: ApplyResult): boolean {
  if (!result.ok) return false;
  for (const k in result) {
    if (k !== 'ok' && k !== 'value' && k !== 'success') return false;
  }
  const r = result as { value?: unknown; success?: unknown };
  return (
    (r.value === undefined || r.value === null || r.value instanceof Uint8Array) &&
    (r.success === undefined || typeof r.success === 'boolean')
  );
}

function resultBytes(result: ApplyResult, packed: Uint8Array | undefined): number {
  if (packed !== undefined) return 4 + packed.length;
  const v = (result as { value?: unknown }).value;
  return v instanceof Uint8Array ? 4 + v.length : 0;
}

function decodeBinaryRecord(bytes: Uint8Array): DataRecord | undefined {
  const r = new Reader(bytes);
  const revision = r.u64();
  const value = r.bytes32();
  const n = r.u8();
  if (n === 0) return r.end() ? { value, revision } : undefined;
  const requests: InlineRequest[] = [];
  for (let i = 0; i < n; i++) {
    const id = r.bytes8();
    const index = r.u64();
    const flags = r.u8();
    let result: ApplyResult;
    if (flags === resultFlags.other) {
      let raw: unknown;
      try {
        raw = packr.unpack(r.bytes32());
      } catch {
        return undefined;
      }
      if (!isApplyResult(raw)) return undefined;
      result = raw;
    } else {
      if ((flags & resultFlags.ok) === 0 || (flags & ~0x1f) !== 0) return undefined;
      const out: { ok: true; success?: boolean; value?: Uint8Array | null } = { ok: true };
      if ((flags & resultFlags.success) !== 0) {
        out.success = (flags & resultFlags.successTrue) !== 0;
      }
      if ((flags & resultFlags.value) !== 0) out.value = r.bytes32();
      else if ((flags & resultFlags.valueNull) !== 0) out.value = null;
      result = out;
    }
    requests.push([id, index, result]);
  }
  return r.end() ? { value, revision, requests } : undefined;
}

function isApplyResult(x: unknown): x is ApplyResult {
  if (typeof x !== 'object' || x === null) return false;
  const r = x as Record<string, unknown>;
  if (r.ok === true) {
    return (
      (r.value === undefined || r.value === null || isBytes(r.value)) &&
      (r.success === undefined || typeof r.success === 'boolean')
    );
  }
  return r.ok === false && typeof r.code === 'string' && typeof r.msg === 'string';
}

/**
 * A decoded DataRecord, or undefined when `x` does not have its shape (inline requests
 * included: ids, indexes at most `applied`, results, within the inline limits, ids unique).
 */
export function asDataRecord(x: unknown, applied: LogIndex): DataRecord | undefined {
  if (typeof x !== 'object' || x === null) return undefined;
  const r = x as Record<string, unknown>;
  if (!isBytes(r.value)) return undefined;
  if (typeof r.revision !== 'number' || !Number.isSafeInteger(r.revision)) return undefined;
  if (r.requests === undefined) return { value: r.value, revision: r.revision };
  if (!Array.isArray(r.requests) || r.requests.length === 0) return undefined;
  if (r.requests.length > inlineRequestsMax) return undefined;
  const requests: InlineRequest[] = [];
  let valueBytes = 0;
  for (const q of r.requests as unknown[]) {
    if (!Array.isArray(q) || q.length !== 3) return undefined;
    const [id, index, result] = q as [unknown, unknown, unknown];
    if (!isBytes(id) || id.length === 0 || id.length > requestIdBytesMax) return undefined;
    const record = asRequestRecord({ index, result });
    if (record === undefined || record.index > applied) return undefined;
    if (requests.some(([other]) => bytesEqual(other, id))) return undefined;
    valueBytes += resultValueBytes(record.result);
    requests.push([id, record.index, record.result]);
  }
  if (valueBytes > inlineResultBytesMax) return undefined;
  return { value: r.value, revision: r.revision, requests };
}

/** A decoded RequestRecord, or undefined when `x` does not have its shape. */
export function asRequestRecord(x: unknown): RequestRecord | undefined {
  if (typeof x !== 'object' || x === null) return undefined;
  const r = x as Record<string, unknown>;
  if (typeof r.index !== 'number' || !Number.isSafeInteger(r.index) || r.index < 1) {
    return undefined;
  }
  if (!isApplyResult(r.result)) return undefined;
  return { index: r.index, result: r.result };
}

/** A record this store wrote (see asDataRecord for untrusted input). */
export function decodeRecord(bytes: Uint8Array): DataRecord {
  if (isBinary(bytes)) {
    const record = decodeBinaryRecord(bytes);
    assert(record !== undefined, 'a stored data record decodes');
    return record;
  }
  const record = packr.unpack(bytes) as DataRecord;
  assert(
    typeof record === 'object' &&
      record !== null &&
      record.value instanceof Uint8Array &&
      typeof record.revision === 'number' &&
      (record.requests === undefined || Array.isArray(record.requests)),
    'a stored data record decodes',
  );
  return record;
}

/**
 * The value of a record this store wrote, copied (into Node's buffer pool) out of `bytes`,
 * which may be lmdb-js's shared read buffer, reused at its next read: a get needs nothing
 * else, so the record's inline requests are not decoded.
 */
export function decodeRecordValue(bytes: Uint8Array): Uint8Array {
  if (!isBinary(bytes)) return Buffer.from(decodeRecord(bytes).value);
  const r = new Reader(bytes);
  r.u64();
  const value = r.bytes32();
  assert(r.ok, 'a stored data record decodes');
  return Buffer.from(value);
}

export function encodeRequest(request: RequestRecord): Uint8Array {
  return packr.pack({ index: request.index, result: request.result });
}

/** A request record this store wrote. */
export function decodeRequest(bytes: Uint8Array): RequestRecord {
  const request = packr.unpack(bytes) as RequestRecord;
  assert(
    typeof request === 'object' &&
      request !== null &&
      typeof request.index === 'number' &&
      typeof request.result === 'object',
    'a stored request record decodes',
  );
  return request;
}
