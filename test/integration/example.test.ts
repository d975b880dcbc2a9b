// The original Rasputin README's client example against a real 3-node cluster, and the
// `rasputin` CLI (set/get/cas/del/status) as a user runs it.

import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { RangeStatus } from '../../src/cli/status.ts';
import type { Client } from '../../src/client/index.ts';
import { type Cluster, runRasputin } from './harness.ts';
import {
  clusterStartMsMax,
  connectClient,
  startServingCluster,
  statsSum,
  statusOf,
  waitForStatus,
} from './helpers.ts';

let cluster: Cluster;
let client: Client;

beforeAll(async () => {
  cluster = await startServingCluster({ nodes: 3 });
  client = await connectClient(cluster.natsUrl);
}, clusterStartMsMax);

afterAll(async () => {
  await client?.close();
  await cluster?.stop();
});

describe('the seed README client example', () => {
  it('set, get, cas, del as in the original example', async () => {
    await client.set('k1', 'v1');
    expect((await client.get('k1'))?.value.toString()).toBe('v1');

    // CAS returns the current value and sets the success flag accordingly.
    const first = await client.cas('k1', 'v1', 'v12');
    expect(first.success).toBe(true);
    expect(first.value?.toString()).toBe('v12');

    const never = await client.cas('k1', 'vNever', 'vNever2');
    expect(never.success).toBe(false);
    expect(never.value?.toString()).toBe('v12');

    const next = await client.cas('k1', 'v12', 'v13');
    expect(next.success).toBe(true);
    expect(next.value?.toString()).toBe('v13');

    // Deletes return the last value.
    const deleted = await client.del('k1');
    expect(deleted.value?.toString()).toBe('v13');
    expect(await client.get('k1')).toBeNull();
  });

  it('an idle range keeps no log entries on any node, and takes writes again', async () => {
    for (let i = 0; i < 20; i++) await client.set(`idle-${i}`, `v${i}`);
    const nodes = cluster.nodeIds;
    const idle = (byNode: Map<string, RangeStatus>): boolean =>
      nodes.every((id) => {
        const r = byNode.get(id);
        return (
          r !== undefined &&
          r.quiescent === true &&
          r.applied === r.lastIndex &&
          r.snapshotIndex === r.lastIndex
        );
      });
    const before = await waitForStatus(cluster.natsUrl, 'quiescent with an empty log', idle);
    const last = before.get(nodes[0]!)!.lastIndex;
    // A quiescent leader holds no lease: the first read waits for a read index, and the
    // nodes count it (readsWaited, docs/operations.md).
    const readsWaited = async () => {
      const all = await statusOf(cluster.natsUrl, 1000);
      expect(all.length).toBe(nodes.length);
      return statsSum(all, 'readsWaited');
    };
    const waitedBefore = await readsWaited();
    expect((await client.get('idle-7'))?.value.toString()).toBe('v7');
    expect(await readsWaited()).toBeGreaterThan(waitedBefore);
    // The log goes on from its compaction point.
    await client.set('idle-after', 'again');
    expect((await client.get('idle-after'))?.value.toString()).toBe('again');
    expect((await client.get('idle-3'))?.value.toString()).toBe('v3');
    const after = await waitForStatus(cluster.natsUrl, 'quiescent again', idle);
    expect(after.get(nodes[0]!)!.lastIndex).toBeGreaterThan(last);
  });

  it('bytes in, bytes out; absent keys and cas on absent', async () => {
    const key = Uint8Array.from([0x00, 0xff, 0x10]);
    const value = Uint8Array.from([0xde, 0xad, 0x00, 0xbe, 0xef]);
    await client.set(key, value);
    expect((await client.get(key))?.value).toEqual(Buffer.from(value));
    expect((await client.del(key)).value).toEqual(Buffer.from(value));
    expect((await client.del(key)).value).toBeNull();

    const created = await client.cas('example-absent', null, 'a1');
    expect(created).toEqual({ success: true, value: Buffer.from('a1') });
    const refused = await client.cas('example-absent', null, 'a2');
    expect(refused).toEqual({ success: false, value: Buffer.from('a1') });
    const missing = await client.cas('example-missing', 'x', 'y');
    expect(missing).toEqual({ success: false, value: null });
  });

  it('gets whose values exceed one NATS message together still all arrive', async () => {
    // Four 400 KiB values: issued in one turn, the client sends the gets in one request,
    // and the full reply (1.6 MiB) would exceed max_payload. The node answers what does
    // not fit with a retryable Overloaded, and the client retries those gets.
    const values = [1, 2, 3, 4].map((i) => Buffer.alloc(400 * 1024, 0x60 + i));
    for (let i = 0; i < values.length; i++) await client.set(`big-${i}`, values[i]!);
    const got = await Promise.all(values.map((_, i) => client.get(`big-${i}`)));
    for (let i = 0; i < values.length; i++) expect(got[i]?.value.equals(values[i]!)).toBe(true);
    const deleted = await Promise.all(values.map((_, i) => client.del(`big-${i}`)));
    for (let i = 0; i < values.length; i++)
      expect(deleted[i]?.value?.equals(values[i]!)).toBe(true);
  });
});

