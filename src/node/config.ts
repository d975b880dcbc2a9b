// Node configuration from flags and environment variables (flags win), validated with
// messages that say what to fix. Printed on start.

import { parseArgs } from 'node:util';
import { defaultOptions } from '../../ranges/core/types.ts';
import { checkNodeId, checkPrefix, defaultPrefix } from '../transport/subjects.ts';

export interface NodeConfig {
  readonly nodeId: string;
  readonly natsUrl: string;
  readonly storageDir: string;
  readonly initialNodes: readonly string[];
  readonly prefix: string;
  readonly logfile: string | undefined;
  readonly tickMs: number;
  /** Log entries kept after the applied index before the log is truncated. */
  readonly logEntriesMax: number;
  /**
   * Memory the log entries of all ranges may hold, about (RaftLog.memoryBytes): past it the
   * node truncates the largest logs (docs/ranges.md, "Log memory").
   */
  readonly logMemoryMax: number;
  /** A range whose data passes this many bytes is split at its median key. */
  readonly splitBytes: number;
  /** Whether range leaders publish watch notifications (docs/streams.md). */
  readonly watch: boolean;
  /**
   * Whether the placement driver, on this node while it leads the meta range, spreads range
   * leaders evenly over the live nodes (docs/ranges.md, "Leader balancing"). Off by
   * default: on one machine it cost the 256-range benches a third of their throughput.
   */
  readonly balanceLeaders: boolean;
  /**
   * Revisions of each range's mutation events kept for subscribe (docs/streams.md): the
   * leader compacts older ones with a replicated command.
   */
  readonly eventsRetainRevisions: number;
  /**
   * Seconds of each range's mutation events kept for subscribe, at most: the leader
   * compacts events applied longer ago too (docs/streams.md), so a node's history grows
   * with its write rate, not with the ranges it hosts.
   */
  readonly eventsRetainS: number;
  /**
   * Seconds a range remembers an applied request id, at most (and at most
   * dedupWindowEntries positions): the leader has ids applied longer ago forgotten with a
   * replicated command (docs/protocol.md, "At most once").
   */
  readonly dedupWindowS: number;
  /** Subscribe polls this node holds at once (long polling); past it, Overloaded. */
  readonly eventsPollsMax: number;
  /**
   * How long a follower may hold committed entries before it applies them (0: at once), so
   * that a range taking a write now and then applies several in one go (docs/ranges.md,
   * "Followers apply late").
   */
  readonly followerApplyMs: number;
  /**
   * How long a leader may hold committed entries that nothing waits on before it applies
   * them (0: at once): while its range takes writes and no reads (docs/ranges.md, "Leaders
   * apply late under writes alone").
   */
  readonly leaderApplyMs: number;
}

/** Production-sized (as TiKV's region-split-size order of magnitude). */
export const defaultSplitBytes = 64 * 1024 * 1024;

/**
 * Revisions of history a range keeps for subscribers: as the request dedup window, so a
 * subscriber can be away as long as a retried write is remembered. At 1,000 writes/s on
 * one range that is 100 s; see docs/operations.md for the disk it takes.
 */
export const defaultEventsRetainRevisions = 100_000;

/** An hour of history at most, whatever the write rate (etcd users compact by time). */
export const defaultEventsRetainS = 3600;

/**
 * Two minutes, as JetStream's duplicate window: far past a call's default deadline
 * (5 s), within which its retries come.
 */
export const defaultDedupWindowS = 120;

/**
 * Log memory per node: about 100,000 small entries. A range keeps up to logEntriesMax
 * entries, so a few busy ranges keep their whole window; thousands of busy ranges are
 * truncated further rather than hold gigabytes.
 */
export const defaultLogMemoryMax = 64 * 1024 * 1024;

/**
 * A follower applies a range's committed entries at most this long after the first (its
 * turns apply them paced: docs/ranges.md, "Held applies are paced").
 */
export const defaultFollowerApplyMs = 500;
/** A leader of a range under writes alone applies them at most this long after the first. */
export const defaultLeaderApplyMs = 500;

/** Held subscribe polls per node (each is a pending NATS request and a small record). */
export const defaultEventsPollsMax = 10_000;

