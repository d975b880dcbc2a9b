// The soak run (`npm run soak`): a real cluster (nats-server and node processes, LMDB in a
// temp dir) under a seeded schedule of faults for --minutes, with every client operation
// checked. Too long for `npm test`; run it before a release and after changes to
// consensus, storage or the node.
//
//   npm run soak -- [--minutes 10] [--seed N] [--epoch-s 30] [--keys 12] [--clients 6]
//
// The run is a series of epochs, each on keys of its own (`soak<seed>-<epoch>/k00` ...):
//   - --clients clients run get/set/cas/del one at a time on the epoch's keys, recording
//     a history (docs/history-format.md); at the end of the epoch, one final read per key;
//   - a subscription to the epoch's prefix, started before the load, collects its events;
//   - faults run all along, one at a time, every 3 to 10 s (seeded): kill -9 a node and
//     start it again 1-4 s later, restart a node with SIGTERM, pause one with SIGSTOP for
//     1-3 s, restart nats-server, split the range holding one of the epoch's keys. They
//     pause while an epoch's final reads run.
// After each epoch:
//   - linearizability: the WGL checker (test/sim/linearizability.ts) must accept the
//     history, no key left inconclusive;
//   - the stream: once the subscription has reached every key's final value (bounded
//     wait), each key's events come in increasing revision order, each prevValue is the
//     value of the event before (none before the first), every value is one a client
//     wrote and arrives once, every acknowledged set and successful cas is there, and the
//     del events are between the acknowledged dels of a present key and those plus the
//     dels of unknown outcome.
// The first failed check stops the run: its history and events are saved (paths printed)
// and the exit code is 1. Every process started is stopped by PID at the end.

import { writeFile } from 'node:fs/promises';
import { parseArgs } from 'node:util';
import type { Client, SubscribeEvent, Subscription } from '../../src/client/index.ts';
import { Prng } from '../../src/lib/prng.ts';
import type { Cluster } from '../integration/harness.ts';
import {
  connectClient,
  errorCode,
  nodeLogs,
  nowMs,
  sleep,
  startServingCluster,
  statsSum,
  statusOf,
  waitForLeader,
} from '../integration/helpers.ts';
import {
  checkHistory,
  countType,
  describeLoad,
  finalReadProcess,
  finalReads,
  finalValues,
  saveHistory,
  startHistoryLoad,
} from '../integration/history-load.ts';
import type { HistoryOp } from '../sim/history.ts';

const { values: a } = parseArgs({
  options: {
    minutes: { type: 'string', default: '10' },
    seed: { type: 'string' },
    'epoch-s': { type: 'string', default: '30' },
    keys: { type: 'string', default: '12' },
    clients: { type: 'string', default: '6' },
    'history-s': { type: 'string', default: '20' },
  },
});

function bounded(name: string, raw: string | undefined, min: number, max: number): number {
  const x = Number(raw);
  if (!Number.isFinite(x) || x < min || x > max) {
    throw new Error(`--${name} must be a number in [${min}, ${max}], got ${raw}`);
  }
  return x;
}

const minutes = bounded('minutes', a.minutes, 0.5, 24 * 60);
const seed = a.seed === undefined ? Date.now() % 1_000_000 : bounded('seed', a.seed, 0, 2 ** 31);
const epochMs = bounded('epoch-s', a['epoch-s'], 5, 600) * 1000;
const keyCount = Math.round(bounded('keys', a.keys, 1, 200));
const clientCount = Math.round(bounded('clients', a.clients, 1, 32));
/**
 * Both history windows of the nodes (--events-retain-s, --dedup-window-s): short, so that
 * the leaders' compactEvents and forgetRequests run under the faults too (the defaults,
 * an hour and two minutes, would hardly come into play in a soak).
 */
const historyS = Math.round(bounded('history-s', a['history-s'], 1, 3600));
/** Operations per key and epoch: keeps each key's history short enough for WGL. */
const opsPerKeyMax = 250;
const opTimeoutMs = 1500;
/** How long the subscription may take to reach the final values after an epoch. */
const streamCatchUpMs = 30_000;

const prng = new Prng(seed);
const rand = (min: number, max: number) => min + prng.next() * (max - min);
const pick = <T>(xs: readonly T[]): T => xs[Math.floor(prng.next() * xs.length)]!;

