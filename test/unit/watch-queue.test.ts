// The queue behind a client.watch() loop: hand-off to a waiting loop, a bounded queue
// that loses the newest past its bound (at most once), and an end that releases everyone.

import { describe, expect, it } from 'vitest';
import { WatchQueue } from '../../src/client/watch-queue.ts';

describe('WatchQueue', () => {
  it('hands notifications out in order, to a waiting loop at once and from the queue after', async () => {
    const q = new WatchQueue<number>(10, () => {});
    const first = q.next();
    q.push(1); // straight to the waiting next()
    q.push(2);
    q.push(3);
    expect(await first).toEqual({ value: 1, done: false });
    expect(await q.next()).toEqual({ value: 2, done: false });
    expect(await q.next()).toEqual({ value: 3, done: false });
    const got: number[] = [];
    const loop = (async () => {
      for await (const n of q) got.push(n);
    })();
    for (let i = 4; i < 8; i++) q.push(i);
    await new Promise((r) => setTimeout(r, 5));
    q.end();
    await loop;
    expect(got).toEqual([4, 5, 6, 7]);
  });

  it('keeps at most `max` waiting; past that loses the newest and counts them', async () => {
    const q = new WatchQueue<number>(3, () => {});
    for (let i = 0; i < 5; i++) q.push(i);
    expect(q.dropped).toBe(2);
    expect([(await q.next()).value, (await q.next()).value, (await q.next()).value]).toEqual([
      0, 1, 2,
    ]);
    q.push(9); // room again
    expect((await q.next()).value).toBe(9);
  });

  it('end (or return) finishes waiting and later calls, drops the queue, calls onEnd once', async () => {
    let ends = 0;
    const q = new WatchQueue<number>(10, () => ends++);
    const a = q.next();
    const b = q.next();
    q.end();
    expect(await a).toEqual({ value: undefined, done: true });
    expect(await b).toEqual({ value: undefined, done: true });
    q.push(1); // ignored once ended
    expect(await q.next()).toEqual({ value: undefined, done: true });
    await q.return();
    expect(ends).toBe(1);
  });

  it('fail ends the loop with an error: one next() throws it, the rest are done', async () => {
    let ends = 0;
    const q = new WatchQueue<number>(10, () => ends++);
    q.push(1);
    const boom = new Error('refused');
    q.fail(boom);
    // Queued notifications are dropped; the error comes once, then the loop is done.
    await expect(q.next()).rejects.toBe(boom);
    expect(await q.next()).toEqual({ value: undefined, done: true });
    expect(ends).toBe(1);
    // A loop waiting in next() gets the error there; a second waiting one is done.
    const w = new WatchQueue<number>(10, () => {});
    const a = w.next();
    const b = w.next();
    w.fail(boom);
    await expect(a).rejects.toBe(boom);
    expect(await b).toEqual({ value: undefined, done: true });
    w.end(); // no effect after the end
    expect(await w.next()).toEqual({ value: undefined, done: true });
    // A for await loop throws it.
    const l = new WatchQueue<number>(10, () => {});
    const loop = (async () => {
      for await (const _ of l) {
        // nothing comes
      }
    })();
    l.fail(boom);
    await expect(loop).rejects.toBe(boom);
  });
});
