// Processes of the benchmark, modelled on test/integration/harness.ts: every child is
// started here, tracked by PID and stopped by PID (SIGTERM, then SIGKILL after a bounded
// wait). A safety net SIGKILLs every child still running when this process exits, and runs
// the registered emergency hooks (the peers' stop scripts) when it is told to stop by a
// signal. Every wait is bounded.

import { type ChildProcess, fork, spawn, spawnSync } from 'node:child_process';
import { createWriteStream, readdirSync, readFileSync, statSync, type WriteStream } from 'node:fs';
import { request as httpGet } from 'node:http';
import { join } from 'node:path';
import { nodeV8Flags } from '../../src/cli/node-flags.ts';
import { freePort, loopbackHost, tcpAccepts, within } from '../integration/harness.ts';

export const repoRoot = join(import.meta.dirname, '..', '..');

/**
 * The path of a module of the build in dist/ (`npm run build`; `npm run bench` builds
 * first), so that the nodes and the load's client run what `rasputin` runs: tsx's
 * transform of the sources adds esbuild's `__name` helper to every named function, 1.3-1.4%
 * of a node's CPU in profiles. Throws when the build is missing or older than a source
 * file, rather than measure stale code.
 */
export function builtModule(relative: string): string {
  const file = join(repoRoot, 'dist', relative);
  let builtMs: number;
  try {
    builtMs = statSync(file).mtimeMs;
  } catch {
    throw new Error(`${file} is missing: run \`npm run build\` (npm run bench does) first`);
  }
  for (const dir of ['src', 'ranges', 'placement']) {
    for (const f of readdirSync(join(repoRoot, dir), { recursive: true, encoding: 'utf8' })) {
      if (!f.endsWith('.ts')) continue;
      if (statSync(join(repoRoot, dir, f)).mtimeMs > builtMs) {
        throw new Error(
          `${join(dir, f)} changed after the build in dist/: run \`npm run build\` (npm run bench does) first`,
        );
      }
    }
  }
  return file;
}
export { freePort, loopbackHost, within } from '../integration/harness.ts';

const exitTimeoutMs = 10_000;
const outputLinesMax = 2000;

export interface Exit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

export interface Proc {
  readonly name: string;
  readonly pid: number;
  readonly child: ChildProcess;
  /** The last lines it printed (stderr lines prefixed with `[stderr] `). */
  readonly output: string[];
  /** Resolves once it has exited. */
  readonly exited: Promise<Exit>;
  running(): boolean;
  /** Sends `signal` (default SIGTERM), waits for the exit, SIGKILL after 10 s. */
  stop(signal?: NodeJS.Signals): Promise<void>;
}

const live = new Set<Proc>();
const emergencyHooks = new Set<() => void>();

function killAllNow(): void {
  for (const p of live) {
    if (!p.running()) continue;
    try {
      process.kill(p.pid, 'SIGKILL');
    } catch {
      // already gone
    }
  }
}

process.on('exit', killAllNow);
for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
  process.on(signal, () => {
    console.error(`bench: ${signal}, stopping every process it started`);
    killAllNow();
    for (const hook of emergencyHooks) {
      try {
        hook();
      } catch {
        // best effort
      }
    }
    process.exit(130);
  });
}

/** Registers a synchronous cleanup for a signal; returns its unregister function. */
export function onEmergency(hook: () => void): () => void {
  emergencyHooks.add(hook);
  return () => emergencyHooks.delete(hook);
}

