// `npm run bench`: Rasputin end to end on this machine, with the workload shape of the
// peers' load generator (/work/shared/peers/loadgen.mjs), so the numbers can be put side by
// side with NATS JetStream KV R3 and etcd x3 taken in the same run.
//
//   npm run bench -- [--duration S] [--warmup S] [--json] [--peers] [--only LIST]
//                    [--inflight 1,64] [--workloads put,get,cas] [--keyspace N] [--maxops N]
//                    [--peer-inflight 64] [--peers-dir /tmp/peers]
//                    [--batches N] [--batch-size N]        (for the consensus section)
//                    [--history-s 20]   (events and request ids each node keeps, seconds)
//                    [--ranges 1,16,256,4096] [--idle-s S] [--idle-ranges N] [--idle-settle-s S]
//                    [--split-time S] [--split-inflight N] [--splits-during N] [--ranges-repeat 1]
//                    [--ranges-slices 0] [--slice-s 4] [--slice-warmup-s 1] [--slice-gap-s 2]
//                    [--node-cpu-prof DIR]   (V8 CPU profile of each node, written on stop)
//                    [--balance-leaders on|off] [--balance-wait-s 300] [--ranges-pin on|off]
//                    [--ranges-aa on|off]
//                    (BENCH_NODE_V8_FLAGS="..." in the environment: more V8 flags for every
//                    node, e.g. "--log-ic --logfile=/tmp/ic/%p.log", V8's log of inline-cache
//                    states, which found descriptors read through megamorphic loads)
//                    [--stream-subs 100] [--stream-watchers 100] [--stream-procs 2]
//                    [--stream-drain-s 10] [--stream-probe-ms 50] [--stream-pin on|off]
//                    [--stream-rows off,on,1sub,subs,watch,again] [--stream-repeat 1]
//                                                          (for the streams section)
//
// History (--history-s, default 20): every Rasputin node of the bench keeps the events and
// request ids of at most the last 20 s (--events-retain-s, --dedup-window-s), besides the
// count windows (100,000 positions per range). One range at ~5,000 puts/s reaches the count
// windows in about 20 s; 128 busy ranges at 256 would reach theirs only after 12.8 million
// puts, so with the count windows alone the 256-range store grew through every row (separate
// request records 10,000 to 105,000 and events 0.5 to 0.9 million over five put rows, disk
// writes per put 20.8 to 28.5 KiB, puts/s down a fifth) while one range's stayed flat: both
// then keep the same seconds of history, and the 30 s warm-up brings both to their steady
// state. --history-s 0 runs the nodes' defaults (an hour of events, two minutes of ids).
//
// `npm run bench` builds first (npm run build): the nodes and the load processes' client run
// the build in dist/, as `rasputin` does (procs.ts builtModule; a missing or stale build is
// an error); the harness itself and the in-process consensus section run through tsx.
//
// Sections (--only picks some, comma-separated; default all but peers, which --peers adds):
//   ceiling    bare NATS request/reply through the same nats-server and closed loop: a
//              responder process that answers at once (the harness's ceiling)
//   floor      the durable floor: the same closed loop against three processes that do
//              only what any store with its log and data in LMDB, fsynced before each
//              answer, must do (floor-replica.ts: per turn one transaction of log appends
//              and data writes on the leader and on both followers, answered when the
//              leader's and one follower's are on disk); no consensus, no apply, no reads.
//              Rows durable-floor (log and data) and log-floor (the log alone). What the
//              machine's disk allows; the put targets are read against it
//   rasputin   nats-server (with monitoring) and a 3-node cluster in temp dirs; fill (every
//              k_ key, then every p_ key) and 30 s of puts, so the rows run in the store's
//              steady state (request records expiring, events compacted), then put, get,
//              cas at each --inflight, each from a separate load process
//   consensus  the in-process benchmarks (test/bench/consensus.ts): consensus core, the raft
//              envelope codec, the storage codec (binary against msgpack), a put's cost in
//              the core and in the store's turns at 1 range against 45 and 256 ranges, and a
//              store restart with a full journal
//   streams    subscribe and watch (docs/streams.md) under a put load at 64 in flight, on fresh
//              3-node clusters (see below); in the default run: about 160 s at the default
//              --duration 8 on 2 cores (6 loads, 2 cluster starts, 3 sets of subscribers)
//   peers      NATS KV R3 and etcd x3 via the peers folder; ratios and targets
//
// Per workload: ops/s, p50/p99/max latency, client and server CPU per op (server: the nodes
// and nats-server, from /proc/<pid>/stat), KiB that reached the data's disk per op
// (/sys/dev/block, whole machine), NATS messages per op (nats-server /varz), and
// the nodes' counters per op (`<p>.admin.status` stats: xstate events, fsyncs = store
// flushes, store commits, raft batches, node requests); under each row, the ops
// acknowledged in each second from the warm-up's start (a row that still ramps up past
// --warmup, or that drops partway, shows there). `--json` prints one line per workload
// instead of tables. Every process started here is stopped by PID, also on error.
//
// Many ranges (--ranges LIST; the rasputin section then runs this instead, with --inflight
// 64 and --workloads put,get unless given). Split keys are the N-quantiles of the key names
// the load uses (shape.ts splitPoints: k_ and p_ names in key order), so uniform random
// keys spread evenly; puts use the p_ half of the ranges, gets the k_ half. For each N:
//   1. a cluster with N ranges: the one of the previous N, split further when its split
//      keys are a subset of N's (nested quantiles: 1,16,256,4096), else a fresh one
//      (filled first); the pre-split (splits.ts splitAll) is timed: wall time, ms per
//      split, each split's latency; with --balance-leaders on (the nodes' flag; off by
//      default, as in the nodes) the bench then waits for the placement driver to spread
//      the leaders (no node leading two more than another, --balance-wait-s at most), and
//      the row says how long that took and where the leaders are;
//   2. each workload at each --inflight, from a load process that first learns every
//      range (one get per range) so its client routes straight to range leaders; the row
//      says how many ranges its cache held (cache) and how many hold its keys (used);
//   3. idle: --idle-settle-s of quiet (default 3; V8 gives back the heap a split storm
//      grew 20 to 60 s or more after it, unpredictably: a longer wait shows more of that),
//      then --idle-s of no load:
//      each node's CPU (% of one core, /proc/<pid>/stat), RSS (VmRSS and RssAnon,
//      /proc/<pid>/status: the median of samples every 200 ms of the window, since it
//      swings between garbage collections), and the nodes' counters per second.
// Then, on the last cluster: a put load (put-nosplits), and the same load with
// --splits-during splits of ranges with data spread over its window (put+splits: time per
// split, the first one the time to split a range with data under load; p99 against
// put-nosplits),
// and, on a fresh empty cluster, idle CPU and memory at 1 range, after splitting to a tenth
// of --idle-ranges, and after splitting to --idle-ranges (default 10,000; as many as
// --split-time allows): KiB per extra range against 1 range, and the marginal KiB per range
// between the tenth and the full count (fixed costs that grow with any load left out).
// Targets: ops/s at 256 ranges within 10% of 1 range's, idle CPU under 5% of a core, memory
// under 16 KiB per range.
// --ranges-repeat N (default 1; with 1 and 256, or the most, in --ranges) measures the
// throughput pair N-1 more times, alternated, on two fresh clusters that run side by side
// (one at 1 range, one pre-split; each on a nats-server of its own; the one not loaded
// idles): the target reads the median of the N ratios, since a single pair moved by 10-20%
// from run to run on this machine. A/A pairs (--ranges-aa) put one pair's spread at about
// 10% with no difference between the sides: five pairs read the ratio to about 5%, fifteen
// to about 2.5% (the spread line under the target says how sure each run is). The side
// that runs second in a pair reads about 4% lower; alternating puts that on both sides.
// --ranges-slices N (default 0) then runs each workload on those two clusters once more, in
// N alternating slices each (--slice-warmup-s unmeasured, then --slice-s measured; the
// cluster loaded first alternates from one slice pair to the next; --slice-gap-s after
// each slice, so that its cluster's tail is over when the other starts), from one load
// process per cluster that idles between its slices. Rows `<op>~` sum each side's slices,
// and their ratio is printed beside the target's, which still reads the pairs: meant to
// put a drift of the machine over seconds on both sides alike (one cluster measured
// 30,000 to 53,000 gets/s in windows a minute apart), the slices read lower for 256
// ranges than the pairs of the same run did, in all three runs so far (puts 0.78x against
// 0.86, 0.84; 0.68x against 0.84, 0.91, 0.84; 0.76x against 0.79, 0.83 with 4 s of
// warm-up per slice): each slice resumes a cluster that idled.
// --ranges-pin on (default off; 2 CPUs or more) runs every throughput load of the section
// as the streams section's: the servers (the loaded cluster's nats-server and nodes) on the
// first half of the CPUs, the load process and this one on the rest, every CPU again after
// the load (splits and idle rows run unpinned). Shared, one range's gets moved from 55,000
// to 81,000/s between the pairs of one run; pinned on this 2-core machine, four server
// processes share one core, and the put,get repeat-5 on 3d82e91 read puts 0.83x and gets
// 0.76x (medians; the pairs 0.50-1.08x and 0.72-1.02x): no steadier, and further from
// three nodes on machines of their own than sharing two cores is. So the default shares.
// --ranges-aa on (default off; with --ranges-repeat) calibrates the repeated pairs: their
// second cluster is prepared like the pre-split one, on its own nats-server, but is not
// split, and its load does not warm a range cache, so both sides of each pair are one
// range. What such an A/A pair reads (1.00x if the measure had no noise and no bias) is
// printed beside the target, and the target reads the plan's pair alone, which stays
// 1 range against the many.
//
// Streams (--only streams): a put load (p_ keys, 64 in flight, a load process as above) on
// one cluster (filled first with every k_ and every p_ key, then 30 s of puts: the rows run
// in the store's steady state, expiring request records and compacting events, overwriting
// keys that exist), its nodes restarted with --watch off or on between rows as needed, and
// 30 s of puts after each restart. The rows, in order:
//   put-watchoff          --watch off, no subscribers;
//   put-watchon           --watch on, no watchers, no subscribers (the cost of publishing);
//   put+1sub              one client.subscribe('p_') subscription, from now;
//   put+100subs           --stream-subs subscriptions (in --stream-procs processes, one Client
//                         each, test/bench/streams.ts);
//   put+100subs+100watch  the same and --stream-watchers client.watch('') watchers (on another
//                         Client of the same processes);
//   put-watchon-again     put-watchon once more, after them (drift: store growth, machine noise);
//   put-watchoff-again    put-watchoff once more.
// The ratios are against the mean of the two put-watchoff rows. (Two clusters, one per
// --watch setting, differed by 5-10%, and the one filled second was faster in 7 of 8 runs:
// a bias the size of the target. Rows with subscribers are also shown against the
// put-watchon rows.)
// (--stream-rows picks some of off,on,1sub,subs,watch,again,offagain.) Each row has the columns above
// plus: events of the load's keys received in the window (over all subscriptions and per
// subscription, and that over the writes/s: 1 = keeping up), the subscriber processes' CPU
// per write (counted in neither client nor server CPU; bg% leaves it out), the lag (one
// process writes a probe key under p_ every --stream-probe-ms in the window and notes the
// ack; each of its subscriptions/watchers notes the event's arrival; p50/p99 of arrival
// minus ack; the probe writer runs in every row, the baselines too, so that its writes,
// each a commit of its own, weigh on every row alike), and the drain: after the load, each
// subscription must get every acknowledged write (checked: no loss), waited for
// --stream-drain-s at most. Target: ops/s with 100
// subscribers and watch publishing within 10% of the put-watchoff rows' mean.
// --stream-repeat N (default 1) runs the heaviest row and put-watchoff N-1 more times,
// alternated (each a restart apart), after the plan above: every heaviest row is taken
// against the mean of all the put-watchoff rows, and the target reads the median of them
// (a single row pair moved by 5-15% from run to run on this machine).
// With --stream-pin on (the default, on 2 CPUs or more), the section runs the servers
// (nats-server and the nodes) on the first half of the CPUs and the clients (the bench
// itself, the load and the subscriber processes) on the rest, with taskset: the target is
// what serving subscribers costs the servers, and on a shared 2-core machine the 100
// subscriptions' own CPU (60-90 us per write) would come out of the servers' share, as it
// would not with clients on other machines. --stream-pin off shares every CPU.

import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { availableParallelism, tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { connect, createInbox, type NatsConnection } from '@nats-io/transport-node';
import { Client } from '../../src/client/index.ts';
import { decode, encode, protocolVersion } from '../../src/protocol/wire.ts';
import { defaultPrefix, subjects } from '../../src/transport/subjects.ts';
import { type PeerRow, peersSetupHelp, peersSetupProblem, runPeers } from './peers.ts';
import {
  cpuSeconds,
  cpuSplit,
  diskWrittenBytes,
  forkTs,
  type MemoryKiB,
  type MonitoredNats,
  memoryKiB,
  type Pinning,
  type Proc,
  pinPid,
  repoRoot,
  runToEnd,
  setClientCpus,
  sleep,
  splitCpus,
  startNats,
  startNode,
  type Varz,
  varz,
  within,
} from './procs.ts';
import {
  keyName,
  keyspaceSortedMax,
  type LoadConfig,
  type LoadMessage,
  type LoadResult,
  type Op,
  ops,
  pct,
  type StreamsCommand,
  type StreamsConfig,
  type StreamsMessage,
  type StreamsResult,
  splitPoints,
} from './shape.ts';
import { type SplitOutcome, splitAll, splitSeries } from './splits.ts';

// -------------------------------------------------------------------- options

const { values: a } = parseArgs({
  options: {
    duration: { type: 'string', default: '8' },
    warmup: { type: 'string', default: '1' },
    json: { type: 'boolean', default: false },
    peers: { type: 'boolean', default: false },
    only: { type: 'string' },
    inflight: { type: 'string' },
    workloads: { type: 'string' },
    keyspace: { type: 'string', default: '100000' },
    maxops: { type: 'string', default: '2000000' },
    'peer-inflight': { type: 'string', default: '64' },
    'peers-dir': { type: 'string', default: '/tmp/peers' },
    batches: { type: 'string' },
    'batch-size': { type: 'string' },
    ranges: { type: 'string' },
    'idle-s': { type: 'string', default: '10' },
    'history-s': { type: 'string', default: '20' },
    'idle-ranges': { type: 'string', default: '10000' },
    'idle-settle-s': { type: 'string', default: '3' },
    'split-time': { type: 'string', default: '120' },
    'split-inflight': { type: 'string', default: '16' },
    'splits-during': { type: 'string', default: '20' },
    'ranges-repeat': { type: 'string', default: '1' },
    'ranges-slices': { type: 'string', default: '0' },
    'slice-s': { type: 'string', default: '4' },
    'slice-warmup-s': { type: 'string', default: '1' },
    'slice-gap-s': { type: 'string', default: '2' },
    'node-cpu-prof': { type: 'string' },
    'balance-leaders': { type: 'string', default: 'off' },
    'balance-wait-s': { type: 'string', default: '300' },
    'ranges-pin': { type: 'string', default: 'off' },
    'ranges-aa': { type: 'string', default: 'off' },
    'stream-subs': { type: 'string', default: '100' },
    'stream-watchers': { type: 'string', default: '100' },
    'stream-procs': { type: 'string', default: '2' },
    'stream-pin': { type: 'string', default: 'on' },
    'stream-drain-s': { type: 'string', default: '10' },
    'stream-probe-ms': { type: 'string', default: '50' },
    'stream-rows': { type: 'string', default: 'off,on,1sub,subs,watch,again,offagain' },
    'stream-repeat': { type: 'string', default: '1' },
  },
  strict: true,
});

function bounded(name: string, raw: string, min: number, max: number): number {
  const n = Number(raw);
  if (!Number.isFinite(n) || n < min || n > max) {
    throw new Error(`--${name} must be a number in [${min}, ${max}], got ${JSON.stringify(raw)}`);
  }
  return n;
}
/** An on|off flag's value: true for on. */
function onOff(name: string, raw: string): boolean {
  if (raw !== 'on' && raw !== 'off') {
    throw new Error(`--${name} must be on or off, got ${JSON.stringify(raw)}`);
  }
  return raw === 'on';
}
const list = (raw: string) =>
  raw
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);

const durationS = bounded('duration', a.duration, 0.5, 600);
const warmupS = bounded('warmup', a.warmup, 0, 60);
const keyspace = Math.round(bounded('keyspace', a.keyspace, 100, 10_000_000));
const maxOps = Math.round(bounded('maxops', a.maxops, 1, 100_000_000));
/** --ranges: the range counts to measure, ascending (absent: the one-range run). */
const rangesList =
  a.ranges === undefined
    ? undefined
    : [...new Set(list(a.ranges).map((x) => Math.round(bounded('ranges', x, 1, 100_000))))].sort(
        (x, y) => x - y,
      );
