// The node-to-node envelope on `<p>.raft.<nodeId>`: one NATS message per destination
// node per turn, carrying that turn's consensus messages of every range.
//
//   { v: 1, cid: clusterId, from: nodeId, store: senderStoreId, msgs: [[rangeId, Message], ...] }
//
// A message is a map with its field names, except the four a busy range sends every
// turn, which are arrays by position (compact below): with hundreds of ranges in a turn,
// encoding and decoding the field names of each was about a tenth of a node's CPU.
//
//   append             [1, from, to, term, prevIndex, prevTerm, commit, seq,
//                       [term, kind (0 normal, 1 noop, 2 config), data, ...]
//                       (, 1 when commitOnly)]
//                       (entry i has index prevIndex + 1 + i)
//   appendResponse     [2, from, to, term, reject (0|1), index, hint, seq]
//   heartbeat          [3, from, to, term, commit, seq, quiesce (0|1)]
//   heartbeatResponse  [4, from, to, term, seq]
//
// Everything from the network is validated field by field: a malformed envelope or
// message is dropped (the caller logs it), never trusted and never allowed to throw
// out of the handler.

import type { Entry, Message, SnapshotMeta } from '../../ranges/core/types.ts';
import { ownBytes } from '../lib/bytes.ts';
import { decode, encode, protocolVersion } from '../protocol/wire.ts';

export interface RaftEnvelope {
  readonly v: number;
  /** Empty while the sender has not learned the cluster id (first bootstrap). */
  readonly cid: string;
  readonly from: string;
  readonly store: string;
  readonly msgs: ReadonlyArray<readonly [number, Message]>;
}

export function encodeEnvelope(env: RaftEnvelope): Uint8Array {
  const msgs: unknown[] = new Array(env.msgs.length);
  for (let i = 0; i < env.msgs.length; i++) {
    const [rangeId, m] = env.msgs[i]!;
    msgs[i] = [rangeId, compact(m)];
  }
  return encode({ v: env.v, cid: env.cid, from: env.from, store: env.store, msgs });
}

const appendCode = 1;
const appendResponseCode = 2;
const heartbeatCode = 3;
const heartbeatResponseCode = 4;
const kindCodes = { normal: 0, noop: 1, config: 2 } as const;
const kinds = ['normal', 'noop', 'config'] as const;

/** The wire form of a message: an array for the hot types (see the header), else itself. */
function compact(m: Message): unknown {
  switch (m.type) {
    case 'append': {
      const es: unknown[] = new Array(m.entries.length * 3);
      for (let i = 0; i < m.entries.length; i++) {
        const e = m.entries[i]!;
        es[3 * i] = e.term;
        es[3 * i + 1] = kindCodes[e.kind];
        es[3 * i + 2] = e.data;
      }
      const a = [appendCode, m.from, m.to, m.term, m.prevIndex, m.prevTerm, m.commit, m.seq, es];
      if (m.commitOnly === true) a.push(1);
      return a;
    }
    case 'appendResponse':
      return [appendResponseCode, m.from, m.to, m.term, m.reject ? 1 : 0, m.index, m.hint, m.seq];
    case 'heartbeat':
      return [heartbeatCode, m.from, m.to, m.term, m.commit, m.seq, m.quiesce ? 1 : 0];
    case 'heartbeatResponse':
      return [heartbeatResponseCode, m.from, m.to, m.term, m.seq];
    default:
      return m;
  }
}

const isFlag = (x: unknown): x is 0 | 1 => x === 0 || x === 1;

