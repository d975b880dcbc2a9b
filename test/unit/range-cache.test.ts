// The client's range cache: newest generation wins, older descriptors never roll it back,
// lookups find the range holding a key; checked against a plain model over random splits.

import { afterEach, describe, expect, it, vi } from 'vitest';
import { type CachedRange, RangeCache } from '../../src/client/range-cache.ts';
import {
  findSpan,
  inSpan,
  PackedSpans,
  packSpansEveryMs,
  Repacked,
} from '../../src/storage/descriptor.ts';

const k = (s: string) => Buffer.from(s);
const r = (
  rangeId: number,
  start: string,
  end: string | null,
  generation: number,
): CachedRange => ({
  rangeId,
  start: k(start),
  end: end === null ? null : k(end),
  generation,
});
/** A seeded generator of integers in [0, n). */
function lcg(seed: number): (n: number) => number {
  return (n) => {
    seed = (seed * 1103515245 + 12345) & 0x7fffffff;
    return seed % n;
  };
}
/**
 * Splits the span of `layout` that holds `key` strictly inside it at `key` (the right half
 * gets range id `rightId`), in place; the two halves, or undefined when no span does.
 */
function split(
  layout: CachedRange[],
  key: string,
  rightId: number,
): [CachedRange, CachedRange] | undefined {
  const i = layout.findIndex(
    (x) =>
      Buffer.compare(x.start, k(key)) < 0 && (x.end === null || Buffer.compare(k(key), x.end) < 0),
  );
  if (i < 0) return undefined;
  const p = layout[i]!;
  const left = { ...p, end: k(key), generation: p.generation + 1 };
  const right = { rangeId: rightId, start: k(key), end: p.end, generation: p.generation + 1 };
  layout.splice(i, 1, left, right);
  return [left, right];
}
const view = (c: RangeCache) =>
  c.all().map((x) => `${x.rangeId}@${x.generation}[${x.start},${x.end ?? ''})`);