const inflights = list(a.inflight ?? (rangesList ? '64' : '1,64')).map((x) =>
  Math.round(bounded('inflight', x, 1, 4096)),
);
const peerInflights = list(a['peer-inflight']).map((x) =>
  Math.round(bounded('peer-inflight', x, 1, 4096)),
);
const workloads = list(a.workloads ?? (rangesList ? 'put,get' : 'put,get,cas')).map((w) => {
  if (!(ops as readonly string[]).includes(w)) throw new Error(`unknown workload ${w}`);
  return w as Op;
});
const sectionNames = ['ceiling', 'floor', 'rasputin', 'consensus', 'streams', 'peers'] as const;
type Section = (typeof sectionNames)[number];
const sections = new Set<Section>(
  a.only === undefined
    ? ([
        'ceiling',
        'floor',
        'rasputin',
        'consensus',
        'streams',
        ...(a.peers ? ['peers'] : []),
      ] as Section[])
    : list(a.only).map((s) => {
        if (!(sectionNames as readonly string[]).includes(s)) {
          throw new Error(`--only: unknown section ${s} (${sectionNames.join(', ')})`);
        }
        return s as Section;
      }),
);
if (a.peers && a.only !== undefined) sections.add('peers');
const idleS = bounded('idle-s', a['idle-s'], 1, 600);
const historyS = Math.round(bounded('history-s', a['history-s'], 0, 86_400));
/**
 * Every node of the rasputin sections keeps --history-s seconds of events and request ids
 * at most (0: the nodes' defaults, an hour and two minutes), with the count windows at
 * their defaults (100,000 positions each): see the header.
 */
const historyArgs =
  historyS > 0 ? ['--events-retain-s', String(historyS), '--dedup-window-s', String(historyS)] : [];
const idleRanges = Math.round(bounded('idle-ranges', a['idle-ranges'], 0, 100_000));
/**
 * Whether the load clusters of the ranges section balance their leaders; off (the nodes'
 * default): the node that led range 1 leads every range the pre-split makes.
 */
const balanceLeaders = onOff('balance-leaders', a['balance-leaders']);
const balanceWaitS = bounded('balance-wait-s', a['balance-wait-s'], 1, 3600);
/** Node flags of the ranges section's load clusters. */
const rangesNodeArgs: readonly string[] = balanceLeaders ? ['--balance-leaders', 'on'] : [];
const splitTimeS = bounded('split-time', a['split-time'], 1, 3600);
const splitInflight = Math.round(bounded('split-inflight', a['split-inflight'], 1, 1024));
const splitsDuring = Math.round(bounded('splits-during', a['splits-during'], 0, 10_000));
const streamSubs = Math.round(bounded('stream-subs', a['stream-subs'], 1, 1000));
const streamWatchers = Math.round(bounded('stream-watchers', a['stream-watchers'], 0, 1000));
const streamProcs = Math.round(bounded('stream-procs', a['stream-procs'], 1, 16));
const streamDrainS = bounded('stream-drain-s', a['stream-drain-s'], 0, 600);
const cpuCount = availableParallelism();
/** Servers and clients on CPUs of their own in the streams section (Pinning, procs.ts). */
const streamPin = onOff('stream-pin', a['stream-pin']) ? splitCpus(cpuCount) : undefined;
/** The same for the ranges section's throughput loads (rangesLoad, interleavedPair). */
const rangesPin = onOff('ranges-pin', a['ranges-pin']) ? splitCpus(cpuCount) : undefined;
/** --ranges-aa: the repeated pairs' second cluster stays at one range (rangesPairs). */
const rangesAa = onOff('ranges-aa', a['ranges-aa']);
const streamRowNames = ['off', 'on', '1sub', 'subs', 'watch', 'again', 'offagain'] as const;
type StreamRow = (typeof streamRowNames)[number];
const streamRowsWanted = new Set<StreamRow>(
  list(a['stream-rows']).map((x) => {
    if (!(streamRowNames as readonly string[]).includes(x)) {
      throw new Error(`--stream-rows: unknown row ${x} (${streamRowNames.join(', ')})`);
    }
    return x as StreamRow;
  }),
);
const streamProbeMs = Math.round(bounded('stream-probe-ms', a['stream-probe-ms'], 0, 10_000));
const streamRepeat = Math.round(bounded('stream-repeat', a['stream-repeat'], 1, 20));
const rangesRepeat = Math.round(bounded('ranges-repeat', a['ranges-repeat'], 1, 20));
const rangesSlices = Math.round(bounded('ranges-slices', a['ranges-slices'], 0, 100));
if (rangesAa && (rangesRepeat < 2 || rangesSlices > 0)) {
  throw new Error('--ranges-aa on needs --ranges-repeat 2 or more, and no --ranges-slices');
}
const sliceS = bounded('slice-s', a['slice-s'], 0.5, 60);
const sliceWarmupS = bounded('slice-warmup-s', a['slice-warmup-s'], 0, 10);
const sliceGapS = bounded('slice-gap-s', a['slice-gap-s'], 0, 30);
if (rangesList && keyspace > keyspaceSortedMax) {
  throw new Error(`--ranges needs --keyspace at most ${keyspaceSortedMax} (sortable key names)`);
}
if (rangesList && Math.max(idleRanges, ...rangesList) > 2 * keyspace) {
  throw new Error(`--ranges, --idle-ranges: at most 2 x --keyspace (${2 * keyspace}) ranges`);
}
const json = a.json;
const nodeIds = ['a', 'b', 'c'];
/** --node-cpu-prof DIR: each node writes a V8 CPU profile there when it stops. */
const nodeCpuProfDir = a['node-cpu-prof'];
/** Deadline of one split, retries included. */
const splitTimeoutMs = 20_000;
/**
 * Quiet time before an idle measurement (splits' trailing directory writes, elections;
 * --idle-settle-s: V8 gives back the heap a split storm grew 20 to 60 s or more after it).
 */
const idleSettleMs = bounded('idle-settle-s', a['idle-settle-s'], 0, 600) * 1000;
/** How long a pre-split waits for the meta directory to list every range it made. */
const directoryCatchUpMs = 5000;
const valueBytes = 100;
const setupInflight = 256;
const echoSubject = 'bench.echo';

const log = (line: string) => console.error(line);
const out = (line: string) => console.log(line);

// -------------------------------------------------------------------- rows

/** One measured workload, in the shape of the --json lines. */
interface Row {
  workload: string;
  inflight: number;
  ranges?: number;
  /** A one-range cluster in the many-range side's place in a repeated pair (--ranges-aa). */
  aa?: boolean;
  ops_per_s: number;
  p50_ms: number;
  p99_ms: number;
  max_ms: number;
  system: string;
  ops: number;
  p90_ms: number;
  elapsed_s: number;
  errors: number;
  cas_fail: number;
  client_cpu_us_per_op: number | null;
  server_cpu_us_per_op: number | null;
  server_cpu_nodes_us_per_op?: number | null;
  /** server_cpu_nodes_us_per_op node by node ("a/b/c"), to tell a leader from followers. */
  server_cpu_each_node_us_per_op?: string;
  /** Ops acknowledged second by second from the start of the warm-up (load.ts). */
  per_second?: number[];
  /** Bytes through nats-server per op, in and out (its /varz). */
  nats_in_bytes_per_op?: number | null;
  nats_out_bytes_per_op?: number | null;
  server_cpu_nats_us_per_op?: number | null;
  /** Kernel part of server_cpu_nodes_us_per_op (syscalls, fsync). */
  server_cpu_nodes_sys_us_per_op?: number | null;
  /** KiB that reached the data's disk per op (whole machine, /sys/dev/block stat). */
  disk_write_kib_per_op?: number | null;
  /** CPU of the machine used by no process of this run (other work, this parent). */
  other_cpu_pct?: number | null;
  nats_in_msgs_per_op?: number | null;
  nats_out_msgs_per_op?: number | null;
  xstate_events_per_op?: number | null;
  fsyncs_per_op?: number | null;
  store_commits_per_op?: number | null;
  raft_batches_out_per_op?: number | null;
  raft_msgs_in_per_op?: number | null;
  node_requests_per_op?: number | null;
  turns_per_op?: number | null;
  turn_us_per_op?: number | null;
  txn_wait_ms?: number | null;
  txn_body_ms?: number | null;
  txn_sync_ms?: number | null;
  /**
   * The store's counters (StoreStats, summed over the nodes) per op, those that moved; and
   * at the window's end its trees' records and pages (summed) and depth (the deepest).
   */
  store_per_op?: Record<string, number>;
  trees_at_end?: Record<string, { entries: number; pages: number; depth: number }>;
  dropped?: number | null;
  client_requests_per_op?: number | null;
  client_retries?: number;
  setup_s?: number;
  /** Ranges in the load client's cache at the end, and those holding the load's keys. */
  cached_ranges?: number;
  ranges_used?: number;
  /** Seconds the load client took to learn every range (one get per range). */
  warm_s?: number;
  /** put+splits: the splits made during the window, and their durations. */
  splits_made?: number;
  splits_failed?: number;
  split_first_ms?: number | null;
  split_p50_ms?: number | null;
  split_max_ms?: number | null;
  /** put+splits: the put-nosplits row run just before (same load, no splits). */
  baseline_ops_per_s?: number | null;
  baseline_p99_ms?: number | null;
  /** streams: subscriptions, watchers, and the processes they ran in. */
  subscribers?: number;
  watchers?: number;
  sub_procs?: number;
  /** streams: CPU of the subscriber processes per write (not in client or server CPU). */
  sub_cpu_us_per_op?: number | null;
  /** streams: events of the load's keys received in the window, over all subscriptions. */
  events_per_s?: number | null;
  events_per_sub_per_s?: number | null;
  /** events_per_sub_per_s / ops_per_s: 1 when each subscription keeps up with the writes. */
  events_kept_up?: number | null;
  /** Per watcher: events per s in the window, and that over ops_per_s. */
  watch_events_per_watcher_per_s?: number | null;
  watch_kept_up?: number | null;
  /** Probe writes: the event's arrival minus the write's ack (same process), ms. */
  lag_p50_ms?: number | null;
  lag_p99_ms?: number | null;
  lag_max_ms?: number | null;
  lag_samples?: number;
  watch_lag_p50_ms?: number | null;
  watch_lag_p99_ms?: number | null;
  watch_lag_samples?: number;
  /** Writes the load had acknowledged in all; the least and most events a subscription got. */
  expected_events?: number;
  sub_events_min?: number;
  sub_events_max?: number;
  watch_events_min?: number;
  watch_events_max?: number;
  /** From the window's end until every subscription had every write; null: not in the bound. */
  drain_ms?: number | null;
  sub_errors?: number;
  /** streams: against the put-watchoff row (nodes --watch off, no subscribers). */
  ops_ratio?: number | null;
  /** Streams: ops/s and server CPU per write against the put-watchon rows' mean. */
  ops_ratio_watchon?: number | null;
  server_cpu_ratio_watchon?: number | null;
  p99_ratio?: number | null;
  server_cpu_ratio?: number | null;
  first_err?: string;
  note?: string;
}

const rows: Row[] = [];
const problems: string[] = [];

const fixed = (x: number | null | undefined, digits: number): number | null =>
  x === null || x === undefined || !Number.isFinite(x) ? null : Number(x.toFixed(digits));

/** Table columns: title, width, digits, value. */
const columns: [string, number, number, (r: Row) => number | null | undefined][] = [
  ['ops/s', 9, 0, (r) => r.ops_per_s],
  ['p50ms', 7, 2, (r) => r.p50_ms],
  ['p99ms', 7, 2, (r) => r.p99_ms],
  ['maxms', 7, 1, (r) => r.max_ms],
  ['cliUs', 7, 1, (r) => r.client_cpu_us_per_op],
  ['srvUs', 7, 1, (r) => r.server_cpu_us_per_op],
  ['nodes', 7, 1, (r) => r.server_cpu_nodes_us_per_op],
  ['(sys)', 7, 1, (r) => r.server_cpu_nodes_sys_us_per_op],
  ['nats', 6, 1, (r) => r.server_cpu_nats_us_per_op],
  ['wKiB', 6, 1, (r) => r.disk_write_kib_per_op],
  ['msgIn', 6, 2, (r) => r.nats_in_msgs_per_op],
  ['msgOut', 7, 2, (r) => r.nats_out_msgs_per_op],
  ['xstate', 7, 3, (r) => r.xstate_events_per_op],
  ['fsync', 6, 3, (r) => r.fsyncs_per_op],
  ['commit', 7, 3, (r) => r.store_commits_per_op],
  ['batch', 6, 3, (r) => r.raft_batches_out_per_op],
  ['req', 6, 3, (r) => r.client_requests_per_op],
  ['bg%', 5, 0, (r) => r.other_cpu_pct],
  ['casFail', 8, 0, (r) => r.cas_fail],
  ['err', 5, 0, (r) => r.errors],
];

function cell(x: number | null | undefined, digits: number, width: number): string {
  const v = fixed(x, digits);
  return (v === null ? '-' : v.toFixed(digits)).padStart(width);
}

const legend = [
  'cliUs/srvUs: client/server CPU us per op (server = nodes + nats-server [+ responder]),',
  "(sys): the kernel part of the nodes' CPU (syscalls, fsync); wKiB: KiB that reached the",
  "data's disk per op (whole machine, /sys/dev/block/<dev>/stat);",
  'msgIn/msgOut: nats-server messages per op; xstate, fsync (store flushes), commit (store',
  'commits), batch (raft batches out): summed over the nodes, per op; req: NATS requests',
  'the client sent per op; bg%: machine CPU used by no process of the bench (1 core = 100).',
  ...(rangesList
    ? [
        "rngs: ranges the cluster was split into; cache: ranges in the load client's cache at",
        "the end; used: of those, the ranges holding the workload's keys (puts p_, gets k_).",
      ]
    : []),
].join('\n');

/** With --ranges, each row also shows its range count and the load client's cache. */
const rangeColumns: typeof columns = [
  ['rngs', 6, 0, (r) => r.ranges],
  ['cache', 6, 0, (r) => r.cached_ranges],
  ['used', 5, 0, (r) => r.ranges_used],
];
const shownColumns = rangesList ? [...rangeColumns, ...columns] : columns;
/** The streams section's workload names are longer (put+100subs+100watch). */
const workloadWidth = sections.has('streams') ? 22 : 14;

function header(): string {
  const titles = shownColumns.map(([title, width]) => title.padStart(width)).join('');
  return `${'system'.padEnd(systemWidth)}${'workload'.padEnd(workloadWidth)}${'inflt'.padStart(5)}${titles}`;
}

let headerShown = false;

/** Wide enough for the longest system name (durable-floor) and a space. */
const systemWidth = 14;

function show(r: Row): void {
  if (json) {
    out(JSON.stringify(r));
    return;
  }
  if (!headerShown) {
    headerShown = true;
    out(`${legend}\n${header()}`);
  }
  out(
    r.system.padEnd(systemWidth) +
      r.workload.padEnd(workloadWidth) +
      String(r.inflight).padStart(5) +
      shownColumns.map(([, width, digits, f]) => cell(f(r), digits, width)).join(''),
  );
  if (r.first_err) out(`    first error: ${r.first_err}`);
  if (r.note) out(`    note: ${r.note}`);
  if (r.txn_body_ms != null) {
    const f = (x: number | null | undefined, digits: number) => x?.toFixed(digits) ?? '-';
    out(
      `    time over the nodes: turns ${f(r.turn_us_per_op, 1)} us/op; a turn's transaction ` +
        `${f(r.txn_wait_ms, 2)} ms queued, ${f(r.txn_body_ms, 2)} ms body, ` +
        `${f(r.txn_sync_ms, 2)} ms to disk (means)`,
    );
  }
  if (r.store_per_op !== undefined && Object.keys(r.store_per_op).length > 0) {
    const moved = Object.entries(r.store_per_op).map(([k, v]) => `${k} ${v}`);
    out(`    store per op (over the nodes): ${moved.join(', ')}`);
  }
  if (r.server_cpu_each_node_us_per_op) {
    const b = (x: number | null | undefined) => (x == null ? '-' : String(x));
    out(
      `    node by node: ${r.server_cpu_each_node_us_per_op} us of CPU per op; nats-server ` +
        `bytes per op ${b(r.nats_in_bytes_per_op)} in, ${b(r.nats_out_bytes_per_op)} out`,
    );
  }
  if (r.per_second !== undefined && r.per_second.length > 0) {
    out(`    second by second from the warm-up's start: ${r.per_second.join(' ')} ops`);
  }
  if (r.trees_at_end !== undefined) {
    const trees = Object.entries(r.trees_at_end)
      .filter(([, t]) => t.entries > 0)
      .map(([k, t]) => `${k} ${t.entries}/${t.pages}/${t.depth}`);
    out(`    trees at the end (records/pages/depth, over the nodes): ${trees.join(', ')}`);
  }
}

function addRow(r: Row): void {
  rows.push(r);
  show(r);
}

// -------------------------------------------------------------------- node counters

interface NodeCounters {
  turns: number;
  raftMessagesIn: number;
  raftBatchesOut: number;
  clientRequests: number;
  dropped: number;
  storeCommits: number;
  storeFlushes: number;
  xstateEvents: number;
  /** Time in turns and in the turns' store transactions, ms summed (node.ts status()). */
  turnMs: number;
  storeTurnCommits: number;
  storeTxnWaitMs: number;
  storeTxnBodyMs: number;
  storeTxnSyncMs: number;
}
const counterNames: (keyof NodeCounters)[] = [
  'turns',
  'raftMessagesIn',
  'raftBatchesOut',
  'clientRequests',
  'dropped',
  'storeCommits',
  'storeFlushes',
  'xstateEvents',
  'turnMs',
  'storeTurnCommits',
  'storeTxnWaitMs',
  'storeTxnBodyMs',
  'storeTxnSyncMs',
];

interface StatusReply {
  node?: string;
  /** Ranges hosted (the list may be cut short to fit one reply: led ranges first). */
  rangesTotal?: number;
  ranges?: { rangeId?: number; role?: string; leader?: string }[];
  stats?: Partial<Record<keyof NodeCounters, unknown>>;
  /** The store's counters (StoreStats) and trees (Store.trees). */
  storeStats?: Record<string, unknown>;
  trees?: Record<string, { entries?: unknown; pages?: unknown; depth?: unknown }>;
  /** The node's process.memoryUsage() (bytes), at the reply. */
  memory?: { heapUsed?: unknown };
}

