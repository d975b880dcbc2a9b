// checkOp's answers: every kind of op comes back as a new object with the same fields in
// the same order (one V8 shape for the node code that reads them; wire.ts, shapedOp), each
// with the values the decoded op carried, and what a node forwards carries the set fields
// only. The refusals of bad ops are in test/integration/bad-input.test.ts.

import { describe, expect, it } from 'vitest';
import { checkOp, compactOp, decode, encode, type WireOp } from '../../src/protocol/wire.ts';
import { directoryKey, encodeDescriptor, rangeIdCounterKey } from '../../src/storage/descriptor.ts';

const b = (s: string) => Buffer.from(s);
const id = Buffer.alloc(16, 7);
const descriptor = {
  rangeId: 9,
  start: b('m'),
  end: null,
  replicas: [{ nodeId: 'n1', replicaId: 1, role: 'voter' as const }],
  generation: 4,
};

/** One valid op of every kind, as a client or a node sends it (field order varies). */
const valid: Record<string, Record<string, unknown>> = {
  get: { op: 'get', key: b('k') },
  set: { id, value: b('v'), key: b('k'), op: 'set' },
  cas: { op: 'cas', key: b('k'), expect: null, value: b('v'), id },
  casExpect: { op: 'cas', key: b('k'), expect: b('old'), value: b('v'), id },
  del: { op: 'del', key: b('k'), id },
  scan: { op: 'scan', key: b('a'), end: b('z'), limit: 10 },
  scanOpen: { op: 'scan', key: b(''), limit: 5 },
  eventsHead: { op: 'eventsHead', key: b('') },
  events: { op: 'events', key: b('p'), rangeId: 3, after: 7, limit: 100, waitMs: 250 },
  split: { op: 'split', key: b('m'), generation: 2 },
  splitAnyGen: { op: 'split', key: b('m') },
  transfer: { op: 'transfer', key: b('m'), node: 'n2', generation: 3 },
  alloc: { op: 'alloc', key: rangeIdCounterKey, id },
  desc: {
    op: 'desc',
    key: directoryKey(9),
    value: encodeDescriptor(descriptor),
    generation: 4,
    id,
  },
};

function checked(x: unknown): WireOp {
  const r = checkOp(x);
  if (!r.ok) throw new Error(`refused: ${r.msg}`);
  return r.value;
}

describe('checkOp', () => {
  it('answers every kind of op with the same fields in the same order', () => {
    const shapes = new Set<string>();
    for (const [name, op] of Object.entries(valid)) {
      const c = checked(decode(encode(op)));
      shapes.add(Object.keys(c).join(','));
      expect(c, name).not.toBe(op);
    }
    expect([...shapes]).toEqual([
      'op,key,value,expect,id,end,limit,rangeId,after,waitMs,generation,node',
    ]);
  });

  it("keeps each op's values, and defaults an events op's waitMs and a scan's end", () => {
    for (const [name, op] of Object.entries(valid)) {
      const decoded = decode(encode(op)) as Record<string, unknown>;
      const c = checked(decoded);
      const set = Object.fromEntries(Object.entries(c).filter(([, v]) => v !== undefined));
      const want = { ...decoded };
      if (op.op === 'scan') want.end ??= null;
      expect(set, name).toEqual(want);
    }
    expect(checked({ op: 'events', key: b(''), rangeId: 1, after: 0, limit: 1 }).waitMs).toBe(0);
  });

  it('reads a nil generation of a split or transfer as none given', () => {
    expect(checked({ op: 'split', key: b('m'), generation: null }).generation).toBeUndefined();
    const t = checked({ op: 'transfer', key: b('m'), node: 'n1', generation: null });
    expect(t.generation).toBeUndefined();
    expect(checkOp({ op: 'split', key: b('m'), generation: 0 })).toMatchObject({
      ok: false,
      code: 'BadRequest',
    });
  });

  it('still refuses what it refused: a sorted sample of bad ops', () => {
    const refused = (x: unknown) => {
      const r = checkOp(x);
      return r.ok ? 'accepted' : `${r.code}: ${r.msg}`;
    };
    expect(refused({ op: 'get', key: 'k' })).toBe('BadRequest: key must be bytes');
    expect(refused({ op: 'set', key: b('k'), id })).toBe('BadRequest: set needs a value (bytes)');
    expect(refused({ op: 'set', key: b('k'), value: b('v') })).toBe(
      'BadRequest: set needs a request id (bytes)',
    );
    expect(refused({ op: 'cas', key: b('k'), expect: 'x', value: b('v'), id })).toBe(
      'BadRequest: cas expect must be bytes or nil',
    );
    expect(refused({ op: 'del', key: Buffer.from('\0sys/x', 'latin1'), id })).toMatch(
      /^InvalidArgument: keys starting with 0x00 "sys\/"/,
    );
    expect(refused({ op: 'transfer', key: b('m') })).toBe(
      'BadRequest: transfer needs the node to lead the range (node)',
    );
    expect(refused({ op: 'alloc', key: b('k'), id })).toBe(
      'BadRequest: alloc takes the range id counter key',
    );
    expect(refused({ ...valid.desc, generation: 5 })).toBe(
      "BadRequest: desc generation is not its descriptor's",
    );
    expect(refused({ ...valid.desc, value: b('junk') })).toBe(
      'BadRequest: desc needs a descriptor (value)',
    );
    expect(refused({ op: 'nope', key: b('k') })).toMatch(/^BadRequest: op must be get, set/);
  });
});

describe('compactOp', () => {
  it('keeps the set fields only: a forwarded op carries no nil per absent field', () => {
    for (const [name, op] of Object.entries(valid)) {
      const c = checked(decode(encode(op)));
      const sent = compactOp(c);
      expect(Object.values(sent), name).not.toContain(undefined);
      expect(checked(decode(encode(sent))), name).toEqual(c);
      // A scan with no end comes back with end: nil, 5 bytes more than the client sent.
      expect(encode(sent).length, name).toBeLessThanOrEqual(encode(op).length + 5);
      expect(encode(sent).length, name).toBeLessThan(encode(c).length);
    }
  });
});
