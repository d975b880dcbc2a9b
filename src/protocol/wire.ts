// The wire format between clients and nodes (and between nodes, for forwarded requests):
// msgpack with plain maps and arrays (no msgpackr records), so any msgpack library can
// speak it. Every envelope carries the protocol version `v`; node replies carry the
// cluster id `cid`. See docs/protocol.md.
//
// A request is a batch: a client sends every operation it has ready in one NATS request
// (as TiKV's batch commands do), and the reply holds one result per operation, in order.

import { Packr } from 'msgpackr';
import {
  asDescriptor,
  directoryKeyRangeId,
  isSystemKey,
  rangeIdCounterKey,
} from '../storage/descriptor.ts';
import { checkNodeId } from '../transport/subjects.ts';

export const protocolVersion = 1;

/** Named limits. Keys must fit LMDB's key limit and, encoded, a NATS subject token list. */
export const limits = {
  keyBytesMax: 1024,
  valueBytesMax: 512 * 1024,
  /** Operations in one request batch. */
  batchOpsMax: 1024,
  /** Bytes of one NATS payload we send or accept (nats-server's default max_payload). */
  payloadBytesMax: 1024 * 1024,
  /** Bytes of request ids; clients use 16 random bytes. */
  requestIdBytesMax: 64,
  /** Entries one scan op returns at most (its `limit`); more come by following `next`. */
  scanLimitMax: 1000,
  /**
   * Bytes of keys and values (plus a small per-entry overhead) in one scan result; a scan
   * stops before the entry that would pass it (but returns at least one entry), so a
   * reply with a scan result stays well under payloadBytesMax.
   */
  scanBytesMax: 512 * 1024,
  /** Events one events op returns at most (its `limit`). */
  eventsLimitMax: 1000,
  /**
   * Bytes of the events of one page (docs/protocol.md, "Subscribe"): the page stops before
   * the event that would pass it, but holds at least one event.
   */
  eventsBytesMax: 512 * 1024,
  /**
   * Bytes one event may take in a reply: a set whose key, value and prevValue pass it is
   * sent without its prevValue (flagged prevValueOmitted), so it fits under max_payload.
   */
  eventBytesMax: 960 * 1024,
  /** The longest an events op may wait at the leader for new events (long polling). */
  eventsWaitMsMax: 30_000,
} as const;

/** The smallest `limit` of a scan op. */
export const scanLimitMin = 1;

/**
 * User ops, the ops of subscribe (`eventsHead`: where the stream of the range holding
 * `key` is now; `events`: a page of a range's stream, long polled; docs/streams.md), and
 * the admin/system ops: `split` (split the range holding `key` at `key`), `transfer` (move
 * the leadership of the range holding `key` to the node `node`), `alloc` (the next range
 * id) and `desc` (a directory write), which nodes send each other while splitting
 * (docs/ranges.md).
 */
export type OpName =
  | 'get'
  | 'set'
  | 'cas'
  | 'del'
  | 'scan'
  | 'eventsHead'
  | 'events'
  | 'split'
  | 'transfer'
  | 'alloc'
  | 'desc';

/** Ops that change data: they carry a request id and their outcome can be unknown. */
export function isWrite(op: OpName): boolean {
  return op === 'set' || op === 'cas' || op === 'del' || op === 'alloc' || op === 'desc';
}

