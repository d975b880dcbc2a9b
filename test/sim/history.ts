// Client-observed operation histories for the linearizability checker, and their JSON-lines form.
//
// One line per operation; every field is always present (null where it does not apply), so a
// history file can be diffed, grepped and replayed by hand.

export type OpFunction = 'get' | 'set' | 'cas' | 'del';
export type OpType = 'ok' | 'fail' | 'info';

export interface HistoryOp {
  /** Client id; each process has at most one op in flight. */
  process: number;
  f: OpFunction;
  key: string;
  /**
   * set: value written; cas: new value; get: value read (null = not found);
   * del: last value returned (null = there was none).
   */
  value: string | null;
  /** cas only: expected value (null = expects the key absent); null otherwise. */
  expect: string | null;
  /** cas only: the success flag returned (null when the outcome is unknown); null otherwise. */
  ok: boolean | null;
  /**
   * ok: completed with the result above; fail: definitely not applied; info: outcome unknown
   * (may have taken effect at any time after invoke, or never).
   */
  type: OpType;
  /** ns timestamp when invoked. */
  invoke: number;
  /** ns timestamp when the response arrived (for info: the time the client gave up). */
  complete: number;
}

export class HistoryParseError extends Error {
  override name = 'HistoryParseError';
  constructor(
    readonly lineNumber: number,
    readonly field: string | null,
    detail: string,
  ) {
    super(`history line ${lineNumber}${field === null ? '' : `, field "${field}"`}: ${detail}`);
  }
}

const FUNCTIONS: readonly OpFunction[] = ['get', 'set', 'cas', 'del'];
const TYPES: readonly OpType[] = ['ok', 'fail', 'info'];
/** Serialization order of the fields; also the exact set of fields a parsed line may carry. */
const FIELDS: readonly (keyof HistoryOp)[] = [
  'process',
  'f',
  'key',
  'value',
  'expect',
  'ok',
  'type',
  'invoke',
  'complete',
];

/** One JSON object per line, fields in a fixed order, newline-terminated (empty for no ops). */
export function toJsonLines(ops: readonly HistoryOp[]): string {
  let text = '';
  for (const op of ops) {
    const ordered: Record<string, unknown> = {};
    for (const field of FIELDS) ordered[field] = op[field];
    text += JSON.stringify(ordered) + '\n';
  }
  return text;
}

/**
 * Parses and validates a JSON-lines history. Blank lines are skipped; line numbers in errors
 * are 1-based lines of `text`. Throws HistoryParseError on the first malformed line.
 */
export function fromJsonLines(text: string): HistoryOp[] {
  const lines = text.split(/\r?\n/);
  const ops: HistoryOp[] = [];
  for (let index = 0; index < lines.length; index++) {
    const line = lines[index]!;
    if (line.trim() === '') continue;
    const lineNumber = index + 1;
    let parsed: unknown;
    try {
      parsed = JSON.parse(line);
    } catch (error) {
      const reason = error instanceof Error ? error.message : String(error);
      throw new HistoryParseError(lineNumber, null, `invalid JSON (${reason})`);
    }
    ops.push(parseOp(parsed, lineNumber));
  }
  return ops;
}

function parseOp(parsed: unknown, lineNumber: number): HistoryOp {
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) {
    throw new HistoryParseError(lineNumber, null, `expected a JSON object, got ${show(parsed)}`);
  }
  const record = parsed as Record<string, unknown>;
  for (const field of Object.keys(record)) {
    if (!(FIELDS as readonly string[]).includes(field)) {
      throw new HistoryParseError(lineNumber, field, 'unknown field');
    }
  }
  const fail = (field: string, detail: string): never => reject(lineNumber, field, detail);
  const field = (name: keyof HistoryOp): unknown => {
    if (!(name in record)) reject(lineNumber, name, 'missing');
    return record[name];
  };

  const process = field('process');
  if (typeof process !== 'number' || !Number.isSafeInteger(process) || process < 0) {
    fail('process', `must be a non-negative integer, got ${show(process)}`);
  }
  const f = field('f');
  if (!FUNCTIONS.includes(f as OpFunction)) {
    fail('f', `must be one of ${FUNCTIONS.join('|')}, got ${show(f)}`);
  }
  const key = field('key');
  if (typeof key !== 'string') fail('key', `must be a string, got ${show(key)}`);
  const value = field('value');
  if (value !== null && typeof value !== 'string') {
    fail('value', `must be a string or null, got ${show(value)}`);
  }
  const type = field('type');
  if (!TYPES.includes(type as OpType)) {
    fail('type', `must be one of ${TYPES.join('|')}, got ${show(type)}`);
  }
  const expect = field('expect');
  const ok = field('ok');
  if (f === 'cas') {
    if (expect !== null && typeof expect !== 'string') {
      fail('expect', `must be a string or null, got ${show(expect)}`);
    }
    if (type === 'ok' && typeof ok !== 'boolean') {
      fail('ok', `must be a boolean for a completed cas, got ${show(ok)}`);
    }
    if (ok !== null && typeof ok !== 'boolean') {
      fail('ok', `must be a boolean or null, got ${show(ok)}`);
    }
  } else {
    if (expect !== null) fail('expect', `must be null for ${String(f)}, got ${show(expect)}`);
    if (ok !== null) fail('ok', `must be null for ${String(f)}, got ${show(ok)}`);
  }
  const invoke = field('invoke');
  if (typeof invoke !== 'number' || !Number.isFinite(invoke)) {
    fail('invoke', `must be a finite number, got ${show(invoke)}`);
  }
  const complete = field('complete');
  if (typeof complete !== 'number' || !Number.isFinite(complete)) {
    fail('complete', `must be a finite number, got ${show(complete)}`);
  }
  if ((complete as number) < (invoke as number)) {
    fail('complete', `${show(complete)} is before invoke ${show(invoke)}`);
  }
  return {
    process: process as number,
    f: f as OpFunction,
    key: key as string,
    value: value as string | null,
    expect: expect as string | null,
    ok: ok as boolean | null,
    type: type as OpType,
    invoke: invoke as number,
    complete: complete as number,
  };
}

function reject(lineNumber: number, field: string, detail: string): never {
  throw new HistoryParseError(lineNumber, field, detail);
}

function show(value: unknown): string {
  if (value === undefined) return 'undefined';
  const text = JSON.stringify(value);
  return text.length > 60 ? `${text.slice(0, 57)}...` : text;
}
