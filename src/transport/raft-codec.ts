// The node-to-node envelope on `<p>.raft.<nodeId>`: one NATS message per destination
// node per turn, carrying that turn's consensus messages of every range.
//
//   { v: 1, cid: clusterId, from: nodeId, store: senderStoreId, msgs: [[rangeId, Message], ...] }
//
// A message is a map with its field names, except the four a busy range sends every
// turn, which are arrays by position: with hundreds of ranges in a turn, encoding and
// decoding the field names of each was about a tenth of a node's CPU.
//
//   append             [1, from, to, term, prevIndex, prevTerm, commit, seq,
//                       [term, kind (0 normal, 1 noop, 2 config), data, ...]
//                       (, 1 when commitOnly)]
//                       (entry i has index prevIndex + 1 + i)
//   appendResponse     [2, from, to, term, reject (0|1), index, hint, seq]
//   heartbeat          [3, from, to, term, commit, seq, quiesce (0|1)]
//   heartbeatResponse  [4, from, to, term, seq]
//
// The envelope and the four array forms are written and read here by hand, as plain
// msgpack that any msgpack library reads and writes (DESIGN.md, "Wire format"); the rare
// map-form messages go through msgpackr. Written by msgpackr, each message first became
// an array of its fields, and read by it, an array again before it became a message: at
// 256 busy ranges, one message per range and turn, those arrays were about a tenth of what
// a leader allocated per put. By hand, an append encodes in 0.08-0.11 µs against
// 0.29-0.31 (64 one-entry appends per envelope; decoding, which copies each entry's
// bytes, stays at 0.37-0.49 µs).
//
// Everything from the network is validated field by field: a malformed envelope or
// message is dropped (the caller logs it), never trusted and never allowed to throw
// out of the handler.

import type { Entry, Message, SnapshotMeta } from '../../ranges/core/types.ts';
import { ownBytes } from '../lib/bytes.ts';
import { decode, encode, protocolVersion, writeBin, writeUint } from '../protocol/wire.ts';

export interface RaftEnvelope {
  readonly v: number;
  /** Empty while the sender has not learned the cluster id (first bootstrap). */
  readonly cid: string;
  readonly from: string;
  readonly store: string;
  readonly msgs: ReadonlyArray<readonly [number, Message]>;
}

/**
 * The envelope as msgpack, written by hand (what msgpackr makes of the compact form, but
 * for the envelope's map header: a fixmap where msgpackr writes a map 16): no array per
 * message on the way, which at 256 busy ranges, one message per range and turn, was a
 * tenth of the allocation per put at a leader. Map-form messages (the rare types) are
 * packed by msgpackr into the same buffer.
 */
export function encodeEnvelope(env: RaftEnvelope): Uint8Array {
  begin();
  mapHeader(5);
  str('v');
  uint(env.v);
  str('cid');
  str(env.cid);
  str('from');
  str(env.from);
  str('store');
  str(env.store);
  str('msgs');
  arrayHeader(env.msgs.length);
  for (let i = 0; i < env.msgs.length; i++) {
    const [rangeId, m] = env.msgs[i]!;
    byte(0x92);
    uint(rangeId);
    writeMessage(m);
  }
  return end();
}

const appendCode = 1;
const appendResponseCode = 2;
const heartbeatCode = 3;
const heartbeatResponseCode = 4;
const kindCodes = { normal: 0, noop: 1, config: 2 } as const;
const kinds = ['normal', 'noop', 'config'] as const;

