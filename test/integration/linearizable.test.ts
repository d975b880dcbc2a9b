// Linearizability under faults, on real processes: 6 clients run get/set/cas/del on 10 keys
// for ~20 s while the leader is killed (-9) and restarted, nats-server is restarted, and a
// follower is paused (SIGSTOP) for 2 s. Every operation goes into a history (JSON lines,
// docs/history-format.md), which the WGL checker must find linearizable, with no key left
// inconclusive.

import { mkdtemp, readFile, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Client } from '../../src/client/index.ts';
import { fromJsonLines, type HistoryOp, toJsonLines } from '../sim/history.ts';
import { checkLinearizable, describeOp } from '../sim/linearizability.ts';
import type { Cluster } from './harness.ts';
import {
  clusterStartMsMax,
  connectClient,
  errorCode,
  nowMs,
  sleep,
  startServingCluster,
  waitForCaughtUp,
  waitForLeader,
} from './helpers.ts';

const clientCount = 6;
const keys = Array.from({ length: 10 }, (_, i) => `lin-${i}`);
/** Operations per key (final reads not counted), so the check stays fast. */
const opsPerKeyMax = 200;
const loadMs = 20_000;
const opTimeoutMs = 1500;
/** Think time between a client's operations: spreads ~1,500 operations over the run. */
const pauseMsMin = 40;
const pauseMsMax = 100;

let cluster: Cluster;
const clients: Client[] = [];
const base = process.hrtime.bigint();

/** Nanoseconds since the test started, on the monotonic clock. */
function ns(): number {
  return Number(process.hrtime.bigint() - base);
}

beforeAll(async () => {
  cluster = await startServingCluster({ nodes: 3 });
  for (let i = 0; i < clientCount; i++) {
    clients.push(await connectClient(cluster.natsUrl, opTimeoutMs));
  }
}, clusterStartMsMax);

afterAll(async () => {
  // A paused node would ignore SIGTERM; let it go first.
  for (const n of cluster?.nodes ?? []) {
    if (n.running()) process.kill(n.pid, 'SIGCONT');
  }
  await Promise.all(clients.map((c) => c.close()));
  await cluster?.stop();
});

/** ok, fail (definitely not applied) or info (outcome unknown), from a thrown error. */
function typeOf(err: unknown): 'fail' | 'info' {
  const code = errorCode(err);
  return code === 'InvalidArgument' || code === 'BadRequest' ? 'fail' : 'info';
}

