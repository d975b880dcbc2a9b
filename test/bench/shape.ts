// The workload shape shared with the peers' load generator (/work/shared/peers/loadgen.mjs),
// so Rasputin's numbers can be put side by side with NATS JetStream KV and etcd:
//
//   keys "k_<idx>" (6-digit, pre-filled, used by get and cas) and "p_<idx>" (used by put),
//   idx uniform over the keyspace; values of valueBytes bytes; a closed loop of N workers
//   with one request in flight each; cas workers own disjoint keys (idx % N === worker).

export type Op = 'put' | 'get' | 'cas';
export const ops: readonly Op[] = ['put', 'get', 'cas'];

/** What the parent tells a load child (JSON in the BENCH_LOAD environment variable). */
export interface LoadConfig {
  /** rasputin: our Client against the cluster; echo: bare NATS request/reply. */
  mode: 'rasputin' | 'echo';
  /** fill writes every k_ key once; the others run the timed closed loop. */
  op: Op | 'fill' | 'echo';
  /** fill: whose keys it writes, keyName(fillPrefix, i) for every i; default 'k'. */
  fillPrefix?: 'k' | 'p';
  servers: string;
  inflight: number;
  warmupS: number;
  durationS: number;
  maxOps: number;
  keyspace: number;
  valueBytes: number;
  /** Requests in flight while filling or learning cas state (not the measured load). */
  setupInflight: number;
  /** Subject of the echo responder. */
  echoSubject: string;
  /** Distinguishes the values of this run from earlier ones. */
  nonce: number;
  /**
   * The cluster was pre-split into this many ranges at splitPoints(keyspace, ranges): before
   * its window the load process sends one get per range, so its client's range cache holds
   * every range and routes each op straight to its leader (absent: no warm-up).
   */
  warmRanges?: number;
  /**
   * Slices: this many windows (warmupS + durationS each), each started by a `go` from the
   * parent and reported as a `slice`; the result sums them (absent: one window at once).
   */
  slices?: number;
}

/** Client-side figures of one run, sent back to the parent. */
export interface LoadResult {
  ops: number;
  errors: number;
  casFail: number;
  elapsedS: number;
  /** Latencies in ms, sorted ascending, of the ops completed in the window. */
  p50: number;
  p90: number;
  p99: number;
  max: number;
  clientCpuS: number;
  /** Client.stats deltas over the window (rasputin mode). */
  clientRequests: number;
  clientRetries: number;
  firstErr: string | undefined;
  /** Setup time (fill, cas state) in seconds. */
  setupS: number;
  /** Ranges in the client's cache at the window's end (rasputin mode). */
  cachedRanges?: number;
  /** Of those, the ranges holding keys this workload uses. */
  rangesUsed?: number;
  /** Seconds the range-cache warm-up took (warmRanges). */
  warmS?: number;
  /** Ops acknowledged over the whole run (warm-up and the window's tail included). */
  okTotal?: number;
  /** Ops acknowledged in each whole second from the warm-up's start (no last part-second). */
  perSecond?: number[];
}

/** Messages from a load child. */
export type LoadMessage =
  | { type: 'ready' }
  | { type: 'window'; phase: 'start' | 'end' }
  | { type: 'slice'; index: number; result: LoadResult }
  | { type: 'result'; result: LoadResult }
  | { type: 'error'; message: string };

export const keyName = (prefix: 'k' | 'p', i: number): string =>
  `${prefix}_${String(i).padStart(6, '0')}`;

/** Largest keyspace whose key names sort as their indexes (6 digits). */
export const keyspaceSortedMax = 1_000_000;

/**
 * The N-quantiles of every key name the workloads use (k_ and p_ names, in key order):
 * N - 1 split keys that cut the keys into N ranges of equal counts, so keys drawn
 * uniformly at random spread evenly. Nested: the points for N include those for any
 * divisor of N. The first range (it holds the system keys) ends at the first point.
 */