/** Scatter-gather on `<p>.admin.status`: the replies of up to `expected` nodes (bounded). */
async function askStatus(
  nc: NatsConnection,
  expected: number,
  waitMs: number,
): Promise<StatusReply[]> {
  const inbox = createInbox();
  const replies: StatusReply[] = [];
  let done: (() => void) | undefined;
  const all = new Promise<void>((resolve) => (done = resolve));
  const sub = nc.subscribe(inbox, {
    callback: (err, msg) => {
      if (err) return;
      try {
        replies.push(decode(msg.data) as StatusReply);
      } catch {
        return;
      }
      if (replies.length >= expected) done?.();
    },
  });
  nc.publish(subjects.adminStatus(defaultPrefix), encode({ v: protocolVersion }), {
    reply: inbox,
  });
  await within(all, waitMs);
  sub.unsubscribe();
  return replies;
}

/**
 * The nodes' counters summed over the cluster; a counter is NaN when a node did not answer
 * in time or does not report it (older node code).
 */
async function clusterCounters(nc: NatsConnection): Promise<ClusterCounters> {
  const replies = await askStatus(nc, nodeIds.length, 2000);
  const sum = {} as ClusterCounters;
  for (const name of counterNames) {
    let total = replies.length === nodeIds.length ? 0 : Number.NaN;
    for (const r of replies) {
      const v = r.stats?.[name];
      total += typeof v === 'number' ? v : Number.NaN;
    }
    sum[name] = total;
  }
  if (replies.length === nodeIds.length) {
    sum.store = {};
    sum.trees = {};
    for (const r of replies) {
      for (const [k, v] of Object.entries(r.storeStats ?? {})) {
        if (typeof v === 'number') sum.store[k] = (sum.store[k] ?? 0) + v;
      }
      for (const [k, t] of Object.entries(r.trees ?? {})) {
        const num = (x: unknown) => (typeof x === 'number' ? x : 0);
        const was = sum.trees[k] ?? { entries: 0, pages: 0, depth: 0 };
        sum.trees[k] = {
          entries: was.entries + num(t.entries),
          pages: was.pages + num(t.pages),
          depth: Math.max(was.depth, num(t.depth)),
        };
      }
    }
  }
  return sum;
}

/** The nodes' counters summed, with their stores' counters and trees when all answered. */
type ClusterCounters = Record<keyof NodeCounters, number> & {
  store?: Record<string, number>;
  trees?: Record<string, { entries: number; pages: number; depth: number }>;
};

/** Waits (30 s at most) for a leader of range 1 that answers a client write. */
async function waitForLeader(
  nc: NatsConnection,
  natsUrl: string,
  watch: readonly Proc[],
): Promise<string> {
  const deadline = performance.now() + 30_000;
  let leader = '';
  while (performance.now() < deadline && leader === '') {
    checkAlive(watch);
    const replies = await askStatus(nc, nodeIds.length, 500);
    for (const r of replies) {
      if (r.ranges?.some((g) => g.rangeId === 1 && g.role === 'leader')) leader = r.node ?? '?';
    }
    if (leader === '') await sleep(100);
  }
  if (leader === '') throw new Error('no leader of range 1 within 30 s');
  const client = await Client.connect({ servers: natsUrl, timeoutMs: 2000, name: 'bench-probe' });
  try {
    for (;;) {
      try {
        await client.set('bench_probe', 'x');
        return leader;
      } catch (err) {
        checkAlive(watch);
        if (performance.now() > deadline) throw err;
        await sleep(100);
      }
    }
  } finally {
    await client.close();
  }
}

/** Throws (with the end of its output) if a process that must stay up has exited. */
function checkAlive(watch: readonly Proc[]): void {
  const dead = watch.find((p) => !p.running());
  if (dead) {
    throw new Error(
      `${dead.name} (pid ${dead.pid}) exited (code ${dead.child.exitCode}, signal ` +
        `${dead.child.signalCode}):\n${dead.output.slice(-15).join('\n')}`,
    );
  }
}

// -------------------------------------------------------------------- one measured run

interface Probe {
  nodePids: number[];
  natsPids: number[];
  /** Other server-side processes (the echo responder). */
  otherPids: number[];
  /** Client-side processes besides the load (the streams section's subscribers). */
  clientPids?: number[];
  monitorPort: number;
  /** Node counters (absent for the ceiling). */
  counters?: () => Promise<ClusterCounters>;
}

interface Sample {
  atMs: number;
  nodesCpu: number;
  /** Each node's share of nodesCpu, in p.nodePids' order. */
  nodeCpus: number[];
  /** System (kernel) part of nodesCpu: syscalls, fsync. */
  nodesSys: number;
  /** Bytes written to the disk holding the clusters' data (diskWrittenBytes), machine-wide. */
  diskWrittenBytes: number;
  natsCpu: number;
  otherCpu: number;
  clientCpu: number;
  machineBusy: number;
  varz: Varz | undefined;
  counters: ClusterCounters | undefined;
}

/** Busy CPU seconds of the whole machine so far (/proc/stat, CLK_TCK = 100). */
function machineBusySeconds(): number {
  try {
    const first = readFileSync('/proc/stat', 'utf8').split('\n')[0] ?? '';
    const f = first.trim().split(/\s+/).slice(1).map(Number);
    // user nice system idle iowait irq softirq steal
    const busy = (f[0] ?? 0) + (f[1] ?? 0) + (f[2] ?? 0) + (f[5] ?? 0) + (f[6] ?? 0) + (f[7] ?? 0);
    return busy / 100;
  } catch {
    return Number.NaN;
  }
}

/** CPU now (synchronously, at the window's edge), then the counters over NATS and HTTP. */
async function sample(p: Probe): Promise<Sample> {
  // Each node's /proc stat read once: the sums are of the same readings.
  const each = p.nodePids.map((pid) => cpuSplit([pid]));
  const nodeCpus = each.map((c) => c.user + c.system);
  const s = {
    atMs: performance.now(),
    nodesCpu: nodeCpus.reduce((x, y) => x + y, 0),
    nodeCpus,
    nodesSys: each.reduce((x, c) => x + c.system, 0),
    diskWrittenBytes: diskWrittenBytes(tmpdir()),
    natsCpu: cpuSeconds(p.natsPids),
    otherCpu: cpuSeconds(p.otherPids),
    clientCpu: cpuSeconds(p.clientPids ?? []),
    machineBusy: machineBusySeconds(),
  };
  const [v, c] = await Promise.all([
    varz(p.monitorPort).catch(() => undefined),
    p.counters ? p.counters().catch(() => undefined) : Promise.resolve(undefined),
  ]);
  return { ...s, varz: v, counters: c };
}

/** Forks a load process with `cfg`, samples the servers at its window's edges. */
async function runLoad(
  cfg: LoadConfig,
  p: Probe | undefined,
  watch: readonly Proc[],
  onWindow?: (phase: 'start' | 'end') => void,
): Promise<{ result: LoadResult; s0?: Sample; s1?: Sample }> {
  const child = forkTs(`load ${cfg.op} c${cfg.inflight}`, 'load.ts', {
    BENCH_LOAD: JSON.stringify(cfg),
  });
  let s0: Promise<Sample> | undefined;
  let s1: Promise<Sample> | undefined;
  let settle: ((r: LoadResult | Error) => void) | undefined;
  const outcome = new Promise<LoadResult | Error>((resolve) => (settle = resolve));
  child.child.on('message', (m: LoadMessage) => {
    if (m.type === 'window') onWindow?.(m.phase);
    if (m.type === 'window' && m.phase === 'start' && p) s0 = sample(p);
    else if (m.type === 'window' && m.phase === 'end' && p) s1 = sample(p);
    else if (m.type === 'result') settle?.(m.result);
    else if (m.type === 'error') settle?.(new Error(m.message));
  });
  void child.exited.then((e) =>
    settle?.(new Error(`load process exited (code ${e.code}, signal ${e.signal}) early`)),
  );
  const limitMs = 300_000 + (cfg.warmupS + cfg.durationS + 90) * 1000;
  const hung = setTimeout(() => settle?.(new Error(`load hung (${limitMs} ms)`)), limitMs);
  // A server that exits ends the run at once.
  const watchdog = setInterval(() => {
    try {
      checkAlive(watch);
    } catch (err) {
      settle?.(err as Error);
    }
  }, 200);
  try {
    const r = await outcome;
    if (r instanceof Error) {
      throw new Error(`${r.message}\n${child.output.slice(-20).join('\n')}`);
    }
    return { result: r, s0: await s0, s1: await s1 };
  } finally {
    clearTimeout(hung);
    clearInterval(watchdog);
    await child.stop();
  }
}

const perOp = (d: number, n: number): number | null => (n > 0 && Number.isFinite(d) ? d / n : null);

function toRow(
  system: string,
  workload: string,
  inflight: number,
  r: LoadResult,
  s0: Sample | undefined,
  s1: Sample | undefined,
  /** Ranges of the cluster; undefined for a run without Rasputin nodes (the ceiling). */
  ranges: number | undefined,
): Row {
  const withRanges = ranges !== undefined;
  const n = r.ops;
  const d = (f: (s: Sample) => number | undefined): number =>
    s0 && s1 ? (f(s1) ?? Number.NaN) - (f(s0) ?? Number.NaN) : Number.NaN;
  /** A node counter's change per op, or per `over` (another change). */
  const c = (k: keyof NodeCounters, over = n) =>
    perOp(
      d((s) => s.counters?.[k]),
      over,
    );
  const turnCommits = d((s) => s.counters?.storeTurnCommits);
  const serverCpu = d((s) => s.nodesCpu + s.natsCpu + s.otherCpu);
  const wallS = s0 && s1 ? (s1.atMs - s0.atMs) / 1000 : Number.NaN;
  const subsCpu = d((s) => s.clientCpu);
  const ours = r.clientCpuS + serverCpu + (Number.isFinite(subsCpu) ? subsCpu : 0);
  const other = wallS > 0 ? ((d((s) => s.machineBusy) - ours) / wallS) * 100 : Number.NaN;
  const nodesSys = d((s) => s.nodesSys);
  const inMsgs = d((s) => s.varz?.in_msgs);
  const outMsgs = d((s) => s.varz?.out_msgs);
  const inBytes = d((s) => s.varz?.in_bytes);
  const outBytes = d((s) => s.varz?.out_bytes);
  const dropped = d((s) => s.counters?.dropped);
  const row: Row = {
    workload,
    inflight,
    ...(withRanges ? { ranges } : {}),
    ops_per_s: fixed(r.elapsedS > 0 ? n / r.elapsedS : Number.NaN, 1) ?? Number.NaN,
    p50_ms: fixed(r.p50, 3) ?? Number.NaN,
    p99_ms: fixed(r.p99, 3) ?? Number.NaN,
    max_ms: fixed(r.max, 3) ?? Number.NaN,
    system,
    ops: n,
    p90_ms: fixed(r.p90, 3) ?? Number.NaN,
    elapsed_s: fixed(r.elapsedS, 3) ?? Number.NaN,
    errors: r.errors,
    cas_fail: r.casFail,
    client_cpu_us_per_op: fixed(perOp(r.clientCpuS * 1e6, n), 1),
    server_cpu_us_per_op: fixed(perOp(serverCpu * 1e6, n), 1),
    server_cpu_nodes_us_per_op: fixed(perOp(d((s) => s.nodesCpu) * 1e6, n), 1),
    server_cpu_each_node_us_per_op: (s0?.nodeCpus ?? [])
      .map((_, i) => perOp(d((s) => s.nodeCpus[i]) * 1e6, n)?.toFixed(1) ?? '-')
      .join('/'),
    server_cpu_nats_us_per_op: fixed(perOp(d((s) => s.natsCpu) * 1e6, n), 1),
    nats_in_bytes_per_op: fixed(perOp(inBytes, n), 0),
    nats_out_bytes_per_op: fixed(perOp(outBytes, n), 0),
    server_cpu_nodes_sys_us_per_op: fixed(perOp(nodesSys * 1e6, n), 1),
    disk_write_kib_per_op: fixed(perOp(d((s) => s.diskWrittenBytes) / 1024, n), 2),
    other_cpu_pct: fixed(other, 0),
    nats_in_msgs_per_op: fixed(perOp(inMsgs, n), 3),
    nats_out_msgs_per_op: fixed(perOp(outMsgs, n), 3),
    client_requests_per_op: fixed(perOp(r.clientRequests, n), 3),
    client_retries: r.clientRetries,
  };
  if (s0 && s0.clientCpu > 0) row.sub_cpu_us_per_op = fixed(perOp(subsCpu * 1e6, n), 1);
  if (withRanges) {
    Object.assign(row, {
      xstate_events_per_op: fixed(c('xstateEvents'), 3),
      fsyncs_per_op: fixed(c('storeFlushes'), 3),
      store_commits_per_op: fixed(c('storeCommits'), 3),
      raft_batches_out_per_op: fixed(c('raftBatchesOut'), 3),
      raft_msgs_in_per_op: fixed(c('raftMessagesIn'), 3),
      node_requests_per_op: fixed(c('clientRequests'), 3),
      turns_per_op: fixed(c('turns'), 3),
      dropped: fixed(dropped, 0),
      // Where the nodes' time goes (summed over the nodes): turns per op, and the mean of
      // a turn's transaction in its three phases (stats.storeTxn*Ms over storeTurnCommits).
      turn_us_per_op: fixed(perOp(d((s) => s.counters?.turnMs) * 1000, n), 1),
      txn_wait_ms: fixed(c('storeTxnWaitMs', turnCommits), 3),
      txn_body_ms: fixed(c('storeTxnBodyMs', turnCommits), 3),
      txn_sync_ms: fixed(c('storeTxnSyncMs', turnCommits), 3),
    });
    const st0 = s0?.counters?.store;
    const st1 = s1?.counters?.store;
    if (st0 !== undefined && st1 !== undefined) {
      const perOpStore: Record<string, number> = {};
      for (const [k, v] of Object.entries(st1)) {
        // Counters only: the time sums (ms) are in turn_us_per_op and txn_*_ms already.
        if (k.endsWith('Ms') || st0[k] === undefined || v === st0[k]) continue;
        perOpStore[k] = fixed(perOp(v - st0[k]!, n), 3) ?? Number.NaN;
      }
      row.store_per_op = perOpStore;
    }
    if (s1?.counters?.trees !== undefined) row.trees_at_end = s1.counters.trees;
    if (s0?.counters && Number.isNaN(s0.counters.xstateEvents)) {
      row.note =
        'node counters n/a: <p>.admin.status has no stats.{xstateEvents,storeFlushes,...} ' +
        '(or a node did not answer within 2 s)';
    }
  }
  if (r.cachedRanges !== undefined) row.cached_ranges = r.cachedRanges;
  if (r.rangesUsed !== undefined) row.ranges_used = r.rangesUsed;
  if (r.warmS !== undefined) row.warm_s = fixed(r.warmS, 2) ?? 0;
  if (r.perSecond !== undefined) row.per_second = r.perSecond;
  if (r.firstErr) row.first_err = r.firstErr;
  return row;
}

/** Seconds of puts after the fills, before any measured row (Cluster.prepare). */
const warmS = 30;
/** Streams: puts after the nodes restart with another --watch, before the next row. */
const restartWarmS = 30;

const baseConfig = (nats: MonitoredNats): Omit<LoadConfig, 'mode' | 'op' | 'inflight'> => ({
  servers: nats.url,
  warmupS,
  durationS,
  maxOps,
  keyspace,
  valueBytes,
  setupInflight,
  echoSubject,
  nonce: Math.floor(Math.random() * 2 ** 32),
});

// -------------------------------------------------------------------- sections

/** Waits for a forked bench process's `ready` message; throws with its output if none comes. */
async function awaitReady(p: Proc, timeoutMs: number): Promise<void> {
  const ready = new Promise<void>((resolve) =>
    p.child.on('message', (m: { type?: string }) => {
      if (m.type === 'ready') resolve();
    }),
  );
  if (!(await within(ready, timeoutMs))) {
    throw new Error(`${p.name} not ready:\n${p.output.join('\n')}`);
  }
}

/**
 * A row per --inflight of bare request/reply on `subject`, answered by `servers` (their
 * CPU counts as the server's), as `system` / `workload`.
 */
async function echoRows(
  nats: MonitoredNats,
  subject: string,
  servers: readonly Proc[],
  system: string,
  workload: string,
): Promise<void> {
  const probe: Probe = {
    nodePids: [],
    natsPids: [nats.proc.pid],
    otherPids: servers.map((p) => p.pid),
    monitorPort: nats.monitorPort,
  };
  for (const inflight of inflights) {
    const cfg: LoadConfig = {
      ...baseConfig(nats),
      echoSubject: subject,
      mode: 'echo',
      op: 'echo',
      inflight,
    };
    const { result, s0, s1 } = await runLoad(cfg, probe, [nats.proc, ...servers]);
    addRow(toRow(system, workload, inflight, result, s0, s1, undefined));
  }
}

async function ceiling(nats: MonitoredNats): Promise<void> {
  log(`ceiling: bare NATS request/reply (responder process), ${durationS} s per run`);
  const responder = forkTs('responder', 'responder.ts', {
    BENCH_NATS: nats.url,
    BENCH_SUBJECT: echoSubject,
  });
  try {
    await awaitReady(responder, 15_000);
    await echoRows(nats, echoSubject, [responder], 'nats-echo', 'request-reply');
  } finally {
    await responder.stop();
  }
}