describe('linearizability under faults', () => {
  it('get/set/cas/del history with kill -9, nats restart and a paused follower', async () => {
    const history: HistoryOp[] = [];
    const opsPerKey = new Map(keys.map((k) => [k, 0]));
    /** The last value a client saw per key: good cas expectations. */
    const seen = new Map<string, string | null>();
    const errors = new Map<string, number>();
    const faults: string[] = [];
    let stop = false;
    const loadEnd = nowMs() + loadMs;

    const runClient = async (c: number) => {
      const client = clients[c]!;
      // A process whose op ended in info is never reused (as Knossos expects).
      let processId = c;
      for (let n = 0; !stop && nowMs() < loadEnd; n++) {
        const open = keys.filter((k) => opsPerKey.get(k)! < opsPerKeyMax);
        if (open.length === 0) break;
        const key = open[Math.floor(Math.random() * open.length)]!;
        opsPerKey.set(key, opsPerKey.get(key)! + 1);
        const roll = Math.random();
        const f: HistoryOp['f'] =
          roll < 0.35 ? 'get' : roll < 0.6 ? 'set' : roll < 0.9 ? 'cas' : 'del';
        const value = `c${c}-${n}`;
        const expectRoll = Math.random();
        const expected =
          expectRoll < 0.7 ? (seen.get(key) ?? null) : expectRoll < 0.85 ? null : 'never';
        const op: HistoryOp = {
          process: processId,
          f,
          key,
          value: f === 'set' || f === 'cas' ? value : null,
          expect: f === 'cas' ? expected : null,
          ok: null,
          type: 'info',
          invoke: ns(),
          complete: 0,
        };
        try {
          if (f === 'get') {
            const r = await client.get(key);
            op.value = r === null ? null : r.value.toString('utf8');
            seen.set(key, op.value);
          } else if (f === 'set') {
            await client.set(key, value);
            seen.set(key, value);
          } else if (f === 'cas') {
            const r = await client.cas(key, expected, value);
            op.ok = r.success;
            seen.set(key, r.value === null ? null : r.value.toString('utf8'));
          } else {
            const r = await client.del(key);
            op.value = r.value === null ? null : r.value.toString('utf8');
            seen.set(key, null);
          }
          op.type = 'ok';
        } catch (err) {
          op.type = typeOf(err);
          const code = errorCode(err);
          errors.set(code, (errors.get(code) ?? 0) + 1);
          if (f === 'del') op.value = null;
        }
        op.complete = ns();
        history.push(op);
        if (op.type === 'info') processId += clientCount;
        await sleep(pauseMsMin + Math.random() * (pauseMsMax - pauseMsMin));
      }
    };

    const note = (what: string) => {
      const line = `${(nowMs() - (loadEnd - loadMs)).toFixed(0).padStart(6)} ms: ${what}`;
      faults.push(line);
    };
    const runFaults = async () => {
      await sleep(2500);
      const leader = await waitForLeader(cluster.natsUrl);
      note(`kill -9 leader ${leader.node} (pid ${cluster.node(leader.node).pid})`);
      await cluster.stopNode(leader.node, 'SIGKILL');
      await sleep(1500);
      const back = await cluster.startNode(leader.node);
      note(`restarted ${leader.node} (pid ${back.pid})`);

      await sleep(1500);
      note(`nats-server stop (pid ${cluster.nats.pid})`);
      await cluster.nats.stop();
      await sleep(1000);
      await cluster.nats.restart();
      note(`nats-server up (pid ${cluster.nats.pid})`);

      await sleep(2000);
      const now = await waitForLeader(cluster.natsUrl);
      const follower = cluster.nodeIds.find((id) => id !== now.node)!;
      const pid = cluster.node(follower).pid;
      note(`SIGSTOP follower ${follower} (pid ${pid}), leader ${now.node}`);
      process.kill(pid, 'SIGSTOP');
      try {
        await sleep(2000);
      } finally {
        process.kill(pid, 'SIGCONT');
      }
      note(`SIGCONT ${follower}`);
    };

    const load = Promise.all(Array.from({ length: clientCount }, (_, c) => runClient(c)));
    try {
      await runFaults();
    } catch (err) {
      stop = true;
      await load;
      throw err;
    }
    // The load ends by itself at loadEnd, or once every key has had its operations.
    await load;
    note(`load ended, ${history.length} operations`);

    // Final reads: the state every key ended in, after the cluster settled.
    await waitForCaughtUp(cluster.natsUrl, cluster.nodeIds, 20_000);
    const reader = clients[0]!;
    for (const key of keys) {
      for (let attempt = 0; attempt < 10; attempt++) {
        const invoke = ns();
        try {
          const r = await reader.get(key);
          history.push({
            process: 10_000,
            f: 'get',
            key,
            value: r === null ? null : r.value.toString('utf8'),
            expect: null,
            ok: null,
            type: 'ok',
            invoke,
            complete: ns(),
          });
          break;
        } catch {
          await sleep(200);
        }
      }
    }

    const dir = await mkdtemp(join(tmpdir(), 'rasputin-history-'));
    const file = join(dir, 'linearizable.jsonl');
    await writeFile(file, toJsonLines(history));
    const parsed = fromJsonLines(await readFile(file, 'utf8'));
    expect(parsed).toEqual(history);

    const count = (t: HistoryOp['type']) => history.filter((op) => op.type === t).length;
    console.log(
      `linearizable: history ${file}\n` +
        `  ${history.length} ops: ${count('ok')} ok, ${count('fail')} fail, ` +
        `${count('info')} info; errors ${JSON.stringify([...errors])}\n` +
        `  ops per key ${JSON.stringify([...opsPerKey.values()])}\n  ${faults.join('\n  ')}`,
    );

    const started = nowMs();
    const result = checkLinearizable(history);
    console.log(
      `linearizable: checked ${result.keysChecked} keys, ${result.operationsChecked} ops ` +
        `in ${(nowMs() - started).toFixed(0)} ms: ok=${result.ok}`,
    );
    for (const v of result.violations) {
      console.log(`VIOLATION ${v.key}: ${v.message}\n  ${v.ops.map(describeOp).join('\n  ')}`);
    }
    expect(result.violations).toEqual([]);
    expect(result.inconclusive).toEqual([]);
    expect(result.ok).toBe(true);
    // The client retries NotLeader itself; it never reaches the caller.
    expect(errors.get('NotLeader') ?? 0).toBe(0);
    // Enough happened for the check to mean something.
    expect(count('ok')).toBeGreaterThan(300);
    expect(history.filter((op) => op.f === 'cas' && op.ok === true).length).toBeGreaterThan(10);
    expect(history.filter((op) => op.f === 'cas' && op.ok === false).length).toBeGreaterThan(10);
  });
});
