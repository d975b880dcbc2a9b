// The client's range cache (docs/ranges.md, "Routing"): descriptors ordered by start key,
// filled from the meta directory and from the descriptors that RangeKeyMismatch errors
// carry. A descriptor replaces the cached ones whose spans it overlaps when it is newer
// (a higher generation, or the same range id at a higher generation); an older one is
// ignored, so replies arriving out of order never roll the cache back.

import { ownBytes } from '../lib/bytes.ts';
import type { WireDescriptor } from '../protocol/wire.ts';
import { findSpan, PackedSpans, Repacked, spansOverlap } from '../storage/descriptor.ts';

export interface CachedRange {
  readonly rangeId: number;
  readonly start: Uint8Array;
  readonly end: Uint8Array | null;
  readonly generation: number;
}

function compare(a: Uint8Array, b: Uint8Array): number {
  return Buffer.compare(a, b);
}

/** A descriptor from the wire, checked for the fields routing uses; undefined if malformed. */
export function asCachedRange(x: unknown): CachedRange | undefined {
  if (typeof x !== 'object' || x === null) return undefined;
  const d = x as Partial<WireDescriptor>;
  if (typeof d.rangeId !== 'number' || !Number.isInteger(d.rangeId) || d.rangeId < 1) {
    return undefined;
  }
  if (!(d.start instanceof Uint8Array)) return undefined;
  if (d.end !== null && !(d.end instanceof Uint8Array)) return undefined;
  if (d.end !== null && compare(d.start, d.end) >= 0) return undefined;
  if (typeof d.generation !== 'number' || !Number.isInteger(d.generation) || d.generation < 1) {
    return undefined;
  }
  // Copies with buffers of their own: a cache of many ranges would otherwise pin the
  // shared Buffer pools (lib/bytes.ts), or the replies the keys came in.
  return {
    rangeId: d.rangeId,
    start: ownBytes(d.start),
    end: d.end === null ? null : ownBytes(d.end),
    generation: d.generation,
  };
}

export class RangeCache {
  /** Disjoint spans, by start key. */
  private list: CachedRange[] = [];
  /**
   * `list`'s keys for lookups; made again on a lookup after a change, at most every
   * packSpansEveryMs (lookups search `list` itself meanwhile).
   */
  private readonly packed = new Repacked(() => new PackedSpans(this.list));

  get size(): number {
    return this.list.length;
  }

  all(): readonly CachedRange[] {
    return this.list;
  }

  /**
   * The cached range whose span holds `key`. Looked up for every call, each for another
   * range under uniform keys: over packed keys (PackedSpans).
   */
  lookup(key: Uint8Array): CachedRange | undefined {
    const packed = this.packed.get();
    if (packed === undefined) return findSpan(this.list, key, (r) => r);
    const i = packed.find(key);
    return i < 0 ? undefined : this.list[i];
  }

  /**
   * Adds descriptors, newest wins; returns whether the cache changed. A descriptor that
   * overlaps a cached range of a higher generation is ignored (it is stale); the cached
   * ranges it overlaps with a lower or equal generation are dropped.
   */
  update(ranges: readonly CachedRange[]): boolean {
    let changed = false;
    for (const d of ranges) {
      // The cached spans are disjoint and sorted: the ones d overlaps are contiguous, from
      // the last one starting at or before d's start. (A range keeps its start for life,
      // so an older generation of d itself is among them.)
      let lo = 0;
      let hi = this.list.length;
      while (lo < hi) {
        const mid = (lo + hi) >> 1;
        if (compare(this.list[mid]!.start, d.start) <= 0) lo = mid + 1;
        else hi = mid;
      }
      let first = lo > 0 && spansOverlap(this.list[lo - 1]!, d) ? lo - 1 : lo;
      let end = first;
      while (end < this.list.length && spansOverlap(this.list[end]!, d)) end++;
      if (first === end) first = end = lo;
      const overlapping = this.list.slice(first, end);
      if (overlapping.some((r) => r.generation > d.generation)) continue;
      if (overlapping.length === 1 && sameRange(overlapping[0]!, d)) continue;
      this.list.splice(first, end - first, d);
      this.packed.invalidate();
      changed = true;
    }
    return changed;
  }

  /** Forgets a range (say, its leader could not be found): the next lookup misses. */
  evict(rangeId: number): void {
    this.list = this.list.filter((r) => r.rangeId !== rangeId);
    this.packed.invalidate();
  }
}

function sameRange(a: CachedRange, b: CachedRange): boolean {
  return (
    a.rangeId === b.rangeId &&
    a.generation === b.generation &&
    compare(a.start, b.start) === 0 &&
    (a.end === null ? b.end === null : b.end !== null && compare(a.end, b.end) === 0)
  );
}