function wrap(
  name: string,
  child: ChildProcess,
  onLine?: (line: string, stream: 'stdout' | 'stderr') => void,
  logFile?: string,
): Proc {
  const output: string[] = [];
  const log: WriteStream | undefined = logFile
    ? createWriteStream(logFile, { flags: 'a' })
    : undefined;
  log?.on('error', () => undefined);
  child.on('error', (err) => output.push(`[spawn error] ${err.message}`));
  const running = () => child.exitCode === null && child.signalCode === null;
  const exited = new Promise<Exit>((resolve) => {
    let done = false;
    const finish = (code: number | null, signal: NodeJS.Signals | null) => {
      if (done) return;
      done = true;
      live.delete(proc);
      log?.end();
      resolve({ code, signal });
    };
    child.once('close', finish);
    // A grandchild may hold the pipes open: do not wait for them for long.
    child.once('exit', (code, signal) => setTimeout(() => finish(code, signal), 500).unref());
  });
  for (const stream of ['stdout', 'stderr'] as const) {
    const source = child[stream];
    if (!source) continue;
    let partial = '';
    source.setEncoding('utf8');
    source.on('data', (chunk: string) => {
      log?.write(chunk);
      const lines = (partial + chunk).split('\n');
      partial = lines.pop() ?? '';
      for (const line of lines) add(line, stream);
    });
    source.on('end', () => {
      if (partial !== '') add(partial, stream);
      partial = '';
    });
  }
  function add(line: string, stream: 'stdout' | 'stderr'): void {
    output.push(stream === 'stderr' ? `[stderr] ${line}` : line);
    if (output.length > outputLinesMax) output.splice(0, output.length - outputLinesMax);
    onLine?.(line, stream);
  }
  if (child.pid === undefined) {
    log?.end();
    throw new Error(`could not start ${name}`);
  }
  const pid = child.pid;
  const proc: Proc = {
    name,
    pid,
    child,
    output,
    exited,
    running,
    async stop(signal = 'SIGTERM') {
      // Signal only a child not yet reaped, so a reused PID is never hit.
      if (running()) {
        try {
          process.kill(pid, signal);
        } catch {
          // already gone
        }
      }
      if (await within(exited, exitTimeoutMs)) return;
      if (running()) {
        try {
          process.kill(pid, 'SIGKILL');
        } catch {
          // already gone
        }
      }
      if (!(await within(exited, exitTimeoutMs))) {
        throw new Error(`${name} (pid ${pid}) did not exit after SIGKILL`);
      }
    },
  };
  live.add(proc);
  return proc;
}

