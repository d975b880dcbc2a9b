// Watch on real processes: range leaders publish every applied mutation once on
// `<p>.watch.<key tokens>`; clients (ours, or any NATS client) watch a key or a prefix;
// a leader change does not repeat notifications; writes do not wait for watchers.

import { connect } from '@nats-io/transport-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Client, WatchEvent } from '../../src/client/index.ts';
import { decode } from '../../src/protocol/wire.ts';
import { watchPattern } from '../../src/transport/watch-subject.ts';
import type { Cluster } from './harness.ts';
import {
  clusterStartMsMax,
  connectClient,
  nowMs,
  sleep,
  startServingCluster,
  until,
  waitForLeader,
} from './helpers.ts';

let cluster: Cluster;
let writer: Client;
let watcher: Client;

beforeAll(async () => {
  cluster = await startServingCluster({ nodes: 3 });
  writer = await connectClient(cluster.natsUrl);
  watcher = await connectClient(cluster.natsUrl);
}, clusterStartMsMax);

afterAll(async () => {
  await writer?.close();
  await watcher?.close();
  await cluster?.stop();
});

/** Collects a watch's events in the background until stopped. */
function collect(pattern: string): { events: WatchEvent[]; stop: () => void } {
  const events: WatchEvent[] = [];
  const abort = new AbortController();
  void (async () => {
    for await (const e of watcher.watch(pattern, { signal: abort.signal })) events.push(e);
  })();
  return { events, stop: () => abort.abort() };
}