export interface WireOp {
  readonly op: OpName;
  /**
   * The key; scan: the start of the span (inclusive; empty = the start of the keyspace);
   * eventsHead: a key of the range asked (may be empty); events: the prefix of the keys
   * whose events are wanted (may be empty: every key).
   */
  readonly key: Uint8Array;
  /** set and cas: the new value. */
  readonly value?: Uint8Array;
  /** cas: the expected current value; null expects the key to be absent. */
  readonly expect?: Uint8Array | null;
  /** Writes: a client-chosen id, so a retried write applies once. */
  readonly id?: Uint8Array;
  /** scan: the end of the span (exclusive); absent or null = no end. */
  readonly end?: Uint8Array | null;
  /**
   * scan: the most entries to return, scanLimitMin .. limits.scanLimitMax; events: the
   * most events, 1 .. limits.eventsLimitMax.
   */
  readonly limit?: number;
  /** events: the range whose stream is read (the op is not routed by its key). */
  readonly rangeId?: number;
  /** events: the revision to read after (the page starts above it). */
  readonly after?: number;
  /**
   * events: how long the leader may hold the op when there is nothing after `after` yet,
   * 0 .. limits.eventsWaitMsMax (0: answer at once).
   */
  readonly waitMs?: number;
  /**
   * desc: the descriptor's generation (the compare-and-set's version); split and transfer
   * (optional): the generation the range must be at, or the op is refused with
   * RangeKeyMismatch.
   */
  readonly generation?: number;
  /** transfer: the node to lead the range; it must hold one of its voters. */
  readonly node?: string;
}

/** A scan result entry: [key, value]. */
export type WireEntry = readonly [key: Uint8Array, value: Uint8Array];

/**
 * One event of an events page (docs/protocol.md, "Subscribe"): a mutation of a key, or
 * the marker of a split of the range (the right-hand span continues in range
 * `right.rangeId` after `revision`).
 */
export type WireEvent =
  | {
      readonly revision: number;
      readonly op: 'set';
      readonly key: Uint8Array;
      readonly value: Uint8Array;
      /** The value before; absent when the key had none or when omitted (below). */
      readonly prevValue?: Uint8Array;
      /** True when the event had a prevValue too large to send with it (eventBytesMax). */
      readonly prevValueOmitted?: boolean;
    }
  | {
      readonly revision: number;
      readonly op: 'del';
      readonly key: Uint8Array;
      readonly prevValue: Uint8Array;
    }
  | {
      readonly revision: number;
      readonly op: 'split';
      readonly left: WireDescriptor;
      readonly right: WireDescriptor;
    };

export interface WireRequest {
  readonly v: number;
  readonly ops: readonly WireOp[];
  /**
   * Instead of range and gen: one [rangeId, gen] per op, for a request that carries ops of
   * several ranges led by one node (gen 0: not known). Sent to any of those ranges' subjects.
   */
  readonly routes?: readonly (readonly [number, number])[];
  /** The range the client believes serves every op, and its generation (both or none). */
  readonly range?: number;
  readonly gen?: number;
}

/** A range descriptor on the wire (docs/ranges.md). */
export interface WireDescriptor {
  readonly rangeId: number;
  readonly start: Uint8Array;
  readonly end: Uint8Array | null;
  readonly replicas: readonly { nodeId: string; replicaId: number; role: string }[];
  readonly generation: number;
}

/**
 * One result. ok: get -> value (null: not found); set -> nothing; cas -> success and the
 * current value after the operation; del -> the last value (null: there was none);
 * scan -> entries in key order and, when the scan stopped before the end of its span
 * (limit, byte budget, or the end of the range that answered), `next`: the key to
 * continue from.
 */
export type WireResult =
  | {
      readonly ok: true;
      readonly value?: Uint8Array | null;
      readonly success?: boolean;
      readonly entries?: readonly WireEntry[];
      readonly next?: Uint8Array;
      /**
       * split: the two new descriptors, left then right; eventsHead: the descriptor of the
       * range that answered.
       */
      readonly descriptors?: readonly WireDescriptor[];
      /** events: the page, ascending by revision. */
      readonly events?: readonly WireEvent[];
      /**
       * eventsHead: the range's applied revision (read linearizably): poll after it for
       * everything from now on. events: the revision to poll after next.
       */
      readonly after?: number;
      /** events: the oldest revision of the range's stream still retained. */
      readonly oldest?: number;
      /** transfer: the node leading the range when the old leader stepped down ('' unknown). */
      readonly leader?: string;
    }
  | {
      readonly ok: false;
      readonly code: string;
      readonly msg: string;
      /** Compacted: the oldest revision still retained (poll after oldest - 1 or later). */
      readonly oldest?: number;
      /** NotLeader: the node id believed to lead. */
      readonly leader?: string;
      /** InvalidArgument: the limit exceeded. */
      readonly limit?: string;
      /** RangeKeyMismatch: the current descriptors of the range asked and of the key's range. */
      readonly descriptors?: readonly WireDescriptor[];
    };

