// The node-to-node envelope (src/transport/raft-codec.ts): every message type survives a
// round trip, and malformed messages in either wire form are refused with a reason.

import { describe, expect, it } from 'vitest';
import type { Message } from '../../ranges/core/types.ts';
import { encode, protocolVersion } from '../../src/protocol/wire.ts';
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

describe('raft envelopes', () => {
  it('carry every message type unchanged', () => {
    const wire = encodeEnvelope({
      v: protocolVersion,
      cid: 'c',
      from: 'n1',
      store: 's',
      msgs: messages.map((m, i) => [i + 1, m] as const),
    });
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
});
