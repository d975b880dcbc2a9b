// The load process: a closed loop of `inflight` workers, one request outstanding each,
// in a process of its own (like loadgen.mjs), so the client's CPU is measured apart from
// the servers'. Forked by run.ts with its config in BENCH_LOAD; reports over IPC:
//
//   ready                    connected (and, for cas, learnt the current values; with
//                            warmRanges, learnt every range: one get per range)
//   window start / end       the measured window begins / ends (the parent samples the
//                            servers' CPU and counters at these moments)
//   result                   client-side figures of the window
//
// Modes: rasputin (our Client: fill, put, get, cas) and echo (bare NATS request/reply to
// the responder, the ceiling of this harness). Every loop stops after durationS of
// measurement or maxOps completed operations, whichever comes first; setup loops are
// bounded by count and time; a hard timer ends the process if the system hangs.

import { pathToFileURL } from 'node:url';
import { connect } from '@nats-io/transport-node';
import { boundChild, builtModule, runChild, sendToParent } from './procs.ts';
import {
  keyName,
  type LoadConfig,
  type LoadMessage,
  type LoadResult,
  makeValue,
  pct,
  prefixSpan,
  randInt,
  splitPoints,
} from './shape.ts';

// The client of the build in dist/, as users run it (builtModule).
const { Client } = (await import(
  pathToFileURL(builtModule('src/client/index.js')).href
)) as typeof import('../../src/client/index.ts');

const cfg = JSON.parse(process.env.BENCH_LOAD ?? '{}') as LoadConfig;
/** Setup (fill, cas state) must end within this. */
const setupLimitMs = 300_000;
/** Windows this process waits through: its own, and with slices the other load's too. */
const windows = cfg.slices === undefined ? 1 : 2 * cfg.slices;
const hardLimitMs = setupLimitMs + ((cfg.warmupS + cfg.durationS + 5) * windows + 60) * 1000;
/** The run stops after this many failed ops (the system is not answering). */
const errorsMax = 1000;

const send = (m: LoadMessage): Promise<void> => sendToParent(m);

boundChild('load', hardLimitMs);

interface Target {
  /** One op of the workload; false when a cas did not succeed. */
  op(wid: number, n: number): Promise<boolean>;
  requests(): { requests: number; retries: number };
  /** Ranges the client routes by, and those of them holding this workload's keys. */
  ranges?(): { cached: number; used: number };
  close(): Promise<void>;
}

/** Ranges of `cached` whose spans hold a key of [first, last] (both inclusive). */
function rangesOver(
  cached: readonly { start: Uint8Array; end: Uint8Array | null }[],
  first: string,
  last: string,
): number {
  const lo = Buffer.from(first);
  const hi = Buffer.from(last);
  return cached.filter(
    (r) => Buffer.compare(r.start, hi) <= 0 && (r.end === null || Buffer.compare(r.end, lo) > 0),
  ).length;
}

async function rasputinTarget(): Promise<{ target: Target; setupS: number; warmS?: number }> {
  const client = await Client.connect({
    servers: cfg.servers.split(','),
    timeoutMs: 5000,
    name: `bench-${cfg.op}-c${cfg.inflight}`,
  });
  const t0 = performance.now();
  const deadline = t0 + setupLimitMs;
  /** Runs `work(i)` for i in [0, count) with `conc` in flight; bounded by count and time. */
  const bulk = async (count: number, conc: number, work: (i: number) => Promise<void>) => {
    let next = 0;
    await Promise.all(
      Array.from({ length: Math.min(conc, count) }, async () => {
        for (;;) {
          const i = next++;
          if (i >= count) return;
          if (performance.now() > deadline) throw new Error(`setup over ${setupLimitMs} ms`);
          await work(i);
        }
      }),
    );
  };
  const value = (wid: number, n: number) => makeValue(cfg.valueBytes, wid, n, cfg.nonce);
  const current = new Map<string, Buffer | null>();
  if (cfg.op === 'fill') {
    const prefix = cfg.fillPrefix ?? 'k';
    await bulk(cfg.keyspace, cfg.setupInflight, (i) => client.set(keyName(prefix, i), value(0, i)));
  } else if (cfg.op === 'cas') {
    // Every key is owned by one worker of this process: learn them all, once.
    let missing = 0;
    await bulk(cfg.keyspace, cfg.setupInflight, async (i) => {
      const key = keyName('k', i);
      const r = await client.get(key);
      if (r === null) missing++;
      else current.set(key, r.value);
    });
    if (missing > 0) throw new Error(`cas: ${missing} k_ keys absent; the fill did not finish`);
  }
  let warmS: number | undefined;
  if (cfg.warmRanges !== undefined && cfg.warmRanges > 1) {
    // One get in every range: the first one goes by the client's initial belief (range 1
    // holds everything) and comes back RangeKeyMismatch with the descriptors that hold the
    // key, which fill the cache; the op is then rerouted. Afterwards every op of the
    // window goes straight to its range's leader.
    const w0 = performance.now();
    const keys = [keyName('k', 0), ...splitPoints(cfg.keyspace, cfg.warmRanges)];
    await bulk(keys.length, cfg.setupInflight, async (i) => {
      await client.get(keys[i]!);
    });
    warmS = (performance.now() - w0) / 1000;
  }
  const setupS = (performance.now() - t0) / 1000;
  const slots = (wid: number) => Math.ceil((cfg.keyspace - wid) / cfg.inflight);
  const target: Target = {
    async op(wid, n) {
      if (cfg.op === 'put') {
        await client.set(keyName('p', randInt(cfg.keyspace)), value(wid, n));
        return true;
      }
      if (cfg.op === 'get') {
        await client.get(keyName('k', randInt(cfg.keyspace)));
        return true;
      }
      const key = keyName('k', wid + cfg.inflight * randInt(slots(wid)));
      const next = value(wid, n);
      const r = await client.cas(key, current.get(key) ?? null, next);
      // On a failure the reply carries the current value: the next cas on this key uses it.
      current.set(key, r.success ? next : r.value);
      return r.success;
    },
    requests: () => ({ requests: client.stats.requests, retries: client.stats.retries }),
    ranges: () => {
      const cached = client.cachedRanges();
      const [first, last] = prefixSpan(cfg.op === 'put' ? 'p' : 'k', cfg.keyspace);
      return { cached: cached.length, used: rangesOver(cached, first, last) };
    },
    close: () => client.close(),
  };
  return { target, setupS, ...(warmS === undefined ? {} : { warmS }) };
}