/** A message in its wire form: an array for the hot types (see the header), else a map. */
function writeMessage(m: Message): void {
  switch (m.type) {
    case 'append': {
      const commitOnly = m.commitOnly === true;
      byte(commitOnly ? 0x9a : 0x99);
      byte(appendCode);
      uint(m.from);
      uint(m.to);
      uint(m.term);
      uint(m.prevIndex);
      uint(m.prevTerm);
      uint(m.commit);
      uint(m.seq);
      const es = m.entries;
      arrayHeader(es.length * 3);
      for (let i = 0; i < es.length; i++) {
        const e = es[i]!;
        uint(e.term);
        byte(kindCodes[e.kind]);
        bin(e.data);
      }
      if (commitOnly) byte(1);
      return;
    }
    case 'appendResponse':
      byte(0x98);
      byte(appendResponseCode);
      uint(m.from);
      uint(m.to);
      uint(m.term);
      byte(m.reject ? 1 : 0);
      uint(m.index);
      uint(m.hint);
      uint(m.seq);
      return;
    case 'heartbeat':
      byte(0x97);
      byte(heartbeatCode);
      uint(m.from);
      uint(m.to);
      uint(m.term);
      uint(m.commit);
      uint(m.seq);
      byte(m.quiesce ? 1 : 0);
      return;
    case 'heartbeatResponse':
      byte(0x95);
      byte(heartbeatResponseCode);
      uint(m.from);
      uint(m.to);
      uint(m.term);
      uint(m.seq);
      return;
    default:
      raw(encode(m));
  }
}

// ---------------------------------------------------------------- the writer
//
// Envelopes are written into a chunk and handed out as views of it; a chunk is never
// written twice (each envelope starts where the last one ended), so a view stays valid
// for as long as its holder (the NATS client, until it flushes) keeps it. A full chunk is
// left to its views and a new one started (msgpackr's packer works the same way).

const chunkBytes = 64 * 1024;
let out: Buffer = Buffer.allocUnsafeSlow(chunkBytes);
let outView = new DataView(out.buffer, out.byteOffset, out.byteLength);
let start = 0;
let pos = 0;

function begin(): void {
  if (out.length - pos < 1024) newChunk(0);
  start = pos;
}

function end(): Uint8Array {
  const view = out.subarray(start, pos);
  start = pos;
  return view;
}

/** Makes room for `n` more bytes, moving what this envelope wrote so far to a new chunk. */
function room(n: number): void {
  if (pos + n > out.length) newChunk(n);
}

function newChunk(n: number): void {
  const written = pos - start;
  const next = Buffer.allocUnsafeSlow(Math.max(chunkBytes, 2 * (written + n)));
  out.copy(next, 0, start, pos);
  out = next;
  outView = new DataView(out.buffer, out.byteOffset, out.byteLength);
  start = 0;
  pos = written;
}

function byte(b: number): void {
  room(1);
  out[pos++] = b;
}

/** A non-negative integer (every number in a message is one). */
function uint(n: number): void {
  room(9);
  pos = writeUint(out, pos, n);
}

function header(n: number, fix: number, fixMax: number, t16: number, t32: number): void {
  room(5);
  if (n <= fixMax) out[pos++] = fix | n;
  else if (n <= 0xffff) {
    out[pos++] = t16;
    outView.setUint16(pos, n);
    pos += 2;
  } else {
    out[pos++] = t32;
    outView.setUint32(pos, n);
    pos += 4;
  }
}

function arrayHeader(n: number): void {
  header(n, 0x90, 15, 0xdc, 0xdd);
}

function mapHeader(n: number): void {
  header(n, 0x80, 15, 0xde, 0xdf);
}

function str(s: string): void {
  const n = Buffer.byteLength(s);
  room(5 + n);
  if (n < 32) out[pos++] = 0xa0 | n;
  else if (n <= 0xff) {
    out[pos++] = 0xd9;
    out[pos++] = n;
  } else if (n <= 0xffff) {
    out[pos++] = 0xda;
    outView.setUint16(pos, n);
    pos += 2;
  } else {
    out[pos++] = 0xdb;
    outView.setUint32(pos, n);
    pos += 4;
  }
  pos += out.write(s, pos, n, 'utf8');
}

function bin(b: Uint8Array): void {
  room(5 + b.length);
  pos = writeBin(out, pos, b);
}