/**
 * The floors (section floor): durable-floor writes log and data (one random key of the
 * keyspace per write); log-floor the log alone, what a store that wrote its data elsewhere
 * (or never) would pay.
 */
const floors = [
  { system: 'durable-floor', keys: keyspace, what: 'log and data' },
  { system: 'log-floor', keys: 0, what: 'the log alone' },
] as const;

async function floor(nats: MonitoredNats): Promise<void> {
  log(`floor: LMDB, fsynced, on 3 processes without consensus, ${durationS} s per run`);
  for (const { system, keys } of floors) await floorRun(nats, system, keys);
}

async function floorRun(nats: MonitoredNats, system: string, keys: number): Promise<void> {
  const subject = `${echoSubject}.floor`;
  const dir = await mkdtemp(join(tmpdir(), 'rasputin-floor-'));
  const replicas: Proc[] = [];
  try {
    for (const [id, role] of [
      ['f1', 'follower'],
      ['f2', 'follower'],
      ['l', 'leader'],
    ] as const) {
      const p = forkTs(`floor ${id}`, 'floor-replica.ts', {
        BENCH_NATS: nats.url,
        BENCH_SUBJECT: subject,
        FLOOR_ROLE: role,
        FLOOR_ID: id,
        FLOOR_DIR: join(dir, id),
        FLOOR_KEYS: String(keys),
      });
      replicas.push(p);
      await awaitReady(p, 120_000);
    }
    await echoRows(nats, subject, replicas, system, 'put');
  } finally {
    for (const p of replicas) await p.stop();
    await rm(dir, { recursive: true, force: true });
  }
}

/** A 3-node Rasputin cluster in a temp dir, on the run's nats-server. */
class Cluster {
  readonly nodes: Proc[] = [];
  baseDir = '';
  /** For status requests. */
  nc: NatsConnection | undefined;
  /** For splits (opened on first use). */
  private splitClient: Client | undefined;
  leader = '';

  constructor(
    readonly nats: MonitoredNats,
    /** Extra `rasputin start` flags of every node (e.g. --watch off). */
    private nodeArgs: readonly string[] = [],
  ) {}

  /** Whether the nodes balance range leaders (started with --balance-leaders on). */
  get balancesLeaders(): boolean {
    const i = this.nodeArgs.indexOf('--balance-leaders');
    return i >= 0 && this.nodeArgs[i + 1] === 'on';
  }

  get watch(): Proc[] {
    return [this.nats.proc, ...this.nodes];
  }

  get probe(): Probe {
    const nc = this.nc!;
    return {
      nodePids: this.nodes.map((n) => n.pid),
      natsPids: [this.nats.proc.pid],
      otherPids: [],
      monitorPort: this.nats.monitorPort,
      counters: () => clusterCounters(nc),
    };
  }

  /** Starts the nodes and waits for a leader of range 1 that answers a write. */
  async start(): Promise<void> {
    this.baseDir = await mkdtemp(join(tmpdir(), 'rasputin-runbench-'));
    await this.startNodes();
  }

  /** Stops the nodes (by PID) and starts them again on the same directories with `nodeArgs`. */
  async restart(nodeArgs: readonly string[]): Promise<void> {
    await Promise.all(this.nodes.map((n) => n.stop()));
    this.nodes.length = 0;
    this.nodeArgs = nodeArgs;
    await this.startNodes();
  }

  private async startNodes(): Promise<void> {
    const args = [...historyArgs, ...this.nodeArgs];
    log(
      `rasputin: starting 3 nodes in ${this.baseDir}` +
        (args.length > 0 ? ` (${args.join(' ')})` : ''),
    );
    const started = await Promise.allSettled(
      nodeIds.map((id) =>
        startNode({
          nodeId: id,
          natsUrl: this.nats.url,
          storageDir: join(this.baseDir, id),
          initialNodes: nodeIds,
          logFile: join(this.baseDir, `${id}.log`),
          args,
          ...(nodeCpuProfDir
            ? { execArgv: ['--cpu-prof', `--cpu-prof-dir=${join(nodeCpuProfDir, id)}`] }
            : {}),
        }),
      ),
    );
    for (const s of started) if (s.status === 'fulfilled') this.nodes.push(s.value);
    const bad = started.find((s) => s.status === 'rejected');
    if (bad) throw bad.reason;
    this.nc ??= await connect({ servers: this.nats.url, name: 'bench-status' });
    this.leader = await waitForLeader(this.nc, this.nats.url, this.watch);
    log(`rasputin: leader of range 1 is node ${this.leader}`);
    const first = await askStatus(this.nc, nodeIds.length, 2000);
    if (!first.some((r) => r.stats && typeof r.stats.xstateEvents === 'number')) {
      log('rasputin: the nodes report no stats in <p>.admin.status: per-op counters are n/a');
    }
  }

  /**
   * Before any measured row: every k_ key (gets and cas read them), every p_ key (puts
   * overwrite them), then warmS seconds of puts. 200,000 writes put the cluster past the
   * dedup window and the events retained (100,000 each), and disk writes per put kept
   * rising for ~150,000 writes more (40.7 -> 53.9 KiB): without all of it later rows on a
   * cluster were dearer per write than earlier ones (after a k_ fill only: put-watchon
   * 248 us and 35 KiB per put, put-watchon-again 362 us and 55 KiB). The rows run in the
   * store's steady state: request records expiring, events compacted, keys overwritten.
   */
  async prepare(): Promise<void> {
    await this.fill('k');
    await this.fill('p');
    await this.warm();
  }

  /** Writes every k_ key once, or every p_ key. */
  private async fill(prefix: 'k' | 'p'): Promise<void> {
    log(`rasputin: fill ${keyspace} ${prefix}_ keys, ${setupInflight} in flight`);
    const fill = await runLoad(
      {
        ...baseConfig(this.nats),
        mode: 'rasputin',
        op: 'fill',
        fillPrefix: prefix,
        inflight: setupInflight,
      },
      undefined,
      this.watch,
    );
    const fillRate = fill.result.ops / fill.result.setupS;
    log(`rasputin: filled in ${fill.result.setupS.toFixed(1)} s (${fillRate.toFixed(0)} sets/s)`);
  }

  /** Puts (64 in flight) for `seconds` (see prepare; a restarted process runs cold too). */
  async warm(seconds = warmS): Promise<void> {
    log(`rasputin: warm-up: puts for ${seconds} s`);
    const warm = await runLoad(
      {
        ...baseConfig(this.nats),
        mode: 'rasputin',
        op: 'put',
        inflight: 64,
        warmupS: 0,
        durationS: seconds,
      },
      undefined,
      this.watch,
    );
    log(`rasputin: warm-up: ${warm.result.ops} puts`);
  }

  async client(): Promise<Client> {
    this.splitClient ??= await Client.connect({
      servers: this.nats.url,
      timeoutMs: splitTimeoutMs,
      name: 'bench-split',
    });
    return this.splitClient;
  }

  /** Stops every node by PID; keeps the node logs when the run failed. */
  async stop(failed: boolean): Promise<void> {
    await this.splitClient?.close().catch(() => undefined);
    await this.nc?.close().catch(() => undefined);
    await Promise.all(this.nodes.map((n) => n.stop().catch(() => undefined)));
    if (this.baseDir === '') return;
    if (failed) log(`rasputin: node logs kept in ${this.baseDir}`);
    else await rm(this.baseDir, { recursive: true, force: true });
  }
}

async function rasputin(nats: MonitoredNats): Promise<void> {
  const cluster = new Cluster(nats);
  let failed = false;
  try {
    await cluster.start();
    await cluster.prepare();
    const probe = cluster.probe;
    for (const op of workloads) {
      for (const inflight of inflights) {
        log(`rasputin: ${op}, ${inflight} in flight`);
        const cfg: LoadConfig = { ...baseConfig(nats), mode: 'rasputin', op, inflight };
        const { result, s0, s1 } = await runLoad(cfg, probe, cluster.watch);
        const row = toRow('rasputin', op, inflight, result, s0, s1, 1);
        if (op === 'cas') row.setup_s = fixed(result.setupS, 2) ?? 0;
        addRow(row);
      }
    }
  } catch (err) {
    failed = true;
    throw err;
  } finally {
    await cluster.stop(failed);
  }
}

// -------------------------------------------------------------------- many ranges

/** A pre-split: the splits that took a cluster to `ranges` ranges. */
interface PresplitRow {
  system: string;
  workload: 'presplit';
  /** Splits in flight at most. */
  inflight: number;
  ranges: number;
  /** Ranges the cluster has after it (the keys it is cut at, plus one). */
  ranges_made: number;
  /** Ranges in the meta directory (it may lag; read until it matches, for 5 s at most). */
  ranges_directory: number | null;
  splits_asked: number;
  splits_made: number;
  splits_failed: number;
  splits_skipped: number;
  elapsed_s: number;
  /** Wall time per split made (splits run `inflight` at a time). */
  ms_per_split: number | null;
  split_p50_ms: number | null;
  split_p99_ms: number | null;
  split_max_ms: number | null;
  first_err?: string;
  /**
   * Seconds from the end of the pre-split until the placement driver had spread the leaders
   * (no node leading two more than another); null: not within --balance-wait-s, or off.
   */
  balance_s: number | null;
  /** Ranges each node leads after that (null: no status reply). */
  node_leaders: (number | null)[];
}

/** No client load for --idle-s: each node's CPU and memory, the nodes' counters per second. */
interface IdleRow {
  system: string;
  workload: 'idle';
  inflight: 0;
  ranges: number;
  ranges_made: number;
  /** 'data': the cluster of the load runs (filled, loaded); 'empty': never had client data. */
  cluster: 'data' | 'empty';
  elapsed_s: number;
  /** Per node, in the order of `nodes`: % of one core. */
  nodes: string[];
  node_cpu_pct: (number | null)[];
  node_cpu_pct_max: number | null;
  nats_cpu_pct: number | null;
  nats_in_msgs_per_s: number | null;
  /** Median of the samples taken through the window (every 200 ms), per node. */
  node_rss_kib: (number | null)[];
  node_rss_anon_kib: (number | null)[];
  /** RSS 3 s into the quiet before the window (--idle-settle-s). */
  node_rss_early_kib: (number | null)[];
  /** The lowest and highest RSS sampled in the window (garbage collections come and go). */
  node_rss_min_kib: (number | null)[];
  node_rss_max_kib: (number | null)[];
  memory_samples: number;
  /** V8 heap in use (live objects and garbage not yet collected), from each node's status. */
  node_heap_used_kib: (number | null)[];
  /**
   * Ranges (replicas) and leaders per node, from `<p>.admin.status` (null: no answer;
   * leaders are counted among the ranges the reply lists, led ones first).
   */
  node_ranges: (number | null)[];
  node_leaders: (number | null)[];
  /** Ranges each reply listed: below node_ranges, node_leaders may be a lower bound. */
  node_ranges_listed: (number | null)[];
  /** The node whose reply shows it leading range 1 (the meta range; placement driver). */
  meta_leader: string | null;
  /** Summed over the nodes. */
  turns_per_s: number | null;
  raft_msgs_in_per_s: number | null;
  raft_batches_out_per_s: number | null;
  xstate_events_per_s: number | null;
  store_commits_per_s: number | null;
  /** CPU per hosted range: the busiest node's CPU us per second, divided by its ranges. */
  cpu_us_per_range_per_s: number | null;
  /** Against the 1-range idle row of the same kind of cluster: (RSS - RSS_1) / (N - 1). */
  kib_per_range?: (number | null)[];
  anon_kib_per_range?: (number | null)[];
  /** Against that row too: each node's extra CPU us per second per extra range. */
  cpu_us_per_extra_range_per_s?: (number | null)[];
  /**
   * Against the idle row at a tenth of the ranges (empty cluster, after its own split
   * storm): (RSS - RSS_N/10) / (N - N/10), the cost of one more range without the fixed
   * costs that grow with any load (V8's young generation, code, lmdb-js's buffers).
   */
  marginal_kib_per_range?: (number | null)[];
  marginal_anon_kib_per_range?: (number | null)[];
  marginal_heap_kib_per_range?: (number | null)[];
  /** marginal_kib_per_range with this row's RSS taken 3 s into the quiet instead. */
  marginal_early_kib_per_range?: (number | null)[];
  note?: string;
}

/** Leaders per node; "N+" where the status reply listed only part of the node's ranges. */
function leadersShown(r: IdleRow): string {
  return r.node_leaders
    .map((x, i) => {
      if (x === null) return '-';
      const listed = r.node_ranges_listed[i] ?? null;
      const total = r.node_ranges[i] ?? null;
      return listed !== null && total !== null && listed < total && x === listed
        ? `${x}+`
        : String(x);
    })
    .join('/');
}

const presplitRows: PresplitRow[] = [];
const idleRows: IdleRow[] = [];

function emit(r: PresplitRow | IdleRow): void {
  if (r.workload === 'presplit') presplitRows.push(r);
  else idleRows.push(r);
  if (json) out(JSON.stringify(r));
}

/** Splits cluster `c` (cut at `cut` now) at every key of `want`, bounded by --split-time. */
async function presplit(
  c: Cluster,
  ranges: number,
  want: readonly string[],
  cut: ReadonlySet<string>,
): Promise<SplitOutcome> {
  const client = await c.client();
  const asked = want.filter((k) => !cut.has(k)).length;
  log(
    `rasputin: pre-split to ${ranges} ranges: ${asked} splits, ${splitInflight} in flight, ` +
      `at most ${splitTimeS} s`,
  );
  let dead = false;
  const watchdog = setInterval(() => {
    dead ||= c.watch.some((p) => !p.running());
  }, 200);
  let o: SplitOutcome;
  try {
    o = await splitAll(client, want, cut, {
      inflight: splitInflight,
      deadlineMs: performance.now() + splitTimeS * 1000,
      timeoutMs: splitTimeoutMs,
      stop: () => dead,
      onProgress: (made, of, s) =>
        log(
          `  ${made}/${of} splits in ${s.toFixed(0)} s (${((s * 1000) / made).toFixed(1)} ms each)`,
        ),
    });
  } finally {
    clearInterval(watchdog);
  }
  checkAlive(c.watch);
  const made = cut.size + o.made.length + 1;
  // The directory is written after each split commits: give it a moment to catch up.
  let directory: number | null = null;
  const directoryDeadline = performance.now() + directoryCatchUpMs;
  while (directory !== made && performance.now() < directoryDeadline) {
    try {
      directory = (await client.ranges({ timeoutMs: 10_000 })).length;
    } catch (err) {
      log(`rasputin: could not read the directory: ${(err as Error).message}`);
    }
    if (directory !== made) await sleep(250);
  }
  const balance = c.balancesLeaders
    ? await waitForBalance(c, made)
    : { s: null, leaders: await leadersPerNode(c) };
  const row: PresplitRow = {
    system: 'rasputin',
    workload: 'presplit',
    inflight: splitInflight,
    ranges,
    ranges_made: made,
    ranges_directory: directory,
    splits_asked: o.asked,
    splits_made: o.made.length,
    splits_failed: o.failed,
    splits_skipped: o.skipped,
    elapsed_s: fixed(o.elapsedS, 3) ?? 0,
    ms_per_split: fixed(o.made.length > 0 ? (o.elapsedS * 1000) / o.made.length : Number.NaN, 2),
    split_p50_ms: fixed(pct(o.latenciesMs, 0.5), 2),
    split_p99_ms: fixed(pct(o.latenciesMs, 0.99), 2),
    split_max_ms: fixed(pct(o.latenciesMs, 1), 2),
    ...(o.firstErr ? { first_err: o.firstErr } : {}),
    balance_s: balance.s === null ? null : fixed(balance.s, 1),
    node_leaders: balance.leaders,
  };
  log(
    `rasputin: ${made} ranges (${o.made.length} splits made, ${o.failed} failed, ${o.skipped} ` +
      `not started) in ${o.elapsedS.toFixed(1)} s: ${row.ms_per_split ?? '-'} ms per split, ` +
      `each ${row.split_p50_ms ?? '-'} ms p50 / ${row.split_max_ms ?? '-'} ms max; the directory ` +
      `lists ${directory ?? '?'}` +
      (o.firstErr ? `; first error: ${o.firstErr}` : ''),
  );
  emit(row);
  return o;
}

/** Ranges each node of c leads, by its status reply (null: no reply). */
async function leadersPerNode(c: Cluster): Promise<(number | null)[]> {
  const replies = await askStatus(c.nc!, nodeIds.length, 500);
  return nodeIds.map((id) => {
    const r = replies.find((x) => x.node === id)?.ranges;
    return r ? r.filter((g) => g.role === 'leader').length : null;
  });
}

/**
 * Waits (--balance-wait-s at most) until the placement driver has spread the leaders of c's
 * `made` ranges: every range led, and no node leading two more than another, by the nodes'
 * status replies (which list led ranges first). Logs progress every 10 s.
 */
async function waitForBalance(
  c: Cluster,
  made: number,
): Promise<{ s: number | null; leaders: (number | null)[] }> {
  const t0 = performance.now();
  let logged = t0;
  for (;;) {
    checkAlive(c.watch);
    const leaders = await leadersPerNode(c);
    const n = leaders.filter((x): x is number => x !== null);
    const s = (performance.now() - t0) / 1000;
    const led = n.reduce((x, y) => x + y, 0);
    if (n.length === nodeIds.length && led === made && Math.max(...n) - Math.min(...n) <= 1) {
      log(`rasputin: leaders spread ${leaders.join('/')} in ${s.toFixed(1)} s`);
      return { s, leaders };
    }
    if (s >= balanceWaitS) {
      log(`rasputin: leaders not spread within ${balanceWaitS} s: ${leaders.join('/')}`);
      return { s: null, leaders };
    }
    if (performance.now() - logged >= 10_000) {
      logged = performance.now();
      log(`  leaders per node ${leaders.join('/')} after ${s.toFixed(0)} s`);
    }
    await sleep(500);
  }
}

