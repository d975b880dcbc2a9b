// Leaders apply late under writes alone (--leader-apply-ms; docs/ranges.md, "Leaders apply
// late under writes alone"). With a hold of 5 s, far longer than the default, so that what
// is held is seen:
//   - writes alone are held by the leader (its applied index stays behind its commit), and
//     a get ends the hold: it reads the last write back long before the hold would end;
//   - a cas after held sets sees the last of them (its entry ends the hold, in order);
//   - a subscribe poll held at the leader gets a new write's event long before the hold
//     would end;
//   - kill -9 of the leader while it holds acknowledged writes: every one reads back.

import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Client } from '../../src/client/index.ts';
import type { Cluster } from './harness.ts';
import {
  clusterStartMsMax,
  connectClient,
  nowMs,
  range1,
  readText,
  sleep,
  startServingCluster,
  statusOf,
  waitForLeader,
  writeSerially,
} from './helpers.ts';

const holdMs = 5000;
/**
 * What a read or a poll may take when it ends a hold: a turn and a storage transaction,
 * so milliseconds; well under holdMs, which it would take if it waited for the hold.
 */
const endsHoldMsMax = 3000;
/** The leader holds nothing back this long after a read waited (readWaitQuietMs), and more. */
const readQuietMs = 1500;
const writes = 20;

let cluster: Cluster;
let client: Client;

beforeAll(async () => {
  cluster = await startServingCluster({
    nodes: 3,
    extraArgs: ['--leader-apply-ms', String(holdMs)],
  });
  client = await connectClient(cluster.natsUrl, 10_000);
}, clusterStartMsMax);

afterAll(async () => {
  await client?.close();
  await cluster?.stop();
});

/** Range 1 at its leader, as the leader reports it. */
async function leaderRange1(leader: string) {
  const r = range1(await statusOf(cluster.natsUrl)).get(leader);
  expect(r?.role).toBe('leader');
  return r!;
}

/** Range 1 at its leader, which holds committed entries back (applied below commit). */
async function heldAtLeader(leader: string) {
  const r = await leaderRange1(leader);
  expect(r.applied).toBeLessThan(r.commit);
  return r;
}

describe('leaders apply late under writes alone', () => {
  it('holds writes alone at the leader; a get ends the hold and reads the last write', async () => {
    const leader = await waitForLeader(cluster.natsUrl);
    await writeSerially(client, 'la-hold', writes);
    const held = await heldAtLeader(leader.node);

    const startedMs = nowMs();
    expect(await readText(client, `la-hold-${writes - 1}`)).toBe(`v${writes - 1}`);
    const tookMs = nowMs() - startedMs;
    expect(tookMs).toBeLessThan(endsHoldMsMax);
    expect((await leaderRange1(leader.node)).applied).toBeGreaterThanOrEqual(held.commit);
    for (const i of [0, 7, 13]) expect(await readText(client, `la-hold-${i}`)).toBe(`v${i}`);
    console.log(`leader apply: a get ended the hold in ${Math.round(tookMs)} ms`);
  });

  it('a cas after held sets sees the last of them, and a del the cas', async () => {
    await sleep(readQuietMs);
    const leader = await waitForLeader(cluster.natsUrl);
    await writeSerially(client, 'la-cas', writes);
    await client.set('la-cas-x', 'a');
    await client.set('la-cas-x', 'b');
    await heldAtLeader(leader.node);
    expect((await client.cas('la-cas-x', 'a', 'wrong')).success).toBe(false);
    expect((await client.cas('la-cas-x', 'b', 'c')).success).toBe(true);
    expect((await client.del('la-cas-x')).value?.toString()).toBe('c');
  });

  it('a subscribe poll held at the leader gets a new write at once', async () => {
    await sleep(readQuietMs);
    const leader = await waitForLeader(cluster.natsUrl);
    await writeSerially(client, 'la-poll-before', writes);
    await heldAtLeader(leader.node);
    const sub = client.subscribe('la-poll/', { waitMs: holdMs * 2 });
    try {
      await sub.started;
      const next = sub.next();
      await sleep(300); // the poll is held at the leader by now
      const writtenMs = nowMs();
      await client.set('la-poll/k', 'polled');
      const r = await next;
      const tookMs = nowMs() - writtenMs;
      expect(r.done).toBe(false);
      expect(r.value?.key.toString()).toBe('la-poll/k');
      expect(r.value?.value?.toString()).toBe('polled');
      expect(tookMs).toBeLessThan(endsHoldMsMax);
    } finally {
      sub.close();
    }
  });

  it('kill -9 of the leader while it holds writes: every acknowledged write reads back', async () => {
    await sleep(readQuietMs);
    const leader = await waitForLeader(cluster.natsUrl);
    await writeSerially(client, 'la-kill', writes);
    await heldAtLeader(leader.node);
    await cluster.stopNode(leader.node, 'SIGKILL');
    await waitForLeader(cluster.natsUrl, { timeoutMs: 30_000, exclude: [leader.node] });
    for (let i = 0; i < writes; i++)
      expect(await readText(client, `la-kill-${i}`, 15_000)).toBe(`v${i}`);
  });
});