function raw(b: Uint8Array): void {
  room(b.length);
  out.set(b, pos);
  pos += b.length;
}

// ---------------------------------------------------------------- the reader
//
// Reads the envelope straight into messages (no array per message on the way) and checks
// every field as it goes; anything malformed throws a Malformed, which decodeEnvelope
// turns into its reason. Map-form messages are found by skipping over them, decoded by
// msgpackr and checked by checkMessage.

class Malformed extends Error {}

const isInt = (x: unknown): x is number => Number.isSafeInteger(x) && (x as number) >= 0;
const isBool = (x: unknown): x is boolean => typeof x === 'boolean';
const isBytes = (x: unknown): x is Uint8Array => x instanceof Uint8Array;

let inp: Uint8Array = new Uint8Array(0);
let inView = new DataView(inp.buffer);
let at = 0;

function need(n: number): void {
  if (at + n > inp.length) throw new Malformed('truncated msgpack');
}

/** A non-negative safe integer in any of msgpack's integer or float forms. */
function readUint(what: string): number {
  need(1);
  const t = inp[at]!;
  if (t < 0x80) {
    at++;
    return t;
  }
  let v: number;
  switch (t) {
    case 0xcc:
      need(2);
      v = inp[at + 1]!;
      at += 2;
      return v;
    case 0xcd:
      need(3);
      v = inView.getUint16(at + 1);
      at += 3;
      return v;
    case 0xce:
      need(5);
      v = inView.getUint32(at + 1);
      at += 5;
      return v;
    case 0xcf:
      need(9);
      v = inView.getUint32(at + 1) * 0x100000000 + inView.getUint32(at + 5);
      at += 9;
      break;
    case 0xd0:
      need(2);
      v = inView.getInt8(at + 1);
      at += 2;
      break;
    case 0xd1:
      need(3);
      v = inView.getInt16(at + 1);
      at += 3;
      break;
    case 0xd2:
      need(5);
      v = inView.getInt32(at + 1);
      at += 5;
      break;
    case 0xd3:
      need(9);
      v = inView.getInt32(at + 1) * 0x100000000 + inView.getUint32(at + 5);
      at += 9;
      break;
    case 0xca:
      need(5);
      v = inView.getFloat32(at + 1);
      at += 5;
      break;
    case 0xcb:
      need(9);
      v = inView.getFloat64(at + 1);
      at += 9;
      break;
    default:
      throw new Malformed(`${what} must be a non-negative integer`);
  }
  if (!isInt(v)) throw new Malformed(`${what} must be a non-negative integer`);
  return v;
}

function readFlag(what: string): boolean {
  const v = readUint(what);
  if (v > 1) throw new Malformed(`${what} must be 0 or 1`);
  return v === 1;
}

/** An array's length, or -1 (nothing read) when the next value is not an array. */
function arrayLength(): number {
  return readLength(0x90, 0xdc, 0xdd);
}

/** A map's length (its pairs), or -1 (nothing read) when the next value is not a map. */
function mapLength(): number {
  return readLength(0x80, 0xde, 0xdf);
}

function readLength(fix: number, t16: number, t32: number): number {
  need(1);
  const t = inp[at]!;
  if ((t & 0xf0) !== fix) return sized(-1, t16, t32);
  at++;
  // Each element takes a byte at least: a longer count is refused before anything is
  // made for it.
  need(t & 0x0f);
  return t & 0x0f;
}

/**
 * Reads the header of a value whose 8-, 16- and 32-bit length forms are t8, t16 and t32
 * (-1: none) and returns its length, once that many bytes are there (an array or map
 * counts elements, each a byte at least); -1, with nothing read, for another type.
 */
function sized(t8: number, t16: number, t32: number): number {
  need(1);
  const t = inp[at]!;
  let n: number;
  if (t === t8) {
    need(2);
    n = inp[at + 1]!;
    at += 2;
  } else if (t === t16) {
    need(3);
    n = inView.getUint16(at + 1);
    at += 3;
  } else if (t === t32) {
    need(5);
    n = inView.getUint32(at + 1);
    at += 5;
  } else return -1;
  need(n);
  return n;
}

