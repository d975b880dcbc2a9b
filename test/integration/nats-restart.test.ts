// nats-server stops for 1.5 s and restarts (same port) while clients write: the nodes and
// clients reconnect on their own, the cluster serves again with the same node processes, and
// every acknowledged write is readable.

import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Client } from '../../src/client/index.ts';
import { type Cluster, pidAlive } from './harness.ts';
import {
  clusterStartMsMax,
  connectClient,
  lostWrites,
  nowMs,
  probeWrite,
  sleep,
  startServingCluster,
  startWriteLoad,
  waitForCaughtUp,
} from './helpers.ts';

const writerCount = 4;
const writesPerWriterMax = 2000;
const loadMsMax = 40_000;
const writePauseMs = 5;
const writeTimeoutMs = 4000;
/** After the restart, the cluster must serve a write within this. */
const recoveryMsMax = 20_000;
const warmupMs = 1000;
const afterRecoveryMs = 2000;
/** nats-server stays down this long: longer than a lease, shorter than a write timeout. */
const outageMs = 1500;

let cluster: Cluster;
const clients: Client[] = [];

beforeAll(async () => {
  cluster = await startServingCluster({ nodes: 3 });
  for (let i = 0; i < writerCount + 2; i++) clients.push(await connectClient(cluster.natsUrl));
}, clusterStartMsMax);

afterAll(async () => {
  await Promise.all(clients.map((c) => c.close()));
  await cluster?.stop();
});

describe('nats-server restart', () => {
  it('the cluster serves again without restarting any node; acked writes survive', async () => {
    const pids = cluster.nodes.map((n) => n.pid);
    const natsPid = cluster.nats.pid;
    let restartedAt = Number.NaN;
    const load = startWriteLoad(clients.slice(0, writerCount), {
      prefix: 'nr',
      perWriterMax: writesPerWriterMax,
      pauseMs: writePauseMs,
      timeoutMs: writeTimeoutMs,
      loadMsMax,
    });
    const writes = load.writes;
    try {
      await sleep(warmupMs);
      expect(writes.some((x) => x.outcome === 'ok')).toBe(true);
      const before = nowMs();
      await cluster.nats.stop();
      await sleep(outageMs);
      await cluster.nats.restart();
      restartedAt = nowMs();
      expect(cluster.nats.pid).not.toBe(natsPid);

      const probe = await probeWrite(clients[writerCount]!, 'nr-probe', recoveryMsMax);
      const servedMs = probe.ackedAtMs - restartedAt;
      console.log(
        `nats-restart: nats-server down and up in ${(restartedAt - before).toFixed(0)} ms; ` +
          `first write acknowledged ${servedMs.toFixed(0)} ms after it was back`,
      );
      expect(
        servedMs,
        `no write served within ${recoveryMsMax} ms (${probe.lastError})`,
      ).toBeGreaterThan(0);
      await sleep(afterRecoveryMs);
    } finally {
      await load.stop();
    }

    // Same node processes throughout.
    expect(cluster.nodes.map((n) => n.pid)).toEqual(pids);
    expect(pids.every(pidAlive)).toBe(true);
    expect(cluster.nodes.every((n) => n.running())).toBe(true);

    const acked = writes.filter((x) => x.outcome === 'ok');
    const unknown = writes.filter((x) => x.outcome === 'unknown');
    const ackedAfter = acked.filter((x) => x.invokedMs > restartedAt);
    const codes = [...new Set(unknown.map((x) => x.error))].join(',');
    console.log(
      `nats-restart: ${writes.length} writes, ${acked.length} acknowledged ` +
        `(${ackedAfter.length} invoked after the restart), ${unknown.length} with unknown ` +
        `outcome (${codes || 'none'})`,
    );
    expect(ackedAfter.length).toBeGreaterThan(writerCount);

    expect(await lostWrites(clients[writerCount + 1]!, writes)).toEqual([]);

    // Every replica is connected again and applies what the leader commits.
    await waitForCaughtUp(cluster.natsUrl, cluster.nodeIds, 20_000);
  });
});
