// Leader failover: kill -9 the leader while 8 clients write distinct keys. A new leader
// serves within a bounded wait (measured and printed), every acknowledged write survives,
// and the killed node rejoins and catches up after a restart.

import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Client } from '../../src/client/index.ts';
import type { Cluster } from './harness.ts';
import {
  clusterStartMsMax,
  connectClient,
  errorCode,
  getEventually,
  nowMs,
  sleep,
  startServingCluster,
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
/** Bound of the probe writes (each takes up to 1 s, or fails at once). */
const probesMax = 10_000;

interface Write {
  key: string;
  value: string;
  outcome: 'ok' | 'unknown';
  error?: string;
  invokedMs: number;
  completedMs: number;
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

describe('failover', () => {
  let killed = '';

  it('kill -9 of the leader under write load: a new leader serves, no ack is lost', async () => {
    const writes: Write[] = [];
    let stop = false;
    let killedAt = Number.NaN;
    /** When the first write invoked after the kill was acknowledged. */
    let servedAt = Number.NaN;
    const loadDeadline = nowMs() + loadMsMax;
    const writer = async (w: number) => {
      const client = clients[w]!;
      for (let n = 0; n < writesPerWriterMax && !stop && nowMs() < loadDeadline; n++) {
        const write: Write = {
          key: `fo-${w}-${n}`,
          value: `v-${w}-${n}`,
          outcome: 'unknown',
          invokedMs: nowMs(),
          completedMs: Number.POSITIVE_INFINITY,
        };
        writes.push(write);
        try {
          await client.set(write.key, write.value, { timeoutMs: writeTimeoutMs });
          write.outcome = 'ok';
        } catch (err) {
          write.error = errorCode(err);
        }
        write.completedMs = nowMs();
        await sleep(writePauseMs);
      }
    };
    const load = Promise.all(Array.from({ length: writerCount }, (_, w) => writer(w)));
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
      const probe = clients[writerCount]!;
      let servedMs = -1;
      let probeError = '';
      for (let i = 0; i < probesMax && nowMs() - killedAt < failoverMsMax; i++) {
        try {
          await probe.set('fo-probe', `p${i}`, { timeoutMs: 1000 });
          servedAt = nowMs();
          servedMs = servedAt - killedAt;
          break;
        } catch (err) {
          probeError = errorCode(err);
        }
      }
      const leader = await waitForLeader(cluster.natsUrl, { exclude: [killed], timeoutMs: 5000 });
      console.log(
        `failover: leader ${killed} (term ${old.r.term}) killed (exit seen after ` +
          `${exitedMs.toFixed(0)} ms); first write acknowledged ${servedMs.toFixed(0)} ms ` +
          `after the kill; new leader ${leader.node} at term ${leader.r.term}`,
      );
      expect(
        servedMs,
        `no write served within ${failoverMsMax} ms (${probeError})`,
      ).toBeGreaterThan(0);
      expect(leader.r.term).toBeGreaterThan(old.r.term);
      await sleep(afterRecoveryMs);
    } finally {
      stop = true;
      await load;
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
