import { describe, expect, it } from 'vitest';
import {
  fromJsonLines,
  type HistoryOp,
  HistoryParseError,
  type OpType,
  toJsonLines,
} from '../sim/history.ts';
import { checkLinearizable } from '../sim/linearizability.ts';

// Op builders: `at` is [invoke, complete]; the key defaults to 'k1'.
type Span = [number, number];
interface Extra {
  key?: string;
  type?: OpType;
}

function op(fields: Partial<HistoryOp> & Pick<HistoryOp, 'process' | 'f'>, at: Span): HistoryOp {
  return {
    key: 'k1',
    value: null,
    expect: null,
    ok: null,
    type: 'ok',
    ...fields,
    invoke: at[0],
    complete: at[1],
  };
}
function get(process: number, value: string | null, at: Span, extra: Extra = {}): HistoryOp {
  return op({ process, f: 'get', value, ...extra }, at);
}
function set(process: number, value: string, at: Span, extra: Extra = {}): HistoryOp {
  return op({ process, f: 'set', value, ...extra }, at);
}
function del(process: number, value: string | null, at: Span, extra: Extra = {}): HistoryOp {
  return op({ process, f: 'del', value, ...extra }, at);
}
function cas(
  process: number,
  expected: string | null,
  value: string,
  ok: boolean | null,
  at: Span,
  extra: Extra = {},
): HistoryOp {
  return op({ process, f: 'cas', expect: expected, value, ok, ...extra }, at);
}

function expectLegal(ops: HistoryOp[]): void {
  const result = checkLinearizable(ops);
  expect(result.violations).toEqual([]);
  expect(result.inconclusive).toEqual([]);
  expect(result.ok).toBe(true);
}

function expectIllegal(ops: HistoryOp[], messagePart?: string): string {
  const result = checkLinearizable(ops);
  expect(result.ok).toBe(false);
  expect(result.inconclusive).toEqual([]);
  expect(result.violations).toHaveLength(1);
  const violation = result.violations[0]!;
  expect(violation.key).toBe('k1');
  expect(violation.ops.length).toBeGreaterThan(0);
  if (messagePart !== undefined) expect(violation.message).toContain(messagePart);
  return violation.message;
}

describe('checkLinearizable: legal histories', () => {
  it('accepts an empty history', () => {
    const result = checkLinearizable([]);
    expect(result).toEqual({
      ok: true,
      keysChecked: 0,
      operationsChecked: 0,
      violations: [],
      inconclusive: [],
    });
  });

  it('accepts a sequential history over all four functions', () => {
    expectLegal([
      get(1, null, [0, 1]),
      set(1, 'a', [2, 3]),
      get(2, 'a', [4, 5]),
      cas(1, 'a', 'b', true, [6, 7]),
      cas(2, 'a', 'c', false, [8, 9]),
      get(1, 'b', [10, 11]),
      del(2, 'b', [12, 13]),
      get(1, null, [14, 15]),
      cas(1, null, 'd', true, [16, 17]),
      get(2, 'd', [18, 19]),
    ]);
  });

  it('accepts overlapping writes observed in either order', () => {
    const writes = [set(1, 'a', [0, 10]), set(2, 'b', [0, 10])];
    expectLegal([...writes, get(3, 'a', [20, 30])]);
    expectLegal([...writes, get(3, 'b', [20, 30])]);
    // Reads concurrent with the writes may see the intermediate value first.
    expectLegal([...writes, get(3, 'a', [2, 3]), get(3, 'b', [4, 5]), get(3, 'b', [20, 30])]);
    expectLegal([...writes, get(3, 'b', [2, 3]), get(3, 'a', [4, 5]), get(3, 'a', [20, 30])]);
  });

  it('treats an op completing at the instant another is invoked as concurrent', () => {
    expectLegal([set(1, 'a', [0, 10]), get(2, null, [10, 20])]);
  });

  it('accepts an info op that took effect after the client gave up', () => {
    expectLegal([
      set(1, 'a', [0, 5], { type: 'info' }),
      get(2, null, [10, 11]),
      get(2, 'a', [20, 21]),
    ]);
  });

  it('accepts an info op that never took effect', () => {
    expectLegal([
      set(1, 'a', [0, 5], { type: 'info' }),
      get(2, null, [10, 11]),
      get(2, null, [100, 101]),
      del(1, null, [6, 7], { type: 'info' }),
      cas(1, null, 'x', null, [8, 9], { type: 'info' }),
      get(1, null, [200, 201], { type: 'info' }),
    ]);
  });

  it('accepts an info cas that applied, observed by later reads', () => {
    expectLegal([
      set(1, 'a', [0, 1]),
      cas(2, 'a', 'b', null, [2, 3], { type: 'info' }),
      get(1, 'a', [4, 5]),
      get(1, 'b', [6, 7]),
    ]);
  });

  it('accepts cas chains with concurrent losers', () => {
    expectLegal([
      set(1, '0', [0, 1]),
      cas(1, '0', '1', true, [2, 10]),
      cas(2, '0', 'x', false, [3, 11]),
      cas(3, '1', '2', true, [5, 12]),
      cas(1, '1', 'y', false, [13, 14]),
      cas(2, '2', '3', true, [13, 15]),
      get(3, '3', [16, 17]),
    ]);
  });

  it('accepts del returning the last value, then absent', () => {
    expectLegal([
      del(1, null, [0, 1]),
      set(1, 'a', [2, 3]),
      del(2, 'a', [4, 5]),
      get(1, null, [6, 7]),
      del(2, null, [8, 9]),
    ]);
  });

  it('ignores fail ops', () => {
    expectLegal([
      set(1, 'z', [0, 1], { type: 'fail' }),
      get(2, null, [2, 3]),
      cas(1, null, 'q', null, [4, 5], { type: 'fail' }),
      get(2, null, [6, 7]),
    ]);
    const result = checkLinearizable([set(1, 'z', [0, 1], { type: 'fail' }), get(2, null, [2, 3])]);
    expect(result.operationsChecked).toBe(1);
    expect(result.keysChecked).toBe(1);
  });
});

