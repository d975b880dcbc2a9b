// The node-to-node envelope (src/transport/raft-codec.ts): every message type survives a
// round trip, and malformed messages in either wire form are refused with a reason.

import { describe, expect, it } from 'vitest';
import type { Message } from '../../ranges/core/types.ts';
import { Prng } from '../../src/lib/prng.ts';
import { decode, encode, protocolVersion } from '../../src/protocol/wire.ts';
import { decodeEnvelope, encodeEnvelope } from '../../src/transport/raft-codec.ts';

// Decoded bytes are Buffers (msgpackr), so the expectations use Buffers too.
const bytes = (s: string) => Buffer.from(s);
const config = { voters: [1, 2, 3], outgoing: [], learners: [] };
const base = { from: 1, to: 2, term: 7 };

const messages: Message[] = [
  { type: 'prevote', ...base, lastIndex: 9, lastTerm: 6, transfer: false },
  { type: 'voteResponse', ...base, reject: true },
  {
    type: 'append',
    ...base,
    prevIndex: 41,
    prevTerm: 6,
    entries: [
      { index: 42, term: 6, kind: 'normal', data: bytes('put a') },
      { index: 43, term: 7, kind: 'noop', data: Buffer.alloc(0) },
      { index: 44, term: 7, kind: 'config', data: bytes('c') },
    ],
    commit: 40,
    seq: 12,
  },
  { type: 'append', ...base, prevIndex: 0, prevTerm: 0, entries: [], commit: 0, seq: 1 },
  {
    type: 'append',
    ...base,
    prevIndex: 44,
    prevTerm: 7,
    entries: [],
    commit: 44,
    seq: 17,
    commitOnly: true,
  },
  { type: 'appendResponse', ...base, reject: false, index: 44, hint: 0, seq: 12 },
  { type: 'appendResponse', ...base, reject: true, index: 41, hint: 30, seq: 13 },
  { type: 'heartbeat', ...base, commit: 44, seq: 14 },
  { type: 'heartbeat', ...base, commit: 44, seq: 15, quiesce: true },
  { type: 'heartbeatResponse', ...base, seq: 15 },
  {
    type: 'snapshot',
    ...base,
    meta: { index: 40, term: 6, config },
    offset: 0,
    data: bytes('chunk'),
    done: true,
    seq: 16,
  },
  { type: 'timeoutNow', ...base },
];

const envelope = (msgs: unknown[]) =>
  encode({ v: protocolVersion, cid: 'c', from: 'n1', store: 's', msgs });

/** An envelope of every message type, range ids 1, 2, ... */
const everyMessage = () =>
  encodeEnvelope({
    v: protocolVersion,
    cid: 'c',
    from: 'n1',
    store: 's',
    msgs: messages.map((m, i) => [i + 1, m] as const),
  });

