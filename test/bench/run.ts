// `npm run bench`: Rasputin end to end on this machine, with the workload shape of the
// peers' load generator (/work/shared/peers/loadgen.mjs), so the numbers can be put side by
// side with NATS JetStream KV R3 and etcd x3 taken in the same run.
//
//   npm run bench -- [--duration S] [--warmup S] [--json] [--peers] [--only LIST]
//                    [--inflight 1,64] [--workloads put,get,cas] [--keyspace N] [--maxops N]
//                    [--peer-inflight 64] [--peers-dir /tmp/peers]
//                    [--batches N] [--batch-size N]        (for the consensus section)
//
// Sections (--only picks some, comma-separated; default all but peers, which --peers adds):
//   ceiling    bare NATS request/reply through the same nats-server and closed loop: a
//              responder process that answers at once (the harness's ceiling)
//   rasputin   nats-server (with monitoring) and a 3-node cluster in temp dirs; fill, then
//              put, get, cas at each --inflight, each from a separate load process
//   consensus  the in-process consensus benchmark (test/bench/consensus.ts)
//   peers      NATS KV R3 and etcd x3 via the peers folder; ratios and targets
//
// Per workload: ops/s, p50/p99/max latency, client and server CPU per op (server: the nodes
// and nats-server, from /proc/<pid>/stat), NATS messages per op (nats-server /varz), and
// the nodes' counters per op (`<p>.admin.status` stats: xstate events, fsyncs = store
// flushes, store commits, raft batches, node requests). `--json` prints one line per
// workload instead of tables. Every process started here is stopped by PID, also on error.

import { readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
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
  forkTs,
  type MonitoredNats,
  type Proc,
  repoRoot,
  runToEnd,
  sleep,
  startNats,
  startNode,
  type Varz,
  varz,
  within,
} from './procs.ts';
import { type LoadConfig, type LoadMessage, type LoadResult, type Op, ops } from './shape.ts';

// -------------------------------------------------------------------- options

const { values: a } = parseArgs({
  options: {
    duration: { type: 'string', default: '8' },
    warmup: { type: 'string', default: '1' },
    json: { type: 'boolean', default: false },
    peers: { type: 'boolean', default: false },
    only: { type: 'string' },
    inflight: { type: 'string', default: '1,64' },
    workloads: { type: 'string', default: 'put,get,cas' },
    keyspace: { type: 'string', default: '100000' },
    maxops: { type: 'string', default: '2000000' },
    'peer-inflight': { type: 'string', default: '64' },
    'peers-dir': { type: 'string', default: '/tmp/peers' },
    batches: { type: 'string' },
    'batch-size': { type: 'string' },
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
const list = (raw: string) =>
  raw
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);

const durationS = bounded('duration', a.duration, 0.5, 600);
const warmupS = bounded('warmup', a.warmup, 0, 60);
const keyspace = Math.round(bounded('keyspace', a.keyspace, 100, 10_000_000));
const maxOps = Math.round(bounded('maxops', a.maxops, 1, 100_000_000));
const inflights = list(a.inflight).map((x) => Math.round(bounded('inflight', x, 1, 4096)));
const peerInflights = list(a['peer-inflight']).map((x) =>
  Math.round(bounded('peer-inflight', x, 1, 4096)),
);
const workloads = list(a.workloads).map((w) => {
  if (!(ops as readonly string[]).includes(w)) throw new Error(`unknown workload ${w}`);
  return w as Op;
});
const sectionNames = ['ceiling', 'rasputin', 'consensus', 'peers'] as const;
type Section = (typeof sectionNames)[number];
const sections = new Set<Section>(
  a.only === undefined
    ? (['ceiling', 'rasputin', 'consensus', ...(a.peers ? ['peers'] : [])] as Section[])
    : list(a.only).map((s) => {
        if (!(sectionNames as readonly string[]).includes(s)) {
          throw new Error(`--only: unknown section ${s} (${sectionNames.join(', ')})`);
        }
        return s as Section;
      }),
);
if (a.peers && a.only !== undefined) sections.add('peers');
const json = a.json;
const nodeIds = ['a', 'b', 'c'];
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
  server_cpu_nats_us_per_op?: number | null;
  /** Kernel part of server_cpu_nodes_us_per_op (syscalls, fsync). */
  server_cpu_nodes_sys_us_per_op?: number | null;
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
  dropped?: number | null;
  client_requests_per_op?: number | null;
  client_retries?: number;
  setup_s?: number;
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
  "(sys): the kernel part of the nodes' CPU (syscalls, fsync);",
  'msgIn/msgOut: nats-server messages per op; xstate, fsync (store flushes), commit (store',
  'commits), batch (raft batches out): summed over the nodes, per op; req: NATS requests',
  'the client sent per op; bg%: machine CPU used by no process of the bench (1 core = 100).',
].join('\n');

function header(): string {
  const titles = columns.map(([title, width]) => title.padStart(width)).join('');
  return `${'system'.padEnd(11)}${'workload'.padEnd(14)}${'inflt'.padStart(5)}${titles}`;
}

let headerShown = false;

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
    r.system.padEnd(11) +
      r.workload.padEnd(14) +
      String(r.inflight).padStart(5) +
      columns.map(([, width, digits, f]) => cell(f(r), digits, width)).join(''),
  );
  if (r.first_err) out(`    first error: ${r.first_err}`);
  if (r.note) out(`    note: ${r.note}`);
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
];

