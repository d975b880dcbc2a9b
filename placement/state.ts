// What the driver remembers, and how each event changes it: plain functions from a state
// to the next one (the machine in driver.ts only decides which of them run, and when).
// One exception, for thousands of ranges: observeReports and tick (forgetStale) update
// the report map in place.
//
// The driver is trusted with nothing it cannot observe again. Leadership of the meta range
// starts from an empty view; progress is read from reports and directory reads, and
// memory only keeps the driver from repeating itself:
// - in flight: issued and not answered yet. Never issued twice. Forgotten on an answer
//   (OP_DONE, OP_FAILED), when a report shows the range past the operation's generation
//   (or, for a directory update, the directory shows that generation), or on timeout.
// - ended: answered or timed out, but the view still shows what called for it. Not
//   reissued until an observation taken after the end says it is still needed (a report
//   of the range for a split, a directory read for a directory update); forgotten after
//   reportStaleMs, when every observation from before the end is stale anyway.
// - settling: leadership transfers answered as done, until a report of the range taken
//   after the answer (the reports name the old leader until then). The checkers count
//   them as moved; forgotten after reportStaleMs like the rest.

import { assert } from '../ranges/core/assert.ts';
import { checkers, operationTarget } from './checkers.ts';
import type { PlacementConfig } from './config.ts';
import type {
  ClusterView,
  Decision,
  Operation,
  Outcome,
  RangeDesc,
  RangeReport,
  RangeStatsReport,
} from './types.ts';

export interface InFlightOperation {
  readonly op: Operation;
  readonly issuedAtMs: number;
}

/** The state of one term of leadership of the meta range; dropped when it ends. */
export interface LeaderState {
  readonly ledAtMs: number;
  /** The latest nowMs of any event. */
  readonly nowMs: number;
  /** When the first REPORT of this term arrived; warm-up counts from it. */
  readonly firstReportAtMs: number | null;
  /**
   * Invariant: per range, the report with the highest generation, then the latest.
   * observeReports updates this map and its reports in place, so a state is current only
   * until the next event: keep no older one (the actor replaces its context on each).
   */
  readonly reports: ReadonlyMap<number, RangeReport>;
  /** null until the first directory read of this term. */
  readonly directory: ReadonlyMap<number, RangeDesc> | null;
  readonly directoryAtMs: number;
  /** By operation id. Invariant: size <= operationsInFlightMax. */
  readonly inFlight: ReadonlyMap<string, InFlightOperation>;
  /** Operation id -> when it ended (see the top of this file). */
  readonly ended: ReadonlyMap<string, number>;
  /** Operation id -> a leadership transfer done at atMs (see the top of this file). */
  readonly settling: ReadonlyMap<string, { readonly op: Operation; readonly atMs: number }>;
  /** The nodes the last TICK said are live; null before the first one. */
  readonly liveNodes: ReadonlySet<string> | null;
}

export interface DriverState {
  readonly config: PlacementConfig;
  /** null while this node does not lead the meta range. */
  readonly leader: LeaderState | null;
  /** Oldest first. Kept across terms: it is history for the admin API, not input. */
  readonly decisions: readonly Decision[];
}

export function initialState(config: PlacementConfig): DriverState {
  return { config, leader: null, decisions: [] };
}

/** This node leads the meta range from now on: start from an empty view. */
export function lead(state: DriverState, nowMs: number): DriverState {
  const base = state.leader === null ? state : unlead(state);
  return {
    ...base,
    leader: {
      ledAtMs: nowMs,
      nowMs,
      firstReportAtMs: null,
      reports: new Map(),
      directory: null,
      directoryAtMs: nowMs,
      inFlight: new Map(),
      ended: new Map(),
      settling: new Map(),
      liveNodes: null,
    },
  };
}

/** This node no longer leads the meta range: drop the view and everything in flight. */
export function unlead(state: DriverState): DriverState {
  const leader = state.leader;
  if (leader === null) return state;
  let decisions = state.decisions;
  for (const id of leader.inFlight.keys()) {
    decisions = recordOutcome(decisions, id, {
      status: 'abandoned',
      atMs: leader.nowMs,
      detail: 'this node stopped leading the meta range',
    });
  }
  return { ...state, leader: null, decisions };
}

function leaderOf(state: DriverState): LeaderState {
  assert(state.leader !== null, 'the placement driver handles cluster events only while leading');
  return state.leader;
}

/**
 * A batch of leaders' reports, received at nowMs (which stamps them: see RangeReport.atMs),
 * of ranges whose leaders say their last full report still holds (`fresh`: range id and
 * generation), and of reports by numbers alone (`stats`): a report kept for that range at
 * that generation is stamped nowMs too (and takes the new numbers, and no split key: a
 * leader that has one reports in full); any other is left alone (a full report comes when
 * a leader's view changes, and at least every minute).
 */