const counterRate = (
  c0: Record<keyof NodeCounters, number> | undefined,
  c1: Record<keyof NodeCounters, number> | undefined,
  k: keyof NodeCounters,
  s: number,
): number | null => (c0 && c1 ? fixed((c1[k] - c0[k]) / s, 1) : null);

/** --idle-s of no client load on `c`: CPU, memory and counters (see IdleRow). */
async function measureIdle(
  c: Cluster,
  ranges: number,
  made: number,
  kind: IdleRow['cluster'],
  baseline: IdleRow | undefined,
  marginalBase?: IdleRow,
): Promise<IdleRow> {
  log(
    `rasputin: idle ${idleS} s with ${made} ranges (${kind} cluster), after ` +
      `${idleSettleMs / 1000} s of quiet`,
  );
  // RSS 3 s into the quiet (or at its end if shorter): what the work just done left behind.
  await sleep(Math.min(3000, idleSettleMs));
  const early = c.nodes.map((n) => memoryKiB(n.pid).rss);
  await sleep(idleSettleMs - Math.min(3000, idleSettleMs));
  checkAlive(c.watch);
  const nc = c.nc!;
  // Status first (it costs the nodes CPU): the window starts once the answers are in.
  const st0 = await askStatus(nc, nodeIds.length, 5000);
  const v0 = await varz(c.nats.monitorPort).catch(() => undefined);
  const pids = c.nodes.map((n) => n.pid);
  const cpu0 = pids.map((pid) => cpuSeconds([pid]));
  const nats0 = cpuSeconds([c.nats.proc.pid]);
  const t0 = performance.now();
  const deadline = t0 + idleS * 1000;
  // Memory is sampled through the window: a node's RSS swings by megabytes between garbage
  // collections, so one reading says more about when V8 last collected than about the node.
  const samples: MemoryKiB[][] = pids.map(() => []);
  while (performance.now() < deadline) {
    await sleep(Math.min(200, Math.max(1, deadline - performance.now())));
    checkAlive(c.watch);
    for (let i = 0; i < pids.length; i++) samples[i]!.push(memoryKiB(pids[i]!));
  }
  const cpu1 = pids.map((pid) => cpuSeconds([pid]));
  const nats1 = cpuSeconds([c.nats.proc.pid]);
  const wallS = (performance.now() - t0) / 1000;
  const last: MemoryKiB[] = pids.map((pid) => memoryKiB(pid));
  for (let i = 0; i < pids.length; i++) samples[i]!.push(last[i]!);
  // Each node's samples of a field, ascending; `at` picks one by position (null: none).
  const sorted = (f: (m: MemoryKiB) => number) =>
    samples.map((s) =>
      s
        .map(f)
        .filter((x) => !Number.isNaN(x))
        .sort((x, y) => x - y),
    );
  const at = (xss: number[][], i: (n: number) => number) =>
    xss.map((xs) => (xs.length === 0 ? null : fixed(xs[i(xs.length)]!, 0)));
  const median = (n: number) => Math.floor((n - 1) / 2);
  const rss = sorted((m) => m.rss);
  const v1 = await varz(c.nats.monitorPort).catch(() => undefined);
  const st1 = await askStatus(nc, nodeIds.length, 5000);
  const sum = (replies: StatusReply[]) => {
    if (replies.length < nodeIds.length) return undefined;
    const total = {} as Record<keyof NodeCounters, number>;
    for (const k of counterNames) {
      total[k] = replies.reduce(
        (n, r) => n + (typeof r.stats?.[k] === 'number' ? (r.stats[k] as number) : Number.NaN),
        0,
      );
    }
    return total;
  };
  const c0 = sum(st0);
  const c1 = sum(st1);
  const byNode = new Map(st1.map((r) => [r.node ?? '', r]));
  const nodeCpu = cpu0.map((x, i) => fixed(((cpu1[i]! - x) / wallS) * 100, 2));
  const cpuMax = nodeCpu.reduce<number | null>(
    (m, x) => (x === null ? m : Math.max(m ?? 0, x)),
    null,
  );
  const nodeRanges = nodeIds.map((id) => {
    const r = byNode.get(id);
    return r?.rangesTotal ?? r?.ranges?.length ?? null;
  });
  const row: IdleRow = {
    system: 'rasputin',
    workload: 'idle',
    inflight: 0,
    ranges,
    ranges_made: made,
    cluster: kind,
    elapsed_s: fixed(wallS, 3) ?? 0,
    nodes: nodeIds,
    node_cpu_pct: nodeCpu,
    node_cpu_pct_max: cpuMax,
    nats_cpu_pct: fixed(((nats1 - nats0) / wallS) * 100, 2),
    nats_in_msgs_per_s: v0 && v1 ? fixed((v1.in_msgs - v0.in_msgs) / wallS, 1) : null,
    node_rss_kib: at(rss, median),
    node_rss_anon_kib: at(
      sorted((m) => m.anon),
      median,
    ),
    node_rss_early_kib: early.map((x) => fixed(x, 0)),
    node_rss_min_kib: at(rss, () => 0),
    node_rss_max_kib: at(rss, (n) => n - 1),
    memory_samples: samples[0]?.length ?? 0,
    node_heap_used_kib: nodeIds.map((id) => {
      const used = byNode.get(id)?.memory?.heapUsed;
      return typeof used === 'number' ? fixed(used / 1024, 0) : null;
    }),
    node_ranges: nodeRanges,
    node_leaders: nodeIds.map((id) => {
      const r = byNode.get(id)?.ranges;
      return r ? r.filter((g) => g.role === 'leader').length : null;
    }),
    node_ranges_listed: nodeIds.map((id) => byNode.get(id)?.ranges?.length ?? null),
    meta_leader:
      st1.find((r) => r.ranges?.some((g) => g.rangeId === 1 && g.role === 'leader'))?.node ?? null,
    turns_per_s: counterRate(c0, c1, 'turns', wallS),
    raft_msgs_in_per_s: counterRate(c0, c1, 'raftMessagesIn', wallS),
    raft_batches_out_per_s: counterRate(c0, c1, 'raftBatchesOut', wallS),
    xstate_events_per_s: counterRate(c0, c1, 'xstateEvents', wallS),
    store_commits_per_s: counterRate(c0, c1, 'storeCommits', wallS),
    cpu_us_per_range_per_s: cpuMax === null ? null : fixed((cpuMax * 1e4) / made, 2),
  };
  /** Per node, (now - then) per range hosted since `base` (status; else the count made). */
  const perRange = (
    base: IdleRow,
    now: (number | null)[],
    then: (number | null)[],
    scale = 1,
  ): (number | null)[] =>
    now.map((x, i) => {
      const b = then[i];
      const extra = (nodeRanges[i] ?? made) - (base.node_ranges[i] ?? base.ranges_made);
      return x === null || b === null || b === undefined || extra <= 0
        ? null
        : fixed(((x - b) * scale) / extra, 2);
    });
  if (baseline && made > baseline.ranges_made) {
    row.kib_per_range = perRange(baseline, row.node_rss_kib, baseline.node_rss_kib);
    row.anon_kib_per_range = perRange(baseline, row.node_rss_anon_kib, baseline.node_rss_anon_kib);
    // % of a core -> us per second: x 10^4.
    row.cpu_us_per_extra_range_per_s = perRange(
      baseline,
      row.node_cpu_pct,
      baseline.node_cpu_pct,
      1e4,
    );
  }
  if (marginalBase && made > marginalBase.ranges_made) {
    row.marginal_kib_per_range = perRange(
      marginalBase,
      row.node_rss_kib,
      marginalBase.node_rss_kib,
    );
    row.marginal_anon_kib_per_range = perRange(
      marginalBase,
      row.node_rss_anon_kib,
      marginalBase.node_rss_anon_kib,
    );
    row.marginal_heap_kib_per_range = perRange(
      marginalBase,
      row.node_heap_used_kib,
      marginalBase.node_heap_used_kib,
    );
    // The same 3 s into the quiet (against the settled smaller count: an upper bound).
    row.marginal_early_kib_per_range = perRange(
      marginalBase,
      row.node_rss_early_kib,
      marginalBase.node_rss_kib,
    );
  }
  if (st1.length < nodeIds.length) {
    row.note =
      `${nodeIds.length - st1.length} node(s) did not answer <p>.admin.status within 5 s ` +
      '(a reply over max_payload is dropped): counters n/a';
  }
  const show = (xs: (number | null)[], scale = 1, digits = 1) =>
    xs.map((x) => (x === null ? '-' : (x / scale).toFixed(digits))).join('/');
  log(
    `rasputin: idle at ${made} ranges: cpu % ${show(nodeCpu)} (nats ${row.nats_cpu_pct}, ` +
      `${row.nats_in_msgs_per_s ?? '-'} msgs/s in), rss MiB ${show(row.node_rss_kib, 1024)} ` +
      `(median of ${row.memory_samples} samples; min ${show(row.node_rss_min_kib, 1024)}, ` +
      `max ${show(row.node_rss_max_kib, 1024)}; 3 s into the quiet ` +
      `${show(row.node_rss_early_kib, 1024)}) ` +
      `(anon ${show(row.node_rss_anon_kib, 1024)})` +
      (row.kib_per_range ? `, KiB/range ${show(row.kib_per_range)}` : '') +
      (row.marginal_kib_per_range
        ? ` (marginal from ${marginalBase?.ranges_made} ranges ${show(row.marginal_kib_per_range)}, ` +
          `anon ${show(row.marginal_anon_kib_per_range ?? [])}, ` +
          `V8 heap used ${show(row.marginal_heap_kib_per_range ?? [])}; ` +
          `3 s into the quiet ${show(row.marginal_early_kib_per_range ?? [])})`
        : '') +
      `; ranges/leaders per node ${show(nodeRanges, 1, 0)} / ${leadersShown(row)}, meta ` +
      `range led by ${row.meta_leader ?? '?'}; ` +
      `per s: ${row.turns_per_s ?? '-'} turns, ${row.raft_msgs_in_per_s ?? '-'} raft msgs in, ` +
      `${row.xstate_events_per_s ?? '-'} xstate events`,
  );
  emit(row);
  return row;
}

/** --splits-during splits of ranges with data, spread over a put load's window. */
async function splitsUnderLoad(c: Cluster, ranges: number, cut: Set<string>): Promise<void> {
  const count = Math.min(splitsDuring, keyspace);
  const keys: string[] = [];
  for (let i = 0; i < count; i++) {
    const idx = Math.floor(((i + 0.5) * keyspace) / count);
    const key = [keyName('p', idx), keyName('p', Math.min(keyspace - 1, idx + 1))].find(
      (k) => !cut.has(k),
    );
    if (key !== undefined && !keys.includes(key)) keys.push(key);
  }
  const inflight = inflights[inflights.length - 1]!;
  const client = await c.client();
  const cfg: LoadConfig = {
    ...baseConfig(c.nats),
    mode: 'rasputin',
    op: 'put',
    inflight,
    ...(ranges > 1 ? { warmRanges: ranges } : {}),
  };
  // The same load without splits first, just before, so both see the same machine.
  log(`rasputin: put, ${inflight} in flight, ${ranges} ranges, no splits (baseline)`);
  const plain = await runLoad(cfg, c.probe, c.watch);
  const base = toRow(
    'rasputin',
    'put-nosplits',
    inflight,
    plain.result,
    plain.s0,
    plain.s1,
    ranges,
  );
  addRow(base);
  log(
    `rasputin: put, ${inflight} in flight, with ${keys.length} splits of ranges with data ` +
      `spread over the ${durationS} s window`,
  );
  const everyMs = (durationS * 1000) / Math.max(1, keys.length);
  let ended = false;
  let series: ReturnType<typeof splitSeries> | undefined;
  let loaded: Awaited<ReturnType<typeof runLoad>>;
  try {
    loaded = await runLoad(cfg, c.probe, c.watch, (phase) => {
      if (phase === 'end') ended = true;
      else
        series ??= splitSeries(client, keys, {
          everyMs,
          timeoutMs: splitTimeoutMs,
          stop: () => ended,
        });
    });
  } finally {
    ended = true;
    await series?.catch(() => undefined);
  }
  const s = series ? await series : undefined;
  for (const k of s?.made ?? []) cut.add(k);
  const row = toRow(
    'rasputin',
    'put+splits',
    inflight,
    loaded.result,
    loaded.s0,
    loaded.s1,
    ranges,
  );
  const lat = s ? Float64Array.from(s.latenciesMs).sort() : new Float64Array(0);
  row.splits_made = s?.made.length ?? 0;
  row.splits_failed = s?.failed ?? 0;
  row.split_first_ms = fixed(s?.latenciesMs[0], 2);
  row.split_p50_ms = fixed(pct(lat, 0.5), 2);
  row.split_max_ms = fixed(pct(lat, 1), 2);
  row.baseline_ops_per_s = base.ops_per_s;
  row.baseline_p99_ms = base.p99_ms;
  row.note =
    `${s?.made.length ?? 0} splits during the window (${s?.failed ?? 0} failed): first ` +
    `${row.split_first_ms ?? '-'} ms, p50 ${row.split_p50_ms ?? '-'} ms, max ` +
    `${row.split_max_ms ?? '-'} ms; without splits (put-nosplits, just before): ` +
    `${base.ops_per_s.toFixed(0)} ops/s, p99 ${base.p99_ms.toFixed(2)} ms` +
    (s?.firstErr ? `; first split error: ${s.firstErr}` : '');
  addRow(row);
}

/** The load runs over --ranges, then idle CPU and memory with many ranges. */
async function rasputinRanges(nats: MonitoredNats): Promise<void> {
  log(
    rangesPin
      ? `rasputin: throughput loads with servers pinned to CPUs ${rangesPin.servers}, clients to ` +
          `${rangesPin.clients} (--ranges-pin off: shared)`
      : 'rasputin: throughput loads on shared CPUs',
  );
  let cluster: Cluster | undefined;
  let failed: unknown;
  /** The keys the current cluster is cut at. */
  let cut = new Set<string>();
  let baseline: IdleRow | undefined;
  let last = 0;
  try {
    for (const n of rangesList!) {
      const want = splitPoints(keyspace, n);
      const wanted = new Set(want);
      if (cluster && ![...cut].every((k) => wanted.has(k))) {
        log(`rasputin: ${n} ranges do not refine ${cut.size + 1}: a fresh cluster`);
        await cluster.stop(false);
        cluster = undefined;
      }
      if (!cluster) {
        cluster = new Cluster(nats, rangesNodeArgs);
        cut = new Set();
        await cluster.start();
        await cluster.prepare();
      }
      const c = cluster;
      if (want.some((k) => !cut.has(k))) {
        const o = await presplit(c, n, want, cut);
        for (const k of o.made) cut.add(k);
      }
      const made = cut.size + 1;
      for (const op of workloads) {
        for (const inflight of inflights) {
          log(`rasputin: ${op}, ${inflight} in flight, ${made} ranges`);
          const row = await rangesLoad(c, op, inflight, n, op);
          if (made !== n) row.note = `the pre-split made ${made} ranges, not ${n}`;
          addRow(row);
        }
      }
      const idle = await measureIdle(c, n, made, 'data', baseline);
      if (n === 1) baseline = idle;
      last = n;
    }
    if (cluster && splitsDuring > 0) await splitsUnderLoad(cluster, last, cut);
  } catch (err) {
    failed = err;
    log(`rasputin: many-ranges loads failed: ${(err as Error).stack ?? String(err)}`);
  } finally {
    await cluster?.stop(failed !== undefined);
  }
  if (
    failed === undefined &&
    (rangesRepeat > 1 || rangesSlices > 0) &&
    manyRanges() !== undefined
  ) {
    try {
      await rangesPairs(nats, manyRanges()!);
    } catch (err) {
      failed = err;
      log(`rasputin: repeated range pairs failed: ${(err as Error).stack ?? String(err)}`);
    }
  }
  if (idleRanges > 0) {
    const empty = new Cluster(nats);
    let emptyFailed = false;
    try {
      await empty.start();
      const base = await measureIdle(empty, 1, 1, 'empty', undefined);
      // A tenth of the ranges first (their split points are a subset of the full count's),
      // so the last row can also say what one more range costs (marginal_kib_per_range).
      let cut = new Set<string>();
      let tenth: IdleRow | undefined;
      if (idleRanges >= 100 && idleRanges % 10 === 0) {
        const n = idleRanges / 10;
        const o = await presplit(empty, n, splitPoints(keyspace, n), cut);
        cut = new Set(o.made);
        tenth = await measureIdle(empty, n, o.made.length + 1, 'empty', base);
      }
      const o = await presplit(empty, idleRanges, splitPoints(keyspace, idleRanges), cut);
      const made = cut.size + o.made.length + 1;
      await measureIdle(empty, idleRanges, made, 'empty', base, tenth);
    } catch (err) {
      emptyFailed = true;
      failed ??= err;
      log(`rasputin: idle with many ranges failed: ${(err as Error).stack ?? String(err)}`);
    } finally {
      await empty.stop(emptyFailed);
    }
  }
  if (failed !== undefined) throw failed;
}

/**
 * One load of `op` from a load process on `c`, a cluster of `n` ranges (whose range cache
 * the load warms first), as a row named `workload`.
 */