/** Spawns a command with its output collected (and optionally appended to a file). */
export function spawnProc(
  name: string,
  command: string,
  args: readonly string[],
  opts: {
    cwd?: string;
    env?: NodeJS.ProcessEnv;
    logFile?: string;
    onLine?: (line: string, stream: 'stdout' | 'stderr') => void;
  } = {},
): Proc {
  const child = spawn(command, args, {
    cwd: opts.cwd ?? repoRoot,
    env: opts.env ?? process.env,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  return wrap(name, child, opts.onLine, opts.logFile);
}

/**
 * CPU pinning (the streams section): the CPUs the servers (nats-server, nodes) and the
 * client processes (load, subscribers) may run on, as taskset lists, so that the clients'
 * CPU does not come out of the servers' share, as when clients run on other machines.
 * Undefined: no pinning (every process may run on every CPU).
 */
export interface Pinning {
  readonly servers: string;
  readonly clients: string;
}

/** Servers on the first half of the CPUs, clients on the rest; undefined below 2 CPUs. */
export function splitCpus(cpus: number): Pinning | undefined {
  if (cpus < 2) return undefined;
  const half = Math.ceil(cpus / 2);
  const list = (from: number, to: number) => (to - from === 1 ? `${from}` : `${from}-${to - 1}`);
  return { servers: list(0, half), clients: list(half, cpus) };
}

/**
 * Sets the CPUs every thread of process `pid` may run on (threads it starts later inherit
 * them); undefined: every CPU. Throws when taskset fails (a pinned measurement that is
 * not pinned would be wrong without saying so).
 */
export function pinPid(pid: number, cpus: string | undefined, cpuCount: number): void {
  const list = cpus ?? (cpuCount === 1 ? '0' : `0-${cpuCount - 1}`);
  const r = spawnSync('taskset', ['-a', '-p', '-c', list, String(pid)], {
    stdio: 'ignore',
    timeout: 10_000,
  });
  if (r.status !== 0) {
    throw new Error(`taskset -a -p -c ${list} ${pid} failed (${r.error?.message ?? r.status})`);
  }
}

/** Where forkTs pins the processes it starts (setClientCpus); undefined: not pinned. */
let clientCpus: { cpus: string; count: number } | undefined;

/** From now on, forkTs pins its children to `cpus` (undefined: stops pinning them). */
export function setClientCpus(cpus: string | undefined, count: number): void {
  clientCpus = cpus === undefined ? undefined : { cpus, count };
}

/**
 * Forks a TypeScript module of this folder (run with tsx) with an IPC channel. With
 * BENCH_CHILD_CPU_PROF=DIR in the environment, each child writes a V8 CPU profile under
 * DIR/<name> when it ends (load, responder and subscriber processes).
 */
export function forkTs(name: string, file: string, env: Record<string, string>): Proc {
  const profDir = process.env.BENCH_CHILD_CPU_PROF;
  const prof = profDir
    ? ['--cpu-prof', `--cpu-prof-dir=${join(profDir, name.replace(/[^\w.-]+/g, '_'))}`]
    : [];
  const child = fork(join(import.meta.dirname, file), [], {
    cwd: repoRoot,
    execArgv: ['--import', 'tsx', ...prof],
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'pipe', 'ipc'],
  });
  const proc = wrap(name, child);
  if (clientCpus !== undefined) pinPid(proc.pid, clientCpus.cpus, clientCpus.count);
  return proc;
}

/** Runs a short command to its end; SIGKILLs it after timeoutMs. */
export async function runToEnd(
  name: string,
  command: string,
  args: readonly string[],
  opts: { cwd?: string; timeoutMs: number },
): Promise<Exit & { stdout: string[]; stderr: string[]; timedOut: boolean }> {
  const stdout: string[] = [];
  const stderr: string[] = [];
  const p = spawnProc(name, command, args, {
    ...(opts.cwd ? { cwd: opts.cwd } : {}),
    onLine: (line, stream) => (stream === 'stdout' ? stdout : stderr).push(line),
  });
  const timedOut = !(await within(p.exited, opts.timeoutMs));
  if (timedOut) await p.stop('SIGKILL');
  return { ...(await p.exited), stdout, stderr, timedOut };
}

/** Synchronous, bounded: for emergency hooks only. */
export function runNow(command: string, args: readonly string[], cwd: string): void {
  spawnSync(command, args, { cwd, stdio: 'ignore', timeout: 20_000 });
}

/** A forked child's message to its parent (resolves at once when there is no parent). */
export function sendToParent(m: unknown): Promise<void> {
  return new Promise((resolve) => {
    if (!process.send) resolve();
    else process.send(m, undefined, {}, () => resolve());
  });
}

/**
 * Bounds a forked child: past `ms` it reports `<what>: hard time limit hit` and exits 3;
 * when the parent is gone (nobody reads its result) it exits 4.
 */
export function boundChild(what: string, ms: number): void {
  setTimeout(() => {
    void sendToParent({ type: 'error', message: `${what}: hard time limit hit` }).finally(() =>
      process.exit(3),
    );
  }, ms).unref();
  process.on('disconnect', () => process.exit(4));
}

/**
 * Runs a forked child's main and reports its end to the parent: { type: 'result', result }
 * and exit 0, or { type: 'error', message } and exit 1.
 */
export function runChild<T>(main: () => Promise<T>): void {
  main().then(
    async (result) => {
      await sendToParent({ type: 'result', result });
      process.exit(0);
    },
    async (err: unknown) => {
      await sendToParent({ type: 'error', message: (err as Error).stack ?? String(err) });
      process.exit(1);
    },
  );
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** True if `name` is on PATH. */
export function onPath(name: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${name}`], { stdio: 'ignore' }).status === 0;
}

// -------------------------------------------------------------------- measurements

/** CPU seconds (user + system) used so far by these processes (/proc, CLK_TCK = 100). */
export function cpuSeconds(pids: readonly number[]): number {
  const { user, system } = cpuSplit(pids);
  return user + system;
}

/**
 * Bytes written so far to the block device that holds `path` (/sys/dev/block/<maj>:<min>/stat,
 * sectors written x 512): what reached the disk, from every process of the machine. NaN
 * when unreadable. (A process's /proc/<pid>/io write_bytes is no measure of it here: for
 * lmdb-js it reported 2.9 MiB per commit where the device got 167 KiB.)
 */
export function diskWrittenBytes(path: string): number {
  try {
    const dev = statSync(path).dev;
    const major = (dev >> 8) & 0xfff;
    const minor = (dev & 0xff) | ((dev >> 12) & 0xfff00);
    const fields = readFileSync(`/sys/dev/block/${major}:${minor}/stat`, 'utf8')
      .trim()
      .split(/\s+/);
    const sectors = Number(fields[6]);
    return Number.isFinite(sectors) ? sectors * 512 : Number.NaN;
  } catch {
    return Number.NaN;
  }
}

/** User and system CPU seconds used so far by these processes. */
export function cpuSplit(pids: readonly number[]): { user: number; system: number } {
  let user = 0;
  let system = 0;
  for (const pid of pids) {
    try {
      const f = readFileSync(`/proc/${pid}/stat`, 'utf8');
      const rest = f.slice(f.lastIndexOf(')') + 2).split(' ');
      user += Number(rest[11]) / 100;
      system += Number(rest[12]) / 100;
    } catch {
      // process gone
    }
  }
  return { user, system };
}

export interface Varz {
  in_msgs: number;
  out_msgs: number;
  in_bytes: number;
  out_bytes: number;
}

/** nats-server's /varz message counters (monitoring port on loopback). */
export function varz(monitorPort: number): Promise<Varz> {
  return new Promise((resolve, reject) => {
    const req = httpGet(
      { host: loopbackHost, port: monitorPort, path: '/varz', timeout: 5000 },
      (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (c: string) => (body += c));
        res.on('end', () => {
          try {
            const v = JSON.parse(body) as Record<string, unknown>;
            const n = (k: string) => (typeof v[k] === 'number' ? (v[k] as number) : Number.NaN);
            resolve({
              in_msgs: n('in_msgs'),
              out_msgs: n('out_msgs'),
              in_bytes: n('in_bytes'),
              out_bytes: n('out_bytes'),
            });
          } catch (err) {
            reject(err);
          }
        });
      },
    );
    req.on('timeout', () => req.destroy(new Error('varz timed out')));
    req.on('error', reject);
    req.end();
  });
}

// -------------------------------------------------------------------- ports and servers

export interface MonitoredNats {
  readonly url: string;
  readonly monitorPort: number;
  readonly proc: Proc;
}

/** `nats-server -a 127.0.0.1 -p P -m M` on free ports; waits for both ports (10 s). */
export async function startNats(): Promise<MonitoredNats> {
  let lastError: unknown;
  for (let attempt = 1; attempt <= 5; attempt++) {
    const port = await freePort();
    const monitorPort = await freePort();
    const proc = spawnProc('nats-server', 'nats-server', [
      '-a',
      loopbackHost,
      '-p',
      String(port),
      '-m',
      String(monitorPort),
    ]);
    const deadline = performance.now() + 10_000;
    try {
      for (;;) {
        if (!proc.running()) {
          await proc.exited;
          throw new Error(`nats-server exited:\n${proc.output.join('\n')}`);
        }
        if (
          (await tcpAccepts(port, 500)) &&
          (await tcpAccepts(monitorPort, 500)) &&
          proc.running()
        ) {
          return { url: `nats://${loopbackHost}:${port}`, monitorPort, proc };
        }
        if (performance.now() > deadline) throw new Error('nats-server not ready in 10 s');
        await sleep(25);
      }
    } catch (err) {
      lastError = err;
      await proc.stop('SIGKILL');
    }
  }
  throw lastError;
}