export function observeReports(
  state: DriverState,
  reports: readonly RangeReport[],
  nowMs: number,
  fresh: readonly (readonly [rangeId: number, generation: number])[] = [],
  stats: readonly RangeStatsReport[] = [],
): DriverState {
  let leader = leaderOf(state);
  const at = Math.max(leader.nowMs, nowMs);
  // In place (see LeaderState.reports): a copy of 10,000 reports per batch, and a new
  // report per fresh range every few seconds, kept an idle node leading them in full
  // collections every few seconds.
  const latest = leader.reports as Map<number, RangeReport>;
  for (const report of reports) {
    const known = latest.get(report.descriptor.rangeId);
    // A lower generation comes from a deposed leader that has not applied a split yet.
    if (known !== undefined && known.descriptor.generation > report.descriptor.generation) continue;
    latest.set(report.descriptor.rangeId, { ...report, atMs: at });
  }
  for (const [rangeId, generation] of fresh) {
    const known = latest.get(rangeId);
    // A kept report is the driver's own copy (made here), never one of the caller's.
    if (known !== undefined && known.descriptor.generation === generation) {
      (known as { atMs: number }).atMs = at;
    }
  }
  for (const { rangeId, generation, keys, bytes, opsPerS } of stats) {
    const known = latest.get(rangeId);
    if (known !== undefined && known.descriptor.generation === generation) {
      const { descriptor, leaderNode } = known;
      latest.set(rangeId, { descriptor, leaderNode, keys, bytes, opsPerS, atMs: at });
    }
  }
  leader = { ...leader, nowMs: at, reports: latest, firstReportAtMs: leader.firstReportAtMs ?? at };
  // A transfer has settled once a report of its range came after its answer.
  const settling = without(leader.settling, ({ op, atMs }) => {
    const report = latest.get(operationTarget(op).rangeId);
    return report === undefined || report.atMs > atMs;
  });
  if (settling !== leader.settling) leader = { ...leader, settling };
  let next: DriverState = { ...state, leader };
  for (const { op } of leader.inFlight.values()) {
    const { rangeId, generation } = operationTarget(op);
    const report = latest.get(rangeId);
    const now = report?.descriptor.generation;
    if (now !== undefined && now > generation) {
      next = endOperation(next, op.id, 'observed', `range ${rangeId} is at generation ${now}`);
    } else if (op.kind === 'transferLeader' && report?.leaderNode === op.to) {
      next = endOperation(next, op.id, 'observed', `range ${rangeId} is led by ${op.to}`);
    }
  }
  return next;
}

/**
 * A read of the whole meta directory, taken at nowMs; null: the directory is what the last
 * read found (the meta range applied nothing since), which only makes that read current.
 */
export function observeDirectory(
  state: DriverState,
  descriptors: readonly RangeDesc[] | null,
  nowMs: number,
): DriverState {
  let leader = leaderOf(state);
  const at = Math.max(leader.nowMs, nowMs);
  if (descriptors === null) {
    if (leader.directory === null) return state;
    return { ...state, leader: { ...leader, nowMs: at, directoryAtMs: at } };
  }
  const directory = new Map<number, RangeDesc>();
  for (const d of descriptors) directory.set(d.rangeId, d);
  leader = { ...leader, nowMs: at, directory, directoryAtMs: at };
  let next: DriverState = { ...state, leader };
  for (const { op } of leader.inFlight.values()) {
    if (op.kind !== 'updateDirectory') continue;
    const listed = directory.get(op.descriptor.rangeId)?.generation;
    if (listed !== undefined && listed >= op.descriptor.generation) {
      const detail = `the directory has range ${op.descriptor.rangeId} at generation ${listed}`;
      next = endOperation(next, op.id, 'observed', detail);
    }
  }
  return next;
}

/** An operation ended. Unknown ids (answered already, or issued in an earlier term) are ignored. */
export function endOperation(
  state: DriverState,
  id: string,
  status: Exclude<Outcome['status'], 'abandoned'>,
  detail: string,
): DriverState {
  const leader = leaderOf(state);
  if (!leader.inFlight.has(id)) return state;
  const inFlight = new Map(leader.inFlight);
  inFlight.delete(id);
  const ended = new Map(leader.ended);
  // An observed operation needs no wait: the view no longer calls for it.
  if (status === 'observed') ended.delete(id);
  else ended.set(id, leader.nowMs);
  const op = leader.inFlight.get(id)!.op;
  let settling = leader.settling;
  if (status === 'done' && op.kind === 'transferLeader') {
    settling = new Map(settling).set(id, { op, atMs: leader.nowMs });
  }
  return {
    ...state,
    leader: { ...leader, inFlight, ended, settling },
    decisions: recordOutcome(state.decisions, id, { status, atMs: leader.nowMs, detail }),
  };
}