const utf8 = new TextDecoder('utf-8', { fatal: true });

/** A string, or undefined (nothing read) when the next value is not one. */
function readStr(): string | undefined {
  need(1);
  const t = inp[at]!;
  let n: number;
  if ((t & 0xe0) === 0xa0) {
    n = t & 0x1f;
    at++;
    need(n);
  } else {
    n = sized(0xd9, 0xda, 0xdb);
    if (n < 0) return undefined;
  }
  at += n;
  try {
    return utf8.decode(inp.subarray(at - n, at));
  } catch {
    throw new Malformed('a string is not valid UTF-8');
  }
}

/** Bytes (msgpack bin), as a view of the input. */
function readBin(what: string): Uint8Array {
  const n = sized(0xc4, 0xc5, 0xc6);
  if (n < 0) throw new Malformed(`${what} must be bytes`);
  at += n;
  return inp.subarray(at - n, at);
}

/** Moves past one value of any type (without recursion: a count of values still to skip). */
function skip(): void {
  let left = 1;
  while (left > 0) {
    left--;
    need(1);
    const t = inp[at++]!;
    if (t < 0x80 || t >= 0xe0 || t === 0xc0 || t === 0xc2 || t === 0xc3) continue;
    if (t < 0x90) left += 2 * (t & 0x0f);
    else if (t < 0xa0) left += t & 0x0f;
    else if (t < 0xc0) at += t & 0x1f;
    else {
      switch (t) {
        case 0xc4:
        case 0xd9:
          need(1);
          at += 1 + inp[at]!;
          break;
        case 0xc5:
        case 0xda:
          need(2);
          at += 2 + inView.getUint16(at);
          break;
        case 0xc6:
        case 0xdb:
          need(4);
          at += 4 + inView.getUint32(at);
          break;
        case 0xc7:
          need(1);
          at += 2 + inp[at]!;
          break;
        case 0xc8:
          need(2);
          at += 3 + inView.getUint16(at);
          break;
        case 0xc9:
          need(4);
          at += 5 + inView.getUint32(at);
          break;
        case 0xcc:
        case 0xd0:
          at += 1;
          break;
        case 0xcd:
        case 0xd1:
          at += 2;
          break;
        case 0xca:
        case 0xce:
        case 0xd2:
          at += 4;
          break;
        case 0xcb:
        case 0xcf:
        case 0xd3:
          at += 8;
          break;
        case 0xd4:
          at += 2;
          break;
        case 0xd5:
          at += 3;
          break;
        case 0xd6:
          at += 5;
          break;
        case 0xd7:
          at += 9;
          break;
        case 0xd8:
          at += 17;
          break;
        case 0xdc:
          need(2);
          left += inView.getUint16(at);
          at += 2;
          break;
        case 0xdd:
          need(4);
          left += inView.getUint32(at);
          at += 4;
          break;
        case 0xde:
          need(2);
          left += 2 * inView.getUint16(at);
          at += 2;
          break;
        case 0xdf:
          need(4);
          left += 2 * inView.getUint32(at);
          at += 4;
          break;
        default:
          throw new Malformed(`undecodable msgpack (type byte 0x${t.toString(16)})`);
      }
    }
    if (at > inp.length) throw new Malformed('truncated msgpack');
  }
}

