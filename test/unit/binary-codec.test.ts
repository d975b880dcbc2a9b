// The binary forms of commands, data records and events (src/storage/binary.ts): every
// shape survives a round trip, the msgpack maps earlier versions wrote still read the same,
// and malformed command bytes (they arrive from the network in log entries) are refused
// without a throw.

import { describe, expect, it } from 'vitest';
import { Prng } from '../../src/lib/prng.ts';
import { binaryTag } from '../../src/storage/binary.ts';
import {
  type ApplyResult,
  type Command,
  type DataRecord,
  decodeCommand,
  decodeRangeCommand,
  decodeRecord,
  decodeRecordValue,
  encodeCommand,
  encodeRangeCommand,
  encodeRecord,
  keyBytesMax,
  packr,
} from '../../src/storage/commands.ts';
import type { RangeDescriptor } from '../../src/storage/descriptor.ts';
import {
  decodeEvent,
  encodeEvent,
  eventToWire,
  type RangeEvent,
} from '../../src/storage/events.ts';

const b = (s: string): Buffer => Buffer.from(s);
const id = b('0123456789abcdef');

const commands: Command[] = [
  { op: 'set', key: b('k'), value: b('v'), id },
  { op: 'set', key: Buffer.alloc(keyBytesMax, 0x61), value: Buffer.alloc(70_000, 7), id },
  { op: 'set', key: b('k'), value: Buffer.alloc(0), id: Buffer.alloc(0) },
  { op: 'cas', key: b('k'), expect: null, value: b('v'), id },
  { op: 'cas', key: b('k'), expect: b('old'), value: b('new'), id },
  { op: 'cas', key: b('k'), expect: Buffer.alloc(0), value: b('new'), id },
  { op: 'del', key: b('\u0000\u00ff.*> binary'), id },
  { op: 'alloc', key: b('\u0000sys/next-range-id'), id },
  { op: 'desc', key: b('\u0000sys/range/7'), value: b('descriptor bytes'), generation: 3, id },
  { op: 'split', key: b('m'), generation: 2 ** 40, rightId: 0xffff_fffe, id: Buffer.alloc(0) },
];

/** The msgpack map an earlier version wrote for `cmd`. */
function oldCommand(cmd: Command): Uint8Array {
  return packr.pack({ ...cmd });
}

describe('commands', () => {
  it('every command survives a round trip, and reads the same as its old msgpack form', () => {
    for (const cmd of commands) {
      const bytes = encodeCommand(cmd);
      expect(bytes[0]).toBe(binaryTag);
      expect(decodeCommand(bytes)).toEqual(cmd);
      expect(decodeCommand(oldCommand(cmd))).toEqual(cmd);
      expect(decodeRangeCommand(bytes)).toBeUndefined();
    }
    for (const upTo of [0, 1, 2 ** 53 - 1]) {
      const bytes = encodeRangeCommand({ op: 'compactEvents', upTo });
      expect(decodeRangeCommand(bytes)).toEqual({ op: 'compactEvents', upTo });
      expect(decodeCommand(bytes)).toBeUndefined();
      const forget = encodeRangeCommand({ op: 'forgetRequests', below: upTo });
      expect(decodeRangeCommand(forget)).toEqual({ op: 'forgetRequests', below: upTo });
      expect(decodeCommand(forget)).toBeUndefined();
      // Trailing or missing bytes are not a command.
      expect(decodeRangeCommand(Uint8Array.from([...forget, 0]))).toBeUndefined();
      expect(decodeRangeCommand(forget.subarray(0, forget.length - 1))).toBeUndefined();
    }
  });

  it('a command keeps bytes of its own (the log holds it; no shared pool slab)', () => {
    const bytes = encodeCommand(commands[0]!);
    expect(bytes.byteOffset).toBe(0);
    expect(bytes.buffer.byteLength).toBe(bytes.length);
  });

  it('refuses every truncation, trailing bytes, and out-of-range fields, never throwing', () => {
    for (const cmd of commands) {
      const bytes = Buffer.from(encodeCommand(cmd));
      for (let n = 0; n < bytes.length; n++) {
        expect(decodeCommand(bytes.subarray(0, n))).toBeUndefined();
      }
      expect(decodeCommand(Buffer.concat([bytes, Buffer.from([0])]))).toBeUndefined();
    }
    const tagged = (...parts: number[][]) => Buffer.from([binaryTag, ...parts.flat()]);
    const u16 = (n: number) => [n >>> 8, n & 0xff];
    const u32 = (n: number) => [n >>> 24, (n >>> 16) & 0xff, (n >>> 8) & 0xff, n & 0xff];
    const key = [...u16(1), 0x6b];
    const noId = [0];
    // Unknown op; an empty key; a key over the limit; an id over the limit.
    expect(decodeCommand(tagged([99], key, noId))).toBeUndefined();
    expect(decodeCommand(tagged([3], u16(0), noId))).toBeUndefined();
    const long = Array(keyBytesMax + 1).fill(0x61);
    expect(decodeCommand(tagged([3], u16(long.length), long, noId))).toBeUndefined();
    expect(decodeCommand(tagged([3], key, [65], Array(65).fill(1)))).toBeUndefined();
    // cas: the expect flag is 0 or 1.
    expect(decodeCommand(tagged([2], key, [2], u32(0), noId))).toBeUndefined();
    // desc and split: generations and range ids are counts; u64 past 2^53 is refused.
    const zero64 = [...u32(0), ...u32(0)];
    expect(decodeCommand(tagged([5], key, u32(0), zero64, noId))).toBeUndefined();
    expect(decodeCommand(tagged([6], key, [0, 0, 0, 0, 0, 0, 0, 1], u32(0), noId))).toBeUndefined();
    const huge = [...u32(0x20_0000), ...u32(0)];
    expect(decodeCommand(tagged([6], key, huge, u32(2), noId))).toBeUndefined();
    expect(decodeRangeCommand(tagged([7], huge))).toBeUndefined();
    expect(decodeCommand(tagged([6], key, [0, 0, 0, 0, 0, 0, 0, 1], u32(2), noId))).toEqual({
      op: 'split',
      key: b('k'),
      generation: 1,
      rightId: 2,
      id: Buffer.alloc(0),
    });
    // Random bytes after the tag: refused or decoded, never a throw.
    const prng = new Prng(7);
    for (let i = 0; i < 20_000; i++) {
      const n = 1 + prng.int(40);
      const junk = Buffer.alloc(n);
      for (let j = 0; j < n; j++) junk[j] = prng.int(256);
      junk[0] = binaryTag;
      if (n > 1 && prng.int(2) === 0) junk[1] = 1 + prng.int(7);
      expect(() => decodeCommand(junk)).not.toThrow();
      expect(() => decodeRangeCommand(junk)).not.toThrow();
    }
  });
});

