// Helpers shared by the integration tests: cluster status, waits for a leader and for
// replicas to catch up, clients. Every wait is bounded and fails saying what it saw last.

import { collectStatus, type NodeStatus, type RangeStatus } from '../../src/cli/status.ts';
import { Client } from '../../src/client/index.ts';
import { type Cluster, startCluster } from './harness.ts';

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Milliseconds on the monotonic clock. */
export function nowMs(): number {
  return performance.now();
}

/**
 * Calls `look` every `intervalMs` until it returns a value other than undefined, and
 * returns that value. At the deadline, throws "not <what> within <timeoutMs> ms", followed
 * by `lastSeen()` (what the last look saw) when given. Every wait of these tests is one.
 */
export async function waitUntil<T>(
  what: string,
  look: () => T | undefined | Promise<T | undefined>,
  opts: { timeoutMs: number; intervalMs?: number; lastSeen?: () => string },
): Promise<T> {
  const deadline = nowMs() + opts.timeoutMs;
  for (;;) {
    const found = await look();
    if (found !== undefined) return found;
    if (nowMs() >= deadline) {
      const seen = opts.lastSeen === undefined ? '' : `; ${opts.lastSeen()}`;
      throw new Error(`not ${what} within ${opts.timeoutMs} ms${seen}`);
    }
    await sleep(opts.intervalMs ?? 100);
  }
}

/** Waits until `ok()` holds, looking every 20 ms (conditions in this process: events in). */
export async function until(what: string, ok: () => boolean, timeoutMs = 10_000): Promise<void> {
  await waitUntil(what, () => (ok() ? true : undefined), { timeoutMs, intervalMs: 20 });
}

/** The status of every node that answered within `waitMs`; empty when NATS is unreachable. */
export async function statusOf(natsUrl: string, waitMs = 250): Promise<NodeStatus[]> {
  try {
    return await collectStatus(natsUrl, 'rasputin', waitMs);
  } catch {
    return [];
  }
}

/** A counter of the status replies' `stats`, summed over the nodes (absent: 0). */
export function statsSum(nodes: readonly NodeStatus[], counter: string): number {
  return nodes.reduce((n, s) => n + (s.stats?.[counter] ?? 0), 0);
}

/** Range 1 of each node that answered, by node id. */
export function range1(nodes: readonly NodeStatus[]): Map<string, RangeStatus> {
  const out = new Map<string, RangeStatus>();
  for (const n of nodes) {
    const r = n.ranges.find((x) => x.rangeId === 1);
    if (r) out.set(n.node, r);
  }
  return out;
}

/** The node that leads range 1 at the highest term among the answers, if any. */
export function leaderOf(nodes: readonly NodeStatus[]): { node: string; r: RangeStatus } | null {
  let best: { node: string; r: RangeStatus } | null = null;
  for (const [node, r] of range1(nodes)) {
    if (r.role === 'leader' && (best === null || r.term > best.r.term)) best = { node, r };
  }
  return best;
}

function show(nodes: readonly NodeStatus[]): string {
  return JSON.stringify([...range1(nodes)].map(([node, r]) => ({ node, ...r })));
}

/** Waits until some node (not in `exclude`) reports itself leader of range 1. */
export async function waitForLeader(
  natsUrl: string,
  opts: { timeoutMs?: number; exclude?: readonly string[] } = {},
): Promise<{ node: string; r: RangeStatus }> {
  let last: NodeStatus[] = [];
  return waitUntil(
    'a leader of range 1',
    async () => {
      last = await statusOf(natsUrl);
      const leader = leaderOf(last);
      return leader && !opts.exclude?.includes(leader.node) ? leader : undefined;
    },
    { timeoutMs: opts.timeoutMs ?? 15_000, lastSeen: () => `last status ${show(last)}` },
  );
}

/** Waits until `ok` holds for range 1's status by node; returns that status. */
export async function waitForStatus(
  natsUrl: string,
  what: string,
  ok: (byNode: Map<string, RangeStatus>) => boolean,
  timeoutMs = 20_000,
): Promise<Map<string, RangeStatus>> {
  let last: NodeStatus[] = [];
  return waitUntil(
    what,
    async () => {
      last = await statusOf(natsUrl);
      const byNode = range1(last);
      return ok(byNode) ? byNode : undefined;
    },
    { timeoutMs, lastSeen: () => `last status ${show(last)}` },
  );
}

/**
 * Waits until every node in `nodeIds` answers and has applied the leader's commit index
 * (and the leader's commit is stable across two looks, so nothing was in flight).
 */
export async function waitForCaughtUp(
  natsUrl: string,
  nodeIds: readonly string[],
  timeoutMs = 20_000,
): Promise<Map<string, RangeStatus>> {
  let last: NodeStatus[] = [];
  let previousCommit = -1;
  return waitUntil(
    `nodes ${nodeIds.join(',')} caught up`,
    async () => {
      last = await statusOf(natsUrl);
      const byNode = range1(last);
      const leader = leaderOf(last);
      if (!leader || !nodeIds.every((id) => byNode.has(id))) return undefined;
      const commit = leader.r.commit;
      const caughtUp = nodeIds.every((id) => byNode.get(id)!.applied === commit);
      const stable = commit === previousCommit;
      previousCommit = commit;
      return caughtUp && stable ? byNode : undefined;
    },
    { timeoutMs, lastSeen: () => `last status ${show(last)}` },
  );
}

/** The last lines each node printed, for failure messages. */
export function nodeLogs(cluster: Cluster, lines = 40): string {
  return cluster.nodes
    .map(
      (n) =>
        `--- node ${n.nodeId} (pid ${n.pid}, running ${n.running()}):\n` +
        n.output.slice(-lines).join('\n'),
    )
    .join('\n');
}

