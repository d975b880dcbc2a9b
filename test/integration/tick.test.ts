// The longest tick a node takes (--tick-ms 200, config.ts tickMsMax) on real processes: a
// leader is elected, serves writes and reads, and keeps its leadership whenever it goes
// idle. Idle is the hard case: its followers' latest answered lease round may have opened
// heartbeatTicks + 1 (3) ticks before the leader checks its lease (docs/consensus.md,
// "Owed heartbeats"), and a leader abdicates when that is a whole 900 ms lease.
// With --tick-ms 300 or 500, which nodes took before, a cluster lost its leader about a
// second after each election and never served.

import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Client } from '../../src/client/index.ts';
import { tickMsMax } from '../../src/node/config.ts';
import type { Cluster } from './harness.ts';
import {
  clusterStartMsMax,
  connectClient,
  leaderOf,
  sleep,
  startServingCluster,
  statusOf,
  waitForLeader,
} from './helpers.ts';

/** The longest tick a node takes (200 ms). */
const tickMs = tickMsMax;
/** Idle this long after the election and after the writes: three leases each. */
const idleMs = 2700;
/** Then writes and reads this long. */
const serveMs = 2000;

let cluster: Cluster;
let client: Client;

beforeAll(async () => {
  cluster = await startServingCluster({ nodes: 3, extraArgs: ['--tick-ms', String(tickMs)] });
  client = await connectClient(cluster.natsUrl, 10_000);
}, clusterStartMsMax);

afterAll(async () => {
  await client?.close();
  await cluster?.stop();
});

describe(`--tick-ms ${tickMs}`, () => {
  it('keeps one leader when idle after its election, through writes and reads, and idle after them', async () => {
    const first = await waitForLeader(cluster.natsUrl);
    const sameLeader = async (when: string) => {
      const now = leaderOf(await statusOf(cluster.natsUrl));
      // The same leader at the same term: it never abdicated, nobody campaigned.
      expect({ when, node: now?.node, term: now?.r.term }).toEqual({
        when,
        node: first.node,
        term: first.r.term,
      });
    };
    // No traffic: only heartbeats renew the lease (writes' appends would renew it too).
    await sleep(idleMs);
    await sameLeader('after the idle wait');
    const startedMs = performance.now();
    let n = 0;
    while (performance.now() - startedMs < serveMs && n < 10_000) {
      await client.set(`tick-${n}`, `v${n}`);
      expect((await client.get(`tick-${n}`))?.value.toString()).toBe(`v${n}`);
      n++;
      await sleep(20);
    }
    expect(n).toBeGreaterThan(20);
    // The writes' last appends went since the last round: the next round skips the
    // followers, and the tick after it owes them the heartbeat.
    await sleep(idleMs);
    await sameLeader('idle after the writes');
    expect((await client.get('tick-0'))?.value.toString()).toBe('v0');
  });
});
