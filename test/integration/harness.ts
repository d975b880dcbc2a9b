// Real processes for integration tests: nats-server and Rasputin nodes on 127.0.0.1.
//
// Every child is started here, tracked by PID and stopped by PID: kill() waits for the
// exit, escalating to SIGKILL after a bounded wait. Every wait is bounded and fails with
// the output collected so far. A safety net SIGKILLs any child still alive when the test
// process exits (or is told to stop by a signal).

import { type ChildProcess, spawn } from 'node:child_process';
import { createWriteStream, mkdirSync, type WriteStream } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer, Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, isAbsolute, join } from 'node:path';
import { nodeV8Flags } from '../../src/cli/node-flags.ts';

export const repoRoot = join(import.meta.dirname, '..', '..');
export const loopbackHost = '127.0.0.1';

/** Bounds of the harness's waits. */
const natsReadyTimeoutMs = 10_000;
const nodeReadyTimeoutMs = 30_000;
const exitTimeoutMs = 10_000;
const tcpProbeIntervalMs = 25;
/** After an exit, how long to wait for the rest of the output. */
const outputDrainMs = 1000;
const natsStartAttemptsMax = 5;
/** Output lines kept per process (the log file keeps everything). */
const outputLinesMax = 50_000;

// -------------------------------------------------------------------- children

const children = new Set<ChildProcess>();
/** Marks stderr lines in collected output. */
const stderrMark = '[stderr] ';

function isRunning(child: ChildProcess): boolean {
  return child.exitCode === null && child.signalCode === null;
}

function killAllNow(): void {
  for (const child of children) {
    if (!isRunning(child) || child.pid === undefined) continue;
    try {
      process.kill(child.pid, 'SIGKILL');
    } catch {
      // already gone
    }
  }
}

process.on('exit', killAllNow);
for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
  const onSignal = (): void => {
    killAllNow();
    // Without other listeners, let the signal do what it would have done.
    if (process.listenerCount(signal) === 1) {
      process.removeListener(signal, onSignal);
      process.kill(process.pid, signal);
    }
  };
  process.on(signal, onSignal);
}

/** How a process ended: its exit code, or the signal that ended it. */
export interface Exit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

interface Tracked {
  readonly child: ChildProcess;
  readonly pid: number;
  readonly output: string[];
  /** Resolves when the process has exited (and its pipes are drained). */
  readonly exited: Promise<Exit>;
}