export interface WireReply {
  readonly v: number;
  readonly cid?: string;
  /** One per request op; absent when the whole request was refused (see code/msg). */
  readonly res?: readonly WireResult[];
  readonly code?: string;
  readonly msg?: string;
}

const packr = new Packr({ useRecords: false, mapsAsObjects: true, moreTypes: false });

export function encode(value: unknown): Uint8Array {
  return packr.pack(value);
}

export function decode(bytes: Uint8Array): unknown {
  return packr.unpack(bytes);
}

function isBytes(x: unknown): x is Uint8Array {
  return x instanceof Uint8Array;
}

export type Checked<T> =
  | { ok: true; value: T }
  | { ok: false; code: string; msg: string; limit?: string };

/**
 * A checked op, with every field of WireOp in this order (the absent ones undefined), so
 * that ops of every kind share one V8 shape. Decoded ops come in a shape per kind and field
 * order, and the node code that reads them (submit, serveRead, the commands) is shared by
 * all kinds: once a node had seen splits, transfers, directory writes and scans, those
 * reads went through V8's megamorphic inline cache. On a node that had split its range to
 * 256, checking a get took 75 ns against 25-35 ns on one that had only seen sets and gets
 * (docs/architecture.md, "One shape for checked ops").
 */
function shapedOp(
  op: OpName,
  key: Uint8Array,
  value?: Uint8Array,
  expect?: Uint8Array | null,
  id?: Uint8Array,
  end?: Uint8Array | null,
  limit?: number,
  rangeId?: number,
  after?: number,
  waitMs?: number,
  generation?: number,
  node?: string,
): WireOp {
  return { op, key, value, expect, id, end, limit, rangeId, after, waitMs, generation, node };
}

/**
 * The fields of `op` that are set: what a node forwards to another (shapedOp's undefined
 * fields would each be encoded as a nil).
 */
export function compactOp(op: WireOp): WireOp {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(op)) if (v !== undefined) out[k] = v;
  return out as unknown as WireOp;
}

/**
 * Validates one decoded op against the protocol and the limits. Returns a typed problem
 * (never throws), so a bad op fails alone and never takes the batch or the node down. The
 * op it returns is a new one (shapedOp), and each field of the decoded op is read once.
 */