/** A message: the array form of the hot types, checked field by field, or a map. */
function readMessage(): Message {
  const first = at;
  const n = arrayLength();
  if (n < 0) {
    if (mapLength() < 0) throw new Malformed('a message must be an array or a map');
    at = first;
    return readMapMessage();
  }
  if (n < 4) throw new Malformed('a message array holds a code, from, to and term');
  const code = readUint('message code');
  const from = readUint('message from');
  const to = readUint('message to');
  const term = readUint('message term');
  if (from === 0 || to === 0) throw new Malformed('message from and to must be non-zero');
  switch (code) {
    case appendCode: {
      if (n !== 9 && n !== 10) throw new Malformed('bad append: 9 or 10 fields');
      const prevIndex = readUint('append prevIndex');
      const prevTerm = readUint('append prevTerm');
      const commit = readUint('append commit');
      const seq = readUint('append seq');
      const en = arrayLength();
      if (en < 0 || en % 3 !== 0) throw new Malformed('bad append: entries in threes');
      const entries: Entry[] = new Array(en / 3);
      for (let i = 0; i < entries.length; i++) {
        const eTerm = readUint('append entry term');
        const kind = kinds[readUint('append entry kind')];
        if (kind === undefined) throw new Malformed('bad append entry kind');
        // A copy: a view would keep the whole received message alive with the log entry
        // (as in checkEntry).
        const data = ownBytes(readBin('append entry data'));
        entries[i] = { index: prevIndex + 1 + i, term: eTerm, kind, data };
      }
      if (n === 10) {
        if (readUint('append commitOnly') !== 1) throw new Malformed('bad append: commitOnly');
        if (entries.length > 0) throw new Malformed('bad append: commitOnly with entries');
        return {
          type: 'append',
          from,
          to,
          term,
          prevIndex,
          prevTerm,
          entries,
          commit,
          seq,
          commitOnly: true,
        };
      }
      return { type: 'append', from, to, term, prevIndex, prevTerm, entries, commit, seq };
    }
    case appendResponseCode: {
      if (n !== 8) throw new Malformed('bad appendResponse: 8 fields');
      const reject = readFlag('appendResponse reject');
      const index = readUint('appendResponse index');
      const hint = readUint('appendResponse hint');
      const seq = readUint('appendResponse seq');
      return { type: 'appendResponse', from, to, term, reject, index, hint, seq };
    }
    case heartbeatCode: {
      if (n !== 7) throw new Malformed('bad heartbeat: 7 fields');
      const commit = readUint('heartbeat commit');
      const seq = readUint('heartbeat seq');
      if (readFlag('heartbeat quiesce')) {
        return { type: 'heartbeat', from, to, term, commit, seq, quiesce: true };
      }
      return { type: 'heartbeat', from, to, term, commit, seq };
    }
    case heartbeatResponseCode: {
      if (n !== 5) throw new Malformed('bad heartbeatResponse: 5 fields');
      const seq = readUint('heartbeatResponse seq');
      return { type: 'heartbeatResponse', from, to, term, seq };
    }
    default:
      throw new Malformed(`unknown message code ${code}`);
  }
}

function readMapMessage(): Message {
  const from = at;
  skip();
  let raw: unknown;
  try {
    raw = decode(inp.subarray(from, at));
  } catch (err) {
    throw new Malformed(`undecodable msgpack (${(err as Error).message})`);
  }
  const m = checkMessage(raw);
  if (typeof m === 'string') throw new Malformed(m);
  return m;
}

export type Decoded = { ok: true; env: RaftEnvelope } | { ok: false; why: string };

export function decodeEnvelope(bytes: Uint8Array): Decoded {
  inp = bytes;
  inView = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  at = 0;
  try {
    return readEnvelope();
  } catch (err) {
    if (err instanceof Malformed) return { ok: false, why: err.message };
    return { ok: false, why: `undecodable msgpack (${(err as Error).message})` };
  } finally {
    inp = noBytes; // not kept alive until the next envelope
    inView = noView;
  }
}

const noBytes = new Uint8Array(0);
const noView = new DataView(noBytes.buffer);