export const defaultNatsUrl = 'nats://127.0.0.1:4222';

export class ConfigError extends Error {
  override name = 'ConfigError';
}

const env = (name: string): string | undefined => {
  const v = process.env[name];
  return v === undefined || v === '' ? undefined : v;
};

function positiveInt(name: string, raw: string | undefined, fallback: number, max: number): number {
  return intIn(name, raw, fallback, 1, max);
}

/**
 * The longest tick. A leader heartbeats every heartbeatTicks (2); a round skips a follower
 * that it sent entries since the last round and owes it a heartbeat at the next tick
 * (docs/consensus.md, "Rounds carried by appends" and "Owed heartbeats"). So when writes
 * stop, a follower's latest answered round may have opened heartbeatTicks + 1 ticks before
 * a check of the lease. A leader abdicates when its quorum's latest answered round opened
 * a whole lease ago (leaseDurationMs, 900 ms, a time every node grants alike): with
 * --tick-ms 300 or 500 (taken before, up to 10,000) a cluster lost its leader within about
 * a second of each election and never served. The bound leaves a third of the lease for
 * the round trip and late timers.
 */
export const tickMsMax = Math.floor(
  defaultOptions.leaseDurationMs / (defaultOptions.heartbeatTicks + 1) / 1.5,
);

function tickMsOf(raw: string | undefined): number {
  if (raw !== undefined && Number(raw) > tickMsMax) {
    throw new ConfigError(
      `--tick-ms must be at most ${tickMsMax}: an idle leader's latest answered lease ` +
        `round may be ${defaultOptions.heartbeatTicks + 1} ticks old, and it must be ` +
        `younger than the ${defaultOptions.leaseDurationMs} ms lease; got ${JSON.stringify(raw)}`,
    );
  }
  return positiveInt('--tick-ms', raw, 100, tickMsMax);
}

function nonNegativeInt(
  name: string,
  raw: string | undefined,
  fallback: number,
  max: number,
): number {
  return intIn(name, raw, fallback, 0, max);
}

function intIn(
  name: string,
  raw: string | undefined,
  fallback: number,
  min: number,
  max: number,
): number {
  if (raw === undefined) return fallback;
  const n = raw.trim() === '' ? Number.NaN : Number(raw);
  if (!Number.isInteger(n) || n < min || n > max) {
    throw new ConfigError(
      `${name} must be an integer in [${min}, ${max}], got ${JSON.stringify(raw)}`,
    );
  }
  return n;
}

function onOff(name: string, raw: string | undefined, fallback: boolean): boolean {
  if (raw === undefined) return fallback;
  if (raw === 'on') return true;
  if (raw === 'off') return false;
  throw new ConfigError(`${name} must be on or off, got ${JSON.stringify(raw)}`);
}