export function checkOp(x: unknown): Checked<WireOp> {
  if (typeof x !== 'object' || x === null) return bad('an op must be a map');
  const o = x as Record<string, unknown>;
  const name = o.op;
  if (name === 'scan') return checkScan(o);
  if (name === 'eventsHead') return checkEventsHead(o);
  if (name === 'events') return checkEvents(o);
  if (
    name !== 'get' &&
    name !== 'set' &&
    name !== 'cas' &&
    name !== 'del' &&
    name !== 'split' &&
    name !== 'transfer' &&
    name !== 'alloc' &&
    name !== 'desc'
  ) {
    return bad(
      `op must be get, set, cas, del, scan, eventsHead, events, split or transfer, got ${JSON.stringify(String(name)).slice(0, 40)}`,
    );
  }
  const key = o.key;
  if (!isBytes(key)) return bad('key must be bytes');
  if (key.length === 0) return invalid('key must not be empty', 'keyBytesMin');
  if (key.length > limits.keyBytesMax) {
    return invalid(
      `key is ${key.length} bytes, over keyBytesMax ${limits.keyBytesMax}`,
      'keyBytesMax',
    );
  }
  if (name === 'get') return { ok: true, value: shapedOp(name, key) };
  let value: Uint8Array | undefined;
  let expect: Uint8Array | null | undefined;
  if (name === 'set' || name === 'cas') {
    const v = o.value;
    if (!isBytes(v)) return bad(`${name} needs a value (bytes)`);
    if (v.length > limits.valueBytesMax) {
      return invalid(
        `value is ${v.length} bytes, over valueBytesMax ${limits.valueBytesMax}`,
        'valueBytesMax',
      );
    }
    value = v;
  }
  if (name === 'cas') {
    const e = o.expect;
    if (e !== null && e !== undefined && !isBytes(e)) return bad('cas expect must be bytes or nil');
    expect = e;
  }
  if ((name === 'set' || name === 'cas' || name === 'del') && isSystemKey(key)) {
    return invalid('keys starting with 0x00 "sys/" are reserved for the system', 'systemPrefix');
  }
  if (name === 'split' && isSystemKey(key)) {
    return invalid('a split key cannot be a system key (0x00 "sys/...")', 'systemPrefix');
  }
  let generation: number | undefined;
  let node: string | undefined;
  if (name === 'split' || name === 'transfer' || name === 'desc') {
    const g = o.generation;
    if (name !== 'desc' && g !== undefined && g !== null) {
      if (!isCount(g)) return bad(`${name} generation must be a positive integer`);
    }
    generation = g === null ? undefined : (g as number | undefined);
  }
  if (name === 'transfer') {
    const n = o.node;
    if (typeof n !== 'string') return bad('transfer needs the node to lead the range (node)');
    const problem = checkNodeId(n);
    if (problem !== undefined) return bad(`transfer: ${problem}`);
    node = n;
  }
  if (name === 'alloc' && Buffer.compare(key, rangeIdCounterKey) !== 0) {
    return bad('alloc takes the range id counter key');
  }
  if (name === 'desc') {
    const v = o.value;
    const d = isBytes(v) ? safeDescriptor(v) : undefined;
    if (d === undefined) return bad('desc needs a descriptor (value)');
    if (directoryKeyRangeId(key) !== d.rangeId) return bad('desc key is not its directory key');
    if (generation !== d.generation) return bad("desc generation is not its descriptor's");
    value = v as Uint8Array;
  }
  let id: Uint8Array | undefined;
  const u = undefined;
  if (isWrite(name)) {
    const i = o.id;
    if (!isBytes(i) || i.length === 0) return bad(`${name} needs a request id (bytes)`);
    if (i.length > limits.requestIdBytesMax) {
      return invalid(`request id over ${limits.requestIdBytesMax} bytes`, 'requestIdBytesMax');
    }
    id = i;
  }
  return {
    ok: true,
    value: shapedOp(name, key, value, expect, id, u, u, u, u, u, generation, node),
  };
}

/**
 * A scan: `key` is the start (may be empty: the start of the keyspace), `end` is bytes or
 * nil/absent (no end), `limit` an integer in [scanLimitMin, scanLimitMax]. An end at or
 * before the start is a valid, empty span.
 */
function checkScan(o: Record<string, unknown>): Checked<WireOp> {
  if (!isBytes(o.key)) return bad('scan key (the start) must be bytes');
  if (o.key.length > limits.keyBytesMax) {
    return invalid(
      `scan start is ${o.key.length} bytes, over keyBytesMax ${limits.keyBytesMax}`,
      'keyBytesMax',
    );
  }
  const end = o.end;
  if (end !== undefined && end !== null) {
    if (!isBytes(end)) return bad('scan end must be bytes or nil');
    if (end.length === 0) {
      return invalid('scan end must not be empty (keyBytesMin 1; nil means no end)', 'keyBytesMin');
    }
    if (end.length > limits.keyBytesMax) {
      return invalid(
        `scan end is ${end.length} bytes, over keyBytesMax ${limits.keyBytesMax}`,
        'keyBytesMax',
      );
    }
  }
  if (typeof o.limit !== 'number') return bad('scan needs a limit (an integer)');
  if (!Number.isInteger(o.limit) || o.limit < scanLimitMin) {
    return invalid(
      `scan limit must be an integer of at least scanLimitMin ${scanLimitMin}, got ${o.limit}`,
      'scanLimitMin',
    );
  }
  if (o.limit > limits.scanLimitMax) {
    return invalid(
      `scan limit ${o.limit} is over scanLimitMax ${limits.scanLimitMax}`,
      'scanLimitMax',
    );
  }
  const u = undefined;
  return { ok: true, value: shapedOp('scan', o.key, u, u, u, end ?? null, o.limit) };
}

