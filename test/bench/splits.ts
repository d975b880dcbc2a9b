// Splits for the benchmark's many-ranges runs (`npm run bench -- --ranges LIST`):
//
//   splitAll     pre-splits a cluster at a sorted list of keys, as a tree: a range that must
//                end up cut at points p[lo..hi) is split at its middle point first, then its
//                two halves are split concurrently, and so on. Two splits in flight never
//                target the same range, so none is refused for a stale generation, and the
//                range count doubles per round. Bounded: `inflight` splits at once, none
//                started after the deadline, each with its own timeout.
//   splitSeries  one split after another at a steady pace (while a load runs), each timed.
//
// Both use the parent's Client: `client.split(key)` routes by its range cache, which the
// split's reply (both sides' descriptors) keeps current.

import type { Client } from '../../src/client/index.ts';

export interface SplitOutcome {
  /** Splits asked for (points not already splitting the keyspace). */
  asked: number;
  /** The points the keyspace is now cut at (made by these splits). */
  made: string[];
  failed: number;
  /** Not started: the time bound ran out first. */
  skipped: number;
  elapsedS: number;
  /** Each finished split's duration in ms, ascending. */
  latenciesMs: Float64Array;
  firstErr: string | undefined;
}

export interface SplitAllOptions {
  /** Splits in flight at most. */
  inflight: number;
  /** performance.now() after which no split starts. */
  deadlineMs: number;
  /** No split starts once this says so (a process the run needs has died). */
  stop?: () => boolean;
  /** Deadline of one split (the client retries inside it). */
  timeoutMs: number;
  /** Called at most every progressEveryMs with the splits made so far. */
  onProgress?: (made: number, asked: number, elapsedS: number) => void;
  progressEveryMs?: number;
}

/**
 * Cuts the keyspace at every point of `points` (ascending) that `existing` does not hold
 * yet. The points between two existing ones lie in one range: each such group is split as
 * a tree (middle point first), all groups at once, `inflight` splits at a time.
 */
export async function splitAll(
  client: Client,
  points: readonly string[],
  existing: ReadonlySet<string>,
  o: SplitAllOptions,
): Promise<SplitOutcome> {
  const todo = points.filter((p) => !existing.has(p));
  for (let i = 1; i < todo.length; i++) {
    if (todo[i - 1]! >= todo[i]!) throw new Error('splitAll: points must ascend');
  }
  // Groups of consecutive new points with no existing point between them: one range each.
  const sortedExisting = [...existing].sort();
  const groups: [number, number][] = [];
  let e = 0;
  for (let i = 0; i < todo.length; ) {
    while (e < sortedExisting.length && sortedExisting[e]! < todo[i]!) e++;
    const bound = sortedExisting[e];
    let j = i + 1;
    while (j < todo.length && (bound === undefined || todo[j]! < bound)) j++;
    groups.push([i, j]);
    i = j;
  }

  const t0 = performance.now();
  const made: string[] = [];
  const latencies: number[] = [];
  let failed = 0;
  let skipped = 0;
  let firstErr: string | undefined;
  let active = 0;
  const waiting: (() => void)[] = [];
  let lastProgressMs = t0;
  const progressEveryMs = o.progressEveryMs ?? 5000;

  const expired = () => performance.now() > o.deadlineMs || (o.stop?.() ?? false);

  /** One split when a slot is free; false if the time bound ran out before it started. */
  const splitOne = async (key: string): Promise<boolean> => {
    while (active >= o.inflight) await new Promise<void>((resolve) => waiting.push(resolve));
    active++;
    try {
      if (expired()) return false;
      const s0 = performance.now();
      await client.split(key, { timeoutMs: o.timeoutMs });
      latencies.push(performance.now() - s0);
      made.push(key);
    } catch (err) {
      failed++;
      firstErr ??= `${(err as Error).name}: ${(err as Error).message}`;
    } finally {
      active--;
      waiting.shift()?.();
      const now = performance.now();
      if (o.onProgress && now - lastProgressMs >= progressEveryMs) {
        lastProgressMs = now;
        o.onProgress(made.length, todo.length, (now - t0) / 1000);
      }
    }
    return true;
  };

  /** Splits the range holding todo[lo..hi) at its middle point, then both halves. */
  const tree = async (lo: number, hi: number): Promise<void> => {
    if (lo >= hi) return;
    const mid = (lo + hi) >> 1;
    if (!(await splitOne(todo[mid]!))) {
      skipped += hi - lo;
      return;
    }
    // A failed split leaves both halves in one range: they are still split (the client
    // reroutes a split that lands on a range that changed under it), only less in parallel.
    await Promise.all([tree(lo, mid), tree(mid + 1, hi)]);
  };

  await Promise.all(groups.map(([lo, hi]) => tree(lo, hi)));
  made.sort();
  return {
    asked: todo.length,
    made,
    failed,
    skipped,
    elapsedS: (performance.now() - t0) / 1000,
    latenciesMs: Float64Array.from(latencies).sort(),
    firstErr,
  };
}

export interface SeriesOutcome {
  made: string[];
  failed: number;
  /** Each split's duration in ms, in the order they were made. */
  latenciesMs: number[];
  firstErr: string | undefined;
}

/**
 * Splits at `keys` one after another, starting one every `everyMs` (or as soon as the
 * previous one ends, if later), until all are done or `stop()` says so. Bounded by the
 * number of keys and the per-split timeout.
 */
export async function splitSeries(
  client: Client,
  keys: readonly string[],
  o: { everyMs: number; timeoutMs: number; stop: () => boolean },
): Promise<SeriesOutcome> {
  const out: SeriesOutcome = { made: [], failed: 0, latenciesMs: [], firstErr: undefined };
  let nextAtMs = performance.now();
  for (const key of keys) {
    const waitMs = nextAtMs - performance.now();
    if (waitMs > 0) await new Promise((resolve) => setTimeout(resolve, waitMs));
    if (o.stop()) break;
    nextAtMs += o.everyMs;
    const s0 = performance.now();
    try {
      await client.split(key, { timeoutMs: o.timeoutMs });
      out.latenciesMs.push(performance.now() - s0);
      out.made.push(key);
    } catch (err) {
      out.failed++;
      out.firstErr ??= `${(err as Error).name}: ${(err as Error).message}`;
    }
  }
  return out;
}