async function echoTarget(): Promise<{ target: Target; setupS: number }> {
  const nc = await connect({ servers: cfg.servers.split(','), name: 'bench-echo' });
  // About the size of one Rasputin put request (a 10-byte key and a 100-byte value).
  const payload = Buffer.alloc(cfg.valueBytes + 48, 0x61);
  let requests = 0;
  return {
    setupS: 0,
    target: {
      async op() {
        requests++;
        await nc.request(cfg.echoSubject, payload, { timeout: 5000 });
        return true;
      },
      requests: () => ({ requests, retries: 0 }),
      close: () => nc.close(),
    },
  };
}

async function main(): Promise<LoadResult> {
  const { target, setupS, warmS } =
    cfg.mode === 'echo' ? { ...(await echoTarget()), warmS: undefined } : await rasputinTarget();
  await send({ type: 'ready' });
  if (cfg.op === 'fill') {
    await target.close();
    return {
      ops: cfg.keyspace,
      errors: 0,
      casFail: 0,
      elapsedS: setupS,
      p50: Number.NaN,
      p90: Number.NaN,
      p99: Number.NaN,
      max: Number.NaN,
      clientCpuS: 0,
      clientRequests: 0,
      clientRetries: 0,
      firstErr: undefined,
      setupS,
    };
  }

  if (cfg.slices === undefined) {
    const { result } = await measureWindow(target, cfg.warmupS, cfg.durationS);
    await target.close();
    return { ...result, setupS, ...(warmS === undefined ? {} : { warmS }) };
  }
  // Slices: one window per `go` from the parent, which alternates this process with a load
  // on another cluster; each window's figures go back as a `slice`.
  const results: Omit<LoadResult, 'setupS'>[] = [];
  const latencies: number[][] = [];
  for (let k = 0; k < cfg.slices; k++) {
    await nextGo();
    const { result, lat } = await measureWindow(target, cfg.warmupS, cfg.durationS);
    await send({ type: 'slice', index: k, result: { ...result, setupS } });
    results.push(result);
    latencies.push(lat);
  }
  await target.close();
  return { ...sumResults(results, latencies), setupS, ...(warmS === undefined ? {} : { warmS }) };
}

/** `go` messages from the parent (slices), counted from the start so that none is missed. */
let gos = 0;
let onGo: (() => void) | undefined;
process.on('message', (m: { type?: string }) => {
  if (m?.type !== 'go') return;
  gos++;
  onGo?.();
});

/** Resolves at the parent's next `go` not yet taken. */
async function nextGo(): Promise<void> {
  while (gos === 0) await new Promise<void>((resolve) => (onGo = resolve));
  onGo = undefined;
  gos--;
}