function readEnvelope(): Decoded {
  const keys = mapLength();
  if (keys < 0) return { ok: false, why: 'not a map' };
  let v: number | undefined;
  let cid: string | undefined;
  let from: string | undefined;
  let store: string | undefined;
  /** Where msgs starts, when it came before the fields it is checked after. */
  let msgsAt = -1;
  let msgs: [number, Message][] | undefined;
  let notStrings = false;
  for (let k = 0; k < keys; k++) {
    const key = readStr();
    if (key === undefined) {
      skip(); // a key that is not a string, and its value
      skip();
    } else if (key === 'v') {
      try {
        v = readUint('v');
      } catch {
        return { ok: false, why: 'protocol version (not a number)' };
      }
    } else if (key === 'cid' || key === 'from' || key === 'store') {
      const s = readStr();
      if (s === undefined) {
        notStrings = true;
        skip();
      } else if (key === 'cid') cid = s;
      else if (key === 'from') from = s;
      else store = s;
    } else if (key === 'msgs') {
      if (v === protocolVersion && cid !== undefined && from !== undefined && store !== undefined) {
        msgs = readMsgs();
      } else {
        msgsAt = at;
        skip();
      }
    } else skip(); // the key's value (an unknown key, or a key that is not a string)
  }
  if (v !== protocolVersion) return { ok: false, why: `protocol version ${String(v)}` };
  if (notStrings || cid === undefined || from === undefined || store === undefined) {
    return { ok: false, why: 'cid, from and store must be strings' };
  }
  if (msgs === undefined) {
    if (msgsAt < 0) return { ok: false, why: 'msgs must be an array' };
    at = msgsAt;
    msgs = readMsgs();
  }
  return { ok: true, env: { v, cid, from, store, msgs } };
}

function readMsgs(): [number, Message][] {
  const n = arrayLength();
  if (n < 0) throw new Malformed('msgs must be an array');
  const msgs: [number, Message][] = new Array(n);
  for (let i = 0; i < n; i++) {
    if (arrayLength() !== 2) throw new Malformed('each msgs item must be [rangeId, message]');
    const rangeId = readUint("a msgs item's rangeId");
    msgs[i] = [rangeId, readMessage()];
  }
  return msgs;
}

function checkEntry(x: unknown): Entry | string {
  if (typeof x !== 'object' || x === null) return 'entry must be a map';
  const e = x as Record<string, unknown>;
  if (!isInt(e.index) || !isInt(e.term)) return 'entry index and term must be integers';
  if (e.kind !== 'normal' && e.kind !== 'noop' && e.kind !== 'config') return 'bad entry kind';
  if (!isBytes(e.data)) return 'entry data must be bytes';
  // A copy: the decoded bytes are a view into the whole received message (or the read
  // buffer under it), and the log keeps entries until it is truncated; a view would keep
  // that buffer alive with it (tens of KiB per idle range, found in heap snapshots), and
  // so would a slice of Buffer's shared pool (lib/bytes.ts).
  return { index: e.index, term: e.term, kind: e.kind, data: ownBytes(e.data) };
}

function checkIds(x: unknown): x is number[] {
  return Array.isArray(x) && x.length <= 64 && x.every(isInt);
}

function checkMeta(x: unknown): SnapshotMeta | string {
  if (typeof x !== 'object' || x === null) return 'snapshot meta must be a map';
  const m = x as Record<string, unknown>;
  if (!isInt(m.index) || !isInt(m.term)) return 'snapshot meta index and term must be integers';
  const c = m.config as Record<string, unknown> | null;
  if (typeof c !== 'object' || c === null) return 'snapshot meta config must be a map';
  if (!checkIds(c.voters) || !checkIds(c.outgoing) || !checkIds(c.learners)) {
    return 'snapshot config must list replica ids';
  }
  return {
    index: m.index,
    term: m.term,
    config: { voters: c.voters, outgoing: c.outgoing, learners: c.learners },
  };
}