describe('checkLinearizable: illegal histories', () => {
  it('rejects a stale read after a completed write', () => {
    expectIllegal([set(1, 'a', [0, 10]), get(2, null, [20, 30])], 'get k1 returned absent');
  });

  it('rejects a read of a value never written', () => {
    const message = expectIllegal(
      [set(1, 'a', [0, 10]), get(2, 'zzz', [5, 30])],
      'get k1 returned "zzz" (process 2) at [5..30] but no linearization allows it',
    );
    expect(message).toContain('could then hold only "a"');
  });

  it('rejects a lost acknowledged write (a later read sees the older value)', () => {
    expectIllegal(
      [set(1, 'a', [0, 10]), set(2, 'b', [20, 30]), get(3, 'a', [40, 50])],
      'get k1 returned "a"',
    );
  });

  it('rejects two successful cas from the same expected value', () => {
    expectIllegal([
      set(1, 'a', [0, 1]),
      cas(2, 'a', 'b', true, [2, 10]),
      cas(3, 'a', 'c', true, [3, 11]),
    ]);
  });

  it('rejects del returning a wrong last value', () => {
    expectIllegal([set(1, 'a', [0, 1]), del(2, 'b', [2, 3])], 'del k1 returned previous "b"');
    expectIllegal([set(1, 'a', [0, 1]), del(2, null, [2, 3])]);
  });

  it('rejects a get that sees a value before the set that wrote it was invoked', () => {
    expectIllegal([get(1, 'a', [0, 10]), set(2, 'a', [20, 30])], 'get k1 returned "a"');
  });

  it('rejects a read-your-write violation', () => {
    expectIllegal([set(2, 'a', [0, 1]), set(1, 'b', [2, 3]), get(1, 'a', [4, 5])]);
  });

  it('rejects non-monotonic reads by one process', () => {
    const writes = [set(1, 'a', [0, 1]), set(2, 'b', [2, 100])];
    expectLegal([...writes, get(3, 'a', [10, 11]), get(3, 'b', [20, 21])]);
    expectIllegal([...writes, get(3, 'b', [10, 11]), get(3, 'a', [20, 21])], 'returned "a"');
  });

  it('rejects cas failure when the state matched', () => {
    expectIllegal(
      [set(1, 'a', [0, 1]), cas(2, 'a', 'b', false, [2, 3])],
      'cas k1 "a" -> "b" returned failure',
    );
  });

  it('rejects an info op that would have to take effect before its invoke', () => {
    expectIllegal([get(1, 'a', [0, 5]), set(2, 'a', [10, 11], { type: 'info' })]);
  });

  it('uses each info op at most once, identical ones included', () => {
    const reads = [
      get(3, 'a', [10, 11]),
      set(3, 'b', [12, 13]),
      get(3, 'b', [14, 15]),
      get(3, 'a', [16, 17]),
    ];
    const infoA = (process: number): HistoryOp => set(process, 'a', [0, 1], { type: 'info' });
    expectIllegal([infoA(1), ...reads], 'get k1 returned "a"');
    expectLegal([infoA(1), infoA(2), ...reads]);
  });

  it('chains info ops when a later op needs their combined effect', () => {
    const chain = [
      set(1, 'e', [0, 1], { type: 'info' }),
      cas(2, 'e', 'v', null, [2, 3], { type: 'info' }),
    ];
    expectLegal([
      ...chain,
      get(3, null, [4, 5]),
      cas(3, 'x', 'y', false, [6, 7]),
      get(3, 'v', [8, 9]),
    ]);
    expectIllegal([...chain, get(3, 'v', [4, 5]), get(3, 'e', [6, 7])]);
  });

  it('names the register states left at the deepest dead end', () => {
    const message = expectIllegal([
      set(1, 'a', [0, 10]),
      set(2, 'b', [20, 30]),
      get(3, 'a', [40, 50]),
    ]);
    expect(message).toContain('could then hold only "b"');
  });
});

