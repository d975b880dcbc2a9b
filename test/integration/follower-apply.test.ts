// Followers apply late (--follower-apply-ms; docs/ranges.md, "Followers apply late"). With
// a hold of 5 s, far longer than the default, so that what is held is seen:
//   - acknowledged writes are held by the followers (their applied index stays behind the
//     leader's commit), and every follower has applied them once the hold has passed;
//   - a split is not held: every node applies it (and the writes held before it) at once,
//     so the new range's replicas exist everywhere long before the hold would end (while
//     writes keep the range awake: quiescence applies what is held, too);
//   - kill -9 of the leader while its followers hold acknowledged writes: the new leader
//     applies them before it serves, and every one reads back.

import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Client } from '../../src/client/index.ts';
import type { Cluster } from './harness.ts';
import {
  clusterStartMsMax,
  connectClient,
  nodeLogs,
  nowMs,
  range1,
  readText,
  sleep,
  startServingCluster,
  statusOf,
  waitForCaughtUp,
  waitForLeader,
  waitUntil,
  writeSerially,
} from './helpers.ts';

const holdMs = 5000;
/** A hold ends within holdMs and a tick or two (100 ms each); the rest is margin. */
const heldApplyMsMax = holdMs + 3000;
/** What a split may take to apply on every node: far less than holdMs. */
const splitAppliedMsMax = 2000;
const writes = 40;

let cluster: Cluster;
let client: Client;

beforeAll(async () => {
  cluster = await startServingCluster({
    nodes: 3,
    extraArgs: ['--follower-apply-ms', String(holdMs)],
  });
  client = await connectClient(cluster.natsUrl, 10_000);
}, clusterStartMsMax);

afterAll(async () => {
  await client?.close();
  await cluster?.stop();
});

/** Range 1 as each node reports it. */
async function range1ByNode() {
  return range1(await statusOf(cluster.natsUrl));
}

describe('followers apply late', () => {
  it('holds acknowledged writes on the followers, and applies them once the hold passes', async () => {
    const leader = await waitForLeader(cluster.natsUrl);
    await writeSerially(client, 'fa-hold', writes);
    const held = await range1ByNode();
    const commit = held.get(leader.node)!.commit;
    const followers = [...held].filter(([node]) => node !== leader.node);
    expect(followers.length).toBe(2);
    // The writes took far less than the hold: no follower has applied all of them.
    for (const [, r] of followers) expect(r.applied).toBeLessThan(commit);

    const startedMs = nowMs();
    const caughtUp = await waitForCaughtUp(cluster.natsUrl, cluster.nodeIds, heldApplyMsMax);
    for (const r of caughtUp.values()) expect(r.applied).toBeGreaterThanOrEqual(commit);
    console.log(`follower apply: held writes applied ${Math.round(nowMs() - startedMs)} ms later`);
  });

  it('applies a split at once on every node, with the writes held before it', async () => {
    await writeSerially(client, 'fb-split', writes);
    // Nothing held from these, then two writes held: the split comes within the new hold.
    await waitForCaughtUp(cluster.natsUrl, cluster.nodeIds, heldApplyMsMax);
    await client.set('fb-split-0', 'v0');
    await client.set('fb-split-39', 'v39');
    // Writes keep range 1 awake (an idle range quiesces after a second, which applies what
    // its followers hold): a held split would wait for the hold.
    let busy = true;
    const busyWrites = (async () => {
      for (let i = 0; busy && i < 200; i++) {
        await client.set(`fa-busy-${i}`, 'x');
        await sleep(20);
      }
    })();
    await client.split('fb-split-20', { timeoutMs: 15_000 });
    const splitAtMs = nowMs();
    const right = await waitUntil(
      'every node applied the split',
      async () => {
        const nodes = await statusOf(cluster.natsUrl);
        const lefts = nodes.map((n) => n.ranges.find((r) => r.rangeId === 1));
        const done =
          nodes.length === 3 &&
          lefts.every((r) => r?.end !== undefined && r.end !== null && r.end.length > 0);
        if (!done) return undefined;
        // Each node's new range: the one starting at the split key.
        const key = new TextEncoder().encode('fb-split-20');
        const rights = nodes.map((n) =>
          n.ranges.find((r) => r.start !== undefined && Buffer.from(r.start).equals(key)),
        );
        return rights.every((r) => r !== undefined && r.applied > 0) ? rights : undefined;
      },
      { timeoutMs: splitAppliedMsMax, intervalMs: 100, lastSeen: () => nodeLogs(cluster, 10) },
    ).finally(() => {
      busy = false;
    });
    await busyWrites;
    console.log(
      `follower apply: split applied on every node ${Math.round(nowMs() - splitAtMs)} ms after ` +
        `it was acknowledged (range ${right[0]!.rangeId})`,
    );
    // The new range serves, and the writes on both sides read back.
    await client.set('fb-split-30', 'after');
    expect(await readText(client, 'fb-split-30')).toBe('after');
    for (const i of [0, 19, 20, 39]) expect(await readText(client, `fb-split-${i}`)).toBe(`v${i}`);
  });

  it('kill -9 of the leader while followers hold writes: every acknowledged write reads back', async () => {
    const leader = await waitForLeader(cluster.natsUrl);
    // Range 1 holds keys before the split key: these stay on it.
    await writeSerially(client, 'fa-kill', writes);
    const before = await range1ByNode();
    const commit = before.get(leader.node)!.commit;
    const holding = [...before].filter(([node, r]) => node !== leader.node && r.applied < commit);
    expect(holding.length).toBeGreaterThan(0);
    await cluster.stopNode(leader.node, 'SIGKILL');
    await waitForLeader(cluster.natsUrl, { timeoutMs: 30_000, exclude: [leader.node] });
    for (let i = 0; i < writes; i++) {
      expect(await readText(client, `fa-kill-${i}`, 15_000)).toBe(`v${i}`);
    }
  });
});