const started = nowMs();
const elapsed = () => `${((nowMs() - started) / 1000).toFixed(0).padStart(5)} s`;
const log = (line: string) => console.log(`${elapsed()}  ${line}`);

// ------------------------------------------------------------------ faults

class Faults {
  private paused = false;
  private stopped = false;
  private current: Promise<void> = Promise.resolve();
  private wake: (() => void) | undefined;
  readonly counts = new Map<string, number>();
  /** Keys a split may cut at: the running epoch's. */
  keys: readonly string[] = [];
  readonly done: Promise<void>;

  constructor(
    private readonly cluster: Cluster,
    private readonly admin: Client,
  ) {
    this.done = this.loop();
  }

  /** Waits for the fault in progress, and starts no other until resume(). */
  async pause(): Promise<void> {
    this.paused = true;
    await this.current;
  }

  resume(): void {
    this.paused = false;
    this.wake?.();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.wake?.();
    await this.done;
  }

  private async loop(): Promise<void> {
    while (!this.stopped) {
      await new Promise<void>((resolve) => {
        this.wake = resolve;
        setTimeout(resolve, rand(3000, 10_000));
      });
      this.wake = undefined;
      if (this.stopped) return;
      if (this.paused) continue;
      this.current = this.one().catch((err: unknown) => {
        log(`fault failed: ${(err as Error).stack ?? String(err)}`);
        throw err;
      });
      await this.current;
    }
  }

  private async one(): Promise<void> {
    const kind = pick(['kill', 'kill', 'restart', 'pause', 'nats', 'split', 'split']);
    this.counts.set(kind, (this.counts.get(kind) ?? 0) + 1);
    const c = this.cluster;
    const node = pick(c.nodeIds);
    switch (kind) {
      case 'kill': {
        log(`fault: kill -9 ${node} (pid ${c.node(node).pid})`);
        await c.stopNode(node, 'SIGKILL');
        await sleep(rand(1000, 4000));
        const back = await c.startNode(node);
        log(`fault: ${node} started again (pid ${back.pid})`);
        return;
      }
      case 'restart': {
        log(`fault: restart ${node} (SIGTERM, pid ${c.node(node).pid})`);
        const back = await c.restartNode(node, 'SIGTERM');
        log(`fault: ${node} restarted (pid ${back.pid})`);
        return;
      }
      case 'pause': {
        const pid = c.node(node).pid;
        const ms = rand(1000, 3000);
        log(`fault: SIGSTOP ${node} (pid ${pid}) for ${ms.toFixed(0)} ms`);
        process.kill(pid, 'SIGSTOP');
        try {
          await sleep(ms);
        } finally {
          process.kill(pid, 'SIGCONT');
        }
        return;
      }
      case 'nats': {
        log(`fault: nats-server stop (pid ${c.nats.pid})`);
        await c.nats.stop();
        await sleep(rand(500, 2000));
        await c.nats.restart();
        log(`fault: nats-server up (pid ${c.nats.pid})`);
        return;
      }
      case 'split': {
        if (this.keys.length === 0) return;
        const key = pick(this.keys);
        try {
          const ds = await this.admin.split(key, { timeoutMs: 5000 });
          log(`fault: split at ${key}: ranges ${ds.map((d) => d.rangeId).join(' and ')}`);
        } catch (err) {
          // Already a range boundary, or the cluster is busy with another fault's aftermath.
          log(`fault: split at ${key} refused: ${errorCode(err)}: ${(err as Error).message}`);
        }
        return;
      }
    }
  }
}

// ------------------------------------------------------------------ the stream check