describe('checkLinearizable: keys and budget', () => {
  it('checks independent keys independently and names the violating key', () => {
    const result = checkLinearizable([
      set(1, 'a', [0, 10], { key: 'k1' }),
      set(2, 'b', [0, 10], { key: 'k2' }),
      get(3, 'a', [20, 30], { key: 'k1' }),
      get(3, null, [40, 50], { key: 'k2' }),
      get(1, 'a', [40, 50], { key: 'k3' }),
    ]);
    expect(result.ok).toBe(false);
    expect(result.keysChecked).toBe(3);
    expect(result.operationsChecked).toBe(5);
    expect(result.violations.map((v) => v.key)).toEqual(['k2', 'k3']);
    expect(result.violations[0]!.message).toContain('get k2 returned absent');
    expect(result.violations[0]!.ops.every((o) => o.key === 'k2')).toBe(true);
    // A value written to k1 does not satisfy a read of k3.
    expect(result.violations[1]!.message).toContain('get k3 returned "a"');
  });

  it('reports a window around the failure for a long key history', () => {
    const ops: HistoryOp[] = [];
    for (let i = 0; i < 50; i++) ops.push(set(1, `v${i}`, [10 * i, 10 * i + 5]));
    const stale = get(2, 'v3', [1000, 1005]);
    ops.push(stale);
    const result = checkLinearizable(ops);
    expect(result.violations).toHaveLength(1);
    const window = result.violations[0]!.ops;
    expect(window).toContain(stale);
    expect(window).toContain(ops[3]); // the writer of the stale value
    expect(window).toContain(ops[49]); // the latest write before the read
    expect(window.length).toBeLessThan(ops.length);
  });

  it('marks a key inconclusive when the search budget runs out', () => {
    // Ten concurrent writes of distinct values and ten concurrent reads of them: an exponential
    // number of interleavings, all of which must be refuted for the final impossible read.
    const ops: HistoryOp[] = [];
    for (let i = 0; i < 10; i++) {
      ops.push(set(i, `v${i}`, [0, 100]));
      ops.push(get(10 + i, `v${i}`, [0, 100]));
    }
    ops.push(get(99, 'never', [200, 201]));
    const result = checkLinearizable(ops, { maxStatesPerKey: 100 });
    expect(result.ok).toBe(false);
    expect(result.inconclusive).toEqual(['k1']);
    expect(result.violations).toEqual([]);
  });

  it('rejects malformed ops and options', () => {
    expect(() => checkLinearizable([set(1, 'a', [10, 5])])).toThrow(/completes before/);
    expect(() => checkLinearizable([cas(1, 'a', 'b', null, [0, 1])])).toThrow(/ok flag/);
    expect(() => checkLinearizable([], { maxStatesPerKey: 0 })).toThrow(RangeError);
  });
});