describe('the rasputin CLI', () => {
  const rasputin = (...args: string[]) =>
    runRasputin([...args, '--nats', cluster.natsUrl], { timeoutMs: 30_000 });

  it('set, get, cas, del with output and exit codes', async () => {
    const set = await rasputin('set', 'cli-k', 'cli-v1');
    expect(set).toMatchObject({ code: 0, stdout: 'OK', timedOut: false });

    const get = await rasputin('get', 'cli-k');
    expect(get).toMatchObject({ code: 0, stdout: 'cli-v1' });

    const cas = await rasputin('cas', 'cli-k', 'cli-v1', 'cli-v2');
    expect(cas).toMatchObject({ code: 0, stdout: 'OK current=cli-v2' });

    const casFailed = await rasputin('cas', 'cli-k', 'nope', 'cli-v3');
    expect(casFailed).toMatchObject({ code: 1, stdout: 'FAILED current=cli-v2' });

    const casAbsent = await rasputin('cas', 'cli-new', '--absent', 'n1');
    expect(casAbsent).toMatchObject({ code: 0, stdout: 'OK current=n1' });

    const del = await rasputin('del', 'cli-k');
    expect(del).toMatchObject({ code: 0, stdout: 'OK last=cli-v2' });

    const delMissing = await rasputin('del', 'cli-k');
    expect(delMissing).toMatchObject({ code: 0, stdout: 'OK last=(none)' });

    const missing = await rasputin('get', 'cli-k');
    expect(missing).toMatchObject({ code: 1, stdout: '(not found)' });

    // What the CLI wrote, the client library reads.
    expect((await client.get('cli-new'))?.value.toString()).toBe('n1');
  });

  it('status lists every node and exactly one leader', async () => {
    const status = await rasputin('status');
    expect(status.code).toBe(0);
    const lines = status.stdout.split('\n');
    expect(lines[0]).toMatch(/^cluster [0-9a-f-]{36}, 3 node\(s\) answered$/);
    expect(lines[1]).toMatch(/^node\s+range\s+role\s+term\s+leader\s+commit\s+applied\s+last/);
    const rows = lines.slice(2).map((line) => line.trim().split(/\s+/));
    expect(rows.map((r) => r[0]).sort()).toEqual(['a', 'b', 'c']);
    expect(rows.every((r) => r[1] === '1' && r[9] === 'a,b,c')).toBe(true);
    expect(rows.filter((r) => r[2] === 'leader')).toHaveLength(1);
  });

  it('ranges shows the one range: whole keyspace, its leader, its keys; nodes lists each node', async () => {
    const leaderRow = (await rasputin('status')).stdout
      .split('\n')
      .slice(2)
      .map((line) => line.trim().split(/\s+/))
      .find((r) => r[2] === 'leader')!;
    for (let i = 0; i < 5; i++) await client.set(`ranges-k${i}`, 'v');
    const keys = (await client.scan('', null, { limit: 10_000 })).entries.length;

    const ranges = await rasputin('ranges');
    expect(ranges.code).toBe(0);
    const [header, row, ...rest] = ranges.stdout.split('\n');
    expect(header).toMatch(
      /^\s*range\s+start\s+end\s+gen\s+leader\s+term\s+keys\s+size\s+ops\/s\s+replicas$/,
    );
    expect(rest).toEqual([]);
    const cols = row!.trim().split(/\s+/);
    // range 1, start "" (the empty key), no end, generation 1, its leader, the key count
    expect(cols.slice(0, 5)).toEqual(['1', '""', '(end)', '1', leaderRow[0]]);
    // The meta range also holds the system keys: its directory entry and the id counter.
    expect(Number(cols[6])).toBe(keys + 2);
    expect(cols[cols.length - 1]).toBe('a,b,c');

    const nodes = await rasputin('nodes');
    expect(nodes.code).toBe(0);
    const lines = nodes.stdout.split('\n');
    expect(lines[0]).toMatch(
      /^node\s+store\s+ranges\s+leaders\s+requests\s+raft in\s+dropped\s+rss\s+heap used\s+log mem$/,
    );
    const rows = lines.slice(1, 4).map((line) => line.trim().split(/\s+/));
    expect(rows.map((r) => r[0])).toEqual(['a', 'b', 'c']);
    expect(rows.every((r) => r[2] === '1')).toBe(true);
    expect(rows.map((r) => Number(r[3])).reduce((x, y) => x + y, 0)).toBe(1);
    // Memory: RSS, V8 heap in use and the logs' memory, e.g. "85.3 MiB  21.0 MiB  12.0 KiB".
    for (const r of rows) {
      expect(r.slice(-6).join(' ')).toMatch(/^[\d.]+ MiB [\d.]+ MiB [\d.]+ (B|KiB|MiB)$/);
    }
    expect(lines[4]).toMatch(/^cluster [0-9a-f-]{36}, 3 node\(s\) answered$/);
  });

  it('usage errors exit 2 without contacting the cluster', async () => {
    const bad = await rasputin('get');
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain('expected 1 argument(s)');
    const unknown = await runRasputin(['frobnicate'], { timeoutMs: 30_000 });
    expect(unknown.code).toBe(2);
    expect(unknown.stderr).toContain('unknown command');
    const flag = await runRasputin(['get', 'k', '--frob'], { timeoutMs: 30_000 });
    expect(flag.code).toBe(2);
    expect(flag.stderr).toContain("Unknown option '--frob'");
    expect(flag.stderr).toContain('usage:');
    expect(flag.stderr).not.toContain('    at ');
  });

  it('no NATS at the address: exit 1 with one line that says so, no stack trace', async () => {
    for (const args of [['get', 'k'], ['status']]) {
      const r = await runRasputin([...args, '--nats', 'nats://127.0.0.1:1'], { timeoutMs: 30_000 });
      expect(r.code, args[0]).toBe(1);
      expect(r.stderr.trim(), args[0]).toMatch(
        /^rasputin: UnavailableError: cannot (reach|connect to) NATS at nats:\/\/127\.0\.0\.1:1/,
      );
      expect(r.stderr, args[0]).not.toContain('    at ');
    }
  });
});