/** Returns the message with exactly the fields of its type, or why it is malformed. */
export function checkMessage(x: unknown): Message | string {
  if (typeof x !== 'object' || x === null) return 'message must be a map';
  const m = x as Record<string, unknown>;
  if (!isInt(m.from) || !isInt(m.to) || !isInt(m.term) || m.from === 0 || m.to === 0) {
    return 'message from, to and term must be integers (ids non-zero)';
  }
  const base = { from: m.from, to: m.to, term: m.term };
  switch (m.type) {
    case 'prevote':
    case 'vote':
      if (!isInt(m.lastIndex) || !isInt(m.lastTerm) || !isBool(m.transfer)) return `bad ${m.type}`;
      return {
        type: m.type,
        ...base,
        lastIndex: m.lastIndex,
        lastTerm: m.lastTerm,
        transfer: m.transfer,
      };
    case 'prevoteResponse':
    case 'voteResponse':
      if (!isBool(m.reject)) return `bad ${m.type}`;
      return { type: m.type, ...base, reject: m.reject };
    case 'append': {
      if (!isInt(m.prevIndex) || !isInt(m.prevTerm) || !isInt(m.commit) || !isInt(m.seq)) {
        return 'bad append';
      }
      if (!Array.isArray(m.entries)) return 'append entries must be an array';
      const entries: Entry[] = [];
      for (let i = 0; i < m.entries.length; i++) {
        const e = checkEntry(m.entries[i]);
        if (typeof e === 'string') return e;
        if (e.index !== m.prevIndex + 1 + i)
          return 'append entries must be contiguous after prevIndex';
        entries.push(e);
      }
      if (m.commitOnly !== undefined && m.commitOnly !== null && m.commitOnly !== true) {
        return 'bad append: commitOnly must be true or absent';
      }
      if (m.commitOnly === true && entries.length > 0) {
        return 'bad append: commitOnly with entries';
      }
      return {
        type: 'append',
        ...base,
        prevIndex: m.prevIndex,
        prevTerm: m.prevTerm,
        entries,
        commit: m.commit,
        seq: m.seq,
        ...(m.commitOnly === true ? { commitOnly: true } : {}),
      };
    }
    case 'appendResponse':
      if (!isBool(m.reject) || !isInt(m.index) || !isInt(m.hint) || !isInt(m.seq)) {
        return 'bad appendResponse';
      }
      return {
        type: 'appendResponse',
        ...base,
        reject: m.reject,
        index: m.index,
        hint: m.hint,
        seq: m.seq,
      };
    case 'heartbeat':
      if (!isInt(m.commit) || !isInt(m.seq)) return 'bad heartbeat';
      if (m.quiesce !== undefined && m.quiesce !== null && !isBool(m.quiesce)) {
        return 'bad heartbeat';
      }
      return {
        type: 'heartbeat',
        ...base,
        commit: m.commit,
        seq: m.seq,
        ...(m.quiesce === true ? { quiesce: true } : {}),
      };
    case 'heartbeatResponse':
      if (!isInt(m.seq)) return 'bad heartbeatResponse';
      return { type: 'heartbeatResponse', ...base, seq: m.seq };
    case 'snapshot': {
      const meta = checkMeta(m.meta);
      if (typeof meta === 'string') return meta;
      if (!isInt(m.offset) || !isBytes(m.data) || !isBool(m.done) || !isInt(m.seq)) {
        return 'bad snapshot chunk';
      }
      return {
        type: 'snapshot',
        ...base,
        meta,
        offset: m.offset,
        data: m.data,
        done: m.done,
        seq: m.seq,
      };
    }
    case 'snapshotResponse':
      if (
        !isInt(m.index) ||
        !isInt(m.offset) ||
        !isBool(m.done) ||
        !isBool(m.reject) ||
        !isInt(m.seq)
      ) {
        return 'bad snapshotResponse';
      }
      return {
        type: 'snapshotResponse',
        ...base,
        index: m.index,
        offset: m.offset,
        done: m.done,
        reject: m.reject,
        seq: m.seq,
      };
    case 'timeoutNow':
      return { type: 'timeoutNow', ...base };
    default:
      return `unknown message type ${JSON.stringify(String(m.type)).slice(0, 40)}`;
  }
}