describe('range cache', () => {
  it('replaces what a newer descriptor overlaps and ignores older ones', () => {
    const c = new RangeCache();
    expect(c.update([r(1, '', null, 1)])).toBe(true);
    expect(c.update([r(1, '', 'm', 2), r(2, 'm', null, 2)])).toBe(true);
    expect(view(c)).toEqual(['1@2[,m)', '2@2[m,)']);
    expect(c.update([r(1, '', null, 1)])).toBe(false); // stale: ignored
    expect(c.update([r(2, 'm', null, 2)])).toBe(false); // known
    expect(c.lookup(k('q'))?.rangeId).toBe(2);
    expect(c.lookup(k('a'))?.rangeId).toBe(1);
    // Range 2 splits at t: the new right range alone leaves a gap until 2@3 arrives.
    expect(c.update([r(3, 't', null, 3)])).toBe(true);
    expect(view(c)).toEqual(['1@2[,m)', '3@3[t,)']);
    expect(c.lookup(k('p'))).toBeUndefined();
    c.update([r(2, 'm', 't', 3)]);
    expect(c.lookup(k('p'))?.rangeId).toBe(2);
  });

  it('ends in the true layout whatever order the descriptors of a split history arrive in', () => {
    const rand = lcg(7);
    for (let run = 0; run < 200; run++) {
      // A random split history over keys k00..k99; every descriptor ever produced.
      let layout: CachedRange[] = [r(1, '', null, 1)];
      const history: CachedRange[] = [layout[0]!];
      let nextId = 2;
      for (let s = 0; s < 30; s++) {
        const key = `k${String(rand(100)).padStart(2, '0')}`;
        const halves = split(layout, key, nextId);
        if (halves === undefined) continue;
        nextId++;
        history.push(...halves);
      }
      // Deliver every descriptor in a random order.
      const c = new RangeCache();
      const order = history.map((d) => [rand(1 << 20), d] as const).sort((a, b) => a[0] - b[0]);
      for (const [, d] of order) c.update([d]);
      layout = [...layout].sort((a, b) => Buffer.compare(a.start, b.start));
      expect(view(c)).toEqual(
        layout.map((x) => `${x.rangeId}@${x.generation}[${x.start},${x.end ?? ''})`),
      );
    }
  });

  it('finds the range holding a key, and none in a gap, as a scan of every range does', () => {
    const rand = lcg(11);
    const name = (i: number) => `k${String(i).padStart(3, '0')}`;
    for (let run = 0; run < 100; run++) {
      // Random disjoint spans over k000..k999, some with gaps between them, the first maybe
      // not at the start of the keyspace and the last maybe with no end.
      const bounds = [...new Set(Array.from({ length: 1 + rand(40) }, () => rand(1000)))].sort(
        (a, b) => a - b,
      );
      const spans: CachedRange[] = [];
      for (let i = 0; i + 1 < bounds.length; i++) {
        if (rand(4) === 0) continue; // a gap
        spans.push(r(spans.length + 1, name(bounds[i]!), name(bounds[i + 1]!), 1));
      }
      if (rand(2) === 0 && bounds.length > 0) {
        spans.push(r(spans.length + 1, name(bounds[bounds.length - 1]!), null, 1));
      }
      const c = new RangeCache();
      c.update(spans);
      for (let q = 0; q < 1001; q++) {
        const key = q === 1000 ? k('') : k(name(q));
        const want = spans.find(
          (x) =>
            Buffer.compare(x.start, key) <= 0 && (x.end === null || Buffer.compare(key, x.end) < 0),
        );
        expect(c.lookup(key)?.rangeId).toBe(want?.rangeId);
      }
    }
  });

  afterEach(() => {
    vi.useRealTimers();
  });

  it('looks up what the cache holds now, after each update and eviction', () => {
    // The clock moves on by 0-1.5 s a step, so lookups run both over packed spans and, in
    // the second after a change, over the list itself.
    vi.useFakeTimers({ toFake: ['performance'] });
    const rand = lcg(5);
    const name = (i: number) => `k${String(i).padStart(3, '0')}`;
    const scan = (c: RangeCache, key: Uint8Array) =>
      c
        .all()
        .find(
          (x) =>
            Buffer.compare(x.start, key) <= 0 && (x.end === null || Buffer.compare(key, x.end) < 0),
        );
    for (let run = 0; run < 20; run++) {
      const c = new RangeCache();
      c.update([r(1, '', null, 1)]);
      const layout: CachedRange[] = [r(1, '', null, 1)];
      let nextId = 2;
      for (let step = 0; step < 60; step++) {
        if (rand(5) === 0 && c.size > 0) {
          c.evict(c.all()[rand(c.size)]!.rangeId);
        } else {
          // A split of the range holding a random key (the split key's length varies, so
          // the packed keys are of several lengths), learnt in one update or two.
          const key = `${name(rand(1000))}${'x'.repeat(rand(3))}`;
          const halves = split(layout, key, nextId);
          if (halves === undefined) continue;
          nextId++;
          const [left, right] = halves;
          if (rand(2) === 0) c.update([left, right]);
          else c.update([right]);
        }
        vi.advanceTimersByTime(rand(1500));
        for (let q = 0; q < 50; q++) {
          const key = k(`${name(rand(1000))}${'x'.repeat(rand(3))}`);
          expect(c.lookup(key)?.rangeId).toBe(scan(c, key)?.rangeId);
        }
        expect(c.lookup(k(''))?.rangeId).toBe(scan(c, k(''))?.rangeId);
      }
    }
  });

  it('makes packed spans again after a change at most once per packSpansEveryMs', () => {
    vi.useFakeTimers({ toFake: ['performance'] });
    let made = 0;
    const held = new Repacked(() => ++made);
    expect(held.get()).toBe(1);
    expect(held.get()).toBe(1);
    held.invalidate();
    expect(held.get()).toBeUndefined();
    vi.advanceTimersByTime(packSpansEveryMs - 1);
    expect(held.get()).toBeUndefined();
    vi.advanceTimersByTime(1);
    expect(held.get()).toBe(2);
    vi.advanceTimersByTime(5 * packSpansEveryMs);
    held.invalidate();
    expect(held.get()).toBe(3);
    expect(made).toBe(3);
  });

  it('packed spans find the span of any binary key as findSpan does', () => {
    // Keys of 0-12 bytes over 0x00, 0x01, 0x61 and 0xff: many share their first 8 bytes,
    // end in zero bytes or are prefixes of others (the cases find's 8-byte words must
    // leave to the full compare).
    const rand = lcg(11);
    const alphabet = [0x00, 0x01, 0x61, 0xff];
    const key = () => {
      const prefix = rand(3) === 0 ? [0x61, 0x61, 0x61, 0x61, 0x61, 0x61, 0x61] : [];
      const rest = Array.from({ length: rand(13 - prefix.length) }, () => alphabet[rand(4)]!);
      return Buffer.from([...prefix, ...rest]);
    };
    for (let run = 0; run < 100; run++) {
      const bounds = [
        ...new Map(
          Array.from({ length: 1 + rand(40) }, () => key()).map((b) => [b.toString('hex'), b]),
        ).values(),
      ].sort(Buffer.compare);
      const spans = bounds
        .map((b, i) => ({
          start: i === 0 && rand(2) === 0 ? Buffer.alloc(0) : b,
          end:
            i + 1 < bounds.length
              ? bounds[i + 1]!
              : rand(2) === 0
                ? null
                : Buffer.from([0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]),
        }))
        .filter((x) => x.end === null || Buffer.compare(x.start, x.end) < 0);
      const packed = new PackedSpans(spans);
      for (let q = 0; q < 300; q++) {
        const k = q < bounds.length ? bounds[q]! : key();
        const want = findSpan(spans, k, (x) => x);
        const i = packed.find(k);
        expect(i < 0 ? undefined : spans[i]).toBe(want);
      }
    }
  });

  it("packed spans say whether each span holds a key as inSpan does (the node's check)", () => {
    const rand = lcg(3);
    const name = (i: number) => `k${String(i).padStart(3, '0')}${'y'.repeat(i % 3)}`;
    for (let run = 0; run < 50; run++) {
      const bounds = [...new Set(Array.from({ length: 2 + rand(30) }, () => rand(1000)))].sort(
        (a, b) => a - b,
      );
      const spans = bounds.map((b, i) =>
        r(
          i + 1,
          i === 0 && rand(2) === 0 ? '' : name(b),
          i + 1 < bounds.length ? name(bounds[i + 1]!) : null,
          1,
        ),
      );
      const packed = new PackedSpans(spans);
      for (let q = 0; q < 200; q++) {
        const key = k(q === 0 ? '' : name(rand(1000)));
        const i = rand(spans.length);
        expect(packed.holdsAt(i, key)).toBe(inSpan(spans[i]!, key));
      }
    }
  });
});
