// Linearizability checker for key-value histories: Wing & Gong's search with Lowe's
// memoization of (linearized set, state) pairs, run independently per key.
//
// Each key is an independent register (initially absent). Linearizability is local
// (Herlihy & Wing), so a history is linearizable iff every per-key sub-history is.
//
// Per key, every op becomes a call entry (at `invoke`) and a return entry (at `complete`,
// or +Infinity for info ops) in one time-sorted doubly linked list. The search walks the list
// from the head: a call entry before the first remaining return is an op that may be
// linearized next (it was invoked before the earliest pending response). Linearizing an op
// applies it to the model state and lifts both of its entries out of the list; reaching a
// return entry means that op's response arrived with the op still unlinearized, so the search
// backtracks. A (linearized-set, state) pair already explored is never explored again: the
// future of the search depends only on that pair.
//
// Time ties: entries are sorted by time with calls before returns, so an op that completes
// at exactly the instant another is invoked counts as concurrent with it (the lenient choice).
//
// Info ops (outcome unknown) never block the search, but each one can be linearized or not
// at many points, which multiplies the configurations to refute when a history is illegal.
// Three sound reductions keep that in check; each only discards a configuration when another
// one that can complete whenever it can is (or will be) explored:
//  - Dominance: (done ops, info ops, state) is dominated by (done ops, fewer info ops, same
//    state), because an info op left unused can always stay unused. The memo keeps, per
//    (done ops, state), the antichain of minimal info sets seen.
//  - Twins: identical info ops (same function and arguments) are interchangeable, so they are
//    linearized in list order only.
//  - Just in time: a run of consecutive info ops must be needed by the op right after it. A
//    blind write (set, info del) never follows an info op, and a completed op never follows a
//    run of info ops if it was already legal in the state before the run (the run could be
//    dropped, or moved after that op, without changing what later ops see).
// The unit tests cross-check the checker against a brute-force search on random histories.

import type { HistoryOp } from './history.ts';

export interface LinearizabilityViolation {
  key: string;
  message: string;
  /** The ops of that key, or a window around the op that could not be linearized. */
  ops: HistoryOp[];
}

export interface LinearizabilityResult {
  /** True only when every key was proven linearizable (no violations, nothing inconclusive). */
  ok: boolean;
  keysChecked: number;
  /** Ops that took part in the search: every op except type 'fail'. */
  operationsChecked: number;
  violations: LinearizabilityViolation[];
  /** Keys where the search budget ran out before a verdict. */
  inconclusive: string[];
}

export interface LinearizabilityOptions {
  /** Distinct (linearized-set, state) pairs explored per key before giving up. */
  maxStatesPerKey?: number;
}

const DEFAULT_MAX_STATES_PER_KEY = 200_000;
/** A key with at most this many ops is reported whole in a violation rather than windowed. */
const WHOLE_KEY_REPORT_MAX_OPS = 12;
/** In a windowed report, how many ops completed before the failing op to include. */
const WINDOW_PRECEDING_OPS = 6;
/** In a windowed report, how many writers of the value the failing op observed to include. */
const WINDOW_WRITER_OPS = 4;
/** How many candidate register states to name in a violation message. */
const MESSAGE_MAX_STATES = 6;