// Mulberry32: a small seeded PRNG so the random history is reproducible.
function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/**
 * A legal history of `processes` clients × `opsPerProcess` ops on one key. A real sequential
 * register is applied at a linearization point strictly inside each op's [invoke, complete];
 * interleaving invoke / apply / complete steps across processes makes the intervals overlap.
 * Some ops end 'info' (the client gives up; the op applies later or never) or 'fail' (never
 * applied).
 */
function randomLegalHistory(seed: number, processes: number, opsPerProcess: number): HistoryOp[] {
  const random = mulberry32(seed);
  const pick = (n: number): number => Math.floor(random() * n);
  const values = ['v0', 'v1', 'v2', 'v3'];
  let register: string | null = null;
  let nowNs = 0;
  const history: HistoryOp[] = [];

  interface Pending {
    op: HistoryOp;
    applied: boolean;
  }
  const apply = (op: HistoryOp): void => {
    switch (op.f) {
      case 'get':
        op.value = register;
        break;
      case 'set':
        register = op.value;
        break;
      case 'cas':
        op.ok = register === op.expect;
        if (op.ok) register = op.value;
        break;
      case 'del':
        op.value = register;
        register = null;
        break;
    }
  };
  const inFlight: (Pending | null)[] = Array.from({ length: processes }, () => null);
  const issued = new Array<number>(processes).fill(0);
  // Info ops the client gave up on before they applied: they may apply later, or never.
  const zombies: HistoryOp[] = [];

  const maxSteps = processes * opsPerProcess * 50;
  for (let stepIndex = 0; stepIndex < maxSteps; stepIndex++) {
    nowNs += 1 + pick(20);
    if (zombies.length > 0 && pick(10) === 0) {
      const zombie = zombies.splice(pick(zombies.length), 1)[0]!;
      // Applied to a copy: the recorded info op keeps its unknown result.
      if (pick(2) === 0) apply({ ...zombie });
      continue;
    }
    const process = pick(processes);
    const pending = inFlight[process];
    if (pending === null || pending === undefined) {
      if (issued[process]! >= opsPerProcess) {
        if (issued.every((n) => n >= opsPerProcess) && inFlight.every((p) => p === null)) break;
        continue;
      }
      issued[process]!++;
      const f = (['get', 'set', 'cas', 'del'] as const)[pick(4)]!;
      const value = f === 'set' || f === 'cas' ? values[pick(values.length)]! : null;
      const expected = f === 'cas' && pick(4) > 0 ? values[pick(values.length)]! : null;
      const fresh: HistoryOp = {
        process,
        f,
        key: 'k1',
        value,
        expect: expected,
        ok: null,
        type: 'ok',
        invoke: nowNs,
        complete: nowNs,
      };
      history.push(fresh);
      inFlight[process] = { op: fresh, applied: false };
      continue;
    }
    const outcome = pick(20);
    if (!pending.applied && outcome === 0) {
      // Fails without applying.
      pending.op.type = 'fail';
      pending.op.complete = nowNs;
      inFlight[process] = null;
    } else if (outcome === 1) {
      // The client gives up; the result is unknown to it.
      pending.op.type = 'info';
      pending.op.complete = nowNs;
      if (!pending.applied) zombies.push(pending.op);
      if (pending.op.f === 'cas') pending.op.ok = null;
      if (pending.op.f === 'get' || pending.op.f === 'del') pending.op.value = null;
      inFlight[process] = null;
    } else if (!pending.applied) {
      apply(pending.op);
      pending.applied = true;
    } else {
      pending.op.complete = nowNs;
      inFlight[process] = null;
    }
  }
  if (inFlight.some((p) => p !== null)) throw new Error('generator ran out of steps');
  return history;
}