/** `node dist/src/cli/main.js start ...` (builtModule); resolves on its `ready` line (30 s). */
export async function startNode(opts: {
  nodeId: string;
  natsUrl: string;
  storageDir: string;
  initialNodes: readonly string[];
  logFile: string;
  /** Extra node (V8) options, before the script: e.g. --cpu-prof. */
  execArgv?: readonly string[];
  /** Extra `rasputin start` flags, after the others: e.g. --watch off. */
  args?: readonly string[];
}): Promise<Proc> {
  let readySeen = false;
  let onReady: (() => void) | undefined;
  const ready = new Promise<void>((resolve) => (onReady = resolve));
  const proc = spawnProc(
    `node ${opts.nodeId}`,
    process.execPath,
    [
      ...nodeV8Flags,
      ...(process.env.BENCH_NODE_V8_FLAGS ?? '').split(' ').filter((f) => f !== ''),
      ...(opts.execArgv ?? []),
      builtModule('src/cli/main.js'),
      'start',
      '--node-id',
      opts.nodeId,
      '--nats',
      opts.natsUrl,
      '--storage-dir',
      opts.storageDir,
      '--initial-nodes',
      opts.initialNodes.join(','),
      ...(opts.args ?? []),
    ],
    {
      logFile: opts.logFile,
      onLine: (line, stream) => {
        if (stream === 'stdout' && line.includes('ready')) {
          readySeen = true;
          onReady?.();
        }
      },
    },
  );
  await within(Promise.race([ready, proc.exited]), 30_000);
  if (!readySeen || !proc.running()) {
    await proc.stop('SIGKILL');
    throw new Error(
      `node ${opts.nodeId} did not become ready (see ${opts.logFile}):\n` +
        proc.output.slice(-30).join('\n'),
    );
  }
  return proc;
}

/** Resident memory of a process in KiB (/proc/<pid>/status); NaN when it is gone. */
export interface MemoryKiB {
  /** VmRSS: everything resident. */
  rss: number;
  /** RssAnon: the heap and other private memory (the part ranges cost). */
  anon: number;
  /** RssFile: mapped files resident (mostly LMDB pages, which the page cache shares). */
  file: number;
}

export function memoryKiB(pid: number): MemoryKiB {
  const out: MemoryKiB = { rss: Number.NaN, anon: Number.NaN, file: Number.NaN };
  let text: string;
  try {
    text = readFileSync(`/proc/${pid}/status`, 'utf8');
  } catch {
    return out;
  }
  const field = (name: string) => {
    const m = new RegExp(`^${name}:\\s+(\\d+) kB`, 'm').exec(text);
    return m ? Number(m[1]) : Number.NaN;
  };
  out.rss = field('VmRSS');
  out.anon = field('RssAnon');
  out.file = field('RssFile');
  return out;
}