describe('data records', () => {
  const results: ApplyResult[] = [
    { ok: true },
    { ok: true, success: true, value: b('new') },
    { ok: true, success: false, value: null },
    { ok: true, success: false, value: b('current') },
    { ok: true, value: null },
    { ok: true, value: b('last') },
    { ok: false, code: 'Exhausted', msg: 'no range ids left' },
  ];
  const records: DataRecord[] = [
    { value: b('v'), revision: 0 },
    { value: Buffer.alloc(0), revision: 2 ** 53 - 1 },
    { value: Buffer.alloc(100, 1), revision: 42, requests: [[id, 40, { ok: true }]] },
    {
      value: b('v'),
      revision: 9,
      requests: results.map((r, i) => [Buffer.from([i + 1]), i + 1, r] as const),
    },
  ];

  it('every record survives a round trip, and reads the same as its old msgpack form', () => {
    for (const record of records) {
      const bytes = encodeRecord(record);
      expect(bytes[0]).toBe(binaryTag);
      expect(decodeRecord(bytes)).toEqual(record);
      const old = packr.pack(
        record.requests === undefined ? { value: record.value, revision: record.revision } : record,
      );
      expect(decodeRecord(old)).toEqual(record);
      // A get's read: the value alone, a copy (the source is overwritten after it).
      for (const form of [bytes, old]) {
        const value = decodeRecordValue(form);
        form.fill(0xee);
        expect(Buffer.from(value)).toEqual(Buffer.from(record.value));
      }
    }
  });

  it('a result keeps its fields in the order applyCommand made them', () => {
    const record: DataRecord = {
      value: b('v'),
      revision: 5,
      requests: [[id, 5, { ok: true, success: true, value: b('v') }]],
    };
    const [, , result] = decodeRecord(encodeRecord(record)).requests![0]!;
    expect(Object.keys(result)).toEqual(['ok', 'success', 'value']);
  });

  it('a damaged record is an invariant failure, not a wrong value', () => {
    const bytes = Buffer.from(encodeRecord(records[2]!));
    expect(() => decodeRecord(bytes.subarray(0, bytes.length - 1))).toThrow(/decodes/);
    // Cut inside the value: a get's read fails the same way.
    expect(() => decodeRecordValue(bytes.subarray(0, 20))).toThrow(/decodes/);
  });
});

describe('events', () => {
  const d = (rangeId: number, start: string, end: string | null): RangeDescriptor => ({
    rangeId,
    start: b(start),
    end: end === null ? null : b(end),
    replicas: [{ nodeId: 'a', replicaId: 1, role: 'voter' }],
    generation: 2,
  });
  const events: RangeEvent[] = [
    { op: 'set', key: b('k'), value: b('v') },
    { op: 'set', key: b('k'), value: Buffer.alloc(0), prevValue: Buffer.alloc(0) },
    { op: 'set', key: b('k'), value: b('v2'), prevValue: b('v1') },
    { op: 'del', key: b('k'), prevValue: b('v2') },
    { op: 'split', left: d(1, '', 'm'), right: d(2, 'm', null) },
  ];

  it('every event survives a round trip, and reads the same as its old msgpack form', () => {
    for (const e of events) {
      const bytes = encodeEvent(e);
      expect(bytes[0]).toBe(binaryTag);
      expect(decodeEvent(bytes)).toEqual(e);
      expect(decodeEvent(packr.pack(eventToWire(e)))).toEqual(e);
    }
  });

  it('a damaged event is an invariant failure', () => {
    for (const e of events) {
      const bytes = Buffer.from(encodeEvent(e));
      expect(() => decodeEvent(bytes.subarray(0, bytes.length - 1))).toThrow(/decodes/);
    }
  });
});

describe('limits', () => {
  it('a field over its length field is refused, not written cut short', () => {
    const long = Buffer.alloc(256, 1);
    expect(() => encodeCommand({ op: 'del', key: b('k'), id: long })).toThrow(RangeError);
    expect(() =>
      encodeCommand({ op: 'del', key: Buffer.alloc(0x1_0000, 0x61), id: Buffer.alloc(0) }),
    ).toThrow(RangeError);
  });
});