interface StatusReply {
  node?: string;
  ranges?: { rangeId?: number; role?: string; leader?: string }[];
  stats?: Partial<Record<keyof NodeCounters, unknown>>;
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
async function clusterCounters(nc: NatsConnection): Promise<Record<keyof NodeCounters, number>> {
  const replies = await askStatus(nc, nodeIds.length, 2000);
  const sum = {} as Record<keyof NodeCounters, number>;
  for (const name of counterNames) {
    let total = replies.length === nodeIds.length ? 0 : Number.NaN;
    for (const r of replies) {
      const v = r.stats?.[name];
      total += typeof v === 'number' ? v : Number.NaN;
    }
    sum[name] = total;
  }
  return sum;
}

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
  monitorPort: number;
  /** Node counters (absent for the ceiling). */
  counters?: () => Promise<Record<keyof NodeCounters, number>>;
}

interface Sample {
  atMs: number;
  nodesCpu: number;
  /** System (kernel) part of nodesCpu: syscalls, fsync. */
  nodesSys: number;
  natsCpu: number;
  otherCpu: number;
  machineBusy: number;
  varz: Varz | undefined;
  counters: Record<keyof NodeCounters, number> | undefined;
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
  const nodes = cpuSplit(p.nodePids);
  const s = {
    atMs: performance.now(),
    nodesCpu: nodes.user + nodes.system,
    nodesSys: nodes.system,
    natsCpu: cpuSeconds(p.natsPids),
    otherCpu: cpuSeconds(p.otherPids),
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
): Promise<{ result: LoadResult; s0?: Sample; s1?: Sample }> {
  const child = forkTs(`load ${cfg.op} c${cfg.inflight}`, 'load.ts', {
    BENCH_LOAD: JSON.stringify(cfg),
  });
  let s0: Promise<Sample> | undefined;
  let s1: Promise<Sample> | undefined;
  let settle: ((r: LoadResult | Error) => void) | undefined;
  const outcome = new Promise<LoadResult | Error>((resolve) => (settle = resolve));
  child.child.on('message', (m: LoadMessage) => {
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
  withRanges: boolean,
): Row {
  const n = r.ops;
  const d = (f: (s: Sample) => number | undefined): number =>
    s0 && s1 ? (f(s1) ?? Number.NaN) - (f(s0) ?? Number.NaN) : Number.NaN;
  const c = (k: keyof NodeCounters) =>
    perOp(
      d((s) => s.counters?.[k]),
      n,
    );
  const serverCpu = d((s) => s.nodesCpu + s.natsCpu + s.otherCpu);
  const wallS = s0 && s1 ? (s1.atMs - s0.atMs) / 1000 : Number.NaN;
  const ours = r.clientCpuS + serverCpu;
  const other = wallS > 0 ? ((d((s) => s.machineBusy) - ours) / wallS) * 100 : Number.NaN;
  const nodesSys = d((s) => s.nodesSys);
  const inMsgs = d((s) => s.varz?.in_msgs);
  const outMsgs = d((s) => s.varz?.out_msgs);
  const dropped = d((s) => s.counters?.dropped);
  const row: Row = {
    workload,
    inflight,
    ...(withRanges ? { ranges: 1 } : {}),
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
    server_cpu_nats_us_per_op: fixed(perOp(d((s) => s.natsCpu) * 1e6, n), 1),
    server_cpu_nodes_sys_us_per_op: fixed(perOp(nodesSys * 1e6, n), 1),
    other_cpu_pct: fixed(other, 0),
    nats_in_msgs_per_op: fixed(perOp(inMsgs, n), 3),
    nats_out_msgs_per_op: fixed(perOp(outMsgs, n), 3),
    client_requests_per_op: fixed(perOp(r.clientRequests, n), 3),
    client_retries: r.clientRetries,
  };
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
    });
    if (s0?.counters && Number.isNaN(s0.counters.xstateEvents)) {
      row.note =
        'node counters n/a: <p>.admin.status has no stats.{xstateEvents,storeFlushes,...} ' +
        '(or a node did not answer within 2 s)';
    }
  }
  if (r.firstErr) row.first_err = r.firstErr;
  return row;
}

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

async function ceiling(nats: MonitoredNats): Promise<void> {
  log(`ceiling: bare NATS request/reply (responder process), ${durationS} s per run`);
  const responder = forkTs('responder', 'responder.ts', {
    BENCH_NATS: nats.url,
    BENCH_SUBJECT: echoSubject,
  });
  try {
    const ready = new Promise<void>((resolve) =>
      responder.child.on('message', (m: { type?: string }) => {
        if (m.type === 'ready') resolve();
      }),
    );
    if (!(await within(ready, 15_000))) {
      throw new Error(`responder not ready:\n${responder.output.join('\n')}`);
    }
    const probe: Probe = {
      nodePids: [],
      natsPids: [nats.proc.pid],
      otherPids: [responder.pid],
      monitorPort: nats.monitorPort,
    };
    for (const inflight of inflights) {
      const cfg: LoadConfig = { ...baseConfig(nats), mode: 'echo', op: 'echo', inflight };
      const { result, s0, s1 } = await runLoad(cfg, probe, [nats.proc, responder]);
      addRow(toRow('nats-echo', 'request-reply', inflight, result, s0, s1, false));
    }
  } finally {
    await responder.stop();
  }
}