export function checkLinearizable(
  ops: readonly HistoryOp[],
  opts: LinearizabilityOptions = {},
): LinearizabilityResult {
  const maxStates = opts.maxStatesPerKey ?? DEFAULT_MAX_STATES_PER_KEY;
  if (!Number.isSafeInteger(maxStates) || maxStates < 1) {
    throw new RangeError(`maxStatesPerKey must be a positive integer, got ${maxStates}`);
  }
  const opsByKey = new Map<string, HistoryOp[]>();
  for (const op of ops) {
    checkWellFormed(op);
    let keyOps = opsByKey.get(op.key);
    if (keyOps === undefined) opsByKey.set(op.key, (keyOps = []));
    keyOps.push(op);
  }

  const result: LinearizabilityResult = {
    ok: true,
    keysChecked: opsByKey.size,
    operationsChecked: 0,
    violations: [],
    inconclusive: [],
  };
  for (const [key, keyOps] of opsByKey) {
    const live = keyOps.filter((op) => op.type !== 'fail');
    result.operationsChecked += live.length;
    const outcome = checkKey(live, maxStates);
    if (outcome.kind === 'inconclusive') {
      result.inconclusive.push(key);
    } else if (outcome.kind === 'violation') {
      result.violations.push({
        key,
        message: violationMessage(live, outcome),
        ops: reportWindow(live, outcome.blockingOp),
      });
    }
  }
  result.ok = result.violations.length === 0 && result.inconclusive.length === 0;
  return result;
}

function checkWellFormed(op: HistoryOp): void {
  if (!Number.isFinite(op.invoke) || !Number.isFinite(op.complete)) {
    throw new RangeError(`op has a non-finite timestamp: ${JSON.stringify(op)}`);
  }
  if (op.complete < op.invoke) {
    throw new RangeError(`op completes before it is invoked: ${JSON.stringify(op)}`);
  }
  if (op.f === 'cas' && op.type === 'ok' && typeof op.ok !== 'boolean') {
    throw new RangeError(`completed cas has no boolean ok flag: ${JSON.stringify(op)}`);
  }
}

type KeyOutcome =
  | { kind: 'linearizable' }
  | { kind: 'inconclusive' }
  | {
      kind: 'violation';
      /** The op whose response arrived while it was still unlinearized, at the deepest point. */
      blockingOp: HistoryOp;
      /** Ops linearized at that deepest point. */
      linearizedCount: number;
      /** Register states (null = absent) the deepest dead ends left the key in. */
      states: (string | null)[];
    };

const GET = 0;
const SET = 1;
const CAS = 2;
const DEL = 3;
const KIND_OF = { get: GET, set: SET, cas: CAS, del: DEL } as const;
/** State id of the absent register; every string value gets an id >= 1. */
const ABSENT = 0;
/** Returned by the model step when the op cannot be linearized from the given state. */
const ILLEGAL = -1;
/** Run start marker: the top of the search stack is not an info op. */
const NO_RUN = -2;