/** Problems with an epoch's events against its history and final values (none: ok). */
function checkStream(
  keys: readonly string[],
  history: readonly HistoryOp[],
  events: readonly SubscribeEvent[],
): string[] {
  const problems: string[] = [];
  const finals = finalValues(history);
  for (const key of keys) {
    const evs = events.filter((e) => e.key.toString('utf8') === key);
    const ops = history.filter((op) => op.key === key && op.process !== finalReadProcess);
    const written = new Set<string>();
    const acked = new Set<string>();
    for (const op of ops) {
      if ((op.f === 'set' || op.f === 'cas') && op.value !== null && op.type !== 'fail') {
        if (op.f === 'set' || op.type === 'info' || op.ok === true) written.add(op.value);
        if (op.type === 'ok' && (op.f === 'set' || op.ok === true)) acked.add(op.value);
      }
    }
    const seen = new Set<string>();
    let prev: SubscribeEvent | undefined;
    for (const e of evs) {
      const v = e.value?.toString('utf8') ?? null;
      const pv = e.prevValue?.toString('utf8');
      const want = prev?.op === 'set' ? prev.value?.toString('utf8') : undefined;
      if (prev !== undefined && e.revision <= prev.revision) {
        problems.push(`${key}: revision ${e.revision} after ${prev.revision}`);
      }
      if (pv !== want) {
        problems.push(
          `${key}: revision ${e.revision} has prevValue ${pv}, the event before set ${want}`,
        );
      }
      if (e.op === 'set') {
        if (v === null || !written.has(v)) problems.push(`${key}: ${v} was never written`);
        else if (seen.has(v)) problems.push(`${key}: ${v} arrived twice`);
        else seen.add(v);
      }
      prev = e;
    }
    for (const v of acked) {
      if (!seen.has(v)) problems.push(`${key}: acknowledged write ${v} has no event`);
    }
    const dels = evs.filter((e) => e.op === 'del').length;
    const delsAcked = ops.filter((op) => op.f === 'del' && op.type === 'ok' && op.value !== null);
    const delsUnknown = ops.filter((op) => op.f === 'del' && op.type === 'info').length;
    if (dels < delsAcked.length || dels > delsAcked.length + delsUnknown) {
      problems.push(
        `${key}: ${dels} del events for ${delsAcked.length} acknowledged dels of a value ` +
          `and ${delsUnknown} of unknown outcome`,
      );
    }
    const last = evs.at(-1);
    const lastValue = last?.op === 'set' ? (last.value?.toString('utf8') ?? null) : null;
    if (finals.has(key) && finals.get(key) !== lastValue) {
      problems.push(`${key}: final read ${finals.get(key)}, last event ${lastValue}`);
    }
  }
  return problems;
}

/** Whether the events reached every key's final value (finalValues; absent: any). */
function caughtUp(
  finals: ReadonlyMap<string, string | null>,
  events: readonly SubscribeEvent[],
): boolean {
  const last = new Map<string, string | null>();
  for (const e of events) {
    last.set(e.key.toString('utf8'), e.op === 'set' ? (e.value?.toString('utf8') ?? null) : null);
  }
  for (const [key, value] of finals) if ((last.get(key) ?? null) !== value) return false;
  return true;
}

function collect(sub: Subscription, into: SubscribeEvent[]): Promise<void> {
  return (async () => {
    for await (const e of sub) into.push(e);
  })();
}

// ------------------------------------------------------------------ the run

/** `p`, or a rejection with `what` after `ms`. */
async function bound<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      p,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`${what} within ${ms} ms`)), ms);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * The history commands the nodes that answer have proposed since they started (a node
 * killed or restarted starts again at 0): so the log says that they ran under the faults.
 */
async function historyProposed(natsUrl: string): Promise<string> {
  const nodes = await statusOf(natsUrl);
  return (
    `history commands proposed (${nodes.length} nodes, since their start): ` +
    `${statsSum(nodes, 'eventsCompactionsProposed')} compactEvents, ` +
    `${statsSum(nodes, 'requestsForgetsProposed')} forgetRequests`
  );
}