async function rasputin(nats: MonitoredNats): Promise<void> {
  const baseDir = await mkdtemp(join(tmpdir(), 'rasputin-runbench-'));
  const nodes: Proc[] = [];
  let nc: NatsConnection | undefined;
  let failed = false;
  try {
    log(`rasputin: starting 3 nodes in ${baseDir}`);
    const started = await Promise.allSettled(
      nodeIds.map((id) =>
        startNode({
          nodeId: id,
          natsUrl: nats.url,
          storageDir: join(baseDir, id),
          initialNodes: nodeIds,
          logFile: join(baseDir, `${id}.log`),
        }),
      ),
    );
    for (const s of started) if (s.status === 'fulfilled') nodes.push(s.value);
    const bad = started.find((s) => s.status === 'rejected');
    if (bad) throw bad.reason;
    nc = await connect({ servers: nats.url, name: 'bench-status' });
    const statusNc = nc;
    const watch = [nats.proc, ...nodes];
    const leader = await waitForLeader(statusNc, nats.url, watch);
    log(`rasputin: leader of range 1 is node ${leader}`);
    const probe: Probe = {
      nodePids: nodes.map((n) => n.pid),
      natsPids: [nats.proc.pid],
      otherPids: [],
      monitorPort: nats.monitorPort,
      counters: () => clusterCounters(statusNc),
    };
    const first = await askStatus(statusNc, nodeIds.length, 2000);
    if (!first.some((r) => r.stats && typeof r.stats.xstateEvents === 'number')) {
      log('rasputin: the nodes report no stats in <p>.admin.status: per-op counters are n/a');
    }

    log(`rasputin: fill ${keyspace} k_ keys, ${setupInflight} in flight`);
    const fill = await runLoad(
      { ...baseConfig(nats), mode: 'rasputin', op: 'fill', inflight: setupInflight },
      undefined,
      watch,
    );
    const fillRate = fill.result.ops / fill.result.setupS;
    log(`rasputin: filled in ${fill.result.setupS.toFixed(1)} s (${fillRate.toFixed(0)} sets/s)`);
    for (const op of workloads) {
      for (const inflight of inflights) {
        log(`rasputin: ${op}, ${inflight} in flight`);
        const cfg: LoadConfig = { ...baseConfig(nats), mode: 'rasputin', op, inflight };
        const { result, s0, s1 } = await runLoad(cfg, probe, watch);
        const row = toRow('rasputin', op, inflight, result, s0, s1, true);
        if (op === 'cas') row.setup_s = fixed(result.setupS, 2) ?? 0;
        addRow(row);
      }
    }
  } catch (err) {
    failed = true;
    throw err;
  } finally {
    await nc?.close().catch(() => undefined);
    await Promise.all(nodes.map((n) => n.stop().catch(() => undefined)));
    if (failed) log(`rasputin: node logs kept in ${baseDir}`);
    else await rm(baseDir, { recursive: true, force: true });
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
  const ratioTargets: [Op, number][] = [
    ['put', 1.5],
    ['get', 3],
    ['cas', 1.5],
  ];
  for (const [op, want] of ratioTargets) {
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
  const put64 = ours('put', 64);
  check('put p99 <= 15 ms (64 in flight)', put64?.p99_ms, ' ms', put64 ? put64.p99_ms <= 15 : null);
  const put1 = ours('put', 1);
  check('put p50 <= 1.5 ms (1 in flight)', put1?.p50_ms, ' ms', put1 ? put1.p50_ms <= 1.5 : null);
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
  if (!sections.has('peers')) out('  (ratio targets need --peers)');
}

// -------------------------------------------------------------------- main

async function main(): Promise<number> {
  const cores = readFileSync('/proc/cpuinfo', 'utf8').match(/^processor/gm)?.length ?? 0;
  log(
    `bench: sections ${[...sections].join(', ')}; workloads ${workloads.join(',')} at ` +
      `${inflights.join(',')} in flight; warmup ${warmupS} s + ${durationS} s each; ` +
      `keyspace ${keyspace}, ${valueBytes}-byte values; ${cores} cores`,
  );
  let nats: MonitoredNats | undefined;
  let peerRows: PeerRow[] = [];
  try {
    if (sections.has('ceiling') || sections.has('rasputin')) {
      nats = await startNats();
      log(`nats-server ${nats.url} (pid ${nats.proc.pid}, monitoring :${nats.monitorPort})`);
    }
    for (const [name, run] of [
      ['ceiling', () => ceiling(nats!)],
      ['rasputin', () => rasputin(nats!)],
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
  if (sections.has('rasputin') || sections.has('peers')) targets(peerRows);
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