describe('watch', () => {
  it('delivers each set, successful cas and del once, in order per key, to a prefix watch', async () => {
    const w = collect('wa.');
    const other = collect('wb.');
    await sleep(100); // the subscriptions reach nats-server
    for (let i = 0; i < 20; i++) await writer.set(`wa.k${i % 5}`, `v${i}`);
    await writer.cas('wa.k0', 'v15', 'c1'); // succeeds
    await writer.cas('wa.k0', 'nope', 'c2'); // fails: no event
    await writer.del('wa.k1'); // existed
    await writer.del('wa.k1'); // absent now: no event
    await writer.set('wc.outside', 'x'); // another prefix
    await until('22 events', () => w.events.length >= 22);
    await sleep(200);
    w.stop();
    other.stop();
    // 20 sets, the cas that succeeded, the del of a key that existed; nothing else.
    expect(w.events).toHaveLength(22);
    expect(other.events).toHaveLength(0);
    const last = w.events.slice(-2).map((e) => [e.op, e.key.toString(), e.value?.toString()]);
    expect(last).toEqual([
      ['set', 'wa.k0', 'c1'],
      ['del', 'wa.k1', undefined],
    ]);
    // Per key: revisions increase, values in write order.
    const byKey = new Map<string, WatchEvent[]>();
    for (const e of w.events) {
      const k = e.key.toString();
      byKey.set(k, [...(byKey.get(k) ?? []), e]);
    }
    for (const [, es] of byKey) {
      for (let i = 1; i < es.length; i++)
        expect(es[i]!.revision).toBeGreaterThan(es[i - 1]!.revision);
    }
    expect(byKey.get('wa.k2')!.map((e) => e.value?.toString())).toEqual(['v2', 'v7', 'v12', 'v17']);
  });

  it('watchers of one pattern on one client each get every notification; stopping one leaves the rest', async () => {
    // They share one NATS subscription.
    const ws = [collect('ws.'), collect('ws.'), collect('ws.')];
    await sleep(100);
    for (let i = 0; i < 30; i++) {
      await writer.set(`ws.k${i % 4}`, `v${i}`);
      if (i === 10) ws[1]!.stop();
    }
    await until('30 notifications', () => ws[0]!.events.length >= 30 && ws[2]!.events.length >= 30);
    await sleep(200);
    const want = Array.from({ length: 30 }, (_, i) => `v${i}`);
    expect(ws[0]!.events.map((e) => e.value?.toString())).toEqual(want);
    expect(ws[2]!.events.map((e) => e.value?.toString())).toEqual(want);
    expect(ws[1]!.events.length).toBeLessThanOrEqual(12);
    // A new watcher of the pattern after one stopped gets notifications from now on.
    const late = collect('ws.');
    await sleep(100);
    await writer.set('ws.late', 'x');
    await until('the late one', () => late.events.length >= 1);
    for (const w of [ws[0]!, ws[2]!, late]) w.stop();
    expect(late.events.map((e) => e.key.toString())).toEqual(['ws.late']);
  });

  it('a stalled loop keeps the first 10,000 notifications and counts the ones it lost', async () => {
    const w = watcher.watch('wd.');
    await sleep(100);
    const n = 10_100;
    for (let i = 0; i < n; i += 500) {
      await Promise.all(
        Array.from({ length: Math.min(500, n - i) }, (_, j) => writer.set(`wd.${i + j}`, 'v')),
      );
    }
    await until('100 lost', () => w.dropped === 100, 15_000);
    // The loop gets what it kept: the oldest 10,000, so every write before the last batch
    // of 500 (the lost 100 are newer); and nothing is lost once it reads again.
    const seen = new Set<string>();
    for (let i = 0; i < 10_000; i++) {
      const r = await w.next();
      expect(r.done).toBe(false);
      if (!r.done) seen.add(r.value.key.toString());
    }
    expect(seen.size).toBe(10_000);
    const early = Array.from({ length: n - 500 }, (_, i) => `wd.${i}`);
    expect(early.filter((k) => !seen.has(k))).toEqual([]);
    await writer.set('wd.after', 'x');
    const r = await w.next();
    expect(r.done === false && r.value.key.toString()).toBe('wd.after');
    expect(w.dropped).toBe(100);
    await w.return?.();
  }, 60_000);

  it('any NATS client can watch: keys with dots, spaces, wildcards and binary bytes', async () => {
    const nc = await connect({ servers: cluster.natsUrl });
    try {
      const keys = [
        Buffer.from('wx.a b'),
        Buffer.from('wx.*.>'),
        Buffer.from([0x77, 0x78, 0x2e, 0, 0xff]),
      ];
      const seen: Buffer[] = [];
      const sub = nc.subscribe(watchPattern('rasputin', Buffer.from('wx.')), {
        callback: (_err, msg) => {
          seen.push(Buffer.from((decode(msg.data) as { key: Uint8Array }).key));
        },
      });
      await nc.flush();
      for (const k of keys) await writer.set(k, 'v');
      await until('3 raw events', () => seen.length >= 3);
      sub.unsubscribe();
      expect(seen.map((k) => k.toString('hex'))).toEqual(keys.map((k) => k.toString('hex')));
      // An exact-key watch sees only that key.
      const exact: string[] = [];
      const sub2 = nc.subscribe(watchPattern('rasputin', Buffer.from('wx.a b')), {
        callback: (_err, msg) => {
          exact.push(String((decode(msg.data) as { key: Uint8Array }).key));
        },
      });
      await nc.flush();
      await writer.set('wx.a b', 'again');
      await writer.set('wx.a bc', 'not this one');
      await until('the exact key', () => exact.length >= 1);
      await sleep(200);
      sub2.unsubscribe();
      expect(exact).toEqual(['wx.a b']);
    } finally {
      await nc.close();
    }
  });

  it('a leader change repeats no notification; writes go on with nobody watching', async () => {
    const w = collect('wl.');
    await sleep(100);
    for (let i = 0; i < 30; i++) await writer.set(`wl.k${i}`, 'before');
    const leader = await waitForLeader(cluster.natsUrl);
    await cluster.stopNode(leader.node, 'SIGKILL');
    for (let i = 0; i < 30; i++) await writer.set(`wl.k${i}`, 'after', { timeoutMs: 15_000 });
    await until(
      'the writes after the failover',
      () => w.events.filter((e) => e.value?.toString() === 'after').length >= 25,
    );
    await sleep(300);
    w.stop();
    const ids = w.events.map((e) => `${e.range}:${e.revision}`);
    expect(new Set(ids).size).toBe(ids.length); // no mutation notified twice
    await cluster.startNode(leader.node);
    // Nobody watches now: writes are served as before.
    const started = nowMs();
    await Promise.all(Array.from({ length: 200 }, (_, i) => writer.set(`wn.k${i}`, 'v')));
    console.log(`watch: 200 writes with no watcher in ${(nowMs() - started).toFixed(0)} ms`);
  }, 60_000);
});