/** The slices' figures as one window: counts and times summed, latencies over all slices. */
function sumResults(
  rs: readonly Omit<LoadResult, 'setupS'>[],
  latencies: readonly number[][],
): Omit<LoadResult, 'setupS'> {
  const sum = (f: (r: Omit<LoadResult, 'setupS'>) => number) => rs.reduce((a, r) => a + f(r), 0);
  const lat = Float64Array.from(latencies.flat()).sort();
  const last = rs[rs.length - 1];
  return {
    ops: sum((r) => r.ops),
    errors: sum((r) => r.errors),
    casFail: sum((r) => r.casFail),
    elapsedS: sum((r) => r.elapsedS),
    p50: pct(lat, 0.5),
    p90: pct(lat, 0.9),
    p99: pct(lat, 0.99),
    max: lat.length > 0 ? lat[lat.length - 1]! : Number.NaN,
    clientCpuS: sum((r) => r.clientCpuS),
    clientRequests: sum((r) => r.clientRequests),
    clientRetries: sum((r) => r.clientRetries),
    firstErr: rs.find((r) => r.firstErr !== undefined)?.firstErr,
    okTotal: sum((r) => r.okTotal ?? 0),
    ...(last?.cachedRanges === undefined
      ? {}
      : { cachedRanges: last.cachedRanges, rangesUsed: last.rangesUsed }),
  };
}

/**
 * One measured window: `cfg.inflight` workers in a closed loop, warmupS unmeasured, then
 * durationS (or cfg.maxOps ops) measured; returns when every worker has stopped.
 */
async function measureWindow(
  target: Target,
  warmupS: number,
  durationS: number,
): Promise<{ result: Omit<LoadResult, 'setupS'>; lat: number[] }> {
  const lat: number[] = [];
  let ops = 0;
  let errors = 0;
  let casFail = 0;
  let okTotal = 0;
  let firstErr: string | undefined;
  let measuring = false;
  let stop = false;
  let windowStarted = false;
  let windowEnded = false;
  let mStart = 0;
  let mEnd = 0;
  let cpu0: NodeJS.CpuUsage | undefined;
  let cpuUsed: NodeJS.CpuUsage | undefined;
  let req0 = target.requests();
  let req1 = req0;
  const pending: Promise<void>[] = [];
  const startWindow = () => {
    if (windowStarted) return;
    windowStarted = true;
    measuring = true;
    mStart = performance.now();
    cpu0 = process.cpuUsage();
    req0 = target.requests();
    pending.push(send({ type: 'window', phase: 'start' }));
  };
  const endWindow = () => {
    if (windowEnded) return;
    startWindow();
    windowEnded = true;
    stop = true;
    mEnd = performance.now();
    cpuUsed = process.cpuUsage(cpu0);
    req1 = target.requests();
    pending.push(send({ type: 'window', phase: 'end' }));
  };
  // Second by second from the warm-up's start: a window that still ramps up, or that drops
  // partway, shows in it.
  const perSecond: number[] = [];
  let okMark = 0;
  const second = setInterval(() => {
    perSecond.push(okTotal - okMark);
    okMark = okTotal;
  }, 1000);
  const timers = [
    setTimeout(startWindow, warmupS * 1000),
    setTimeout(endWindow, (warmupS + durationS) * 1000),
  ];
  await Promise.all(
    Array.from({ length: cfg.inflight }, async (_, wid) => {
      let n = 0;
      while (!stop) {
        const t0 = performance.now();
        let ok: boolean;
        try {
          ok = await target.op(wid, n++);
        } catch (err) {
          errors++;
          firstErr ??= `${(err as Error).name}: ${(err as Error).message}`;
          if (errors > errorsMax) stop = true;
          continue;
        }
        const t1 = performance.now();
        okTotal++;
        if (measuring && !stop) {
          lat.push(t1 - t0);
          ops++;
          if (!ok) casFail++;
          if (ops >= cfg.maxOps) endWindow();
        }
      }
    }),
  );
  timers.forEach(clearTimeout);
  clearInterval(second);
  endWindow();
  await Promise.all(pending);
  const ranges = target.ranges?.();
  const sorted = Float64Array.from(lat).sort();
  const cpu = cpuUsed ?? { user: 0, system: 0 };
  const result = {
    ops,
    errors,
    casFail,
    elapsedS: (mEnd - mStart) / 1000,
    p50: pct(sorted, 0.5),
    p90: pct(sorted, 0.9),
    p99: pct(sorted, 0.99),
    max: sorted.length > 0 ? sorted[sorted.length - 1]! : Number.NaN,
    clientCpuS: (cpu.user + cpu.system) / 1e6,
    clientRequests: req1.requests - req0.requests,
    clientRetries: req1.retries - req0.retries,
    firstErr,
    okTotal,
    perSecond,
    ...(ranges ? { cachedRanges: ranges.cached, rangesUsed: ranges.used } : {}),
  };
  return { result, lat };
}

runChild(main);