/** Whether the driver has seen enough of the cluster to act on it. */
export function warm(leader: LeaderState, config: PlacementConfig): boolean {
  return (
    leader.directory !== null &&
    leader.firstReportAtMs !== null &&
    leader.nowMs - leader.firstReportAtMs >= config.warmupMs
  );
}

/**
 * A tick: time out operations, drop stale memory, and, once warm, run the checkers. Returns
 * the operations to issue now, already recorded as in flight and as decisions.
 */
export function tick(
  state: DriverState,
  nowMs: number,
  liveNodes?: readonly string[],
): { state: DriverState; issue: Operation[] } {
  const { config } = state;
  let leader = leaderOf(state);
  const at = Math.max(leader.nowMs, nowMs);
  leader = { ...leader, nowMs: at };
  if (liveNodes !== undefined) leader = { ...leader, liveNodes: new Set(liveNodes) };
  let next: DriverState = { ...state, leader };
  for (const { op, issuedAtMs } of leader.inFlight.values()) {
    if (at - issuedAtMs >= config.opTimeoutMs) {
      next = endOperation(next, op.id, 'timedOut', `no answer after ${at - issuedAtMs} ms`);
    }
  }
  leader = forgetStale(next.leader!, config);
  next = { ...next, leader };
  if (!warm(leader, config)) return { state: next, issue: [] };

  const inFlight = new Map(leader.inFlight);
  const issue: Operation[] = [];
  let decisions = next.decisions;
  for (const check of checkers) {
    const view: ClusterView = {
      nowMs: at,
      reports: leader.reports,
      directory: leader.directory!,
      directoryAtMs: leader.directoryAtMs,
      inFlight: [...inFlight.values()].map((f) => f.op),
      settling: [...leader.settling.values()].map((f) => f.op),
      liveNodes: leader.liveNodes,
    };
    for (const op of check(view, config)) {
      if (inFlight.size >= config.operationsInFlightMax) break;
      if (inFlight.has(op.id) || !neededSinceEnd(leader, op)) continue;
      inFlight.set(op.id, { op, issuedAtMs: at });
      issue.push(op);
      decisions = [...decisions, { atMs: at, op, reason: op.reason }].slice(-config.decisionsMax);
    }
  }
  const ended = new Map(leader.ended);
  for (const op of issue) ended.delete(op.id);
  return { state: { ...next, leader: { ...leader, inFlight, ended }, decisions }, issue };
}

/** Whether an observation newer than the operation's last end still calls for it. */
function neededSinceEnd(leader: LeaderState, op: Operation): boolean {
  const endedAtMs = leader.ended.get(op.id);
  if (endedAtMs === undefined) return true;
  if (op.kind === 'updateDirectory') return leader.directoryAtMs > endedAtMs;
  const report = leader.reports.get(op.rangeId);
  return report !== undefined && report.atMs > endedAtMs;
}

function forgetStale(leader: LeaderState, config: PlacementConfig): LeaderState {
  const stale = (atMs: number) => leader.nowMs - atMs > config.reportStaleMs;
  // Reports in place, as observeReports does (deleting while iterating a Map is well
  // defined). `ended` and `settling` are copied only when something in them is stale.
  const reports = leader.reports as Map<number, RangeReport>;
  for (const r of reports.values()) if (stale(r.atMs)) reports.delete(r.descriptor.rangeId);
  const ended = without(leader.ended, stale);
  const settling = without(leader.settling, (s) => stale(s.atMs));
  return ended === leader.ended && settling === leader.settling
    ? leader
    : { ...leader, ended, settling };
}

/** `map` without the entries `drop` picks: a copy, or `map` itself when it picks none. */
function without<V>(
  map: ReadonlyMap<string, V>,
  drop: (value: V) => boolean,
): ReadonlyMap<string, V> {
  for (const value of map.values()) {
    if (drop(value)) return new Map([...map].filter(([, v]) => !drop(v)));
  }
  return map;
}

/** Sets the outcome of the newest open decision for this operation, if it is still kept. */
function recordOutcome(
  decisions: readonly Decision[],
  id: string,
  outcome: Outcome,
): readonly Decision[] {
  for (let i = decisions.length - 1; i >= 0; i--) {
    const d = decisions[i]!;
    if (d.op.id !== id) continue;
    if (d.outcome !== undefined) return decisions;
    const copy = decisions.slice();
    copy[i] = { ...d, outcome };
    return copy;
  }
  return decisions;
}