export function splitPoints(keyspace: number, n: number): string[] {
  if (!Number.isInteger(keyspace) || keyspace < 1 || keyspace > keyspaceSortedMax) {
    throw new Error(`split points need a keyspace in [1, ${keyspaceSortedMax}], got ${keyspace}`);
  }
  const total = 2 * keyspace;
  if (!Number.isInteger(n) || n < 1 || n > total) {
    throw new Error(`split points: ranges must be an integer in [1, ${total}], got ${n}`);
  }
  const points: string[] = [];
  for (let i = 1; i < n; i++) {
    // Exact: i * total < 2^53, and a quotient that is not whole is 1/n or more from one.
    const at = Math.floor((i * total) / n);
    points.push(at < keyspace ? keyName('k', at) : keyName('p', at - keyspace));
  }
  return points;
}

/** The first and last key names of a workload's prefix. */
export const prefixSpan = (prefix: 'k' | 'p', keyspace: number): [string, string] => [
  keyName(prefix, 0),
  keyName(prefix, keyspace - 1),
];

export const randInt = (n: number): number => Math.floor(Math.random() * n);

/** valueBytes (at least 12) of 'a' with the worker id, a counter and the run's nonce up front. */
export function makeValue(valueBytes: number, wid: number, n: number, nonce: number): Buffer {
  const b = Buffer.alloc(Math.max(valueBytes, 12), 0x61);
  b.writeUInt32BE(wid >>> 0, 0);
  b.writeUInt32BE(n >>> 0, 4);
  b.writeUInt32BE(nonce >>> 0, 8);
  return b;
}

/** The p-quantile of ascending `sorted` (same definition as loadgen.mjs). */
export function pct(sorted: Float64Array, p: number): number {
  if (sorted.length === 0) return Number.NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))]!;
}

// -------------------------------------------------------------------- streams section

/** What the parent tells a subscriber process (JSON in BENCH_STREAMS), test/bench/streams.ts. */
export interface StreamsConfig {
  servers: string;
  /** The prefix subscribed to: the put load's keys. */
  prefix: string;
  /** This process's index among the row's subscriber processes (it names its probe keys). */
  proc: number;
  /** client.subscribe(prefix) subscriptions, from now, on one Client (one NATS connection). */
  subscribers: number;
  /** client.watch('') watchers (every key), on another Client. */
  watchers: number;
  /** A probe write (under the prefix, by a third Client) every this many ms in the window. */
  probeEveryMs: number;
  /** Probe writes at most. */
  probesMax: number;
  /** Lag samples kept at most (subscriptions and watchers each). */
  lagSamplesMax: number;
  /** The process ends itself after this many ms, whatever happens. */
  hardLimitMs: number;
}

/** The parent to a subscriber process. */
export type StreamsCommand =
  | { type: 'window'; phase: 'start' | 'end' }
  /** The load is over and acknowledged `expect` writes: wait (maxMs at most) for them all. */
  | { type: 'drain'; expect: number; maxMs: number };

/** What a subscriber process measured. */
export interface StreamsResult {
  subscribers: number;
  watchers: number;
  /** Seconds between the window messages, by this process's clock. */
  windowS: number;
  /** Events of the load's keys received in the window, summed over subscriptions / watchers. */
  subWindowEvents: number;
  watchWindowEvents: number;
  /** Events of the load's keys received in all, per subscription / watcher (drain included). */
  subTotals: number[];
  watchTotals: number[];
  /** From the window's end until every subscription had `expect` events; null: not in maxMs. */
  drainMs: number | null;
  /** Probe writes acknowledged (only those are in the lag samples). */
  probes: number;
  /**
   * Per probe and subscription (watcher): the event's arrival minus the write's ack, both in
   * this process, in ms (negative when the event came first).
   */
  subLagMs: number[];
  watchLagMs: number[];
  /** Subscriptions that ended with an error (they do not end otherwise). */
  subErrors: number;
  firstErr?: string;
}

/** Messages from a subscriber process. */
export type StreamsMessage =
  | { type: 'ready' }
  | { type: 'result'; result: StreamsResult }
  | { type: 'error'; message: string };