/** eventsHead: `key` is any key of the range asked (may be empty: the first range). */
function checkEventsHead(o: Record<string, unknown>): Checked<WireOp> {
  if (!isBytes(o.key)) return bad('eventsHead key must be bytes');
  if (o.key.length > limits.keyBytesMax) {
    return invalid(
      `eventsHead key is ${o.key.length} bytes, over keyBytesMax ${limits.keyBytesMax}`,
      'keyBytesMax',
    );
  }
  return { ok: true, value: shapedOp('eventsHead', o.key) };
}

/**
 * events: `key` is the prefix (may be empty), `rangeId` a positive integer, `after` a
 * revision (a non-negative safe integer), `limit` in [1, eventsLimitMax], `waitMs` in
 * [0, eventsWaitMsMax] (absent: 0).
 */
function checkEvents(o: Record<string, unknown>): Checked<WireOp> {
  if (!isBytes(o.key)) return bad('events key (the prefix) must be bytes');
  if (o.key.length > limits.keyBytesMax) {
    return invalid(
      `events prefix is ${o.key.length} bytes, over keyBytesMax ${limits.keyBytesMax}`,
      'keyBytesMax',
    );
  }
  if (!isCount(o.rangeId)) return bad('events needs a rangeId (a positive integer)');
  if (typeof o.after !== 'number' || !Number.isSafeInteger(o.after) || o.after < 0) {
    return bad('events needs after (a revision: a non-negative integer)');
  }
  if (typeof o.limit !== 'number') return bad('events needs a limit (an integer)');
  if (!Number.isInteger(o.limit) || o.limit < 1) {
    return invalid(
      `events limit must be an integer of at least 1, got ${o.limit}`,
      'eventsLimitMin',
    );
  }
  if (o.limit > limits.eventsLimitMax) {
    return invalid(
      `events limit ${o.limit} is over eventsLimitMax ${limits.eventsLimitMax}`,
      'eventsLimitMax',
    );
  }
  const waitMs = o.waitMs ?? 0;
  if (typeof waitMs !== 'number' || !Number.isInteger(waitMs) || waitMs < 0) {
    return bad('events waitMs must be a non-negative integer');
  }
  if (waitMs > limits.eventsWaitMsMax) {
    return invalid(
      `events waitMs ${waitMs} is over eventsWaitMsMax ${limits.eventsWaitMsMax}`,
      'eventsWaitMsMax',
    );
  }
  const u = undefined;
  return {
    ok: true,
    value: shapedOp('events', o.key, u, u, u, u, o.limit, o.rangeId, o.after, waitMs),
  };
}

function safeDescriptor(bytes: Uint8Array) {
  try {
    return asDescriptor(decode(bytes));
  } catch {
    return undefined;
  }
}