describe('raft envelopes', () => {
  it('carry every message type unchanged', () => {
    const wire = everyMessage();
    const d = decodeEnvelope(wire);
    expect(d.ok).toBe(true);
    if (!d.ok) return;
    expect(d.env.msgs.map(([r]) => r)).toEqual(messages.map((_, i) => i + 1));
    expect(d.env.msgs.map(([, m]) => m)).toEqual(messages);
  });

  it('refuses malformed messages in the array form with a reason', () => {
    const good = [1, 1, 2, 7, 41, 6, 40, 12, [6, 0, bytes('x')]];
    const cases: Array<[string, unknown[]]> = [
      ['unknown code', [9, 1, 2, 7]],
      ['zero sender', [1, 0, 2, 7, 41, 6, 40, 12, []]],
      ['short append', good.slice(0, 8)],
      ['entries not in threes', [...good.slice(0, 8), [6, 0]]],
      ['bad entry kind', [...good.slice(0, 8), [6, 3, bytes('x')]]],
      ['entry kind not an integer', [...good.slice(0, 8), [6, 'length', bytes('x')]]],
      ['entry data not bytes', [...good.slice(0, 8), [6, 0, 'x']]],
      ['negative index', [2, 1, 2, 7, 0, -1, 0, 1]],
      ['reject not a flag', [2, 1, 2, 7, 2, 1, 0, 1]],
      ['heartbeat without quiesce', [3, 1, 2, 7, 4, 1]],
      ['heartbeatResponse too long', [4, 1, 2, 7, 1, 2]],
      ['commitOnly with entries', [...good, 1]],
      ['commitOnly not 1', [...good.slice(0, 8), [], 0]],
      ['append too long', [...good.slice(0, 8), [], 1, 1]],
    ];
    expect(decodeEnvelope(envelope([[1, [...good.slice(0, 8), [], 1]]])).ok).toBe(true);
    expect(decodeEnvelope(envelope([[1, good]])).ok).toBe(true);
    for (const [why, m] of cases) {
      const d = decodeEnvelope(envelope([[1, m]]));
      expect(d.ok, why).toBe(false);
      if (!d.ok) expect(d.why.length, why).toBeGreaterThan(0);
    }
  });

  it("reads any msgpack encoder's envelope: keys in any order, unknown keys, wide integers", () => {
    const big = 2 ** 40 + 3;
    const append: Message = {
      type: 'append',
      ...base,
      term: big,
      prevIndex: big,
      prevTerm: big - 1,
      entries: [{ index: big + 1, term: big, kind: 'normal', data: bytes('x') }],
      commit: big,
      seq: 2 ** 33,
    };
    // The compact form, by msgpackr (integers past 32 bits as float64), keys reordered.
    const wire = encode({
      extra: { nested: [1, 'two', { three: null }] },
      msgs: [
        [2 ** 32 + 5, [1, 1, 2, big, big, big - 1, big, 2 ** 33, [big, 0, bytes('x')]]],
        [7, { type: 'timeoutNow', from: 1, to: 2, term: 3 }],
      ],
      store: 's',
      from: 'n1',
      cid: 'c',
      v: protocolVersion,
    });
    const d = decodeEnvelope(wire);
    expect(d.ok).toBe(true);
    if (!d.ok) return;
    expect(d.env).toEqual({
      v: protocolVersion,
      cid: 'c',
      from: 'n1',
      store: 's',
      msgs: [
        [2 ** 32 + 5, append],
        [7, { type: 'timeoutNow', from: 1, to: 2, term: 3 }],
      ],
    });
    // And what encodeEnvelope writes, msgpackr reads as the same compact form.
    const again = encodeEnvelope(d.env);
    expect(decode(again)).toEqual(decode(encode({ ...d.env, msgs: d.env.msgs.map(compactOf) })));
  });

  it('refuses a cut or damaged envelope with a reason, never by throwing', () => {
    const wire = everyMessage();
    for (let n = 0; n < wire.length; n++) {
      const d = decodeEnvelope(wire.subarray(0, n));
      expect(d.ok, `cut at ${n}`).toBe(false);
      if (!d.ok) expect(d.why.length).toBeGreaterThan(0);
    }
    // Every byte flipped in turn: refused with a reason, or read as some valid envelope.
    for (let i = 0; i < wire.length; i++) {
      const bad = Uint8Array.from(wire);
      bad[i] = bad[i]! ^ 0xff;
      const d = decodeEnvelope(bad);
      if (!d.ok) expect(d.why.length).toBeGreaterThan(0);
    }
    // Spliced and random bytes, seeded: refused with a reason or read, never thrown.
    const rng = new Prng(4242);
    for (let k = 0; k < 3000; k++) {
      const bad = Uint8Array.from(wire);
      for (let j = rng.int(4); j >= 0; j--) bad[rng.int(bad.length)] = rng.int(256);
      const cut = bad.subarray(rng.int(bad.length), bad.length);
      const noise = Uint8Array.from({ length: rng.int(64) }, () => rng.int(256));
      for (const b of [bad, cut, noise]) {
        const d = decodeEnvelope(b);
        if (!d.ok) expect(d.why.length).toBeGreaterThan(0);
      }
    }
    // A count of four billion messages in a few bytes: refused before anything is made.
    const head = envelope([]);
    const lying = Buffer.concat([
      head.subarray(0, head.length - 1),
      Buffer.of(0xdd, 255, 255, 255, 255),
    ]);
    const d = decodeEnvelope(lying);
    expect(d.ok).toBe(false);
    if (!d.ok) expect(d.why).toMatch(/truncated/);
    const cases: Array<[string, unknown]> = [
      ['not a map', [1, 2]],
      ['old version', { v: 0, cid: 'c', from: 'n1', store: 's', msgs: [] }],
      ['from not a string', { v: protocolVersion, cid: 'c', from: 1, store: 's', msgs: [] }],
      ['msgs missing', { v: protocolVersion, cid: 'c', from: 'n1', store: 's' }],
      ['msgs not an array', { v: protocolVersion, cid: 'c', from: 'n1', store: 's', msgs: 3 }],
      ['item not a pair', { v: protocolVersion, cid: 'c', from: 'n1', store: 's', msgs: [[1]] }],
      [
        'a map message of no known type',
        { v: protocolVersion, cid: 'c', from: 'n1', store: 's', msgs: [[1, { type: 'x' }]] },
      ],
    ];
    for (const [why, env] of cases) {
      const d = decodeEnvelope(encode(env));
      expect(d.ok, why).toBe(false);
      if (!d.ok) expect(d.why.length, why).toBeGreaterThan(0);
    }
  });
});

/** The compact (array) form of the four hot types, as the header of raft-codec.ts gives it. */
function compactOf([rangeId, m]: readonly [number, Message]): unknown {
  switch (m.type) {
    case 'append': {
      const kinds = { normal: 0, noop: 1, config: 2 };
      const es = m.entries.flatMap((e) => [e.term, kinds[e.kind], e.data]);
      const a: unknown[] = [1, m.from, m.to, m.term, m.prevIndex, m.prevTerm, m.commit, m.seq, es];
      if (m.commitOnly) a.push(1);
      return [rangeId, a];
    }
    case 'appendResponse':
      return [rangeId, [2, m.from, m.to, m.term, m.reject ? 1 : 0, m.index, m.hint, m.seq]];
    case 'heartbeat':
      return [rangeId, [3, m.from, m.to, m.term, m.commit, m.seq, m.quiesce ? 1 : 0]];
    case 'heartbeatResponse':
      return [rangeId, [4, m.from, m.to, m.term, m.seq]];
    default:
      return [rangeId, m];
  }
}