async function main(): Promise<number> {
  log(
    `soak: ${minutes} min, seed ${seed}, epochs of ${epochMs / 1000} s on ${keyCount} keys, ` +
      `${clientCount} clients, history windows ${historyS} s`,
  );
  const cluster = await startServingCluster({
    nodes: 3,
    extraArgs: ['--events-retain-s', String(historyS), '--dedup-window-s', String(historyS)],
  });
  // A hard bound on the whole run: whatever hangs, the processes are stopped by PID.
  const watchdog = setTimeout(
    () => {
      log('soak FAILED: over its time bound; stopping the cluster');
      for (const n of cluster.nodes) if (n.running()) process.kill(n.pid, 'SIGCONT');
      void cluster.stop().finally(() => process.exit(1));
    },
    minutes * 60_000 + 5 * 60_000,
  );
  watchdog.unref();
  log(
    `cluster: nats-server pid ${cluster.nats.pid}, nodes ${cluster.nodes.map((n) => n.pid).join(', ')}, data ${cluster.baseDir}`,
  );
  const clients: Client[] = [];
  let faults: Faults | undefined;
  let failed = false;
  try {
    for (let i = 0; i < clientCount; i++)
      clients.push(await connectClient(cluster.natsUrl, opTimeoutMs));
    const admin = await connectClient(cluster.natsUrl, 5000);
    const subscriber = await connectClient(cluster.natsUrl, 5000);
    clients.push(admin, subscriber);
    faults = new Faults(cluster, admin);
    const end = started + minutes * 60_000;
    let totalOps = 0;
    for (let epoch = 0; nowMs() + epochMs / 2 < end && !failed; epoch++) {
      const prefix = `soak${seed}-${epoch}/`;
      const keys = Array.from(
        { length: keyCount },
        (_, i) => `${prefix}k${String(i).padStart(2, '0')}`,
      );
      const events: SubscribeEvent[] = [];
      const sub = subscriber.subscribe(prefix);
      const collecting = collect(sub, events);
      await bound(sub.started, 60_000, 'the subscription did not start');
      faults.keys = keys;
      const load = startHistoryLoad(clients.slice(0, clientCount), {
        keys,
        opsPerKeyMax,
        loadMs: Math.min(epochMs, Math.max(1000, end - nowMs())),
        pauseMsMin: 10,
        pauseMsMax: 40,
      });
      await load.done;
      await faults.pause();
      const history = load.history;
      await waitForLeader(cluster.natsUrl, { timeoutMs: 30_000 });
      await finalReads(admin, keys, history);
      faults.resume();
      totalOps += history.length;

      const lin = checkHistory(`epoch ${epoch}`, history);
      const deadline = nowMs() + streamCatchUpMs;
      const finals = finalValues(history);
      while (!caughtUp(finals, events) && nowMs() < deadline) await sleep(100);
      const streamOk = caughtUp(finals, events);
      sub.close();
      await collecting.catch(() => undefined);
      const problems = streamOk
        ? checkStream(keys, history, events)
        : [`the subscription did not reach the final values within ${streamCatchUpMs} ms`];
      log(
        `epoch ${epoch}: ${describeLoad(load).replace(/\n.*$/s, '')}; ` +
          `linearizable ${lin.ok && lin.inconclusive.length === 0}; ${events.length} events, ` +
          `stream ${problems.length === 0 ? 'ok' : `${problems.length} problem(s)`}; ` +
          (await historyProposed(cluster.natsUrl)),
      );
      if (!lin.ok || lin.inconclusive.length > 0 || problems.length > 0) {
        failed = true;
        const { file } = await saveHistory(`soak-${seed}-${epoch}`, history);
        const eventsFile = file.replace(/\.jsonl$/, '-events.jsonl');
        await writeFile(
          eventsFile,
          events
            .map((e) =>
              JSON.stringify({
                key: e.key.toString('utf8'),
                op: e.op,
                value: e.value?.toString('utf8') ?? null,
                prevValue: e.prevValue?.toString('utf8'),
                revision: e.revision,
                range: e.range,
              }),
            )
            .join('\n'),
        );
        for (const p of problems.slice(0, 20)) log(`STREAM ${p}`);
        if (lin.inconclusive.length > 0) log(`inconclusive keys: ${lin.inconclusive.join(', ')}`);
        log(`history ${file}\nevents ${eventsFile}`);
        log(nodeLogs(cluster, 30));
      }
      if (countType(history, 'ok') === 0) {
        failed = true;
        log(`epoch ${epoch}: no operation succeeded`);
      }
    }
    await faults.stop();
    log(
      `soak ${failed ? 'FAILED' : 'passed'}: ${totalOps} operations checked; faults ` +
        JSON.stringify(Object.fromEntries(faults.counts)),
    );
  } catch (err) {
    failed = true;
    log(`soak FAILED: ${(err as Error).stack ?? String(err)}`);
    log(nodeLogs(cluster, 30));
  } finally {
    await faults?.stop().catch(() => undefined);
    for (const n of cluster.nodes) if (n.running()) process.kill(n.pid, 'SIGCONT');
    await Promise.all(clients.map((c) => c.close().catch(() => undefined)));
    await cluster.stop().catch((err: unknown) => log(`stopping the cluster: ${String(err)}`));
  }
  return failed ? 1 : 0;
}

process.exitCode = await main();