/** Validates a decoded request envelope (not its ops, which fail one by one). */
export function checkRequest(x: unknown): Checked<{
  ops: unknown[];
  cid: string | undefined;
  range: { id: number; gen: number } | undefined;
  routes: (readonly [id: number, gen: number])[] | undefined;
}> {
  if (typeof x !== 'object' || x === null) return bad('request must be a map');
  const r = x as Record<string, unknown>;
  if (r.v !== protocolVersion) return bad(`unsupported protocol version ${String(r.v)}`);
  if (r.cid !== undefined && r.cid !== null && typeof r.cid !== 'string') {
    return bad('cid must be a string');
  }
  if (!Array.isArray(r.ops)) return bad('ops must be an array');
  if (r.ops.length === 0) return bad('ops must not be empty');
  if (r.ops.length > limits.batchOpsMax) {
    return invalid(
      `${r.ops.length} ops in one request, over batchOpsMax ${limits.batchOpsMax}`,
      'batchOpsMax',
    );
  }
  let range: { id: number; gen: number } | undefined;
  if (r.range !== undefined && r.range !== null) {
    if (!isCount(r.range) || !isCount(r.gen)) return bad('range and gen must be positive integers');
    range = { id: r.range, gen: r.gen };
  }
  let routes: (readonly [number, number])[] | undefined;
  if (r.routes !== undefined && r.routes !== null) {
    if (range !== undefined) return bad('a request has range and gen, or routes, not both');
    if (!Array.isArray(r.routes) || r.routes.length !== r.ops.length) {
      return bad('routes must be an array with one [rangeId, gen] per op');
    }
    for (const x of r.routes as unknown[]) {
      if (!Array.isArray(x) || x.length !== 2 || !isCount(x[0])) {
        return bad('each route must be [rangeId, gen]');
      }
      const gen = x[1] as unknown;
      if (typeof gen !== 'number' || !Number.isSafeInteger(gen) || gen < 0) {
        return bad('each route must be [rangeId, gen]');
      }
    }
    // Checked in place: the decoded routes are the request's own, used as they are.
    routes = r.routes as [number, number][];
  }
  return {
    ok: true,
    value: { ops: r.ops, cid: typeof r.cid === 'string' ? r.cid : undefined, range, routes },
  };
}

function isCount(x: unknown): x is number {
  return typeof x === 'number' && Number.isSafeInteger(x) && x >= 1;
}

function bad(msg: string): Checked<never> {
  return { ok: false, code: 'BadRequest', msg };
}

function invalid(msg: string, limit: string): Checked<never> {
  return { ok: false, code: 'InvalidArgument', msg, limit };
}

/**
 * A request envelope around ops already encoded one by one with `encode`: the result
 * decodes exactly as `encode({ v: protocolVersion, ops })` does. A client encodes each op
 * once, when it is called, and sends the same bytes in whatever batch carries it and on
 * every retry; the encoded sizes also let it cut batches under the payload limit.
 */
export function frameRequest(
  encodedOps: readonly Uint8Array[],
  clusterId?: string,
  range?: { readonly id: number; readonly gen: number },
  routes?: readonly Route[],
): Uint8Array {
  const count = encodedOps.length;
  if (!(count >= 1 && count <= 0xffff)) throw new RangeError(`cannot frame ${count} ops`);
  if (!(protocolVersion >= 0 && protocolVersion <= 0x7f)) throw new RangeError('version');
  if (routes !== undefined && routes.length !== count) throw new RangeError('a route per op');
  // fixmap(2..5) "v" <fixint version> ["cid" <str>] ["range" <int> "gen" <int>]
  // ["routes" <array>] "ops" <array>
  const fields = 2 + (clusterId ? 1 : 0) + (range ? 2 : 0) + (routes ? 1 : 0);
  const head = [0x80 | fields, 0xa1, 0x76, protocolVersion];
  if (clusterId) head.push(0xa3, 0x63, 0x69, 0x64, ...encode(clusterId));
  if (range) {
    head.push(0xa5, 0x72, 0x61, 0x6e, 0x67, 0x65, ...encode(range.id));
    head.push(0xa3, 0x67, 0x65, 0x6e, ...encode(range.gen));
  }
  // The routes are written in place (a request carries one per op: 64 of them, say).
  let routesBytes = 0;
  if (routes) {
    head.push(0xa6, 0x72, 0x6f, 0x75, 0x74, 0x65, 0x73);
    routesBytes = arrayHeadBytes(count);
    for (const r of routes) routesBytes += 1 + uintBytes(r.rangeId) + uintBytes(r.generation);
  }
  let bytes = head.length + routesBytes + opsKey.length + arrayHeadBytes(count);
  for (const op of encodedOps) bytes += op.length;
  const out = new Uint8Array(bytes);
  out.set(head, 0);
  let at = head.length;
  if (routes) {
    at = writeArrayHead(out, at, count);
    for (const r of routes) {
      out[at++] = 0x92;
      at = writeUint(out, at, r.rangeId);
      at = writeUint(out, at, r.generation);
    }
  }
  out.set(opsKey, at);
  at = writeArrayHead(out, at + opsKey.length, count);
  for (const op of encodedOps) {
    out.set(op, at);
    at += op.length;
  }
  return out;
}