/** Bound of a beforeAll that starts a cluster and waits for its leader. */
export const clusterStartMsMax = 90_000;

/**
 * startCluster, then waits for a leader; on failure stops the cluster and throws with the
 * nodes' output (so a failed beforeAll says why).
 */
export async function startServingCluster(
  opts: Parameters<typeof startCluster>[0] = {},
): Promise<Cluster> {
  const cluster = await startCluster(opts);
  try {
    await waitForLeader(cluster.natsUrl, { timeoutMs: 30_000 });
  } catch (err) {
    const logs = nodeLogs(cluster);
    await cluster.stop().catch(() => undefined);
    throw new Error(`${(err as Error).message}\n${logs}`);
  }
  return cluster;
}

export function connectClient(natsUrl: string, timeoutMs = 5000): Promise<Client> {
  return Client.connect({ servers: natsUrl, timeoutMs, name: 'rasputin-it' });
}

/** `key`'s value as text, or null when absent (one get, no retry). */
export async function readText(
  client: Client,
  key: string,
  timeoutMs?: number,
): Promise<string | null> {
  const r = await client.get(key, timeoutMs === undefined ? undefined : { timeoutMs });
  return r === null ? null : r.value.toString('utf8');
}

/** Sets `<prefix>-<i>` to `v<i>` for i in [0, n), one after another. */
export async function writeSerially(client: Client, prefix: string, n: number): Promise<void> {
  for (let i = 0; i < n; i++) await client.set(`${prefix}-${i}`, `v${i}`);
}

/** Retries `get` until it answers (a cluster that just healed may still be electing). */
export async function getEventually(
  client: Client,
  key: string,
  timeoutMs = 15_000,
): Promise<string | null> {
  const deadline = nowMs() + timeoutMs;
  let lastError: unknown;
  for (let attempt = 0; attempt < 1000 && nowMs() < deadline; attempt++) {
    try {
      return await readText(client, key, Math.max(100, deadline - nowMs()));
    } catch (err) {
      lastError = err;
      await sleep(100);
    }
  }
  throw new Error(`get ${key} did not answer in ${timeoutMs} ms: ${String(lastError)}`);
}

/** The error's code (RasputinError), or its name. */
export function errorCode(err: unknown): string {
  if (typeof err === 'object' && err !== null) {
    const e = err as { code?: unknown; name?: unknown };
    if (typeof e.code === 'string') return e.code;
    if (typeof e.name === 'string') return e.name;
  }
  return String(err);
}

/** One write of a load: `ok` was acknowledged; `unknown` timed out or failed otherwise. */
export interface LoadWrite {
  readonly key: string;
  readonly value: string;
  outcome: 'ok' | 'unknown';
  error?: string;
  readonly invokedMs: number;
  completedMs: number;
}

export interface WriteLoad {
  readonly writes: LoadWrite[];
  /** Stops the writers and waits for their last writes. */
  stop(): Promise<void>;
}

/**
 * Closed-loop writers of distinct keys `<prefix>-<writer>-<n>`, one client each, bounded
 * by a count per writer and a deadline.
 */
export function startWriteLoad(
  clients: readonly Client[],
  opts: {
    prefix: string;
    perWriterMax: number;
    pauseMs: number;
    timeoutMs: number;
    loadMsMax: number;
  },
): WriteLoad {
  const writes: LoadWrite[] = [];
  let stopped = false;
  const deadline = nowMs() + opts.loadMsMax;
  const writer = async (w: number, client: Client) => {
    for (let n = 0; n < opts.perWriterMax && !stopped && nowMs() < deadline; n++) {
      const write: LoadWrite = {
        key: `${opts.prefix}-${w}-${n}`,
        value: `v-${w}-${n}`,
        outcome: 'unknown',
        invokedMs: nowMs(),
        completedMs: Number.POSITIVE_INFINITY,
      };
      writes.push(write);
      try {
        await client.set(write.key, write.value, { timeoutMs: opts.timeoutMs });
        write.outcome = 'ok';
      } catch (err) {
        write.error = errorCode(err);
      }
      write.completedMs = nowMs();
      await sleep(opts.pauseMs);
    }
  };
  const running = Promise.all(clients.map((c, w) => writer(w, c)));
  return {
    writes,
    stop: async () => {
      stopped = true;
      await running;
    },
  };
}

/**
 * Retries one write until it is acknowledged or `withinMs` passes (each attempt waits at
 * most 1 s). Returns when it was acknowledged, or NaN, and the last error.
 */
export async function probeWrite(
  client: Client,
  key: string,
  withinMs: number,
): Promise<{ ackedAtMs: number; lastError: string }> {
  const start = nowMs();
  let lastError = '';
  for (let i = 0; i < 10_000 && nowMs() - start < withinMs; i++) {
    try {
      await client.set(key, `p${i}`, { timeoutMs: 1000 });
      return { ackedAtMs: nowMs(), lastError };
    } catch (err) {
      lastError = errorCode(err);
    }
  }
  return { ackedAtMs: Number.NaN, lastError };
}

/**
 * Reads every write back: an acknowledged write must hold its value; one with an unknown
 * outcome holds its value or nothing. Returns the writes that do not.
 */
export async function lostWrites(reader: Client, writes: readonly LoadWrite[]): Promise<string[]> {
  const lost: string[] = [];
  for (let i = 0; i < writes.length; i += 100) {
    const chunk = writes.slice(i, i + 100);
    const got = await Promise.all(chunk.map((x) => getEventually(reader, x.key)));
    chunk.forEach((x, j) => {
      const allowed = x.outcome === 'ok' ? [x.value] : [null, x.value];
      if (!allowed.includes(got[j]!)) lost.push(`${x.key} (${x.outcome}): read ${String(got[j])}`);
    });
  }
  return lost;
}
