// Checkers: pure functions from a cluster view to the operations it calls for (as PD's
// checkers and schedulers in TiKV). They read nothing but their arguments; the driver
// (driver.ts) runs them in order on every tick, drops what is already in flight and hands
// the rest to the node.
//
// Contract of a checker:
// - It ignores reports and directory reads older than config.reportStaleMs. The driver
//   relies on this: once an operation has ended it waits for observations newer than the
//   end before reissuing it, and forgets that wait after reportStaleMs.
// - Every operation carries the generation it expects (the node applies it as a
//   compare-and-set) and a reason with the numbers behind it.
// - It respects its own in-flight bound by counting view.inFlight, which includes what
//   checkers earlier in the list issued in the same round.

import type { PlacementConfig } from './config.ts';
import {
  compareKeys,
  formatBytes,
  formatKey,
  hasPrefix,
  prefixEnd,
  strictlyInside,
} from './keys.ts';
import type { ClusterView, Operation, OperationKind, RangeReport } from './types.ts';

export type Checker = (view: ClusterView, config: PlacementConfig) => Operation[];

/** The identity of an operation: at most one with a given id is in flight. */
export function operationId(kind: OperationKind, rangeId: number, generation: number): string {
  return `${kind}:${rangeId}@${generation}`;
}

/** The range an operation acts on and the generation it expects of it. */
export function operationTarget(op: Operation): { rangeId: number; generation: number } {
  return op.kind === 'updateDirectory'
    ? { rangeId: op.descriptor.rangeId, generation: op.descriptor.generation }
    : { rangeId: op.rangeId, generation: op.generation };
}

export function isStale(atMs: number, view: ClusterView, config: PlacementConfig): boolean {
  return view.nowMs - atMs > config.reportStaleMs;
}

/** By rangeId: operations come out in the same order whatever order the reports came in. */
const byRangeId = (a: Operation, b: Operation) =>
  operationTarget(a).rangeId - operationTarget(b).rangeId;

/**
 * Directory repair: the directory must hold every range at the generation its leader
 * reports. A missing or older entry is rewritten with the reported descriptor; an entry at
 * the same or a newer generation is left alone (a report that old comes from a deposed
 * leader). Entries made obsolete by a split are overwritten through the same rangeId; this
 * checker never deletes one.
 */
export const repairDirectory: Checker = (view, config) => {
  if (isStale(view.directoryAtMs, view, config)) return [];
  const ops: Operation[] = [];
  // Over the map itself: with 10,000 ranges, a copy (or a generator) of the reports every
  // second was most of what an idle node leading them allocated.
  for (const report of view.reports.values()) {
    if (isStale(report.atMs, view, config)) continue;
    const reported = report.descriptor;
    const listed = view.directory.get(reported.rangeId);
    if (listed !== undefined && listed.generation >= reported.generation) continue;
    const reason =
      listed === undefined
        ? `range ${reported.rangeId} (generation ${reported.generation}, leader on ` +
          `${report.leaderNode}) is missing from the directory`
        : `the directory has range ${reported.rangeId} at generation ${listed.generation}; ` +
          `its leader on ${report.leaderNode} reports generation ${reported.generation}`;
    ops.push({
      kind: 'updateDirectory',
      id: operationId('updateDirectory', reported.rangeId, reported.generation),
      descriptor: reported,
      reason,
    });
  }
  return ops.sort(byRangeId);
};

/**
 * Whether a key may split a range: it must sort after every system key, so that the meta
 * range (the first one) keeps the whole system prefix, and with it the directory.
 */
export function splittableKey(key: Uint8Array, config: PlacementConfig): boolean {
  if (hasPrefix(key, config.systemPrefix)) return false;
  const end = prefixEnd(config.systemPrefix);
  return end !== null && compareKeys(key, end) >= 0;
}

/**
 * Split by size: a range reported at splitBytesThreshold bytes or more is split at its
 * median key, if that key lies strictly inside its span and outside the system keys.
 * Biggest first, at most splitsInFlightMax splits in flight, one per range.
 */
export const splitBySize: Checker = (view, config) => {
  const splitting = new Set<number>();
  for (const op of view.inFlight) if (op.kind === 'split') splitting.add(op.rangeId);
  let budget = config.splitsInFlightMax - splitting.size;
  if (budget <= 0) return [];
  const candidates: RangeReport[] = [];
  for (const r of view.reports.values()) {
    if (isStale(r.atMs, view, config)) continue;
    if (r.bytes >= config.splitBytesThreshold && !splitting.has(r.descriptor.rangeId)) {
      candidates.push(r);
    }
  }
  candidates.sort((a, b) => b.bytes - a.bytes || a.descriptor.rangeId - b.descriptor.rangeId);
  const ops: Operation[] = [];
  for (const report of candidates) {
    if (budget === 0) break;
    const { rangeId, generation, start, end } = report.descriptor;
    const key = report.splitKey;
    if (key === undefined || !strictlyInside(key, start, end) || !splittableKey(key, config)) {
      continue;
    }
    ops.push({
      kind: 'split',
      id: operationId('split', rangeId, generation),
      rangeId,
      generation,
      key,
      reason:
        `range ${rangeId} is ${formatBytes(report.bytes)} >= ` +
        `${formatBytes(config.splitBytesThreshold)} (${report.keys} keys): ` +
        `split at ${formatKey(key)}, generation ${generation}`,
    });
    budget--;
  }
  return ops;
};