/** Spawns a child with piped output collected line by line (and optionally to a file). */
function track(
  command: string,
  args: readonly string[],
  options: { cwd?: string; env?: NodeJS.ProcessEnv; logFile?: string },
  onLine?: (line: string, stream: 'stdout' | 'stderr') => void,
): Tracked {
  const child = spawn(command, args, {
    cwd: options.cwd ?? repoRoot,
    env: options.env ?? process.env,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const output: string[] = [];
  child.on('error', (err) => output.push(`[spawn error] ${err.message}`));
  const log: WriteStream | undefined = options.logFile
    ? createWriteStream(options.logFile, { flags: 'a' })
    : undefined;
  log?.on('error', (err) => output.push(`[log file error] ${err.message}`));
  // Resolves when the output is drained ('close'), or shortly after the exit if a
  // grandchild still holds the pipes.
  const exited = new Promise<Exit>((resolve) => {
    const done = (exit: Exit) => {
      children.delete(child);
      log?.end();
      resolve(exit);
    };
    child.once('close', (code, signal) => done({ code, signal }));
    child.once('exit', (code, signal) => {
      setTimeout(() => done({ code, signal }), outputDrainMs).unref();
    });
  });
  children.add(child);
  const collect = (stream: 'stdout' | 'stderr') => {
    let partial = '';
    const source = stream === 'stdout' ? child.stdout : child.stderr;
    source?.setEncoding('utf8');
    source?.on('data', (chunk: string) => {
      log?.write(chunk);
      const lines = (partial + chunk).split('\n');
      partial = lines.pop() ?? '';
      for (const line of lines) addLine(line, stream);
    });
    source?.on('end', () => {
      if (partial !== '') addLine(partial, stream);
      partial = '';
    });
  };
  const addLine = (line: string, stream: 'stdout' | 'stderr') => {
    output.push(stream === 'stderr' ? `${stderrMark}${line}` : line);
    if (output.length > outputLinesMax) output.splice(0, output.length - outputLinesMax);
    onLine?.(line, stream);
  };
  collect('stdout');
  collect('stderr');
  const pid = child.pid;
  if (pid === undefined) {
    // spawn failed (e.g. ENOENT); the 'error' event carries why.
    children.delete(child);
    log?.end();
    throw new Error(`could not spawn ${command}`);
  }
  return { child, pid, output, exited };
}

/** Sends `signal`, waits for the exit; SIGKILL if it has not exited within exitTimeoutMs. */
async function stopTracked(t: Tracked, signal: NodeJS.Signals): Promise<void> {
  // Signal only a child not yet reaped, so a reused PID is never hit.
  if (isRunning(t.child)) {
    try {
      process.kill(t.pid, signal);
    } catch {
      // already gone
    }
  }
  if (await within(t.exited, exitTimeoutMs)) return;
  if (isRunning(t.child)) {
    try {
      process.kill(t.pid, 'SIGKILL');
    } catch {
      // already gone
    }
  }
  if (!(await within(t.exited, exitTimeoutMs))) {
    throw new Error(`process ${t.pid} did not exit after SIGKILL`);
  }
}

/** True if `p` settled within `ms`. */
export async function within(p: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const timedOut = new Promise<false>((resolve) => {
    timer = setTimeout(() => resolve(false), ms);
  });
  try {
    return await Promise.race([p.then(() => true), timedOut]);
  } finally {
    clearTimeout(timer);
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** True while a process with this PID exists (signal 0 probes without sending). */
export function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

// -------------------------------------------------------------------- ports

/** A TCP port free on 127.0.0.1 right now (the OS picks it). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.unref();
    server.once('error', reject);
    server.listen({ host: loopbackHost, port: 0, exclusive: true }, () => {
      const address = server.address();
      const port = typeof address === 'object' && address !== null ? address.port : 0;
      server.close(() => (port > 0 ? resolve(port) : reject(new Error('no port assigned'))));
    });
  });
}

/** Whether something accepts TCP connections on 127.0.0.1:port within timeoutMs. */
export function tcpAccepts(port: number, timeoutMs: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = new Socket();
    const done = (ok: boolean) => {
      socket.destroy();
      resolve(ok);
    };
    socket.setTimeout(timeoutMs, () => done(false));
    socket.once('error', () => done(false));
    socket.connect(port, loopbackHost, () => done(true));
  });
}

// -------------------------------------------------------------------- nats-server

export interface NatsServer {
  readonly url: string;
  readonly port: number;
  /** PID of the current nats-server process (a restart changes it). */
  readonly pid: number;
  /** Output of the current process. */
  readonly output: string[];
  stop(): Promise<void>;
  /** Stops it (if running) and starts a new one on the same port. */
  restart(): Promise<void>;
}

/** Spawns `nats-server -a 127.0.0.1 -p PORT` and waits until it accepts TCP connections. */
export async function startNatsServer(opts: { port?: number } = {}): Promise<NatsServer> {
  let lastError: unknown;
  for (let attempt = 1; attempt <= natsStartAttemptsMax; attempt++) {
    const port = opts.port ?? (await freePort());
    try {
      const first = await spawnNats(port);
      return natsHandle(port, first);
    } catch (err) {
      lastError = err;
      // A fixed port is the caller's; a port we picked may have been taken since.
      if (opts.port !== undefined) break;
    }
  }
  throw lastError;
}

async function spawnNats(port: number): Promise<Tracked> {
  const t = track('nats-server', ['-a', loopbackHost, '-p', String(port)], {});
  const deadlineMs = performance.now() + natsReadyTimeoutMs;
  for (;;) {
    if (!isRunning(t.child)) {
      await t.exited;
      throw new Error(`nats-server on port ${port} exited:\n${t.output.join('\n')}`);
    }
    if (await tcpAccepts(port, 500)) {
      if (isRunning(t.child)) return t;
      continue;
    }
    if (performance.now() > deadlineMs) {
      await stopTracked(t, 'SIGKILL');
      throw new Error(
        `nats-server on port ${port} not accepting connections after ` +
          `${natsReadyTimeoutMs} ms:\n${t.output.join('\n')}`,
      );
    }
    await sleep(tcpProbeIntervalMs);
  }
}

function natsHandle(port: number, first: Tracked): NatsServer {
  let current: Tracked = first;
  const stop = () => stopTracked(current, 'SIGTERM');
  return {
    url: `nats://${loopbackHost}:${port}`,
    port,
    get pid() {
      return current.pid;
    },
    get output() {
      return current.output;
    },
    stop,
    async restart() {
      await stop();
      // The port may linger briefly after the old process: retry a few times.
      for (let attempt = 1; ; attempt++) {
        try {
          current = await spawnNats(port);
          return;
        } catch (err) {
          if (attempt >= natsStartAttemptsMax) throw err;
          await sleep(100 * attempt);
        }
      }
    },
  };
}

// -------------------------------------------------------------------- nodes

export interface NodeOptions {
  nodeId: string;
  natsUrl: string;
  storageDir: string;
  initialNodes: readonly string[] | string;
  /** Extra environment for the node. */
  env?: Record<string, string>;
  /** Script to run instead of src/cli/main.ts (relative to the repo root, or absolute). */
  entry?: string;
  /** Extra CLI arguments after the standard ones. */
  extraArgs?: readonly string[];
  /** Wait for `ready` this long; default 30 s. */
  readyTimeoutMs?: number;
}

export interface NodeProcess {
  readonly pid: number;
  readonly nodeId: string;
  readonly storageDir: string;
  /** Everything the node printed, stdout lines as is and stderr lines as `[stderr] ...`. */
  readonly output: string[];
  /** Where the output also goes: `<storageDir>/../<nodeId>.log`. */
  readonly logFile: string;
  /** The options it was started with (to start it again on the same storage). */
  readonly options: NodeOptions;
  /** Resolves when the process has exited. */
  readonly exited: Promise<Exit>;
  running(): boolean;
  /** Sends `signal` and waits for the exit (SIGKILL after 10 s). */
  kill(signal?: NodeJS.Signals): Promise<void>;
  kill9(): Promise<void>;
  /** Waits for an output line (from now on, or already printed) matching `pattern`. */
  waitForLine(pattern: RegExp | string, timeoutMs?: number): Promise<string>;
}

/**
 * Spawns `node --import tsx src/cli/main.ts start --node-id ... ` in the repo root and
 * resolves once a stdout line contains `ready`; rejects with the collected output if the
 * node exits first or is not ready within 30 s (then it is killed).
 */
export async function startNode(opts: NodeOptions): Promise<NodeProcess> {
  const initialNodes =
    typeof opts.initialNodes === 'string' ? opts.initialNodes : opts.initialNodes.join(',');
  const entry = opts.entry ?? 'src/cli/main.ts';
  const args = [
    ...nodeV8Flags,
    '--import',
    'tsx',
    isAbsolute(entry) ? entry : join(repoRoot, entry),
    'start',
    '--node-id',
    opts.nodeId,
    '--nats',
    opts.natsUrl,
    '--storage-dir',
    opts.storageDir,
    '--initial-nodes',
    initialNodes,
    ...(opts.extraArgs ?? []),
  ];
  const logFile = join(dirname(opts.storageDir), `${opts.nodeId}.log`);
  mkdirSync(dirname(opts.storageDir), { recursive: true });
  const waiters = new Set<LineWaiter>();
  const t = track(
    process.execPath,
    args,
    { cwd: repoRoot, env: { ...process.env, ...opts.env }, logFile },
    (line, stream) => {
      for (const w of waiters) if (w.matches(line, stream)) w.found(line);
    },
  );
  const waitFor = (matches: LineWaiter['matches'], what: string, timeoutMs: number) => {
    const seen = t.output.find((line) =>
      line.startsWith(stderrMark)
        ? matches(line.slice(stderrMark.length), 'stderr')
        : matches(line, 'stdout'),
    );
    if (seen !== undefined) return Promise.resolve(seen);
    return new Promise<string>((resolve, reject) => {
      const finish = () => {
        clearTimeout(timer);
        waiters.delete(w);
      };
      const fail = (why: string) => {
        finish();
        reject(new Error(`node ${opts.nodeId} (pid ${t.pid}) ${why}:\n${t.output.join('\n')}`));
      };
      const w: LineWaiter = {
        matches,
        found: (line) => {
          finish();
          resolve(line);
        },
      };
      const timer = setTimeout(() => fail(`printed no ${what} in ${timeoutMs} ms`), timeoutMs);
      waiters.add(w);
      void t.exited.then(({ code, signal }) => {
        if (waiters.has(w)) fail(`exited (code ${code}, signal ${signal}) before ${what}`);
      });
    });
  };
  const node: NodeProcess = {
    pid: t.pid,
    nodeId: opts.nodeId,
    storageDir: opts.storageDir,
    output: t.output,
    logFile,
    options: opts,
    exited: t.exited,
    running: () => isRunning(t.child),
    kill: (signal = 'SIGTERM') => stopTracked(t, signal),
    kill9: () => stopTracked(t, 'SIGKILL'),
    waitForLine: (pattern, timeoutMs = nodeReadyTimeoutMs) =>
      waitFor(
        (line) => (typeof pattern === 'string' ? line.includes(pattern) : pattern.test(line)),
        `line matching ${String(pattern)}`,
        timeoutMs,
      ),
  };
  try {
    await waitFor(
      (line, stream) => stream === 'stdout' && line.includes('ready'),
      "stdout line containing 'ready'",
      opts.readyTimeoutMs ?? nodeReadyTimeoutMs,
    );
  } catch (err) {
    await stopTracked(t, 'SIGKILL');
    throw err;
  }
  return node;
}

interface LineWaiter {
  matches(line: string, stream: 'stdout' | 'stderr'): boolean;
  found(line: string): void;
}

// -------------------------------------------------------------------- commands

export interface CommandResult extends Exit {
  stdout: string;
  stderr: string;
  /** True if it was killed for running longer than timeoutMs. */
  timedOut: boolean;
}

/**
 * Runs a short-lived command to its end (tracked and stopped by PID like every child);
 * SIGKILLs it after `timeoutMs` (default 30 s) and reports timedOut.
 */
export async function runCommand(
  command: string,
  args: readonly string[],
  opts: { cwd?: string; env?: Record<string, string>; timeoutMs?: number } = {},
): Promise<CommandResult> {
  const stdout: string[] = [];
  const stderr: string[] = [];
  const t = track(
    command,
    args,
    { cwd: opts.cwd ?? repoRoot, env: { ...process.env, ...opts.env } },
    (line, stream) => (stream === 'stdout' ? stdout : stderr).push(line),
  );
  const timedOut = !(await within(t.exited, opts.timeoutMs ?? 30_000));
  if (timedOut) await stopTracked(t, 'SIGKILL');
  const exit = await t.exited;
  return { ...exit, stdout: stdout.join('\n'), stderr: stderr.join('\n'), timedOut };
}

/** Runs `node --import tsx src/cli/main.ts ...args` (the `rasputin` command). */
export function runRasputin(
  args: readonly string[],
  opts: { env?: Record<string, string>; timeoutMs?: number } = {},
): Promise<CommandResult> {
  return runCommand(
    process.execPath,
    ['--import', 'tsx', join(repoRoot, 'src/cli/main.ts'), ...args],
    opts,
  );
}

// -------------------------------------------------------------------- cluster

export interface Cluster {
  readonly nats: NatsServer;
  readonly natsUrl: string;
  /** Temp directory holding each node's storage dir (`<baseDir>/<id>`) and log. */
  readonly baseDir: string;
  readonly nodeIds: readonly string[];
  /** The current process of each node (replaced by restartNode). */
  readonly nodes: NodeProcess[];
  node(nodeId: string): NodeProcess;
  /** Kills the node (if running, SIGTERM unless told otherwise) and starts it again. */
  restartNode(nodeId: string, signal?: NodeJS.Signals): Promise<NodeProcess>;
  /** Kills the node (SIGTERM unless told otherwise) and leaves it stopped. */
  stopNode(nodeId: string, signal?: NodeJS.Signals): Promise<void>;
  /** Starts a stopped node again on its storage dir (throws if it is running). */
  startNode(nodeId: string): Promise<NodeProcess>;
  /** Stops every node and nats-server, and removes the temp directory. */
  stop(): Promise<void>;
}

/** nats-server plus `nodes` nodes (ids a, b, c, ...) with fresh temp storage dirs. */
export async function startCluster(
  opts: { nodes?: number; env?: Record<string, string>; extraArgs?: readonly string[] } = {},
): Promise<Cluster> {
  const count = opts.nodes ?? 3;
  if (!(Number.isInteger(count) && count >= 1 && count <= 26)) {
    throw new Error(`nodes must be 1..26, got ${count}`);
  }
  const nodeIds = Array.from({ length: count }, (_, i) => String.fromCharCode(97 + i));
  const baseDir = await mkdtemp(join(tmpdir(), 'rasputin-it-'));
  let nats: NatsServer | undefined;
  const nodes: NodeProcess[] = [];
  const optionsOf = (nodeId: string): NodeOptions => ({
    nodeId,
    natsUrl: nats!.url,
    storageDir: join(baseDir, nodeId),
    initialNodes: nodeIds,
    ...(opts.env ? { env: opts.env } : {}),
    ...(opts.extraArgs ? { extraArgs: opts.extraArgs } : {}),
  });
  const stop = async () => {
    const errors: unknown[] = [];
    await Promise.all(nodes.map((n) => n.kill().catch((err: unknown) => errors.push(err))));
    await nats?.stop().catch((err: unknown) => errors.push(err));
    await rm(baseDir, { recursive: true, force: true });
    if (errors.length > 0) throw errors[0];
  };
  try {
    nats = await startNatsServer();
    const started = await Promise.allSettled(nodeIds.map((id) => startNode(optionsOf(id))));
    for (const s of started) if (s.status === 'fulfilled') nodes.push(s.value);
    const failed = started.find((s) => s.status === 'rejected');
    if (failed) throw failed.reason;
  } catch (err) {
    await stop().catch(() => undefined);
    throw err;
  }
  const indexOf = (nodeId: string) => {
    const i = nodeIds.indexOf(nodeId);
    if (i < 0) throw new Error(`no node ${nodeId} in this cluster`);
    return i;
  };
  return {
    nats,
    natsUrl: nats.url,
    baseDir,
    nodeIds,
    nodes,
    node: (nodeId) => nodes[indexOf(nodeId)]!,
    async restartNode(nodeId, signal = 'SIGTERM') {
      const i = indexOf(nodeId);
      await nodes[i]!.kill(signal);
      const fresh = await startNode(optionsOf(nodeId));
      nodes[i] = fresh;
      return fresh;
    },
    async stopNode(nodeId, signal = 'SIGTERM') {
      await nodes[indexOf(nodeId)]!.kill(signal);
    },
    async startNode(nodeId) {
      const i = indexOf(nodeId);
      if (nodes[i]!.running()) throw new Error(`node ${nodeId} is running`);
      const fresh = await startNode(optionsOf(nodeId));
      nodes[i] = fresh;
      return fresh;
    },
    stop,
  };
}
