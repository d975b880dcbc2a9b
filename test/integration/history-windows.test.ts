// Time-bounded history on real processes: with --events-retain-s 2 and --dedup-window-s 2
// (and the count windows at their defaults, 100,000 positions, far from reached here), a
// range's leader compacts the events and forgets the request ids the range applied more
// than about 2 s ago, with replicated commands (docs/streams.md, docs/protocol.md):
//
//   - a cursor from before stops reading (CompactedError) once its events are that old;
//   - a retried request id keeps its first result while the range remembers it, and
//     applies anew once it is forgotten.

import { connect, type NatsConnection } from '@nats-io/transport-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Client, CompactedError } from '../../src/client/index.ts';
import { decode, encode } from '../../src/protocol/wire.ts';
import type { Cluster } from './harness.ts';
import {
  clusterStartMsMax,
  connectClient,
  nowMs,
  sleep,
  startServingCluster,
  statsSum,
  statusOf,
} from './helpers.ts';

const p = 'rasputin';
const windowS = 2;
/** How long each test keeps its range busy, at most, waiting for the window to pass. */
const busyMsMax = 20_000;

let cluster: Cluster;
let client: Client;
let raw: NatsConnection;
let cid = '';

beforeAll(async () => {
  cluster = await startServingCluster({
    nodes: 3,
    extraArgs: ['--events-retain-s', String(windowS), '--dedup-window-s', String(windowS)],
  });
  client = await connectClient(cluster.natsUrl);
  raw = await connect({ servers: cluster.natsUrl, name: 'rasputin-it-history' });
  await client.set('hw-start', 'x');
  cid = (await statusOf(cluster.natsUrl))[0]!.cid;
}, clusterStartMsMax);

afterAll(async () => {
  await raw?.close();
  await client?.close();
  await cluster?.stop();
});

/** Writes 20 keys under `prefix` (keeps the range applying, so its leader looks at it). */
async function busy(prefix: string, round: number): Promise<void> {
  await Promise.all(Array.from({ length: 20 }, (_, i) => client.set(`${prefix}${i}`, `r${round}`)));
}

/** A set with our own request id, as a client's retry sends it; the op's result. */
async function setWithId(key: string, value: string, id: string): Promise<unknown> {
  const te = new TextEncoder();
  const body = {
    v: 1,
    cid,
    ops: [{ op: 'set', key: te.encode(key), value: te.encode(value), id: te.encode(id) }],
  };
  const reply = decode((await raw.request(`${p}.kv`, encode(body), { timeout: 5000 })).data) as {
    res?: unknown[];
  };
  return reply.res?.[0];
}

describe('time-bounded history', () => {
  it('events applied longer ago than --events-retain-s are compacted', async () => {
    const sub = client.subscribe('hw-ev/', { waitMs: 500 });
    const old = await sub.started;
    sub.close();
    await busy('hw-ev/', 0);
    const start = nowMs();
    let failure: unknown;
    for (let round = 1; failure === undefined && nowMs() - start < busyMsMax; round++) {
      await busy('hw-ev/', round);
      const s = client.subscribe('hw-ev/', { fromRevision: old, waitMs: 0 });
      try {
        await s.next();
      } catch (err) {
        failure = err;
      } finally {
        s.close();
      }
      await sleep(100);
    }
    expect(failure).toBeInstanceOf(CompactedError);
    expect((failure as CompactedError).message).toContain(
      `at most ${windowS} s, --events-retain-s`,
    );
    // Not before the window: the events the cursor needs were written after `start`.
    expect(nowMs() - start).toBeGreaterThanOrEqual(windowS * 1000);
    const proposed = statsSum(await statusOf(cluster.natsUrl), 'eventsCompactionsProposed');
    expect(proposed).toBeGreaterThan(0);
  }, 40_000);

  it('a request id is remembered within --dedup-window-s and forgotten after it', async () => {
    expect(await setWithId('hw-dd/k', 'first', 'hw-id-X')).toEqual({ ok: true });
    const appliedAt = nowMs();
    expect(await setWithId('hw-dd/k', 'second', 'hw-id-Y')).toEqual({ ok: true });
    // A retry at once: the first outcome, nothing applied again.
    expect(await setWithId('hw-dd/k', 'first', 'hw-id-X')).toEqual({ ok: true });
    expect((await client.get('hw-dd/k'))?.value.toString()).toBe('second');
    let forgottenAfterMs: number | undefined;
    for (
      let round = 0;
      forgottenAfterMs === undefined && nowMs() - appliedAt < busyMsMax;
      round++
    ) {
      await busy('hw-dd/o', round);
      await sleep(200);
      const retriedAt = nowMs();
      await setWithId('hw-dd/k', 'first', 'hw-id-X');
      if ((await client.get('hw-dd/k'))?.value.toString() === 'first') {
        forgottenAfterMs = retriedAt - appliedAt;
      }
    }
    // Forgotten, and only once the window had passed.
    expect(forgottenAfterMs).toBeGreaterThanOrEqual(windowS * 1000);
    // By forgetRequests, as the leader's status counts.
    const proposed = statsSum(await statusOf(cluster.natsUrl), 'requestsForgetsProposed');
    expect(proposed).toBeGreaterThan(0);
  }, 40_000);
});