function checkKey(keyOps: readonly HistoryOp[], maxStates: number): KeyOutcome {
  // An info get has no effect and no checked result: it never constrains the search.
  const ops = keyOps.filter((op) => !(op.type === 'info' && op.f === 'get'));
  const opCount = ops.length;
  if (opCount === 0) return { kind: 'linearizable' };

  // Model encoding: register states are interned value ids (ABSENT = 0).
  const valueIds = new Map<string, number>();
  const valueNames: (string | null)[] = [null];
  const intern = (value: string | null): number => {
    if (value === null) return ABSENT;
    let id = valueIds.get(value);
    if (id === undefined) {
      id = valueNames.length;
      valueIds.set(value, id);
      valueNames.push(value);
    }
    return id;
  };
  const kind = new Uint8Array(opCount);
  const known = new Uint8Array(opCount); // 1 = type ok: the result is checked
  const valueId = new Int32Array(opCount);
  const expectId = new Int32Array(opCount);
  const casOk = new Uint8Array(opCount);
  const blind = new Uint8Array(opCount); // 1 = the op overwrites the state without observing it
  for (let i = 0; i < opCount; i++) {
    const op = ops[i]!;
    kind[i] = KIND_OF[op.f];
    known[i] = op.type === 'ok' ? 1 : 0;
    valueId[i] = intern(op.value);
    expectId[i] = intern(op.expect);
    casOk[i] = op.ok === true ? 1 : 0;
    blind[i] = op.f === 'set' || (op.f === 'del' && op.type !== 'ok') ? 1 : 0;
  }

  /** The state after op i runs from `state`, or ILLEGAL if its observed result forbids it. */
  const step = (i: number, state: number): number => {
    let next: number;
    switch (kind[i]) {
      case GET:
        // Only ok gets reach the search (info gets are filtered out above).
        return valueId[i] === state ? state : ILLEGAL;
      case SET:
        next = valueId[i]!;
        break;
      case CAS:
        if (known[i] === 1) {
          if (casOk[i] === 1) return state === expectId[i] ? valueId[i]! : ILLEGAL;
          return state !== expectId[i] ? state : ILLEGAL;
        }
        next = state === expectId[i] ? valueId[i]! : state;
        break;
      default:
        if (known[i] === 1) return valueId[i] === state ? ABSENT : ILLEGAL;
        next = ABSENT;
        break;
    }
    // An info op that would leave the state unchanged is equivalent to never linearizing it,
    // which is always allowed; pruning it keeps the search from exploring redundant branches.
    if (known[i] === 0 && next === state) return ILLEGAL;
    return next;
  };

  // Entries: a call and a return per op, sorted by time (calls first on ties).
  const entryCount = 2 * opCount;
  const entryTime = new Float64Array(entryCount);
  for (let i = 0; i < opCount; i++) {
    const op = ops[i]!;
    entryTime[2 * i] = op.invoke;
    entryTime[2 * i + 1] = known[i] === 1 ? op.complete : Number.POSITIVE_INFINITY;
  }
  // Raw entry r is op r >> 1; even r is its call, odd r its return.
  const order = Array.from({ length: entryCount }, (_, r) => r);
  order.sort((a, b) => entryTime[a]! - entryTime[b]! || (a & 1) - (b & 1) || a - b);
  // Within a run of consecutive calls the order is free (every call in the run precedes the
  // same returns), so put info calls last: the search then tries completed ops before
  // optional ones, which finds the small info subsets that prune the larger ones early.
  for (let callsStart = 0; callsStart < entryCount; ) {
    let callsEnd = callsStart;
    while (callsEnd < entryCount && (order[callsEnd]! & 1) === 0) callsEnd++;
    const calls = order.slice(callsStart, callsEnd);
    const completedFirst = [
      ...calls.filter((raw) => known[raw >> 1] === 1),
      ...calls.filter((raw) => known[raw >> 1] === 0),
    ];
    for (let c = 0; c < completedFirst.length; c++) order[callsStart + c] = completedFirst[c]!;
    callsStart = callsEnd + 1; // skip the return that ends the run of calls
  }
  const entryOp = new Int32Array(entryCount);
  const entryIsCall = new Uint8Array(entryCount);
  const matchOf = new Int32Array(entryCount); // call entry -> its return entry
  const callPosition = new Int32Array(opCount);
  for (let e = 0; e < entryCount; e++) {
    const raw = order[e]!;
    entryOp[e] = raw >> 1;
    if ((raw & 1) === 0) {
      entryIsCall[e] = 1;
      callPosition[raw >> 1] = e;
    }
  }
  for (let e = 0; e < entryCount; e++) {
    if (entryIsCall[e] === 0) matchOf[callPosition[entryOp[e]!]!] = e;
  }
  // Symmetry: info ops with the same function and arguments are interchangeable once both
  // are invoked (their results are unchecked), so the search only linearizes an info op after
  // every identical one whose call comes earlier in the list. Any linearization can be
  // relabeled to obey this, since an earlier call is available wherever a later one is.
  const previousTwin = new Int32Array(opCount).fill(-1);
  const lastOfClass = new Map<string, number>();
  for (let e = 0; e < entryCount; e++) {
    const i = entryOp[e]!;
    if (entryIsCall[e] === 0 || known[i] === 1) continue;
    const twinClass = `${kind[i]}:${valueId[i]}:${expectId[i]}`;
    previousTwin[i] = lastOfClass.get(twinClass) ?? -1;
    lastOfClass.set(twinClass, i);
  }

  // Doubly linked list over entries 0..entryCount-1 with sentinel head HEAD; NIL ends it.
  const NIL = -1;
  const HEAD = entryCount;
  const next = new Int32Array(entryCount + 1);
  const prev = new Int32Array(entryCount + 1);
  next[HEAD] = entryCount > 0 ? 0 : NIL;
  prev[HEAD] = NIL;
  for (let e = 0; e < entryCount; e++) {
    prev[e] = e === 0 ? HEAD : e - 1;
    next[e] = e + 1 < entryCount ? e + 1 : NIL;
  }
  const unlink = (e: number): void => {
    next[prev[e]!] = next[e]!;
    if (next[e] !== NIL) prev[next[e]!] = prev[e]!;
  };
  // Dancing links: relinking in exact reverse order of unlinking restores the list.
  const relink = (e: number): void => {
    next[prev[e]!] = e;
    if (next[e] !== NIL) prev[next[e]!] = e;
  };

  // The linearized set is two bitsets: `doneWords` over completed ops and `infoWords` over
  // info ops (bitIndex numbers each kind separately). A Zobrist hash of doneWords is kept
  // incrementally; info ops do not enter it.
  const bitIndex = new Int32Array(opCount);
  let completedCount = 0;
  let infoCount = 0;
  for (let i = 0; i < opCount; i++) bitIndex[i] = known[i] === 1 ? completedCount++ : infoCount++;
  const doneWords = new Uint32Array((completedCount + 31) >>> 5);
  const infoWords = new Uint32Array((infoCount + 31) >>> 5);
  const wordsOf = (i: number): Uint32Array => (known[i] === 1 ? doneWords : infoWords);
  const zobrist = new Int32Array(opCount);
  let seed = 0x2545f491;
  for (let i = 0; i < opCount; i++) {
    seed = (seed + 0x6d2b79f5) | 0;
    let z = Math.imul(seed ^ (seed >>> 15), seed | 1);
    z ^= z + Math.imul(z ^ (z >>> 7), z | 61);
    zobrist[i] = known[i] === 1 ? z ^ (z >>> 14) : 0;
  }

  // Memo (Lowe), strengthened for info ops. A configuration is (done, info, state). An info
  // op may always be left unlinearized and never blocks anything (its return is +Infinity),
  // so (done, info, state) can succeed whenever (done, info', state) with info' ⊇ info can:
  // a configuration is dominated by any seen one with equal done and state and a subset of
  // its info ops. Each group keeps an antichain of the info subsets seen; with no info ops
  // this is exactly Lowe's (linearized set, state) cache. Pruning a configuration dominated
  // by one still on the stack is sound too: any completion from it is also available to that
  // ancestor's own search, in no more steps.
  interface MemoGroup {
    done: Uint32Array;
    state: number;
    infoSets: Uint32Array[];
  }
  const memo = new Map<number, MemoGroup[]>();
  let statesExplored = 0;
  /** Records the current configuration unless it is dominated; returns whether it was new. */
  const remember = (hash: number, state: number): boolean => {
    const slot = (hash ^ Math.imul(state + 1, 0x9e3779b1)) | 0;
    let groups = memo.get(slot);
    if (groups === undefined) memo.set(slot, (groups = []));
    let group: MemoGroup | undefined;
    for (const candidate of groups) {
      if (candidate.state === state && sameWords(candidate.done, doneWords)) {
        group = candidate;
        break;
      }
    }
    if (group === undefined) {
      groups.push({ done: doneWords.slice(), state, infoSets: [infoWords.slice()] });
    } else {
      for (const seen of group.infoSets) if (isSubset(seen, infoWords)) return false;
      // Seen supersets of the current info set are dominated from now on: drop them.
      group.infoSets = group.infoSets.filter((seen) => !isSubset(infoWords, seen));
      group.infoSets.push(infoWords.slice());
    }
    statesExplored++;
    return true;
  };

  // Explicit stack of linearized call entries with the state, hash and run start before each.
  // Invariant: stack[0..depth) are exactly the ops whose bits are set in doneWords and
  // infoWords, in the order they were linearized, and their entries are unlinked from the list.
  const stackEntry = new Int32Array(opCount);
  const stackState = new Int32Array(opCount);
  const stackHash = new Int32Array(opCount);
  const stackRunStart = new Int32Array(opCount);
  let depth = 0;
  let state = ABSENT;
  let hash = 0;
  /** NO_RUN when the top of the stack is a completed op (or the stack is empty); otherwise the
   * top is a run of info ops and this is the state from before the run. */
  let runStart = NO_RUN;

  let bestDepth = -1;
  let bestOp = 0;
  const bestStates = new Set<number>();

  // Bound: every iteration pushes (<= maxStates times: each push records a new state), pops
  // (<= pushes), or advances `entry` along the list (<= entryCount + 1 times between pushes
  // and pops). Exceeding it means the loop invariants are broken.
  const maxIterations = (2 * maxStates + 2) * (entryCount + 2);
  let entry = next[HEAD]!;
  for (let iteration = 0; ; iteration++) {
    if (iteration > maxIterations) throw new Error('linearizability search exceeded its bound');
    // Every call entry's return follows it in the list, so the walk runs off the end only
    // when the list is empty: every op is linearized.
    if (entry === NIL) return { kind: 'linearizable' };
    const op = entryOp[entry]!;
    if (entryIsCall[entry] === 1) {
      // Candidate op: ILLEGAL if a reduction rule (see the header) or the model rejects it.
      let nextState: number;
      if (known[op] === 0) {
        const twin = previousTwin[op]!;
        const twinBit = twin === -1 ? 0 : bitIndex[twin]!;
        const twinPending =
          twin !== -1 && (infoWords[twinBit >>> 5]! & (1 << (twinBit & 31))) === 0;
        const blindAfterInfo = runStart !== NO_RUN && blind[op] === 1;
        nextState = twinPending || blindAfterInfo ? ILLEGAL : step(op, state);
      } else {
        const runUnneeded = runStart !== NO_RUN && step(op, runStart) !== ILLEGAL;
        nextState = runUnneeded ? ILLEGAL : step(op, state);
      }
      if (nextState !== ILLEGAL) {
        const words = wordsOf(op);
        const bit = bitIndex[op]!;
        words[bit >>> 5]! |= 1 << (bit & 31);
        const nextHash = hash ^ zobrist[op]!;
        if (remember(nextHash, nextState)) {
          if (statesExplored > maxStates) return { kind: 'inconclusive' };
          stackEntry[depth] = entry;
          stackState[depth] = state;
          stackHash[depth] = hash;
          stackRunStart[depth] = runStart;
          depth++;
          if (known[op] === 1) runStart = NO_RUN;
          else if (runStart === NO_RUN) runStart = state;
          state = nextState;
          hash = nextHash;
          unlink(entry);
          unlink(matchOf[entry]!);
          entry = next[HEAD]!;
          continue;
        }
        words[bit >>> 5]! &= ~(1 << (bit & 31));
      }
      entry = next[entry]!;
      continue;
    }
    // A return entry: the first remaining one, so every op that responded before it is
    // linearized. Info returns sort last (+Infinity), so reaching one means every completed
    // op is linearized and the remaining info ops may simply never have taken effect.
    if (known[op] === 0) return { kind: 'linearizable' };
    if (depth > bestDepth) {
      bestDepth = depth;
      bestOp = op;
      bestStates.clear();
    }
    if (depth === bestDepth && op === bestOp) bestStates.add(state);
    if (depth === 0) {
      return {
        kind: 'violation',
        blockingOp: ops[bestOp]!,
        linearizedCount: bestDepth,
        states: [...bestStates].map((id) => valueNames[id]!),
      };
    }
    depth--;
    const undone = stackEntry[depth]!;
    const undoneOp = entryOp[undone]!;
    const undoneBit = bitIndex[undoneOp]!;
    state = stackState[depth]!;
    hash = stackHash[depth]!;
    runStart = stackRunStart[depth]!;
    wordsOf(undoneOp)[undoneBit >>> 5]! &= ~(1 << (undoneBit & 31));
    relink(matchOf[undone]!);
    relink(undone);
    entry = next[undone]!;
  }
}