/** "ops" in msgpack: the request's last key (frameRequest). */
const opsKey = Uint8Array.of(0xa3, 0x6f, 0x70, 0x73);

/** A route of a request's op (frameRequest): its range's id and generation. */
export interface Route {
  readonly rangeId: number;
  readonly generation: number;
}

function arrayHeadBytes(n: number): number {
  return n <= 15 ? 1 : 3;
}

function writeArrayHead(out: Uint8Array, at: number, n: number): number {
  if (n <= 15) {
    out[at] = 0x90 | n;
    return at + 1;
  }
  out[at] = 0xdc;
  out[at + 1] = n >> 8;
  out[at + 2] = n & 0xff;
  return at + 3;
}

/** The bytes of a route number in msgpack (n a safe integer, at least 0). */
function uintBytes(n: number): number {
  if (!(Number.isSafeInteger(n) && n >= 0)) throw new RangeError(`not a route number: ${n}`);
  return n < 0x80 ? 1 : n <= 0xff ? 2 : n <= 0xffff ? 3 : n <= 0xffff_ffff ? 5 : 9;
}

/**
 * A non-negative integer in msgpack as msgpackr writes it (the least width; above 2^32 - 1
 * a float 64, since a uint 64 decodes as a BigInt), at `at`; returns where it ends.
 */
export function writeUint(out: Uint8Array, at: number, n: number): number {
  if (n < 0x80) {
    out[at] = n;
    return at + 1;
  }
  if (n <= 0xff) {
    out[at] = 0xcc;
    out[at + 1] = n;
    return at + 2;
  }
  if (n <= 0xffff) {
    out[at] = 0xcd;
    out[at + 1] = n >> 8;
    out[at + 2] = n & 0xff;
    return at + 3;
  }
  if (n <= 0xffff_ffff) {
    out[at] = 0xce;
    out[at + 1] = n >>> 24;
    out[at + 2] = (n >>> 16) & 0xff;
    out[at + 3] = (n >>> 8) & 0xff;
    out[at + 4] = n & 0xff;
    return at + 5;
  }
  out[at] = 0xcb;
  new DataView(out.buffer, out.byteOffset + at + 1, 8).setFloat64(0, n);
  return at + 9;
}

/** Bytes in msgpack (bin 8, 16 or 32, as msgpackr writes them) at `at`; returns where it ends. */
export function writeBin(out: Uint8Array, at: number, x: Uint8Array): number {
  const n = x.length;
  if (n < 0x100) {
    out[at++] = 0xc4;
    out[at++] = n;
  } else if (n < 0x10000) {
    out[at++] = 0xc5;
    out[at++] = n >> 8;
    out[at++] = n & 0xff;
  } else {
    out[at++] = 0xc6;
    out[at++] = n >>> 24;
    out[at++] = (n >>> 16) & 0xff;
    out[at++] = (n >>> 8) & 0xff;
    out[at++] = n & 0xff;
  }
  out.set(x, at);
  return at + n;
}

/**
 * Bytes `frameRequest` adds around the ops: at most 11, plus 6 + the cluster id's bytes,
 * plus 24 for a range id and generation.
 */
export const requestFrameBytesMax = 11 + 6 + 64 + 24;