async function rangesLoad(
  c: Cluster,
  op: LoadConfig['op'],
  inflight: number,
  n: number,
  workload: string,
): Promise<Row> {
  const cfg = rangesLoadConfig(c, op, inflight, n);
  const { result, s0, s1 } = await pinned(rangesPin, c.watch, () => runLoad(cfg, c.probe, c.watch));
  const row = toRow('rasputin', workload, inflight, result, s0, s1, n);
  if (op === 'cas') row.setup_s = fixed(result.setupS, 2) ?? 0;
  return row;
}

/**
 * Runs `work` under `pin` (--ranges-pin, --stream-pin): `servers` (nats-server, nodes) on
 * pin.servers, this process and the processes forkTs starts on pin.clients; every CPU
 * again after. Without a pin (off, or below 2 CPUs), just runs `work`.
 */
async function pinned<T>(
  pin: Pinning | undefined,
  servers: readonly Proc[],
  work: () => Promise<T>,
): Promise<T> {
  if (!pin) return work();
  const pinAll = (cpus: string | undefined, clients: string | undefined) => {
    for (const p of servers) if (p.child.exitCode === null) pinPid(p.pid, cpus, cpuCount);
    pinPid(process.pid, clients, cpuCount);
    setClientCpus(clients, cpuCount);
  };
  pinAll(pin.servers, pin.clients);
  try {
    return await work();
  } finally {
    pinAll(undefined, undefined);
  }
}

/** A load of `op` on `c`, a cluster of `n` ranges whose range cache the load warms first. */
function rangesLoadConfig(
  c: Cluster,
  op: LoadConfig['op'],
  inflight: number,
  n: number,
): LoadConfig {
  return {
    ...baseConfig(c.nats),
    mode: 'rasputin',
    op,
    inflight,
    ...(n > 1 ? { warmRanges: n } : {}),
  };
}

/** The range count the throughput target compares with 1 range: 256, or the most measured. */
function manyRanges(): number | undefined {
  if (!rangesList?.includes(1)) return undefined;
  const many = rangesList.includes(256) ? 256 : rangesList[rangesList.length - 1]!;
  return many === 1 ? undefined : many;
}

/**
 * --ranges-repeat: rangesRepeat - 1 more throughput pairs (1 range, `many` ranges) after
 * the plan, on two fresh clusters started side by side, each on a nats-server of its own,
 * prepared alike (fill, warm-up); the pre-split one is split after its warm-up, as the
 * plan's cluster is. Each pair runs every workload on both, alternating which goes first,
 * so a drift of the machine weighs on both. Rows are named `<op>#<k>`. With --ranges-aa
 * the second cluster is left at one range: A/A pairs, which read the measure's own spread.
 */
async function rangesPairs(nats: MonitoredNats, many: number): Promise<void> {
  const natsMany = await startNats();
  log(`nats-server ${natsMany.url} (pid ${natsMany.proc.pid}) for the ${many}-range cluster`);
  const one = new Cluster(nats, rangesNodeArgs);
  const split = new Cluster(natsMany, rangesNodeArgs);
  let failed = false;
  try {
    for (const c of [one, split]) {
      await c.start();
      await c.prepare();
    }
    if (!rangesAa) {
      const o = await presplit(split, many, splitPoints(keyspace, many), new Set());
      if (o.made.length + 1 !== many) {
        throw new Error(`the pre-split made ${o.made.length + 1} ranges, not ${many}`);
      }
    }
    const inflight = inflights[inflights.length - 1]!;
    const pair: [Cluster, number][] = [
      [one, 1],
      [split, many],
    ];
    for (let k = 2; k <= rangesRepeat; k++) {
      const order = k % 2 === 0 ? [...pair].reverse() : pair;
      for (const op of workloads) {
        for (const [c, n] of order) {
          const aa = rangesAa && c === split;
          log(
            `rasputin: ${op}#${k}, ${inflight} in flight, ${aa ? '1 range (A/A)' : `${n} ranges`}`,
          );
          const row = await rangesLoad(c, op, inflight, aa ? 1 : n, `${op}#${k}`);
          if (aa) {
            row.aa = true;
            row.note = `A/A (--ranges-aa): in the ${n}-range side's place, a cluster not split`;
          }
          addRow(row);
        }
      }
    }
    if (rangesSlices > 0) {
      for (const op of workloads) {
        await pinned(rangesPin, [...one.watch, ...split.watch], () =>
          interleavedPair(one, split, many, op, inflight),
        );
      }
    }
  } catch (err) {
    failed = true;
    throw err;
  } finally {
    await Promise.all([one.stop(failed), split.stop(failed)]);
    await natsMany.proc.stop();
  }
}

/** Per workload: the interleaved pair's ratio (many ranges against 1) and each slice pair's. */
const interleaved = new Map<string, { ratio: number; slices: number[] }>();

/**
 * --ranges-slices: `op` on both clusters of rangesPairs in alternating slices (--slice-s
 * measured after --slice-warmup-s each, --slice-gap-s apart; the first cluster of each
 * slice pair alternates), each from a load process of its own that idles while the other
 * cluster is loaded, so that a drift of the machine over seconds weighs on both sides
 * alike. Rows `<op>~` hold each side's slices summed; the ratio is of their throughputs.
 * Not what the target reads: slices read lower for 256 ranges than sequential pairs did
 * (see the header).
 */
async function interleavedPair(
  one: Cluster,
  split: Cluster,
  many: number,
  op: LoadConfig['op'],
  inflight: number,
): Promise<void> {
  log(
    `rasputin: ${op}, ${inflight} in flight, 1 against ${many} ranges in ${rangesSlices} ` +
      `alternating slices of ${sliceWarmupS} + ${sliceS} s, ${sliceGapS} s apart`,
  );
  const sides = [
    { c: one, n: 1 },
    { c: split, n: many },
  ].map(({ c, n }) => {
    const cfg: LoadConfig = {
      ...rangesLoadConfig(c, op, inflight, n),
      warmupS: sliceWarmupS,
      durationS: sliceS,
      slices: rangesSlices,
    };
    const proc = forkTs(`load ${op} c${inflight} ${n}r`, 'load.ts', {
      BENCH_LOAD: JSON.stringify(cfg),
    });
    return {
      c,
      n,
      proc,
      inbox: new Inbox(proc),
      slices: [] as LoadResult[],
      total: undefined as Sample | undefined,
    };
  });
  const watchdog = setInterval(() => {
    try {
      checkAlive([...one.watch, ...split.watch]);
    } catch (err) {
      for (const side of sides) side.inbox.fail(err as Error);
    }
  }, 200);
  try {
    for (const side of sides) await side.inbox.next('ready');
    for (let k = 0; k < rangesSlices; k++) {
      for (const side of k % 2 === 0 ? sides : [...sides].reverse()) {
        side.proc.child.send({ type: 'go' });
        await side.inbox.next('window');
        const s0 = await sample(side.c.probe);
        await side.inbox.next('window');
        const s1 = await sample(side.c.probe);
        side.slices.push((await side.inbox.next('slice')).result);
        side.total = addDelta(side.total, s0, s1);
        // The cluster's tail (applies, compactions, ranges going quiescent) ends before the
        // other cluster's slice starts.
        await sleep(sliceGapS * 1000);
      }
    }
    const rates: number[] = [];
    for (const side of sides) {
      const m = await side.inbox.next('result');
      const zero = zeroLike(side.total!);
      const row = toRow('rasputin', `${op}~`, inflight, m.result, zero, side.total, side.n);
      row.note = `${rangesSlices} slices of ${sliceS} s, alternated with the other cluster`;
      addRow(row);
      rates.push(row.ops_per_s);
    }
    const perSlice = (side: (typeof sides)[number], k: number) =>
      side.slices[k]!.ops / side.slices[k]!.elapsedS;
    const slices = sides[0]!.slices.map((_, k) => perSlice(sides[1]!, k) / perSlice(sides[0]!, k));
    const ratio = rates[1]! / rates[0]!;
    interleaved.set(op, { ratio, slices });
    log(
      `rasputin: ${op} interleaved, ${many} ranges against 1: ${ratio.toFixed(2)}x ` +
        `(slice pairs ${slices.map((x) => x.toFixed(2)).join(', ')})`,
    );
  } finally {
    clearInterval(watchdog);
    await Promise.all(sides.map((s) => s.proc.stop()));
  }
}

/** The messages of a load child, in order; `next(type)` takes the next one (of that type). */
class Inbox {
  private readonly queue: LoadMessage[] = [];
  private waiter: (() => void) | undefined;
  private failed: Error | undefined;
  constructor(private readonly proc: Proc) {
    proc.child.on('message', (m: LoadMessage) => {
      if (m.type === 'error') this.fail(new Error(m.message));
      else this.queue.push(m);
      this.waiter?.();
    });
    void proc.exited.then((e) => {
      if (this.queue.some((m) => m.type === 'result')) return;
      this.fail(new Error(`load process exited (code ${e.code}, signal ${e.signal}) early`));
    });
  }

  fail(err: Error): void {
    this.failed ??= err;
    this.waiter?.();
  }

  async next<T extends LoadMessage['type']>(type: T): Promise<Extract<LoadMessage, { type: T }>> {
    const limit = Date.now() + 300_000 + (sliceWarmupS + sliceS + 30) * 2 * 1000;
    for (;;) {
      if (this.failed)
        throw new Error(`${this.failed.message}\n${this.proc.output.slice(-20).join('\n')}`);
      const i = this.queue.findIndex((m) => m.type === type);
      if (i >= 0) return this.queue.splice(i, 1)[0] as Extract<LoadMessage, { type: T }>;
      if (Date.now() > limit) throw new Error(`load: no ${type} message in time`);
      await new Promise<void>((resolve) => {
        this.waiter = resolve;
        setTimeout(resolve, 1000);
      });
      this.waiter = undefined;
    }
  }
}

/** `acc` plus the change from s0 to s1, field by field (numbers; arrays and objects recursively). */
function addDelta<T>(acc: T | undefined, s0: T, s1: T): T {
  if (typeof s1 === 'number') {
    return (((acc as number | undefined) ?? 0) + (s1 - (s0 as number))) as T;
  }
  // Arrays stay arrays (Sample.nodeCpus): toRow maps over them.
  if (Array.isArray(s1)) {
    const a = acc as unknown[] | undefined;
    const b = s0 as unknown[] | undefined;
    return s1.map((v, i) => addDelta(a?.[i], b?.[i], v)) as T;
  }
  if (s1 !== null && typeof s1 === 'object') {
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(s1)) {
      const a = (acc as Record<string, unknown> | undefined)?.[k];
      const b = (s0 as Record<string, unknown> | undefined)?.[k];
      out[k] = addDelta(a, b, v);
    }
    return out as T;
  }
  return s1;
}

/** A value shaped like `x` with every number 0 (the start of addDelta's totals). */
function zeroLike<T>(x: T): T {
  if (typeof x === 'number') return 0 as T;
  if (Array.isArray(x)) return x.map(zeroLike) as T;
  if (x !== null && typeof x === 'object') {
    return Object.fromEntries(Object.entries(x).map(([k, v]) => [k, zeroLike(v)])) as T;
  }
  return x;
}

/**
 * The throughput ratios of `op`, `many` ranges against 1 (missing pairs left out): in
 * `target` the plan's pair and each --ranges-repeat pair; with --ranges-aa the repeated
 * pairs are A/A (their A/A row against their 1-range row) and go to `aa` instead.
 */
function rangesRatios(op: string, many: number): { target: number[]; aa: number[] } {
  const out = { target: [] as number[], aa: [] as number[] };
  for (let k = 1; k <= rangesRepeat; k++) {
    const name = k === 1 ? op : `${op}#${k}`;
    const aa = rangesAa && k > 1;
    const r = aa ? rangesRow(name, 1, true) : rangesRow(name, many);
    const one = rangesRow(name, 1);
    if (r && one && one.ops_per_s > 0) (aa ? out.aa : out.target).push(r.ops_per_s / one.ops_per_s);
  }
  return out;
}

// -------------------------------------------------------------------- streams

/** The put load's keys (keyName('p', i)): what the subscribers subscribe to. */
const streamPrefix = 'p_';
const streamInflight = 64;
/** A subscriber process has this long to start its subscriptions (tsx start included). */
const subscribersReadyMs = 90_000;
/** Lag samples a subscriber process keeps at most (subscriptions and watchers each). */
const lagSamplesMax = 200_000;

/** `n` split over `parts` as evenly as can be. */
const shares = (n: number, parts: number): number[] =>
  Array.from({ length: parts }, (_, i) => Math.floor(n / parts) + (i < n % parts ? 1 : 0));

/** The subscriber processes of one streams row (test/bench/streams.ts), stopped by PID. */
class Subscribers {
  readonly procs: Proc[] = [];
  private readonly results: Promise<StreamsResult>[] = [];

  private constructor(
    readonly subscribers: number,
    readonly watchers: number,
  ) {}

  /** Forks the processes and waits until every subscription and watcher is live. */
  static async start(
    nats: MonitoredNats,
    subscribers: number,
    watchers: number,
    watch: readonly Proc[],
  ): Promise<Subscribers> {
    const s = new Subscribers(subscribers, watchers);
    const n = Math.max(1, Math.min(streamProcs, Math.max(subscribers, watchers)));
    const subShares = shares(subscribers, n);
    const watchShares = shares(watchers, n);
    const readies: Promise<void>[] = [];
    let failure: Error | undefined;
    try {
      for (let i = 0; i < n; i++) {
        const cfg: StreamsConfig = {
          servers: nats.url,
          prefix: streamPrefix,
          proc: i,
          subscribers: subShares[i]!,
          watchers: watchShares[i]!,
          // One process probes (its subscriptions and watchers give the lag samples): the
          // probe writes stay few next to the load's.
          probeEveryMs: i === 0 ? streamProbeMs : 0,
          probesMax: Math.min(5000, Math.ceil((durationS * 1000) / Math.max(1, streamProbeMs))),
          lagSamplesMax,
          hardLimitMs: (warmupS + durationS + streamDrainS + 240) * 1000 + subscribersReadyMs,
        };
        const p = forkTs(`subscribers ${i}`, 'streams.ts', { BENCH_STREAMS: JSON.stringify(cfg) });
        s.procs.push(p);
        let ready: (() => void) | undefined;
        let settle: ((r: StreamsResult | Error) => void) | undefined;
        const failed = (e: Error) => {
          failure ??= e;
          settle?.(e);
          ready?.();
        };
        readies.push(new Promise<void>((resolve) => (ready = resolve)));
        const outcome = new Promise<StreamsResult | Error>((resolve) => (settle = resolve));
        p.child.on('message', (m: StreamsMessage) => {
          if (m.type === 'ready') ready?.();
          else if (m.type === 'result') settle?.(m.result);
          else if (m.type === 'error') failed(new Error(`subscribers ${i}: ${m.message}`));
        });
        void p.exited.then((e) =>
          failed(
            new Error(
              `subscribers ${i} exited (code ${e.code}, signal ${e.signal}):\n` +
                p.output.slice(-15).join('\n'),
            ),
          ),
        );
        s.results.push(
          outcome.then((r) => {
            if (r instanceof Error) throw r;
            return r;
          }),
        );
        s.results[i]!.catch(() => undefined);
      }
      const t0 = performance.now();
      const all = Promise.all(readies);
      while (!(await within(all, 200))) {
        checkAlive(watch);
        if (performance.now() - t0 > subscribersReadyMs) {
          throw new Error(`subscriber processes not ready in ${subscribersReadyMs} ms`);
        }
      }
      // A process that failed to start made its ready resolve too.
      if (failure) throw failure;
      checkAlive(s.procs);
      return s;
    } catch (err) {
      await s.stop();
      throw err;
    }
  }

  /** Relays the load's window edges. */
  window(phase: 'start' | 'end'): void {
    const m: StreamsCommand = { type: 'window', phase };
    this.tell(m);
  }

  private tell(m: StreamsCommand): void {
    for (const p of this.procs) {
      if (p.running() && p.child.connected) p.child.send(m, undefined, {}, () => undefined);
    }
  }

  /** The load acknowledged `expect` writes: each process waits for them, then reports. */
  async drain(expect: number): Promise<StreamsResult[]> {
    const m: StreamsCommand = { type: 'drain', expect, maxMs: streamDrainS * 1000 };
    this.tell(m);
    const all = Promise.all(this.results);
    if (!(await within(all, streamDrainS * 1000 + 20_000))) {
      throw new Error('subscriber processes did not report after the drain');
    }
    return all;
  }

  async stop(): Promise<void> {
    await Promise.all(this.procs.map((p) => p.stop().catch(() => undefined)));
  }
}

const sortedOf = (xs: readonly number[]) => Float64Array.from(xs).sort();

