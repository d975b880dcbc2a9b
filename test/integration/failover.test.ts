// Leader failover: kill -9 the leader while 8 clients write distinct keys. A new leader
// serves within a bounded wait (measured and printed), every acknowledged write survives,
// and the killed node rejoins and catches up after a restart.

import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Client } from '../../src/client/index.ts';
import type { Cluster } from './harness.ts';
import {
  clusterStartMsMax,
  connectClient,
  getEventually,
  lostWrites,
  nowMs,
  probeWrite,
  sleep,
  startServingCluster,
  startWriteLoad,
  waitForCaughtUp,
  waitForLeader,
} from './helpers.ts';

const writerCount = 8;
/** Bounds of the write load: per writer, and for the whole run. */
const writesPerWriterMax = 2000;
/** Pause between a writer's writes, so the load spans the failover. */
const writePauseMs = 5;
const loadMsMax = 40_000;
const writeTimeoutMs = 4000;
/** A new leader must serve within this (a few election timeouts of 1-2 s each). */
const failoverMsMax = 15_000;
/** Writes keep going this long before the kill and after the cluster serves again. */
const warmupMs = 1500;
const afterRecoveryMs = 2000;

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

describe('failover', () => {
  let killed = '';

  it('kill -9 of the leader under write load: a new leader serves, no ack is lost', async () => {
    let killedAt = Number.NaN;
    /** When the first write invoked after the kill was acknowledged. */
    let servedAt = Number.NaN;
    const load = startWriteLoad(clients.slice(0, writerCount), {
      prefix: 'fo',
      perWriterMax: writesPerWriterMax,
      pauseMs: writePauseMs,
      timeoutMs: writeTimeoutMs,
      loadMsMax,
    });
    const writes = load.writes;
    try {
      await sleep(warmupMs);
      const before = writes.filter((x) => x.outcome === 'ok').length;
      expect(before).toBeGreaterThan(0);

      const old = await waitForLeader(cluster.natsUrl);
      killed = old.node;
      killedAt = nowMs();
      await cluster.stopNode(killed, 'SIGKILL');
      const exitedMs = nowMs() - killedAt;

      // The first write invoked after the old leader is gone, retried until it succeeds.
      const probe = await probeWrite(clients[writerCount]!, 'fo-probe', failoverMsMax);
      servedAt = probe.ackedAtMs;
      const servedMs = servedAt - killedAt;
      const leader = await waitForLeader(cluster.natsUrl, { exclude: [killed], timeoutMs: 5000 });
      console.log(
        `failover: leader ${killed} (term ${old.r.term}) killed (exit seen after ` +
          `${exitedMs.toFixed(0)} ms); first write acknowledged ${servedMs.toFixed(0)} ms ` +
          `after the kill; new leader ${leader.node} at term ${leader.r.term}`,
      );
      expect(
        servedMs,
        `no write served within ${failoverMsMax} ms (${probe.lastError})`,
      ).toBeGreaterThan(0);
      expect(leader.r.term).toBeGreaterThan(old.r.term);
      await sleep(afterRecoveryMs);
    } finally {
      await load.stop();
    }

    const acked = writes.filter((x) => x.outcome === 'ok');
    const unknown = writes.filter((x) => x.outcome === 'unknown');
    const codes = [...new Set(unknown.map((x) => x.error))].join(',');
    // Writes that were waiting while there was no leader (between the kill and service).
    const spanning = writes.filter((x) => x.invokedMs < servedAt && x.completedMs > killedAt);
    const ackedAfter = acked.filter((x) => x.invokedMs > killedAt);
    console.log(
      `failover: ${writes.length} writes, ${acked.length} acknowledged, ` +
        `${unknown.length} with unknown outcome (${codes || 'none'}); ` +
        `${spanning.length} in flight during the failover, ${ackedAfter.length} acknowledged ` +
        'writes invoked after it',
    );
    expect(spanning.length).toBeGreaterThan(0);
    expect(ackedAfter.length).toBeGreaterThan(writerCount);
    expect(await lostWrites(clients[writerCount + 1]!, writes)).toEqual([]);
  });

  it('the killed node restarts, rejoins and catches up', async () => {
    expect(killed).not.toBe('');
    const fresh = await cluster.startNode(killed);
    expect(fresh.running()).toBe(true);
    await clients[0]!.set('fo-after-rejoin', 'yes');
    const started = nowMs();
    const byNode = await waitForCaughtUp(cluster.natsUrl, cluster.nodeIds, 20_000);
    console.log(
      `failover: ${killed} caught up in ${(nowMs() - started).toFixed(0)} ms: ` +
        JSON.stringify([...byNode].map(([id, r]) => [id, r.role, r.term, r.applied])),
    );
    const rejoined = byNode.get(killed)!;
    expect(rejoined.role).toBe('follower');
    expect(cluster.nodes.every((n) => n.running())).toBe(true);
    expect(await getEventually(clients[1]!, 'fo-after-rejoin')).toBe('yes');
  });
});