/**
 * Leader balancing by count (as PD's balance-leader scheduler): a node leading at least two
 * ranges more than another live node that holds a voter of one of them hands that one's
 * leadership over. Leaders are where the fresh reports say, moved by the transfers in flight
 * or settling; a range with another operation in flight is left alone, and so is the meta
 * range (the first: the driver runs on its leader, and a move would restart the driver's
 * view). The busiest node gives first, to the live voter node leading fewest, ties by node
 * id and range id; at most leaderTransfersInFlightMax transfers in flight. A difference of
 * one is left: it is as even as the counts get, and moving it would only move it back.
 */
export const balanceLeaders: Checker = (view, config) => {
  const live = view.liveNodes;
  if (live === null || config.leaderTransfersInFlightMax === 0) return [];
  let budget = config.leaderTransfersInFlightMax;
  const leaderAt = new Map<number, string>();
  const busy = new Set<number>();
  for (const op of view.inFlight) {
    if (op.kind === 'transferLeader') {
      budget--;
      leaderAt.set(op.rangeId, op.to);
    } else busy.add(operationTarget(op).rangeId);
  }
  if (budget <= 0) return [];
  for (const op of view.settling) {
    if (op.kind === 'transferLeader' && !leaderAt.has(op.rangeId)) leaderAt.set(op.rangeId, op.to);
  }
  const counts = new Map<string, number>();
  for (const node of live) counts.set(node, 0);
  /** Ranges each live node leads that may move, by rangeId. */
  const movable = new Map<string, RangeReport[]>();
  for (const r of view.reports.values()) {
    if (isStale(r.atMs, view, config)) continue;
    const id = r.descriptor.rangeId;
    const node = leaderAt.get(id) ?? r.leaderNode;
    const n = counts.get(node);
    if (n === undefined) continue; // led on a node not heard from: it will be elected anew
    counts.set(node, n + 1);
    if (leaderAt.has(id) || busy.has(id) || r.descriptor.start.length === 0) continue;
    let list = movable.get(node);
    if (list === undefined) movable.set(node, (list = []));
    list.push(r);
  }
  for (const list of movable.values())
    list.sort((a, b) => a.descriptor.rangeId - b.descriptor.rangeId);
  const total = [...counts.values()].reduce((a, b) => a + b, 0);
  const byNode = (a: string, b: string) => (a < b ? -1 : a > b ? 1 : 0);
  const ops: Operation[] = [];
  const moved = new Set<number>();
  while (budget > 0) {
    const nodes = [...counts.keys()].sort(
      (a, b) => counts.get(b)! - counts.get(a)! || byNode(a, b),
    );
    const from = nodes[0]!;
    const fromCount = counts.get(from)!;
    let found: { report: RangeReport; to: string } | undefined;
    for (const report of movable.get(from) ?? []) {
      if (moved.has(report.descriptor.rangeId)) continue;
      let to: string | undefined;
      for (const r of report.descriptor.replicas) {
        const n = counts.get(r.nodeId);
        if (r.role !== 'voter' || r.nodeId === from || n === undefined) continue;
        if (to === undefined || n < counts.get(to)! || (n === counts.get(to)! && r.nodeId < to)) {
          to = r.nodeId;
        }
      }
      if (to !== undefined && fromCount - counts.get(to)! >= 2) {
        found = { report, to };
        break;
      }
    }
    if (found === undefined) break;
    const { report, to } = found;
    const { rangeId, generation, start } = report.descriptor;
    ops.push({
      kind: 'transferLeader',
      id: operationId('transferLeader', rangeId, generation),
      rangeId,
      generation,
      key: start,
      from,
      to,
      reason:
        `${from} leads ${fromCount} of ${total} ranges, ${to} ${counts.get(to)} ` +
        `(${live.size} live nodes): move range ${rangeId}'s leadership to ${to}`,
    });
    moved.add(rangeId);
    counts.set(from, fromCount - 1);
    counts.set(to, counts.get(to)! + 1);
    budget--;
  }
  return ops;
};

/**
 * The checkers the driver runs, in this order. Repair comes first: the directory is what
 * clients route by; leaders move last, around what the others issued. A new checker
 * (rebalancing replicas, splitting by load, merging) is a Checker appended here; if it
 * needs more of the cluster (node stats), that goes into ClusterView, and its operation
 * kind into Operation, with a test of its own.
 */
export const checkers: readonly Checker[] = [repairDirectory, splitBySize, balanceLeaders];
