// A subscriber process of the streams section of `npm run bench` (run.ts): a bounded number
// of client.subscribe(prefix) subscriptions (from now) on one Client, client.watch('')
// watchers on another, and a probe writer on a third, while the parent runs a put load
// on the prefix. Forked by run.ts with its config in BENCH_STREAMS (shape.ts
// StreamsConfig); over IPC:
//
//   -> ready                  every subscription's start is fixed (sub.started), every
//                             watcher subscribed: a write from now on is delivered
//   <- window start / end     the load's measured window (relayed by the parent)
//   <- drain                  the load is over with `expect` writes acknowledged: wait
//                             (bounded) until every subscription has them all
//   -> result                 counts, drain time, lag samples (StreamsResult)
//
// Events of the load's keys (prefix then a digit) are counted per subscription and
// watcher, in the window and in all. Lag: every probeEveryMs in the window the probe
// writer sets `<prefix>~probe<proc>_<n>` (one write at a time) and notes when it was
// acknowledged; each subscription (watcher) notes when that key's event arrived; the lag is
// arrival minus ack, both on this process's clock. Every wait is bounded; a hard timer ends
// the process.

import { pathToFileURL } from 'node:url';
import { boundChild, builtModule, runChild, sendToParent, sleep } from './procs.ts';
import type { StreamsCommand, StreamsConfig, StreamsMessage, StreamsResult } from './shape.ts';

// The client of the build in dist/, as users run it (builtModule).
const { Client } = (await import(
  pathToFileURL(builtModule('src/client/index.js')).href
)) as typeof import('../../src/client/index.ts');

const cfg = JSON.parse(process.env.BENCH_STREAMS ?? '{}') as StreamsConfig;
const readyLimitMs = 60_000;
const drainPollMs = 20;

const send = (m: StreamsMessage): Promise<void> => sendToParent(m);

boundChild('streams', cfg.hardLimitMs);

const prefix = Buffer.from(cfg.prefix);
const probeTag = Buffer.from(`${cfg.prefix}~probe${cfg.proc}_`);
const tilde = 0x7e;

/** What a key is: the load's (prefix then a digit), this process's probe n, or neither. */
function classify(key: Uint8Array): number | 'load' | undefined {
  const c = key[prefix.length];
  if (c !== undefined && c >= 0x30 && c <= 0x39) return 'load';
  if (c !== tilde || key.length <= probeTag.length) return undefined;
  for (let i = prefix.length; i < probeTag.length; i++) if (key[i] !== probeTag[i]) return;
  const n = Number(Buffer.from(key.subarray(probeTag.length)).toString('latin1'));
  return Number.isInteger(n) && n >= 0 && n < cfg.probesMax ? n : undefined;
}

let inWindow = false;
let windowStartAt = 0;
let windowEndAt = 0;
const subTotals = new Array<number>(cfg.subscribers).fill(0);
const watchTotals = new Array<number>(cfg.watchers).fill(0);
let subWindowEvents = 0;
let watchWindowEvents = 0;
/** Probe n's ack time (NaN until acknowledged). */
const ackAt = new Float64Array(cfg.probesMax).fill(Number.NaN);
/** Arrivals of probe events: probe n at time t, flattened pairs. */
const subArrivals: number[] = [];
const watchArrivals: number[] = [];
let subErrors = 0;
let firstErr: string | undefined;

function arrived(into: number[], n: number): void {
  if (into.length < 2 * cfg.lagSamplesMax) into.push(n, performance.now());
}