/** The subscribers' figures on a streams row. */
function addStreamFields(row: Row, s: Subscribers, rs: StreamsResult[], expected: number): void {
  const windowS = Math.max(...rs.map((r) => r.windowS));
  const subTotals = rs.flatMap((r) => r.subTotals);
  const watchTotals = rs.flatMap((r) => r.watchTotals);
  const subWindow = rs.reduce((n, r) => n + r.subWindowEvents, 0);
  const watchWindow = rs.reduce((n, r) => n + r.watchWindowEvents, 0);
  const lag = sortedOf(rs.flatMap((r) => r.subLagMs));
  const watchLag = sortedOf(rs.flatMap((r) => r.watchLagMs));
  const rate = (events: number, per: number) =>
    windowS > 0 && per > 0 ? events / windowS / per : Number.NaN;
  const perSub = rate(subWindow, s.subscribers);
  const perWatcher = rate(watchWindow, s.watchers);
  const drains = rs.map((r) => r.drainMs);
  const firstErr = rs.find((r) => r.firstErr)?.firstErr;
  Object.assign(row, {
    subscribers: s.subscribers,
    watchers: s.watchers,
    sub_procs: s.procs.length,
    events_per_s: fixed(rate(subWindow, 1), 1),
    events_per_sub_per_s: fixed(perSub, 1),
    events_kept_up: fixed(perSub / row.ops_per_s, 3),
    ...(s.watchers > 0
      ? {
          watch_events_per_watcher_per_s: fixed(perWatcher, 1),
          watch_kept_up: fixed(perWatcher / row.ops_per_s, 3),
          watch_lag_p50_ms: fixed(pct(watchLag, 0.5), 2),
          watch_lag_p99_ms: fixed(pct(watchLag, 0.99), 2),
          watch_lag_samples: watchLag.length,
          watch_events_min: Math.min(...watchTotals),
          watch_events_max: Math.max(...watchTotals),
        }
      : {}),
    lag_p50_ms: fixed(pct(lag, 0.5), 2),
    lag_p99_ms: fixed(pct(lag, 0.99), 2),
    lag_max_ms: fixed(pct(lag, 1), 2),
    lag_samples: lag.length,
    expected_events: expected,
    sub_events_min: Math.min(...subTotals),
    sub_events_max: Math.max(...subTotals),
    drain_ms: drains.some((d) => d === null) ? null : fixed(Math.max(...(drains as number[])), 0),
    sub_errors: rs.reduce((n, r) => n + r.subErrors, 0),
  });
  const notes = [
    `${s.subscribers} subscription(s)${s.watchers > 0 ? ` + ${s.watchers} watchers` : ''} in ` +
      `${s.procs.length} process(es); each subscription got ${row.sub_events_min}..` +
      `${row.sub_events_max} of the ${expected} acknowledged writes` +
      (row.drain_ms === null
        ? ` (still behind ${streamDrainS} s after the window)`
        : ` (all of them ${((row.drain_ms ?? 0) / 1000).toFixed(2)} s after the window)`),
  ];
  if (s.watchers > 0) {
    notes.push(
      `each watcher got ${row.watch_events_min}..${row.watch_events_max} (at most once: ` +
        'a slow consumer loses notifications)',
    );
  }
  const probes = rs.reduce((n, r) => n + r.probes, 0);
  notes.push(`lag from ${probes} probe writes (one process, one per ${streamProbeMs} ms)`);
  if (firstErr) notes.push(`subscriber error: ${firstErr}`);
  row.note = notes.join('; ');
}

/** One streams row: a put load at 64 in flight on `c`, with subscribers and watchers. */
async function streamsRow(
  c: Cluster,
  workload: string,
  subscribers: number,
  watchers: number,
): Promise<Row> {
  log(
    `streams: ${workload}: put, ${streamInflight} in flight` +
      (subscribers + watchers > 0
        ? `, ${subscribers} subscribers and ${watchers} watchers of ${streamPrefix}`
        : ''),
  );
  let subs: Subscribers | undefined;
  try {
    // Every row, the baselines too, has the subscriber process that writes the lag probes
    // (a few writes a second of their own, each a commit of its own on every node: with
    // them in the subscriber rows only, they cost those rows 3-4% more fsyncs per write).
    subs = await Subscribers.start(c.nats, subscribers, watchers, c.watch);
    const cfg: LoadConfig = {
      ...baseConfig(c.nats),
      mode: 'rasputin',
      op: 'put',
      inflight: streamInflight,
    };
    const probe: Probe = { ...c.probe, clientPids: subs?.procs.map((p) => p.pid) ?? [] };
    const { result, s0, s1 } = await runLoad(
      cfg,
      probe,
      [...c.watch, ...(subs?.procs ?? [])],
      (phase) => subs?.window(phase),
    );
    const row = toRow('rasputin', workload, streamInflight, result, s0, s1, 1);
    const expected = result.okTotal ?? result.ops;
    const drained = await subs.drain(expected);
    if (subscribers + watchers > 0) addStreamFields(row, subs, drained, expected);
    return row;
  } finally {
    await subs?.stop();
  }
}

const loadAverage = () => {
  try {
    return readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ');
  } catch {
    return '?';
  }
};

/**
 * Write throughput with nodes --watch off (the baseline) and on, then with subscribers
 * and watchers of the put load's prefix, on fresh clusters; events per second delivered,
 * lag, and ratios to the baseline.
 */
async function streams(nats: MonitoredNats): Promise<void> {
  log(
    `streams: put ${streamInflight} in flight on ${streamPrefix}; ${streamSubs} subscribers, ` +
      `${streamWatchers} watchers in up to ${streamProcs} processes; load average ` +
      `${loadAverage()}`,
  );
  if (streamPin) {
    log(
      `streams: servers (nats-server, nodes) pinned to CPUs ${streamPin.servers}, clients ` +
        `(this process, load, subscribers) to ${streamPin.clients} (--stream-pin off: shared)`,
    );
  }
  try {
    // The servers are pinned as streamsRows starts them (their PIDs change on restarts).
    await pinned(streamPin, [], () => streamsRows(nats));
  } finally {
    if (streamPin && nats.proc.child.exitCode === null) {
      pinPid(nats.proc.pid, undefined, cpuCount);
    }
  }
  log(`streams: done; load average ${loadAverage()}`);
}

/**
 * The streams rows, on ONE cluster whose nodes are restarted with --watch off or on
 * between rows as the plan needs (same data, same nats-server), each restart followed by
 * restartWarmS of puts: put-watchoff first and last, the watch-on rows in between. The
 * ratios are against the mean of the two watch-off rows. (Two clusters, one per setting,
 * differed by 5-10% from one another on this machine, and the one filled second ran
 * faster in 7 of 8 runs whichever setting it had: a bias of the size of the target.)
 */
async function streamsRows(nats: MonitoredNats): Promise<void> {
  const subsName = (n: number) => (n === 1 ? 'put+1sub' : `put+${n}subs`);
  type Run = [StreamRow, 'off' | 'on', string, number, number];
  const plan: Run[] = [
    ['off', 'off', 'put-watchoff', 0, 0],
    ['on', 'on', 'put-watchon', 0, 0],
    ['1sub', 'on', subsName(1), 1, 0],
    ...(streamSubs > 1 ? [['subs', 'on', subsName(streamSubs), streamSubs, 0] as Run] : []),
    ...(streamWatchers > 0
      ? [
          [
            'watch',
            'on',
            `${subsName(streamSubs)}+${streamWatchers}watch`,
            streamSubs,
            streamWatchers,
          ] as Run,
        ]
      : []),
    ['again', 'on', 'put-watchon-again', 0, 0],
    ['offagain', 'off', 'put-watchoff-again', 0, 0],
  ];
  const runs = plan.filter(([name]) => streamRowsWanted.has(name));
  // --stream-repeat: the heaviest row and the baseline again, alternated.
  const heavyRun = [...runs]
    .filter(([, , , subscribers]) => subscribers > 0)
    .sort((x, y) => y[3] - x[3] || y[4] - x[4])[0];
  for (let k = 2; k <= streamRepeat && heavyRun !== undefined; k++) {
    const [name, w, workload, subscribers, watchers] = heavyRun;
    runs.push([name, w, `${workload}#${k}`, subscribers, watchers]);
    runs.push(['offagain', 'off', `put-watchoff#${k}`, 0, 0]);
  }
  if (runs.length === 0) return;
  let watch = runs[0]![1];
  const cluster = new Cluster(nats, ['--watch', watch]);
  const pin = () => {
    if (streamPin) for (const p of cluster.watch) pinPid(p.pid, streamPin.servers, cpuCount);
  };
  let failed = false;
  const done: Row[] = [];
  try {
    await cluster.start();
    pin();
    await cluster.prepare();
    for (const [, w, workload, subscribers, watchers] of runs) {
      if (w !== watch) {
        watch = w;
        log(`streams: restarting the nodes with --watch ${watch}`);
        await cluster.restart(['--watch', watch]);
        pin();
        await cluster.warm(restartWarmS);
      }
      done.push(await streamsRow(cluster, workload, subscribers, watchers));
    }
  } catch (err) {
    failed = true;
    throw err;
  } finally {
    await cluster.stop(failed);
  }
  const base = done.filter((r) => r.workload.startsWith('put-watchoff'));
  // Rows with subscribers also against the watch-on rows: that leaves out the cost of
  // publishing watch notifications no one listens to, and the restarts between them.
  const on = done.filter((r) => r.workload.startsWith('put-watchon'));
  const mean = (rows: readonly Row[], f: (r: Row) => number) =>
    rows.length === 0 ? Number.NaN : rows.reduce((sum, r) => sum + f(r), 0) / rows.length;
  const cpu = (r: Row) => r.server_cpu_us_per_op ?? Number.NaN;
  const baseOps = mean(base, (r) => r.ops_per_s);
  const baseP99 = mean(base, (r) => r.p99_ms);
  const baseCpu = mean(base, cpu);
  const onOps = mean(on, (r) => r.ops_per_s);
  const onCpu = mean(on, cpu);
  for (const r of done) {
    if (on.length > 0 && (r.subscribers ?? 0) > 0) {
      r.ops_ratio_watchon = fixed(r.ops_per_s / onOps, 3);
      r.server_cpu_ratio_watchon = fixed(cpu(r) / onCpu, 3);
    }
    if (base.length > 0) {
      r.baseline_ops_per_s = fixed(baseOps, 0);
      r.baseline_p99_ms = fixed(baseP99, 2);
      r.ops_ratio = fixed(r.ops_per_s / baseOps, 3);
      r.p99_ratio = fixed(r.p99_ms / baseP99, 3);
      r.server_cpu_ratio = fixed(cpu(r) / baseCpu, 3);
    }
    streamRows.push(r);
    addRow(r);
  }
}

const streamRows: Row[] = [];

/** A run of pairs' ratios, each, then how sure the run is (spreadOf). */
function eachPair(ratios: readonly number[]): string {
  return `each pair: ${ratios.map((x) => x.toFixed(2)).join(', ')}x; ${spreadOf(ratios)}`;
}

/**
 * How sure a run of pairs is: the geometric mean of the ratios and its standard error,
 * as the interval one standard error either side (from the logarithms' spread; 2 or more
 * ratios; what that is worth on this machine: --ranges-repeat in the header).
 */
function spreadOf(ratios: readonly number[]): string {
  const logs = ratios.filter((x) => x > 0 && Number.isFinite(x)).map(Math.log);
  const n = logs.length;
  if (n < 2) return 'spread: too few pairs';
  const mean = logs.reduce((x, y) => x + y, 0) / n;
  const sd = Math.sqrt(logs.reduce((x, y) => x + (y - mean) ** 2, 0) / (n - 1));
  const se = sd / Math.sqrt(n);
  return (
    `geometric mean ${Math.exp(mean).toFixed(2)}x, one standard error ` +
    `${Math.exp(mean - se).toFixed(2)}-${Math.exp(mean + se).toFixed(2)}x`
  );
}

/** The median of the finite values of `xs`; undefined when there are none. */
function median(xs: readonly number[]): number | undefined {
  const v = xs.filter(Number.isFinite).sort((x, y) => x - y);
  if (v.length === 0) return undefined;
  const mid = v.length >> 1;
  return v.length % 2 === 1 ? v[mid] : (v[mid - 1]! + v[mid]!) / 2;
}

/** Text mode: events delivered, lag, and each row against put-watchoff. */
function streamsSummary(): void {
  if (json || streamRows.length === 0) return;
  out(
    [
      `\nstreams: put at ${streamInflight} in flight on ${streamPrefix}; xOps, xP99, xSrv ` +
        '(server CPU per write): against the mean',
      'of the put-watchoff rows (nodes --watch off, no subscribers); subUs: CPU of the subscriber processes per write ' +
        '(same machine);',
      'nReq: requests the nodes got per write (load batches, subscribe polls); turns: node ' +
        'turns per write;',
      "ev/s: events of the load's keys received in the window, over all subscriptions and per " +
        'subscription;',
      'kept: per subscription over the writes/s; lag50/99: probe writes, event arrival minus ' +
        'write ack (ms);',
      'drain: s after the window until every subscription had every acknowledged write ("-": ' +
        `not in ${streamDrainS} s);`,
      'wKept, wLag99: the same for watchers (at most once); bg%: CPU of other work on the ' +
        'machine (1 core = 100)',
    ].join('\n'),
  );
  const cols: [string, number, (r: Row) => string][] = [
    ['workload', 22, (r) => r.workload],
    ['subs', 5, (r) => num(r.subscribers ?? 0, 0, 0)],
    ['wat', 4, (r) => num(r.watchers ?? 0, 0, 0)],
    ['ops/s', 7, (r) => num(r.ops_per_s, 0, 0)],
    ['xOps', 5, (r) => num(r.ops_ratio, 2, 0)],
    ['p99ms', 6, (r) => num(r.p99_ms, 1, 0)],
    ['xP99', 5, (r) => num(r.p99_ratio, 2, 0)],
    ['srvUs', 6, (r) => num(r.server_cpu_us_per_op, 0, 0)],
    ['xSrv', 5, (r) => num(r.server_cpu_ratio, 2, 0)],
    ['nodes', 6, (r) => num(r.server_cpu_nodes_us_per_op, 0, 0)],
    ['nats', 5, (r) => num(r.server_cpu_nats_us_per_op, 0, 0)],
    ['subUs', 6, (r) => num(r.sub_cpu_us_per_op, 0, 0)],
    ['msgOut', 7, (r) => num(r.nats_out_msgs_per_op, 2, 0)],
    ['nReq', 5, (r) => num(r.node_requests_per_op, 2, 0)],
    ['turns', 5, (r) => num(r.turns_per_op, 2, 0)],
    ['ev/s', 8, (r) => num(r.events_per_s, 0, 0)],
    ['ev/s/sub', 8, (r) => num(r.events_per_sub_per_s, 0, 0)],
    ['kept', 5, (r) => num(r.events_kept_up, 2, 0)],
    ['lag50', 6, (r) => num(r.lag_p50_ms, 1, 0)],
    ['lag99', 6, (r) => num(r.lag_p99_ms, 1, 0)],
    [
      'drain',
      6,
      (r) => (r.subscribers ? num(r.drain_ms == null ? null : r.drain_ms / 1000, 1, 0) : '-'),
    ],
    ['wKept', 5, (r) => num(r.watch_kept_up, 2, 0)],
    ['wLag99', 6, (r) => num(r.watch_lag_p99_ms, 1, 0)],
    ['bg%', 4, (r) => num(r.other_cpu_pct, 0, 0)],
  ];
  out(cols.map(([t, w], i) => (i === 0 ? t.padEnd(w) : t.padStart(w))).join(' '));
  for (const r of streamRows) {
    out(cols.map(([, w, f], i) => (i === 0 ? f(r).padEnd(w) : f(r).padStart(w))).join(' '));
  }
}

async function consensus(): Promise<void> {
  log('consensus: in-process consensus benchmark (test/bench/consensus.ts)');
  const args = [
    '--import',
    'tsx',
    join(repoRoot, 'test/bench/consensus.ts'),
    ...(json ? ['--json'] : []),
    ...(a.batches ? ['--batches', a.batches] : []),
    ...(a['batch-size'] ? ['--batch-size', a['batch-size']] : []),
  ];
  const r = await runToEnd('consensus', process.execPath, args, { timeoutMs: 600_000 });
  for (const line of r.stdout) out(line);
  if (r.code !== 0) {
    throw new Error(`consensus benchmark failed (code ${r.code}):\n${r.stderr.join('\n')}`);
  }
}

async function peers(): Promise<PeerRow[]> {
  const dir = a['peers-dir'];
  const problem = peersSetupProblem(dir);
  if (problem) {
    log(`peers skipped: ${problem}\n${peersSetupHelp(dir)}`);
    problems.push(`peers skipped (${problem})`);
    return [];
  }
  const { rows: peerRows, notes } = await runPeers({
    dir,
    workloads,
    inflights: peerInflights,
    durationS,
    warmupS,
    keyspace,
    log,
    onRow: (r) => {
      const row: Row = { ...r };
      if (r.workload === 'fill') {
        log(`${r.system}: filled at ${r.ops_per_s} puts/s`);
        return;
      }
      addRow(row);
    },
  });
  for (const note of notes) {
    log(note);
    problems.push(note);
  }
  return peerRows;
}

// -------------------------------------------------------------------- many-ranges summary

const num = (x: number | null | undefined, digits: number, width: number) =>
  cell(x ?? null, digits, width);
const perNode = (xs: readonly (number | null)[] | undefined, digits: number, scale = 1) =>
  xs ? xs.map((x) => (x === null ? '-' : (x / scale).toFixed(digits))).join('/') : '-';

/**
 * The throughput row of `op` at `ranges` (the largest --inflight); `aa`: the A/A row
 * (--ranges-aa), which is otherwise passed over.
 */
function rangesRow(op: string, ranges: number, aa = false): Row | undefined {
  const inflight = inflights[inflights.length - 1];
  return rows.find(
    (r) =>
      r.system === 'rasputin' &&
      r.workload === op &&
      r.inflight === inflight &&
      r.ranges === ranges &&
      (r.aa ?? false) === aa,
  );
}

