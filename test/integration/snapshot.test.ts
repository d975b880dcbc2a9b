// Catch-up by snapshot: with a short log (--log-entries-max 50), a follower that was down
// while ~500 keys were written can only catch up from a snapshot. Afterwards the three
// stores, read directly once the cluster is stopped, hold identical data.

import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Client } from '../../src/client/index.ts';
import { Store } from '../../src/storage/store.ts';
import type { Cluster } from './harness.ts';
import {
  clusterStartMsMax,
  connectClient,
  nowMs,
  startServingCluster,
  waitForCaughtUp,
  waitForLeader,
  waitForStatus,
} from './helpers.ts';

const logEntriesMax = 50;
const keyCount = 500;
/** Concurrent client calls while loading (the client batches them). */
const concurrency = 50;

let cluster: Cluster;
let client: Client;

beforeAll(async () => {
  cluster = await startServingCluster({
    nodes: 3,
    extraArgs: ['--log-entries-max', String(logEntriesMax)],
  });
  client = await connectClient(cluster.natsUrl, 10_000);
}, clusterStartMsMax);

afterAll(async () => {
  await client?.close();
  await cluster?.stop();
});

/** Runs `f` on every item, `concurrency` at a time. */
async function each<T>(items: readonly T[], f: (item: T) => Promise<void>): Promise<void> {
  for (let i = 0; i < items.length; i += concurrency) {
    await Promise.all(items.slice(i, i + concurrency).map(f));
  }
}

const keyOf = (i: number) => `snap-${String(i).padStart(4, '0')}`;

function storeDir(nodeId: string): string {
  return join(cluster.baseDir, nodeId);
}

/** Opens a stopped node's store, runs `f`, closes it. */
async function withStore<T>(nodeId: string, f: (store: Store) => T): Promise<T> {
  const store = Store.open(storeDir(nodeId));
  try {
    return f(store);
  } finally {
    await store.close();
  }
}

describe('snapshot catch-up', () => {
  const expected = new Map<string, string | null>();
  let follower = '';
  /** The follower's last log index when it stopped. */
  let stoppedAt = -1;
  /** The leader's commit index when the follower restarted. */
  let commitAtRestart = -1;

  it('a follower down during ~500 writes catches up by snapshot', async () => {
    // Some history the follower sees, so its log is not empty when it stops.
    await each([...Array(20).keys()], async (i) => {
      await client.set(keyOf(i), `early-${i}`);
      expected.set(keyOf(i), `early-${i}`);
    });
    const leader = await waitForLeader(cluster.natsUrl);
    await waitForCaughtUp(cluster.natsUrl, cluster.nodeIds);
    follower = cluster.nodeIds.find((id) => id !== leader.node)!;
    await cluster.stopNode(follower, 'SIGTERM');
    stoppedAt = await withStore(follower, (s) => {
      const range = s.loadRange(1)!;
      return range.state.snapshot.index + range.state.entries.length;
    });

    // ~500 keys while it is down, plus overwrites, cas and deletes.
    await each([...Array(keyCount).keys()], async (i) => {
      await client.set(keyOf(i), `v1-${i}`);
      expected.set(keyOf(i), `v1-${i}`);
    });
    await each([...Array(100).keys()], async (i) => {
      await client.set(keyOf(i), `v2-${i}`);
      expected.set(keyOf(i), `v2-${i}`);
    });
    await each([...Array(50).keys()], async (i) => {
      const r = await client.cas(keyOf(100 + i), `v1-${100 + i}`, `cas-${100 + i}`);
      expect(r.success).toBe(true);
      expected.set(keyOf(100 + i), `cas-${100 + i}`);
    });
    await each([...Array(50).keys()], async (i) => {
      const r = await client.del(keyOf(200 + i));
      expect(r.value?.toString()).toBe(`v1-${200 + i}`);
      expected.set(keyOf(200 + i), null);
    });

    // The leader has compacted far past what the follower has: its log cannot serve it.
    const before = await waitForCaughtUp(
      cluster.natsUrl,
      cluster.nodeIds.filter((id) => id !== follower),
    );
    commitAtRestart = before.get(leader.node)!.commit;
    expect(commitAtRestart).toBeGreaterThan(stoppedAt + 2 * logEntriesMax + 1);

    await cluster.startNode(follower);
    const started = nowMs();
    const after = await waitForStatus(
      cluster.natsUrl,
      `${follower} holding the log up to ${commitAtRestart}`,
      (byNode) => (byNode.get(follower)?.lastIndex ?? 0) >= commitAtRestart,
    );
    console.log(
      `snapshot: ${follower} stopped at index ${stoppedAt}; leader commit ${commitAtRestart} ` +
        `at the restart; ${follower} reached it in ${(nowMs() - started).toFixed(0)} ms: ` +
        JSON.stringify([...after].map(([id, r]) => [id, r.role, r.applied, r.lastIndex])),
    );
  });

  // Regression (fixed in 63cce56): a snapshot install did not move the node's visible
  // applied index, so status lagged until the next entry applied.
  it('status: applied reaches the commit index right after a snapshot install', async () => {
    expect(follower).not.toBe('');
    await waitForCaughtUp(cluster.natsUrl, cluster.nodeIds, 3000);
  });

  it('writes after the snapshot go through the log; all three stores agree', async () => {
    expect(follower).not.toBe('');
    await each([...Array(10).keys()], async (i) => {
      await client.set(keyOf(keyCount + i), `late-${i}`);
      expected.set(keyOf(keyCount + i), `late-${i}`);
    });
    const caughtUp = await waitForCaughtUp(cluster.natsUrl, cluster.nodeIds, 30_000);
    console.log(
      'snapshot: after later writes: ' +
        JSON.stringify([...caughtUp].map(([id, r]) => [id, r.role, r.applied, r.lastIndex])),
    );

    // Every node stopped cleanly; read the three stores directly.
    await Promise.all(cluster.nodeIds.map((id) => cluster.stopNode(id, 'SIGTERM')));
    const snapshots = new Map<string, number>();
    const values = new Map<string, Map<string, Rec>>();
    for (const id of cluster.nodeIds) {
      await withStore(id, (s) => {
        snapshots.set(id, s.loadRange(1)!.state.snapshot.index);
        const records = new Map<string, Rec>();
        for (const key of expected.keys()) records.set(key, s.get(Buffer.from(key)));
        values.set(id, records);
      });
    }
    console.log(`snapshot: snapshot index per node ${JSON.stringify([...snapshots])}`);
    // The restarted follower's log starts after a snapshot point past where it stopped.
    expect(snapshots.get(follower)).toBeGreaterThan(stoppedAt);

    const mismatches: string[] = [];
    for (const [key, want] of expected) {
      const records = cluster.nodeIds.map((id) => values.get(id)!.get(key));
      const shown = records.map((r) => (r === undefined ? null : Buffer.from(r.value!).toString()));
      if (!shown.every((v) => v === want)) {
        mismatches.push(`${key}: want ${String(want)}, got ${JSON.stringify(shown)}`);
      }
      // Whole records (value, revision, request records) are identical on every node.
      for (const r of records.slice(1)) expect(r).toEqual(records[0]);
    }
    expect(mismatches).toEqual([]);
  });
});

type Rec = ReturnType<Store['get']>;