/** A message in array form, checked field by field, or why it is malformed. */
function checkCompact(a: readonly unknown[]): Message | string {
  const [code, from, to, term] = a;
  if (!isInt(from) || !isInt(to) || !isInt(term) || from === 0 || to === 0) {
    return 'message from, to and term must be integers (ids non-zero)';
  }
  const base = { from, to, term };
  switch (code) {
    case appendCode: {
      const [, , , , prevIndex, prevTerm, commit, seq, es, commitOnly] = a;
      if (a.length !== 9 && !(a.length === 10 && commitOnly === 1)) return 'bad append';
      if (!isInt(prevIndex) || !isInt(prevTerm) || !isInt(commit)) return 'bad append';
      if (!isInt(seq) || !Array.isArray(es) || es.length % 3 !== 0) return 'bad append';
      if (commitOnly === 1 && es.length > 0) return 'bad append: commitOnly with entries';
      const entries: Entry[] = new Array(es.length / 3);
      for (let i = 0; i < entries.length; i++) {
        const eTerm = es[3 * i];
        const kindCode = es[3 * i + 1];
        const kind = isInt(kindCode) ? kinds[kindCode] : undefined;
        const data = es[3 * i + 2];
        if (!isInt(eTerm) || kind === undefined || !isBytes(data)) return 'bad append entry';
        // A copy, as in checkEntry.
        entries[i] = { index: prevIndex + 1 + i, term: eTerm, kind, data: ownBytes(data) };
      }
      return {
        type: 'append',
        ...base,
        prevIndex,
        prevTerm,
        entries,
        commit,
        seq,
        ...(commitOnly === 1 ? { commitOnly: true } : {}),
      };
    }
    case appendResponseCode: {
      const [, , , , reject, index, hint, seq] = a;
      if (a.length !== 8 || !isFlag(reject) || !isInt(index) || !isInt(hint) || !isInt(seq)) {
        return 'bad appendResponse';
      }
      return { type: 'appendResponse', ...base, reject: reject === 1, index, hint, seq };
    }
    case heartbeatCode: {
      const [, , , , commit, seq, quiesce] = a;
      if (a.length !== 7 || !isInt(commit) || !isInt(seq) || !isFlag(quiesce)) {
        return 'bad heartbeat';
      }
      return {
        type: 'heartbeat',
        ...base,
        commit,
        seq,
        ...(quiesce === 1 ? { quiesce: true } : {}),
      };
    }
    case heartbeatResponseCode: {
      const seq = a[4];
      if (a.length !== 5 || !isInt(seq)) return 'bad heartbeatResponse';
      return { type: 'heartbeatResponse', ...base, seq };
    }
    default:
      return `unknown message code ${JSON.stringify(String(code)).slice(0, 40)}`;
  }
}

export type Decoded = { ok: true; env: RaftEnvelope } | { ok: false; why: string };

const isInt = (x: unknown): x is number => Number.isSafeInteger(x) && (x as number) >= 0;
const isBool = (x: unknown): x is boolean => typeof x === 'boolean';
const isBytes = (x: unknown): x is Uint8Array => x instanceof Uint8Array;

export function decodeEnvelope(bytes: Uint8Array): Decoded {
  let raw: unknown;
  try {
    raw = decode(bytes);
  } catch (err) {
    return { ok: false, why: `undecodable msgpack (${(err as Error).message})` };
  }
  if (typeof raw !== 'object' || raw === null) return { ok: false, why: 'not a map' };
  const e = raw as Record<string, unknown>;
  if (e.v !== protocolVersion) return { ok: false, why: `protocol version ${String(e.v)}` };
  if (typeof e.cid !== 'string' || typeof e.from !== 'string' || typeof e.store !== 'string') {
    return { ok: false, why: 'cid, from and store must be strings' };
  }
  if (!Array.isArray(e.msgs)) return { ok: false, why: 'msgs must be an array' };
  const msgs: [number, Message][] = [];
  for (const item of e.msgs) {
    if (!Array.isArray(item) || item.length !== 2 || !isInt(item[0])) {
      return { ok: false, why: 'each msgs item must be [rangeId, message]' };
    }
    const m = Array.isArray(item[1]) ? checkCompact(item[1]) : checkMessage(item[1]);
    if (typeof m === 'string') return { ok: false, why: m };
    msgs.push([item[0], m]);
  }
  return { ok: true, env: { v: e.v, cid: e.cid, from: e.from, store: e.store, msgs } };
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
