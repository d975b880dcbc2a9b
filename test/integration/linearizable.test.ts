// Linearizability under faults, on real processes: 6 clients run get/set/cas/del on 10 keys
// for ~20 s while the leader is killed (-9) and restarted, nats-server is restarted, and a
// follower is paused (SIGSTOP) for 2 s. Every operation goes into a history (JSON lines,
// docs/history-format.md), which the WGL checker must find linearizable, with no key left
// inconclusive.

import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Client } from '../../src/client/index.ts';
import type { Cluster } from './harness.ts';
import {
  clusterStartMsMax,
  connectClient,
  nowMs,
  sleep,
  startServingCluster,
  waitForCaughtUp,
  waitForLeader,
} from './helpers.ts';
import {
  checkHistory,
  countType,
  describeLoad,
  dropSavedHistory,
  finalReads,
  saveHistory,
  startHistoryLoad,
} from './history-load.ts';

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

describe('linearizability under faults', () => {
  it('get/set/cas/del history with kill -9, nats restart and a paused follower', async () => {
    const faults: string[] = [];
    const loadStart = nowMs();
    const load = startHistoryLoad(clients, {
      keys,
      opsPerKeyMax,
      loadMs,
      pauseMsMin,
      pauseMsMax,
    });
    const history = load.history;

    const note = (what: string) => {
      const line = `${(nowMs() - loadStart).toFixed(0).padStart(6)} ms: ${what}`;
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

    try {
      await runFaults();
    } catch (err) {
      await load.stop();
      throw err;
    }
    // The load ends by itself at its deadline, or once every key has had its operations.
    await load.done;
    note(`load ended, ${history.length} operations`);

    // Final reads: the state every key ended in, after the cluster settled.
    await waitForCaughtUp(cluster.natsUrl, cluster.nodeIds, 20_000);
    await finalReads(clients[0]!, keys, history);

    const { file, reread } = await saveHistory('linearizable', history);
    expect(reread).toEqual(history);
    console.log(`linearizable: history ${file}\n  ${describeLoad(load)}\n  ${faults.join('\n  ')}`);

    const result = checkHistory('linearizable', history);
    expect(result.violations).toEqual([]);
    expect(result.inconclusive).toEqual([]);
    expect(result.ok).toBe(true);
    // The client retries NotLeader itself; it never reaches the caller.
    expect(load.errors.get('NotLeader') ?? 0).toBe(0);
    // Enough happened for the check to mean something.
    expect(countType(history, 'ok')).toBeGreaterThan(300);
    expect(history.filter((op) => op.f === 'cas' && op.ok === true).length).toBeGreaterThan(10);
    expect(history.filter((op) => op.f === 'cas' && op.ok === false).length).toBeGreaterThan(10);
    await dropSavedHistory(file);
  });
});