describe('checkLinearizable: random legal histories', () => {
  it('accepts a 3 process x 300 op history on one key quickly', () => {
    const history = randomLegalHistory(0xc0ffee, 3, 300);
    expect(history).toHaveLength(900);
    expect(history.some((o) => o.type === 'info')).toBe(true);
    expect(history.some((o) => o.type === 'fail')).toBe(true);
    const startMs = performance.now();
    const result = checkLinearizable(history);
    const elapsedMs = performance.now() - startMs;
    expect(result.violations).toEqual([]);
    expect(result.inconclusive).toEqual([]);
    expect(result.ok).toBe(true);
    expect(elapsedMs).toBeLessThan(500);
  });

  it('accepts many seeds and rejects them once a read is corrupted', () => {
    for (let seed = 1; seed <= 40; seed++) {
      const history = randomLegalHistory(seed, 3, 40);
      expect(checkLinearizable(history).ok, `seed ${seed}`).toBe(true);
      // Corrupt the last completed get to read a value nobody wrote.
      const gets = history.filter((o) => o.f === 'get' && o.type === 'ok');
      const target = gets[gets.length - 1];
      if (target === undefined) continue;
      const corrupted = history.map((o) => (o === target ? { ...o, value: 'corrupt' } : o));
      expect(checkLinearizable(corrupted).ok, `corrupted seed ${seed}`).toBe(false);
    }
  });
});

/** Reference checker: tries every order of every subset of info ops, no pruning at all. */
function bruteForceLinearizable(ops: HistoryOp[]): boolean {
  const live = ops.filter((o) => o.type !== 'fail');
  const used = live.map(() => false);
  const search = (state: string | null, depthLeft: number): boolean => {
    let earliestReturn = Number.POSITIVE_INFINITY;
    for (let i = 0; i < live.length; i++) {
      if (!used[i] && live[i]!.type === 'ok') {
        earliestReturn = Math.min(earliestReturn, live[i]!.complete);
      }
    }
    if (earliestReturn === Number.POSITIVE_INFINITY) return true; // only info ops remain
    if (depthLeft === 0) return false;
    for (let i = 0; i < live.length; i++) {
      const o = live[i]!;
      if (used[i] || o.invoke > earliestReturn) continue;
      const checked = o.type === 'ok';
      let next: string | null;
      if (o.f === 'get') {
        if (checked && o.value !== state) continue;
        next = state;
      } else if (o.f === 'set') {
        next = o.value;
      } else if (o.f === 'del') {
        if (checked && o.value !== state) continue;
        next = null;
      } else {
        const matched = state === o.expect;
        if (checked && o.ok !== matched) continue;
        next = matched ? o.value : state;
      }
      used[i] = true;
      const found = search(next, depthLeft - 1);
      used[i] = false;
      if (found) return true;
    }
    return false;
  };
  return search(null, live.length);
}

describe('checkLinearizable: agreement with a brute-force reference', () => {
  it('agrees on random small histories dense with info ops and repeated values', () => {
    const random = mulberry32(0x5eed);
    const pick = <T>(choices: readonly T[]): T => choices[Math.floor(random() * choices.length)]!;
    const verdicts = { legal: 0, illegal: 0 };
    for (let trial = 0; trial < 4000; trial++) {
      const ops: HistoryOp[] = [];
      const opCount = 2 + Math.floor(random() * 7);
      for (let k = 0; k < opCount; k++) {
        const f = pick(['get', 'set', 'cas', 'del'] as const);
        const invoke = Math.floor(random() * 16);
        const roll = random();
        const type: OpType = roll < 0.55 ? 'ok' : roll < 0.92 ? 'info' : 'fail';
        const writes = f === 'set' || f === 'cas';
        ops.push({
          process: k,
          f,
          key: 'k1',
          value: writes ? pick(['a', 'b']) : pick(['a', 'b', null]),
          expect: f === 'cas' ? pick(['a', 'b', null]) : null,
          ok: f === 'cas' && type === 'ok' ? random() < 0.5 : null,
          type,
          invoke,
          complete: invoke + Math.floor(random() * 6),
        });
      }
      const expected = bruteForceLinearizable(ops);
      expect(checkLinearizable(ops).ok, toJsonLines(ops)).toBe(expected);
      verdicts[expected ? 'legal' : 'illegal']++;
    }
    // Both verdicts are well represented, so the agreement means something.
    expect(verdicts.legal).toBeGreaterThan(1000);
    expect(verdicts.illegal).toBeGreaterThan(1000);
  });

  it('agrees on slightly corrupted generated histories', () => {
    const random = mulberry32(0xbad);
    for (let seed = 0; seed < 600; seed++) {
      const history = randomLegalHistory(seed, 3, 4);
      const index = Math.floor(random() * history.length);
      const victim = history[index]!;
      if (victim.f === 'cas' && victim.ok !== null) history[index] = { ...victim, ok: !victim.ok };
      else if (victim.f === 'get' || victim.f === 'del')
        history[index] = { ...victim, value: 'v1' };
      else history[index] = { ...victim, type: 'info' };
      const expected = bruteForceLinearizable(history);
      expect(checkLinearizable(history).ok, toJsonLines(history)).toBe(expected);
    }
  });
});