/** Parses `rasputin start` arguments (without the `start`). Throws ConfigError on bad input. */
export function parseNodeConfig(args: string[]): NodeConfig {
  let values: Record<string, string | boolean | undefined>;
  try {
    values = parseArgs({
      args,
      options: {
        'node-id': { type: 'string' },
        nats: { type: 'string' },
        'storage-dir': { type: 'string' },
        'initial-nodes': { type: 'string' },
        prefix: { type: 'string' },
        logfile: { type: 'string' },
        'tick-ms': { type: 'string' },
        'log-entries-max': { type: 'string' },
        'log-memory-max': { type: 'string' },
        'split-bytes': { type: 'string' },
        watch: { type: 'string' },
        'balance-leaders': { type: 'string' },
        'events-retain': { type: 'string' },
        'events-retain-s': { type: 'string' },
        'dedup-window-s': { type: 'string' },
        'events-polls-max': { type: 'string' },
        'follower-apply-ms': { type: 'string' },
        'leader-apply-ms': { type: 'string' },
      },
      strict: true,
      allowPositionals: false,
    }).values;
  } catch (err) {
    throw new ConfigError((err as Error).message);
  }
  const str = (k: string) => values[k] as string | undefined;
  const nodeId = str('node-id') ?? env('RASPUTIN_NODE_ID');
  if (!nodeId) throw new ConfigError('--node-id (or RASPUTIN_NODE_ID) is required');
  const idProblem = checkNodeId(nodeId);
  if (idProblem) throw new ConfigError(idProblem);
  const storageDir = str('storage-dir') ?? env('RASPUTIN_STORAGE_DIR');
  if (!storageDir) throw new ConfigError('--storage-dir (or RASPUTIN_STORAGE_DIR) is required');
  const initialRaw = str('initial-nodes') ?? env('RASPUTIN_INITIAL_NODES') ?? nodeId;
  const initialNodes = [
    ...new Set(
      initialRaw
        .split(',')
        .map((s) => s.trim())
        .filter(Boolean),
    ),
  ];
  for (const id of initialNodes) {
    const p = checkNodeId(id);
    if (p) throw new ConfigError(`--initial-nodes: ${p}`);
  }
  if (!initialNodes.includes(nodeId)) {
    throw new ConfigError(
      `--initial-nodes (${initialNodes.join(',')}) must include this node (${nodeId})`,
    );
  }
  if (initialNodes.length > 7) throw new ConfigError('--initial-nodes: at most 7 nodes');
  const prefix = str('prefix') ?? env('RASPUTIN_PREFIX') ?? defaultPrefix;
  const prefixProblem = checkPrefix(prefix);
  if (prefixProblem) throw new ConfigError(prefixProblem);
  return {
    nodeId,
    natsUrl: str('nats') ?? env('RASPUTIN_NATS') ?? defaultNatsUrl,
    storageDir,
    initialNodes,
    prefix,
    logfile: str('logfile') ?? env('RASPUTIN_LOGFILE'),
    tickMs: tickMsOf(str('tick-ms') ?? env('RASPUTIN_TICK_MS')),
    logEntriesMax: positiveInt(
      '--log-entries-max',
      str('log-entries-max') ?? env('RASPUTIN_LOG_ENTRIES_MAX'),
      10_000,
      100_000_000,
    ),
    logMemoryMax: positiveInt(
      '--log-memory-max',
      str('log-memory-max') ?? env('RASPUTIN_LOG_MEMORY_MAX'),
      defaultLogMemoryMax,
      2 ** 40,
    ),
    watch: onOff('--watch', str('watch') ?? env('RASPUTIN_WATCH'), true),
    balanceLeaders: onOff(
      '--balance-leaders',
      str('balance-leaders') ?? env('RASPUTIN_BALANCE_LEADERS'),
      false,
    ),
    splitBytes: positiveInt(
      '--split-bytes',
      str('split-bytes') ?? env('RASPUTIN_SPLIT_BYTES'),
      defaultSplitBytes,
      2 ** 40,
    ),
    eventsRetainRevisions: positiveInt(
      '--events-retain',
      str('events-retain') ?? env('RASPUTIN_EVENTS_RETAIN'),
      defaultEventsRetainRevisions,
      2 ** 40,
    ),
    eventsRetainS: positiveInt(
      '--events-retain-s',
      str('events-retain-s') ?? env('RASPUTIN_EVENTS_RETAIN_S'),
      defaultEventsRetainS,
      365 * 86_400,
    ),
    dedupWindowS: positiveInt(
      '--dedup-window-s',
      str('dedup-window-s') ?? env('RASPUTIN_DEDUP_WINDOW_S'),
      defaultDedupWindowS,
      365 * 86_400,
    ),
    eventsPollsMax: positiveInt(
      '--events-polls-max',
      str('events-polls-max') ?? env('RASPUTIN_EVENTS_POLLS_MAX'),
      defaultEventsPollsMax,
      1_000_000,
    ),
    followerApplyMs: nonNegativeInt(
      '--follower-apply-ms',
      str('follower-apply-ms') ?? env('RASPUTIN_FOLLOWER_APPLY_MS'),
      defaultFollowerApplyMs,
      60_000,
    ),
    leaderApplyMs: nonNegativeInt(
      '--leader-apply-ms',
      str('leader-apply-ms') ?? env('RASPUTIN_LEADER_APPLY_MS'),
      defaultLeaderApplyMs,
      60_000,
    ),
  };
}
