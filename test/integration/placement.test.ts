// The placement driver on real processes: ranges that pass the split threshold are split
// at their median key without losing a write, every decision is visible with its reason,
// and the driver fails over with the meta range's leader.

import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { collectPlacement, type NodeStatus } from '../../src/cli/status.ts';
import type { Client } from '../../src/client/index.ts';
import type { Cluster } from './harness.ts';
import {
  clusterStartMsMax,
  connectClient,
  getEventually,
  nowMs,
  sleep,
  startServingCluster,
  statusOf,
  waitForLeader,
  waitUntil,
} from './helpers.ts';

/** Small, so a few thousand 200-byte values pass it. */
const splitBytes = 48 * 1024;
const value = 'v'.repeat(200);

let cluster: Cluster;
let client: Client;

beforeAll(async () => {
  cluster = await startServingCluster({
    nodes: 3,
    extraArgs: ['--split-bytes', String(splitBytes)],
  });
  client = await connectClient(cluster.natsUrl);
}, clusterStartMsMax);

afterAll(async () => {
  await client?.close();
  await cluster?.stop();
});

/** Writes keys `<prefix>-00000 ...` with 64 writes in flight. */
async function writeKeys(prefix: string, count: number): Promise<string[]> {
  const keys = Array.from({ length: count }, (_, i) => `${prefix}-${String(i).padStart(5, '0')}`);
  for (let i = 0; i < keys.length; i += 64) {
    await Promise.all(keys.slice(i, i + 64).map((k) => client.set(k, value)));
  }
  return keys;
}

/** Range ids and spans every node that answered agrees on, or null while they differ. */
function agreedRanges(nodes: NodeStatus[]): string[] | null {
  const views = nodes.map((n) =>
    n.ranges
      .map((r) => `${r.rangeId}:${Buffer.from(r.start ?? []).toString('hex')}:${r.generation}`)
      .sort()
      .join(' '),
  );
  if (views.length < 3 || views.some((v) => v !== views[0])) return null;
  return views[0]!.split(' ');
}

async function waitForRanges(atLeast: number, timeoutMs: number): Promise<string[]> {
  let seen: string[] | null = null;
  return waitUntil(
    `${atLeast}+ ranges on every node`,
    async () => {
      seen = agreedRanges(await statusOf(cluster.natsUrl));
      return seen && seen.length >= atLeast ? seen : undefined;
    },
    { timeoutMs, intervalMs: 250, lastSeen: () => `saw ${JSON.stringify(seen)}` },
  );
}

describe('placement driver', () => {
  let keys: string[] = [];

  it('splits a range that passes the threshold at its median key; no write is lost', async () => {
    keys = await writeKeys('auto', 1500); // ~300 KB of values
    const ranges = await waitForRanges(2, 30_000);
    // Every key reads back, wherever it lives now.
    for (const k of keys.filter((_, i) => i % 25 === 0)) {
      expect(await getEventually(client, k)).toBe(value);
    }
    const all: string[] = [];
    for await (const e of client.scanAll('auto-', 'auto.')) all.push(e.key.toString());
    expect(all).toEqual(keys);
    console.log(`placement: ${ranges.length} ranges after ${keys.length} writes`);
  }, 60_000);

  it('shows each decision with its reason on the active driver, only one active', async () => {
    const answers = await collectPlacement(cluster.natsUrl, 'rasputin', 500);
    const active = answers.filter((a) => a.active);
    expect(active).toHaveLength(1);
    const leader = await waitForLeader(cluster.natsUrl);
    expect(active[0]!.node).toBe(leader.node);
    const splits = active[0]!.decisions.filter((d) => d.op.kind === 'split');
    expect(splits.length).toBeGreaterThan(0);
    expect(splits[0]!.reason).toMatch(/>= 48(\.0)? KiB/);
    expect(
      splits.some((d) => d.outcome?.status === 'done' || d.outcome?.status === 'observed'),
    ).toBe(true);
  });

  it('fails over with the meta range leader: the new driver keeps splitting', async () => {
    const before = (await waitForRanges(2, 10_000)).length;
    const leader = await waitForLeader(cluster.natsUrl);
    await cluster.stopNode(leader.node, 'SIGKILL');
    const next = await waitForLeader(cluster.natsUrl, {
      exclude: [leader.node],
      timeoutMs: 20_000,
    });
    const more = await writeKeys('after', 1500);
    // Two live nodes agree; the third is down, so count on those answering.
    const deadline = nowMs() + 40_000;
    let count = before;
    while (nowMs() < deadline && count <= before) {
      const nodes = (await statusOf(cluster.natsUrl)).filter((n) => n.node !== leader.node);
      count = Math.min(...nodes.map((n) => n.ranges.length));
      await sleep(250);
    }
    expect(count).toBeGreaterThan(before);
    const answers = await collectPlacement(cluster.natsUrl, 'rasputin', 500);
    expect(answers.filter((a) => a.active).map((a) => a.node)).toEqual([next.node]);
    for (const k of more.filter((_, i) => i % 50 === 0)) {
      expect(await getEventually(client, k)).toBe(value);
    }
    // The killed node comes back and gets every range.
    await cluster.startNode(leader.node);
    await waitForRanges(count, 30_000);
  }, 120_000);
});