describe('history JSON lines', () => {
  const sample: HistoryOp[] = [
    set(1, 'a', [0, 10]),
    get(2, null, [5, 6], { key: 'other "key"' }),
    cas(3, null, 'b\nc', true, [7, 9]),
    cas(3, 'x', 'y', null, [11, 19], { type: 'info' }),
    del(1, 'a', [12, 13], { type: 'fail' }),
  ];

  it('round-trips', () => {
    const text = toJsonLines(sample);
    expect(text.split('\n')).toHaveLength(sample.length + 1);
    expect(text.endsWith('\n')).toBe(true);
    expect(fromJsonLines(text)).toEqual(sample);
    expect(toJsonLines([])).toBe('');
    expect(fromJsonLines('')).toEqual([]);
  });

  it('skips blank lines and accepts CRLF', () => {
    const text = '\n' + toJsonLines(sample).replaceAll('\n', '\r\n') + '\n  \n';
    expect(fromJsonLines(text)).toEqual(sample);
  });

  function parseError(text: string): HistoryParseError {
    try {
      fromJsonLines(text);
    } catch (error) {
      if (error instanceof HistoryParseError) return error;
      throw error;
    }
    throw new Error('expected a parse error');
  }

  function line(overrides: Record<string, unknown>, omit: string[] = []): string {
    const record: Record<string, unknown> = { ...JSON.parse(toJsonLines([sample[0]!])) };
    Object.assign(record, overrides);
    for (const field of omit) delete record[field];
    return JSON.stringify(record);
  }

  it('names the line number and field of a malformed op', () => {
    const good = toJsonLines([sample[0]!]);
    const cases: [string, number, string | null, RegExp][] = [
      [good + '{not json', 2, null, /line 2: invalid JSON/],
      [good + '\n[1,2]', 3, null, /line 3: expected a JSON object/],
      [line({}, ['f']), 1, 'f', /line 1, field "f": missing/],
      [good + line({ f: 'put' }), 2, 'f', /must be one of get\|set\|cas\|del, got "put"/],
      [line({ process: -1 }), 1, 'process', /non-negative integer/],
      [line({ key: 3 }), 1, 'key', /must be a string/],
      [line({ value: 7 }), 1, 'value', /string or null/],
      [line({ type: 'maybe' }), 1, 'type', /one of ok\|fail\|info/],
      [line({ expect: 'a' }), 1, 'expect', /must be null for set/],
      [line({ ok: true }), 1, 'ok', /must be null for set/],
      [line({ f: 'cas', ok: null }), 1, 'ok', /boolean for a completed cas/],
      [line({ invoke: '5' }), 1, 'invoke', /finite number/],
      [line({ invoke: 20 }), 1, 'complete', /10 is before invoke 20/],
      [line({ extra: 1 }), 1, 'extra', /unknown field/],
    ];
    for (const [text, lineNumber, field, pattern] of cases) {
      const error = parseError(text);
      expect(error.message, text).toMatch(pattern);
      expect(error.lineNumber, text).toBe(lineNumber);
      expect(error.field, text).toBe(field);
    }
  });

  it('parses a cas with unknown outcome', () => {
    const [parsed] = fromJsonLines(line({ f: 'cas', ok: null, type: 'info', expect: null }));
    expect(parsed?.ok).toBeNull();
  });
});
