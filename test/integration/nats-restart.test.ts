// nats-server stops for 1.5 s and restarts (same port) while clients write: the nodes and
// clients reconnect on their own, the cluster serves again with the same node processes, and
// every acknowledged write is readable.

import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Client } from '../../src/client/index.ts';
import { type Cluster, pidAlive } from './harness.ts';
import {
  clusterStartMsMax,
  connectClient,
  errorCode,
  getEventually,
  nowMs,
  sleep,
  startServingCluster,
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
/** Bound of the probe writes (each takes up to 1 s, or fails at once). */
const probesMax = 10_000;

interface Write {
  key: string;
  value: string;
  outcome: 'ok' | 'unknown';
  error?: string;
  invokedMs: number;
}

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
    const writes: Write[] = [];
    let stop = false;
    let restartedAt = Number.NaN;
    const loadDeadline = nowMs() + loadMsMax;
    const writer = async (w: number) => {
      const client = clients[w]!;
      for (let n = 0; n < writesPerWriterMax && !stop && nowMs() < loadDeadline; n++) {
        const write: Write = {
          key: `nr-${w}-${n}`,
          value: `v-${w}-${n}`,
          outcome: 'unknown',
          invokedMs: nowMs(),
        };
        writes.push(write);
        try {
          await client.set(write.key, write.value, { timeoutMs: writeTimeoutMs });
          write.outcome = 'ok';
        } catch (err) {
          write.error = errorCode(err);
        }
        await sleep(writePauseMs);
      }
    };
    const load = Promise.all(Array.from({ length: writerCount }, (_, w) => writer(w)));
    try {
      await sleep(warmupMs);
      expect(writes.some((x) => x.outcome === 'ok')).toBe(true);
      const before = nowMs();
      await cluster.nats.stop();
      await sleep(outageMs);
      await cluster.nats.restart();
      restartedAt = nowMs();
      expect(cluster.nats.pid).not.toBe(natsPid);

      const probe = clients[writerCount]!;
      let servedMs = -1;
      let probeError = '';
      for (let i = 0; i < probesMax && nowMs() - restartedAt < recoveryMsMax; i++) {
        try {
          await probe.set('nr-probe', `p${i}`, { timeoutMs: 1000 });
          servedMs = nowMs() - restartedAt;
          break;
        } catch (err) {
          probeError = errorCode(err);
        }
      }
      console.log(
        `nats-restart: nats-server down and up in ${(restartedAt - before).toFixed(0)} ms; ` +
          `first write acknowledged ${servedMs.toFixed(0)} ms after it was back`,
      );
      expect(
        servedMs,
        `no write served within ${recoveryMsMax} ms (${probeError})`,
      ).toBeGreaterThan(0);
      await sleep(afterRecoveryMs);
    } finally {
      stop = true;
      await load;
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

    const reader = clients[writerCount + 1]!;
    const lost: string[] = [];
    for (let i = 0; i < writes.length; i += 100) {
      const chunk = writes.slice(i, i + 100);
      const got = await Promise.all(chunk.map((x) => getEventually(reader, x.key)));
      chunk.forEach((x, j) => {
        const okValues = x.outcome === 'ok' ? [x.value] : [null, x.value];
        if (!okValues.includes(got[j]!)) {
          lost.push(`${x.key} (${x.outcome}): read ${String(got[j])}`);
        }
      });
    }
    expect(lost).toEqual([]);

    // Every replica is connected again and applies what the leader commits.
    await waitForCaughtUp(cluster.natsUrl, cluster.nodeIds, 20_000);
  });
});