/** Text mode: the pre-splits, throughput against 1 range, idle CPU and memory. */
function rangesSummary(): void {
  if (!rangesList || json) return;
  const inflight = inflights[inflights.length - 1];
  out(
    `\nmany ranges: pre-split, and throughput at ${inflight} in flight against 1 range ` +
      '(x1r); split keys at the N-quantiles of the k_/p_ key names, so puts use the p_ half ' +
      'of the ranges and gets the k_ half',
  );
  out(
    `${'ranges'.padStart(7)}${'made'.padStart(7)}${'split_s'.padStart(9)}${'ms/split'.padStart(9)}` +
      `${'p50ms'.padStart(8)}${'maxms'.padStart(9)}${'fail'.padStart(5)}` +
      `${'bal_s'.padStart(7)}${'leaders'.padStart(16)}  ` +
      workloads
        .map(
          (op) =>
            `${`${op} ops/s`.padStart(11)}${'p99ms'.padStart(8)}${'x1r'.padStart(6)}` +
            `${'cache'.padStart(7)}`,
        )
        .join(''),
  );
  for (const n of rangesList) {
    const pre = presplitRows.find((r) => r.ranges === n);
    const cols = workloads.map((op) => {
      const r = rangesRow(op, n);
      const one = rangesRow(op, 1);
      const ratio = r && one ? r.ops_per_s / one.ops_per_s : null;
      return (
        num(r?.ops_per_s, 0, 11) +
        num(r?.p99_ms, 2, 8) +
        num(ratio, 2, 6) +
        num(r?.cached_ranges, 0, 7)
      );
    });
    out(
      `${String(n).padStart(7)}${num(pre?.ranges_made ?? n, 0, 7)}${num(pre?.elapsed_s, 1, 9)}` +
        `${num(pre?.ms_per_split, 2, 9)}${num(pre?.split_p50_ms, 1, 8)}` +
        `${num(pre?.split_max_ms, 1, 9)}${num(pre?.splits_failed, 0, 5)}` +
        `${num(pre?.balance_s, 1, 7)}${(pre?.node_leaders.join('/') ?? '-').padStart(16)}  ` +
        cols.join(''),
    );
  }
  const many = presplitRows.find((r) => r.ranges === idleRanges && !rangesList.includes(r.ranges));
  if (many) {
    out(
      `  empty cluster to ${idleRanges} ranges: ${many.ranges_made} made (directory ` +
        `${many.ranges_directory ?? '?'}) in ${many.elapsed_s} s: ${many.ms_per_split ?? '-'} ms ` +
        `per split (${many.inflight} in flight), each p50 ${many.split_p50_ms ?? '-'} / p99 ` +
        `${many.split_p99_ms ?? '-'} / max ${many.split_max_ms ?? '-'} ms; ` +
        `${many.splits_failed} failed, ${many.splits_skipped} not started (time bound)`,
    );
  }
  if (idleRows.length === 0) return;
  out(
    `\nidle: ${idleS} s without client load; per node (${nodeIds.join('/')}): CPU in % of one ` +
      "core, RSS and RssAnon in MiB (medians of the window's samples), KiB per extra range " +
      'against 1 range of the same cluster',
  );
  const idleColumns: [string, number, (r: IdleRow) => string][] = [
    ['cluster', 7, (r) => r.cluster],
    ['ranges', 6, (r) => String(r.ranges_made)],
    ['hosted', 14, (r) => perNode(r.node_ranges, 0)],
    ['leaders', 14, leadersShown],
    ['meta', 4, (r) => r.meta_leader ?? '?'],
    ['cpu%', 14, (r) => perNode(r.node_cpu_pct, 1)],
    ['nats%', 5, (r) => num(r.nats_cpu_pct, 1, 0)],
    ['msg/s', 6, (r) => num(r.nats_in_msgs_per_s, 0, 0)],
    ['turn/s', 6, (r) => num(r.turns_per_s, 0, 0)],
    ['xst/s', 6, (r) => num(r.xstate_events_per_s, 0, 0)],
    ['rssMiB', 12, (r) => perNode(r.node_rss_kib, 0, 1024)],
    ['anonMiB', 12, (r) => perNode(r.node_rss_anon_kib, 0, 1024)],
    ['KiB/range', 18, (r) => perNode(r.kib_per_range, 1)],
    ['anonKiB/range', 18, (r) => perNode(r.anon_kib_per_range, 1)],
    ['us/s/range', 16, (r) => perNode(r.cpu_us_per_extra_range_per_s, 1)],
  ];
  out(idleColumns.map(([title, width]) => title.padStart(width)).join(' '));
  for (const r of idleRows) {
    out(idleColumns.map(([, width, f]) => f(r).padStart(width)).join(' '));
    if (r.note) out(`    note: ${r.note}`);
  }
  out(
    '  (per range: against the 1-range row of the same cluster kind; on the data cluster the\n' +
      "  loads in between grow the nodes' heaps, so only large range counts say much)",
  );
}

// -------------------------------------------------------------------- targets

function targets(peerRows: PeerRow[]): void {
  const ours = (op: string, inflight: number) =>
    rows.find((r) => r.system === 'rasputin' && r.workload === op && r.inflight === inflight);
  const peer = (system: string, op: string) =>
    peerRows.find((r) => r.system === system && r.workload === op && r.inflight === 64);
  const lines: string[] = [];
  const results: Record<string, unknown>[] = [];
  const check = (name: string, value: number | undefined, unit: string, ok: boolean | null) => {
    const shown = value === undefined || !Number.isFinite(value) ? 'n/a' : value.toFixed(2) + unit;
    const verdict = ok === null ? 'n/a' : ok ? 'met' : 'MISSED';
    lines.push(`  ${name.padEnd(44)} ${shown.padStart(10)}  ${verdict}`);
    results.push({ target: name, value: fixed(value, 3), met: ok });
  };
  const kv = sections.has('rasputin') || sections.has('peers');
  const ratioTargets: [Op, number][] = [
    ['put', 1.5],
    ['get', 3],
    ['cas', 1.5],
  ];
  for (const [op, want] of kv ? ratioTargets : []) {
    const r = ours(op, 64);
    const p = peer('nats-kv-r3', op);
    const ratio = r && p ? r.ops_per_s / p.ops_per_s : undefined;
    check(
      `${op} ops/s >= ${want}x NATS KV R3 (64 in flight)`,
      ratio,
      'x',
      ratio === undefined || !Number.isFinite(ratio) ? null : ratio >= want,
    );
  }
  if (kv) {
    const put64 = ours('put', 64);
    check(
      'put p99 <= 15 ms (64 in flight)',
      put64?.p99_ms,
      ' ms',
      put64 ? put64.p99_ms <= 15 : null,
    );
    const put1 = ours('put', 1);
    check('put p50 <= 1.5 ms (1 in flight)', put1?.p50_ms, ' ms', put1 ? put1.p50_ms <= 1.5 : null);
  }
  // Not a target: the floors of the same run (section floor), what the put targets are
  // up against on this machine.
  for (const { system, what } of floors) {
    const floorRow = (inflight: number) =>
      rows.find((r) => r.system === system && r.inflight === inflight);
    const [floor64, floor1] = [floorRow(64), floorRow(1)];
    if (!floor64 && !floor1) continue;
    const kvPut = peer('nats-kv-r3', 'put');
    const floorRatio = floor64 && kvPut ? floor64.ops_per_s / kvPut.ops_per_s : undefined;
    const parts = [
      floor64
        ? `put ${floor64.ops_per_s.toFixed(0)}/s at 64 in flight` +
          (floorRatio === undefined ? '' : ` (${floorRatio.toFixed(2)}x NATS KV R3)`) +
          `, p99 ${floor64.p99_ms.toFixed(2)} ms`
        : undefined,
      floor1 ? `put p50 ${floor1.p50_ms.toFixed(2)} ms at 1 in flight` : undefined,
    ].filter((x) => x !== undefined);
    lines.push(
      `  (${system}, same run: ${parts.join('; ')}: ${what} in LMDB, fsynced before each ` +
        'answer, on three processes without consensus)',
    );
    results.push({
      floor: system,
      put64_ops_per_s: fixed(floor64?.ops_per_s, 1),
      put64_vs_nats_kv: fixed(floorRatio, 3),
      put64_p99_ms: fixed(floor64?.p99_ms, 3),
      put1_p50_ms: fixed(floor1?.p50_ms, 3),
    });
  }
  if (sections.has('streams')) {
    // The heaviest row: the most subscribers, with watchers if any (with --stream-repeat,
    // each of its runs; the target reads their median).
    const subsOf = (r: Row) => [r.subscribers ?? 0, r.watchers ?? 0] as const;
    const heavy = [...streamRows]
      .filter((r) => (r.subscribers ?? 0) > 0)
      .sort((x, y) => subsOf(y)[0] - subsOf(x)[0] || subsOf(y)[1] - subsOf(x)[1])[0];
    const heavies = streamRows.filter(
      (r) =>
        heavy !== undefined &&
        subsOf(r)[0] === subsOf(heavy)[0] &&
        subsOf(r)[1] === subsOf(heavy)[1],
    );
    const name = (heavy?.workload ?? 'put+subs').replace(/#\d+$/, '');
    const of = heavies.length > 1 ? ` (median of ${heavies.length})` : '';
    const ratio = median(heavies.map((r) => r.ops_ratio ?? Number.NaN));
    check(
      `${name} ops/s >= 0.9x watchoff${of}`,
      ratio,
      'x',
      ratio === undefined ? null : ratio >= 0.9,
    );
    const srv = median(heavies.map((r) => r.server_cpu_ratio ?? Number.NaN));
    check(`${name} server CPU/write <= 1.1x${of}`, srv, 'x', srv === undefined ? null : srv <= 1.1);
    if (heavies.length > 1) {
      const show = (f: (r: Row) => number | null | undefined) =>
        heavies.map((r) => (f(r) ?? Number.NaN).toFixed(2)).join(', ');
      lines.push(
        `  (${name}, each run: ${show((r) => r.ops_ratio)}x ops/s, ` +
          `${show((r) => r.server_cpu_ratio)}x server CPU/write)`,
      );
    }
    // Not a target: the same row against the watch-on rows (streamsRows).
    if (heavy?.ops_ratio_watchon != null) {
      lines.push(
        `  (${heavy.workload} against the watch-on rows: ` +
          `${heavy.ops_ratio_watchon.toFixed(2)}x ops/s, ` +
          `${(heavy.server_cpu_ratio_watchon ?? Number.NaN).toFixed(2)}x server CPU/write)`,
      );
    }
  }
  if (rangesList) {
    // Throughput with many ranges against one range: at 256 ranges, or the most measured;
    // with --ranges-repeat, the median of the pairs' ratios.
    const many = manyRanges();
    for (const op of workloads) {
      const { target: ratios, aa } =
        many === undefined ? { target: [], aa: [] } : rangesRatios(op, many);
      const sliced = interleaved.get(op);
      // The target reads the pairs, not the slices: slices read lower for 256 ranges in
      // every run so far (each slice resumes a cluster that idled; interleavedPair).
      const ratio = median(ratios);
      const of = ratios.length > 1 ? ` (median of ${ratios.length})` : '';
      check(
        `${op} ops/s at ${many ?? '-'} ranges >= 0.9x 1 range's${of}`,
        ratio,
        'x',
        ratio === undefined ? null : ratio >= 0.9,
      );
      if (ratios.length > 1) {
        lines.push(`  (${op} at ${many} ranges, ${eachPair(ratios)})`);
      }
      if (aa.length > 0) {
        lines.push(
          `  (${op}, A/A pairs of two 1-range clusters, not the target (--ranges-aa): median ` +
            `${median(aa)!.toFixed(2)}x of ${aa.length}; ${eachPair(aa)})`,
        );
      }
      if (sliced) {
        const sorted = [...sliced.slices].sort((x, y) => x - y);
        lines.push(
          `  (${op} in ${sorted.length} alternating slices, not the target: ` +
            `${sliced.ratio.toFixed(2)}x; each slice pair ${sorted[0]!.toFixed(2)}x to ` +
            `${sorted[sorted.length - 1]!.toFixed(2)}x)`,
        );
      }
    }
    const idle = idleRows.filter((r) => r.cluster === 'empty' && r.ranges_made > 1).at(-1);
    const cpu = idle?.node_cpu_pct_max ?? undefined;
    check(
      `idle CPU < 5% of a core, ${idle?.ranges_made ?? '-'} ranges (busiest)`,
      cpu,
      ' %',
      cpu === undefined ? null : cpu < 5,
    );
    const kib = idle?.kib_per_range?.reduce<number | undefined>(
      (m, x) => (x === null ? m : Math.max(m ?? x, x)),
      undefined,
    );
    check(
      `memory < 16 KiB/range (RSS, ${idle?.ranges_made ?? '-'} ranges, max)`,
      kib,
      ' KiB',
      kib === undefined ? null : kib < 16,
    );
    const marginal = idle?.marginal_kib_per_range?.reduce<number | undefined>(
      (m, x) => (x === null ? m : Math.max(m ?? x, x)),
      undefined,
    );
    if (marginal !== undefined) {
      check(
        `  the same, marginal (RSS, ${idle!.ranges_made / 10} to ${idle!.ranges_made} ranges)`,
        marginal,
        ' KiB',
        marginal < 16,
      );
    }
  }
  const info: string[] = [];
  for (const op of workloads) {
    const r = ours(op, 64);
    for (const system of ['nats-kv-r3', 'etcd-x3']) {
      const p = peer(system, op);
      if (!r || !p) continue;
      const ratio = r.ops_per_s / p.ops_per_s;
      info.push(
        `  ${op} Rasputin/${system}: ${ratio.toFixed(2)}x ` +
          `(${r.ops_per_s.toFixed(0)} vs ${p.ops_per_s.toFixed(0)} ops/s; ` +
          `p99 ${r.p99_ms.toFixed(2)} vs ${p.p99_ms.toFixed(2)} ms; ` +
          `server cpu ${r.server_cpu_us_per_op ?? '-'} vs ${p.server_cpu_us_per_op ?? '-'} us/op)`,
      );
      results.push({ ratio: `${op}/${system}`, value: fixed(ratio, 3) });
    }
  }
  if (json) {
    out(JSON.stringify({ workload: 'targets', system: 'rasputin', results }));
    return;
  }
  if (info.length > 0) {
    out('\nratios at 64 in flight, same run:');
    for (const l of info) out(l);
  }
  out('\ntargets:');
  for (const l of lines) out(l);
  if (kv && !sections.has('peers')) out('  (ratio targets need --peers)');
}

// -------------------------------------------------------------------- main

/** The commit measured, and the source files changed on top of it (read-only git). */
function sourceState(): string {
  const git = (args: string[]) =>
    spawnSync('git', ['--no-optional-locks', ...args], {
      cwd: repoRoot,
      encoding: 'utf8',
      timeout: 10_000,
    });
  const head = git(['rev-parse', '--short', 'HEAD']);
  if (head.status !== 0) return 'source: not a git checkout';
  const changed = git(['diff', '--name-only', 'HEAD', '--', 'src', 'ranges', 'placement'])
    .stdout.split('\n')
    .filter(Boolean);
  return (
    `source: ${head.stdout.trim()}` +
    (changed.length > 0 ? ` with uncommitted changes in ${changed.join(', ')}` : '')
  );
}

async function main(): Promise<number> {
  const cores = readFileSync('/proc/cpuinfo', 'utf8').match(/^processor/gm)?.length ?? 0;
  log(
    `bench: sections ${[...sections].join(', ')}; workloads ${workloads.join(',')} at ` +
      `${inflights.join(',')} in flight; warmup ${warmupS} s + ${durationS} s each; ` +
      `keyspace ${keyspace}, ${valueBytes}-byte values; ${cores} cores`,
  );
  log(sourceState());
  if (rangesList) {
    log(
      `ranges: ${rangesList.join(',')}; idle ${idleS} s; then ${splitsDuring} splits during a ` +
        `put load, and an empty cluster split to ${idleRanges} ranges (at most ${splitTimeS} s ` +
        `per pre-split, ${splitInflight} splits in flight)`,
    );
  }
  let nats: MonitoredNats | undefined;
  let peerRows: PeerRow[] = [];
  try {
    const onNats: readonly Section[] = ['ceiling', 'floor', 'rasputin', 'streams'];
    if (onNats.some((x) => sections.has(x))) {
      nats = await startNats();
      log(`nats-server ${nats.url} (pid ${nats.proc.pid}, monitoring :${nats.monitorPort})`);
    }
    for (const [name, run] of [
      ['ceiling', () => ceiling(nats!)],
      ['floor', () => floor(nats!)],
      ['rasputin', () => (rangesList ? rasputinRanges(nats!) : rasputin(nats!))],
      ['streams', () => streams(nats!)],
    ] as const) {
      if (!sections.has(name)) continue;
      try {
        await run();
      } catch (err) {
        problems.push(`${name} failed: ${(err as Error).message}`);
        log(`${name} failed: ${(err as Error).stack ?? String(err)}`);
      }
    }
  } finally {
    await nats?.proc.stop();
  }
  if (sections.has('consensus')) {
    try {
      await consensus();
    } catch (err) {
      problems.push(`consensus failed: ${(err as Error).message}`);
      log(`consensus failed: ${(err as Error).message}`);
    }
  }
  if (sections.has('peers')) peerRows = await peers();
  if (sections.has('rasputin')) rangesSummary();
  if (sections.has('streams')) streamsSummary();
  if (sections.has('rasputin') || sections.has('peers') || sections.has('streams')) {
    targets(peerRows);
  }
  if (problems.length > 0) {
    log(`\nproblems:\n${problems.map((p) => `  ${p}`).join('\n')}`);
    return problems.some((p) => p.includes('failed')) ? 1 : 0;
  }
  return 0;
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    console.error(`bench: ${(err as Error).stack ?? String(err)}`);
    process.exit(1);
  },
);
