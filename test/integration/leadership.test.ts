// Range leadership on real processes: `rasputin transfer` moves a range's leader to the
// node asked, with typed errors for bad requests, and the placement driver spreads the
// leaders of many ranges over the nodes without losing a write (docs/ranges.md,
// "Leadership transfer" and "Leader balancing").

import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { collectPlacement, type NodeStatus } from '../../src/cli/status.ts';
import type { Client } from '../../src/client/index.ts';
import { type Cluster, runRasputin } from './harness.ts';
import {
  clusterStartMsMax,
  connectClient,
  errorCode,
  startServingCluster,
  statusOf,
  waitForLeader,
  waitUntil,
} from './helpers.ts';

let cluster: Cluster;
let client: Client;

beforeAll(async () => {
  cluster = await startServingCluster({ nodes: 3, extraArgs: ['--balance-leaders', 'on'] });
  client = await connectClient(cluster.natsUrl);
}, clusterStartMsMax);

afterAll(async () => {
  await client?.close();
  await cluster?.stop();
});

/** Ranges led by each node, as the nodes' own status says (every node named, 0 included). */
function leadersByNode(nodes: readonly NodeStatus[]): Map<string, number> {
  const counts = new Map(cluster.nodeIds.map((id) => [id, 0]));
  for (const n of nodes) {
    counts.set(n.node, n.ranges.filter((r) => r.role === 'leader').length);
  }
  return counts;
}

describe('leadership', () => {
  it('rasputin transfer moves a range to the node asked; bad requests get typed errors', async () => {
    const { node: from } = await waitForLeader(cluster.natsUrl);
    const to = cluster.nodeIds.find((id) => id !== from)!;
    await client.set('t-before', 'x');

    const out = await runRasputin(['transfer', 't-key', to, '--nats', cluster.natsUrl]);
    expect(out.stderr).toBe('');
    expect(out.code).toBe(0);
    expect(out.stdout).toMatch(new RegExp(`^OK range 1 \\(generation \\d+\\) led by ${to}$`));
    const now = await waitForLeader(cluster.natsUrl, { exclude: [from] });
    expect(now.node).toBe(to);
    // Data written before reads back, and writes go on, through the new leader.
    expect((await client.get('t-before'))?.value.toString()).toBe('x');
    await client.set('t-after', 'y');
    expect((await client.get('t-after'))?.value.toString()).toBe('y');

    // Asking the node that leads it already answers at once.
    const same = await client.transferLeader('t-key', to);
    expect(same).toMatchObject({ leader: to, descriptor: { rangeId: 1 } });

    const codeOf = (p: Promise<unknown>) => p.then(() => 'resolved', errorCode);
    expect(await codeOf(client.transferLeader('t-key', 'zz'))).toBe('InvalidArgument');
    await expect(client.transferLeader('t-key', 'zz')).rejects.toThrow(
      /node zz holds no voter of range 1/,
    );
    expect(await codeOf(client.transferLeader('t-key', 'not a node id'))).toBe('BadRequest');
    const stale = client.transferLeader('t-key', from, { expectGeneration: 99, timeoutMs: 2000 });
    expect(await codeOf(stale)).toBe('RangeKeyMismatch');
    const usage = await runRasputin(['transfer', 't-key', '--nats', cluster.natsUrl]);
    expect(usage.code).toBe(2);
    expect(usage.stderr).toMatch(/expected 2 arguments \(KEY NODE\)/);
  }, 60_000);

  it('the placement driver spreads the leaders of new ranges over the nodes', async () => {
    const keys = Array.from({ length: 300 }, (_, i) => `b-${String(i).padStart(3, '0')}`);
    for (let i = 0; i < keys.length; i += 50) {
      await Promise.all(keys.slice(i, i + 50).map((k) => client.set(k, `v${k}`)));
    }
    // Eleven splits: twelve ranges, all led where range 1 is, until the driver moves them.
    for (let i = 1; i <= 11; i++) await client.split(`b-${String(i * 25).padStart(3, '0')}`);
    let seen = new Map<string, number>();
    const counts = await waitUntil(
      'leaders spread to 4, 4 and 4',
      async () => {
        seen = leadersByNode(await statusOf(cluster.natsUrl));
        const n = [...seen.values()];
        return n.reduce((a, b) => a + b, 0) === 12 && n.every((x) => x === 4) ? seen : undefined;
      },
      { timeoutMs: 45_000, intervalMs: 500, lastSeen: () => JSON.stringify([...seen]) },
    );
    expect([...counts.values()]).toEqual([4, 4, 4]);

    // Every decision is visible with its reason, and none of them lost a write.
    const placement = await collectPlacement(cluster.natsUrl, 'rasputin', 500);
    const moves = placement
      .flatMap((p) => p.decisions)
      .filter((d) => d.op.kind === 'transferLeader');
    expect(moves.length).toBeGreaterThanOrEqual(7);
    for (const d of moves) {
      expect(d.reason).toMatch(/^[a-c] leads \d+ of \d+ ranges, [a-c] \d+ \(3 live nodes\)/);
    }
    const values = await Promise.all(keys.map((k) => client.get(k)));
    expect(values.map((v) => v?.value.toString())).toEqual(keys.map((k) => `v${k}`));
  }, 90_000);
});