/** Whether every bit set in `a` is set in `b` (equal lengths). */
function isSubset(a: Uint32Array, b: Uint32Array): boolean {
  for (let w = 0; w < a.length; w++) if ((a[w]! & ~b[w]!) !== 0) return false;
  return true;
}

function sameWords(a: Uint32Array, b: Uint32Array): boolean {
  for (let w = 0; w < a.length; w++) if (a[w] !== b[w]) return false;
  return true;
}

function showValue(value: string | null): string {
  return value === null ? 'absent' : JSON.stringify(value);
}

/** Human-readable op, e.g. `get k1 returned "v3" (process 2)`. */
export function describeOp(op: HistoryOp): string {
  const unknown = op.type !== 'ok';
  let text: string;
  switch (op.f) {
    case 'get':
      text = `get ${op.key}` + (unknown ? '' : ` returned ${showValue(op.value)}`);
      break;
    case 'set':
      text = `set ${op.key} := ${showValue(op.value)}`;
      break;
    case 'cas':
      text =
        `cas ${op.key} ${showValue(op.expect)} -> ${showValue(op.value)}` +
        (unknown ? '' : ` returned ${op.ok === true ? 'success' : 'failure'}`);
      break;
    case 'del':
      text = `del ${op.key}` + (unknown ? '' : ` returned previous ${showValue(op.value)}`);
      break;
  }
  const outcome = op.type === 'ok' ? '' : ` [${op.type}]`;
  return `${text}${outcome} (process ${op.process})`;
}

