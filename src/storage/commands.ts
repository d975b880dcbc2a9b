// The replicated KV state machine: the commands carried in `normal` log entries and the
// pure function that applies one of them to the record of the key it touches.
//
// Determinism: every replica applies the same entries to the same records and must reach
// the same records and results, so nothing here reads a clock, a random source or any state
// but the record and the entry's index. Undecodable bytes are a deterministic error result.
//
// At most once (DESIGN.md, "Client semantics"): the ids of applied requests and their
// first results are kept in the record of the key the request touched, so they move with
// the key's span and travel in snapshots. They expire by log position, never by time: a
// command at index i drops the requests recorded before i - dedupWindowEntries.

import { Packr } from 'msgpackr';
import { assert } from '../../ranges/core/assert.ts';
import type { LogIndex } from '../../ranges/core/types.ts';

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
  | { readonly op: 'del'; readonly key: Uint8Array; readonly id: Uint8Array };

/**
 * set: {ok}; cas: {ok, success, value: the current value after the op (the new one on
 * success)}; del: {ok, value: the last value or null}. noop and config entries: {ok}.
 */
export type ApplyResult =
  | { readonly ok: true; readonly value?: Uint8Array | null; readonly success?: boolean }
  | { readonly ok: false; readonly code: string; readonly msg: string };

/** [request id, log index it was applied at, its first result] */
export type RequestRecord = readonly [id: Uint8Array, index: LogIndex, result: ApplyResult];

/** What the `data` database holds under a user key. */
export interface DataRecord {
  /** null: a tombstone, kept only while it holds unexpired request records. */
  readonly value: Uint8Array | null;
  /** Log index of the last change of `value`; 0 if the value never changed. */
  readonly revision: LogIndex;
  /** Applied requests on this key, oldest first (ascending index). */
  readonly requests?: readonly RequestRecord[];
}

/** How many log positions a request id is remembered for (see the header). */
export const dedupWindowEntries = 100_000;

/** LMDB's key size limit with 4 KiB pages: a longer key would fail the whole turn. */
export const keyBytesMax = 1978;
/** Request ids are client-chosen (16 random bytes in our client); bound them. */
export const requestIdBytesMax = 64;

/** Plain msgpack maps, no records: any msgpack implementation can read what we write. */
export const packr = new Packr({ useRecords: false, mapsAsObjects: true, moreTypes: false });

export function encodeCommand(cmd: Command): Uint8Array {
  switch (cmd.op) {
    case 'set':
      return packr.pack({ op: 'set', key: cmd.key, value: cmd.value, id: cmd.id });
    case 'cas':
      return packr.pack({
        op: 'cas',
        key: cmd.key,
        expect: cmd.expect,
        value: cmd.value,
        id: cmd.id,
      });
    case 'del':
      return packr.pack({ op: 'del', key: cmd.key, id: cmd.id });
  }
}

function isBytes(x: unknown): x is Uint8Array {
  return x instanceof Uint8Array;
}

function isKey(x: unknown): x is Uint8Array {
  return isBytes(x) && x.length > 0 && x.length <= keyBytesMax;
}

/** The command in `bytes`, or undefined for anything that is not a well-formed command. */
export function decodeCommand(bytes: Uint8Array): Command | undefined {
  let raw: unknown;
  try {
    raw = packr.unpack(bytes);
  } catch {
    return undefined;
  }
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) return undefined;
  const r = raw as Record<string, unknown>;
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
      return { op, key, id };
    default:
      return undefined;
  }
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
}

/**
 * Applies `cmd`, committed at log index `index`, to `current`, the key's record before it.
 * Pure. An empty request id opts out of at-most-once: nothing is recorded for it.
 */
export function applyCommand(
  cmd: Command,
  index: LogIndex,
  current: DataRecord | undefined,
  windowEntries: number = dedupWindowEntries,
): ApplyOutcome {
  assert(index > 0, 'entries start at index 1');
  assert(windowEntries > 0, 'the dedup window is positive');
  assert(current === undefined || current.revision < index, 'records change in log order');
  // Requests recorded before this horizon have expired. Invariant: requests ascend by index.
  const horizon = index - windowEntries;
  const kept: RequestRecord[] = [];
  for (const request of current?.requests ?? []) {
    assert(request[1] < index, 'a request was recorded before this command');
    if (request[1] >= horizon) kept.push(request);
  }
  if (cmd.id.length > 0) {
    for (const [id, , result] of kept) {
      if (bytesEqual(id, cmd.id)) return { result, record: 'unchanged' };
    }
  }

  const before = current?.value ?? null;
  let value = before;
  let revision = current?.revision ?? 0;
  let result: ApplyResult;
  switch (cmd.op) {
    case 'set':
      value = cmd.value;
      revision = index;
      result = { ok: true };
      break;
    case 'cas': {
      const matches =
        cmd.expect === null ? before === null : before !== null && bytesEqual(before, cmd.expect);
      if (matches) {
        value = cmd.value;
        revision = index;
        result = { ok: true, success: true, value: cmd.value };
      } else {
        result = { ok: true, success: false, value: before };
      }
      break;
    }
    case 'del':
      if (before !== null) {
        value = null;
        revision = index;
      }
      result = { ok: true, value: before };
      break;
  }
  if (cmd.id.length > 0) kept.push([cmd.id, index, result]);
  // A tombstone lives only to carry unexpired request records.
  if (value === null && kept.length === 0) return { result, record: undefined };
  const record: DataRecord =
    kept.length > 0 ? { value, revision, requests: kept } : { value, revision };
  return { result, record };
}

export function encodeRecord(record: DataRecord): Uint8Array {
  return packr.pack(record);
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

/** A decoded DataRecord, or undefined when `x` does not have its shape. */
export function asDataRecord(x: unknown): DataRecord | undefined {
  if (typeof x !== 'object' || x === null) return undefined;
  const r = x as Record<string, unknown>;
  if (r.value !== null && !isBytes(r.value)) return undefined;
  if (typeof r.revision !== 'number' || !Number.isSafeInteger(r.revision)) return undefined;
  if (r.requests !== undefined) {
    if (!Array.isArray(r.requests)) return undefined;
    for (const q of r.requests as unknown[]) {
      if (!Array.isArray(q) || q.length !== 3) return undefined;
      if (!isBytes(q[0]) || typeof q[1] !== 'number' || !isApplyResult(q[2])) return undefined;
    }
  }
  return r as unknown as DataRecord;
}

/**
 * A record this store wrote. Only its top level is checked: records are read on the hot
 * path, and a record's request list can be long (see asDataRecord for untrusted input).
 */
export function decodeRecord(bytes: Uint8Array): DataRecord {
  const record = packr.unpack(bytes) as DataRecord;
  assert(
    typeof record === 'object' && record !== null && typeof record.revision === 'number',
    'a stored data record decodes',
  );
  return record;
}