async function main(): Promise<StreamsResult> {
  const servers = cfg.servers.split(',');
  const subClient = await Client.connect({
    servers,
    timeoutMs: 5000,
    name: `bench-subs-${cfg.proc}`,
  });
  const watchClient =
    cfg.watchers > 0
      ? await Client.connect({ servers, timeoutMs: 5000, name: `bench-watch-${cfg.proc}` })
      : undefined;
  const probeClient = await Client.connect({
    servers,
    timeoutMs: 5000,
    name: `bench-probe-${cfg.proc}`,
  });
  const stop = new AbortController();
  const loops: Promise<void>[] = [];
  const started: Promise<string>[] = [];
  for (let i = 0; i < cfg.subscribers; i++) {
    const sub = subClient.subscribe(prefix, { signal: stop.signal });
    started.push(sub.started);
    loops.push(
      (async () => {
        for await (const e of sub) {
          const k = classify(e.key);
          if (k === 'load') {
            subTotals[i]!++;
            if (inWindow) subWindowEvents++;
          } else if (k !== undefined) arrived(subArrivals, k);
        }
      })().catch((err: unknown) => {
        if (stop.signal.aborted) return;
        subErrors++;
        firstErr ??= `${(err as Error).name}: ${(err as Error).message}`;
      }),
    );
  }
  for (let i = 0; i < (watchClient ? cfg.watchers : 0); i++) {
    const w = watchClient!.watch('', { signal: stop.signal });
    loops.push(
      (async () => {
        for await (const e of w) {
          const k = classify(e.key);
          if (k === 'load') {
            watchTotals[i]!++;
            if (inWindow) watchWindowEvents++;
          } else if (k !== undefined) arrived(watchArrivals, k);
        }
      })().catch((err: unknown) => {
        if (stop.signal.aborted) return;
        firstErr ??= `watch: ${(err as Error).name}: ${(err as Error).message}`;
      }),
    );
  }
  const all = Promise.all(started);
  let readyTimer: NodeJS.Timeout | undefined;
  await Promise.race([
    all,
    new Promise((_, reject) => {
      readyTimer = setTimeout(
        () => reject(new Error(`subscriptions not started in ${readyLimitMs} ms`)),
        readyLimitMs,
      );
    }),
  ]).finally(() => clearTimeout(readyTimer));
  // A watcher's NATS subscription is registered once the server has seen it.
  await watchClient?.ranges({ timeoutMs: 5000 }).catch(() => undefined);

  let probes = 0;
  let probing: Promise<void> | undefined;
  const probeLoop = async () => {
    for (let n = 0; n < cfg.probesMax && inWindow; n++) {
      const t0 = performance.now();
      try {
        await probeClient.set(Buffer.concat([probeTag, Buffer.from(String(n))]), 'x');
        ackAt[n] = performance.now();
        probes++;
      } catch (err) {
        firstErr ??= `probe: ${(err as Error).name}: ${(err as Error).message}`;
      }
      const left = cfg.probeEveryMs - (performance.now() - t0);
      if (left > 0) await sleep(left);
    }
  };

  let drain: ((c: Extract<StreamsCommand, { type: 'drain' }>) => void) | undefined;
  const drained = new Promise<Extract<StreamsCommand, { type: 'drain' }>>(
    (resolve) => (drain = resolve),
  );
  process.on('message', (m: StreamsCommand) => {
    if (m.type === 'window' && m.phase === 'start' && windowStartAt === 0) {
      windowStartAt = performance.now();
      inWindow = true;
      if (cfg.probeEveryMs > 0) probing = probeLoop();
    } else if (m.type === 'window' && m.phase === 'end' && inWindow) {
      windowEndAt = performance.now();
      inWindow = false;
    } else if (m.type === 'drain') drain?.(m);
  });
  await send({ type: 'ready' });

  const d = await drained;
  if (windowEndAt === 0) windowEndAt = performance.now();
  inWindow = false;
  await probing;
  let drainMs: number | null = null;
  const deadline = performance.now() + d.maxMs;
  for (;;) {
    if (subTotals.every((n) => n >= d.expect)) {
      drainMs = Math.max(0, performance.now() - windowEndAt);
      break;
    }
    if (performance.now() > deadline) break;
    await sleep(drainPollMs);
  }
  stop.abort();
  await Promise.race([Promise.all(loops), sleep(2000)]);
  const lags = (arrivals: number[]) => {
    const out: number[] = [];
    for (let i = 0; i < arrivals.length; i += 2) {
      const ack = ackAt[arrivals[i]!]!;
      if (!Number.isNaN(ack)) out.push(arrivals[i + 1]! - ack);
    }
    return out;
  };
  const result: StreamsResult = {
    subscribers: cfg.subscribers,
    watchers: cfg.watchers,
    windowS: windowStartAt > 0 ? (windowEndAt - windowStartAt) / 1000 : 0,
    subWindowEvents,
    watchWindowEvents,
    subTotals,
    watchTotals,
    drainMs,
    probes,
    subLagMs: lags(subArrivals),
    watchLagMs: lags(watchArrivals),
    subErrors,
    ...(firstErr ? { firstErr } : {}),
  };
  await Promise.race([
    Promise.all([subClient.close(), watchClient?.close(), probeClient.close()]),
    sleep(2000),
  ]);
  return result;
}

runChild(main);