function violationMessage(
  keyOps: readonly HistoryOp[],
  outcome: Extract<KeyOutcome, { kind: 'violation' }>,
): string {
  const op = outcome.blockingOp;
  const states = outcome.states.slice(0, MESSAGE_MAX_STATES).map(showValue);
  const more = outcome.states.length > MESSAGE_MAX_STATES ? ', ...' : '';
  return (
    `${describeOp(op)} at [${op.invoke}..${op.complete}] ` +
    `but no linearization allows it (deepest search linearized ${outcome.linearizedCount} ` +
    `of ${keyOps.length} ops first; the register could then hold only ${states.join(', ')}${more})`
  );
}

/**
 * The ops that explain a violation: all of the key's ops when there are few; otherwise the
 * failing op, the ops concurrent with it, the last few that completed before it was invoked,
 * and the nearest writers of the value it observed. Sorted by invoke time.
 */
function reportWindow(keyOps: readonly HistoryOp[], failing: HistoryOp): HistoryOp[] {
  if (keyOps.length <= WHOLE_KEY_REPORT_MAX_OPS) return [...keyOps];
  const endOf = (op: HistoryOp): number =>
    op.type === 'info' ? Number.POSITIVE_INFINITY : op.complete;
  const chosen = new Set<HistoryOp>([failing]);
  for (const op of keyOps) {
    if (op.invoke <= failing.complete && endOf(op) >= failing.invoke) chosen.add(op);
  }
  const preceding = keyOps
    .filter((op) => endOf(op) < failing.invoke)
    .sort((a, b) => b.complete - a.complete)
    .slice(0, WINDOW_PRECEDING_OPS);
  for (const op of preceding) chosen.add(op);
  const observesValue = failing.f === 'get' || failing.f === 'del';
  if (observesValue && failing.value !== null) {
    const writers = keyOps
      .filter((op) => (op.f === 'set' || op.f === 'cas') && op.value === failing.value)
      .sort((a, b) => Math.abs(a.invoke - failing.invoke) - Math.abs(b.invoke - failing.invoke))
      .slice(0, WINDOW_WRITER_OPS);
    for (const op of writers) chosen.add(op);
  }
  return [...chosen].sort((a, b) => a.invoke - b.invoke);
}
