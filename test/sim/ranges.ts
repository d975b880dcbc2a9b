// Ranges in the simulator: descriptors and spans (docs/ranges.md, with string keys), and the
// checkers' view of every range's descriptors over its log (the Directory below).
//
// A descriptor is replicated state of its range: it changes only when the range applies a
// split (the left half shrinks) or installs a snapshot (taken after a split). The Directory
// records, per range, the descriptor in effect from each log index on, as the first replica
// to reach that index decided it; every other replica must decide the same (descriptors
// agree), the latest descriptors of all ranges must tile the keyspace, and a replica may
// only apply a write to, or serve a read of, a key that its range held at that log index.

export interface Descriptor {
  readonly rangeId: number;
  /** Spans are half-open [start, end); the first range starts at '' and the last has end null. */
  readonly start: string;
  readonly end: string | null;
  /** 1 at bootstrap; both halves of a split get their parent's + 1. */
  readonly generation: number;
  /** Node ids (replica ids are node ids in the simulator); all voters. */
  readonly replicas: readonly number[];
}

export function inSpan(d: Descriptor, key: string): boolean {
  return key >= d.start && (d.end === null || key < d.end);
}

/** Whether a split at `key` leaves both halves non-empty. */
export function strictlyInside(d: Descriptor, key: string): boolean {
  return key > d.start && (d.end === null || key < d.end);
}

export function spansOverlap(
  a: Pick<Descriptor, 'start' | 'end'>,
  b: Pick<Descriptor, 'start' | 'end'>,
): boolean {
  const aBeforeB = a.end !== null && a.end <= b.start;
  const bBeforeA = b.end !== null && b.end <= a.start;
  return !aBeforeB && !bBeforeA;
}

export function sameDescriptor(a: Descriptor, b: Descriptor): boolean {
  return (
    a.rangeId === b.rangeId &&
    a.generation === b.generation &&
    a.start === b.start &&
    a.end === b.end &&
    a.replicas.length === b.replicas.length &&
    a.replicas.every((r, i) => r === b.replicas[i])
  );
}

/** `r3[k2,k5)@2` */
export function showSpan(d: Descriptor): string {
  return `r${d.rangeId}[${d.start},${d.end ?? ''})@${d.generation}`;
}

/**
 * `count` ranges of one keyspace at bootstrap, ids 1..count, cut at evenly spaced client
 * keys (k0..k{keys-1}), every node a voter of each.
 */
export function initialDescriptors(count: number, keys: number, nodes: number): Descriptor[] {
  const replicas = Array.from({ length: nodes }, (_, i) => i + 1);
  const cuts = Array.from(
    { length: count - 1 },
    (_, i) => `k${Math.round(((i + 1) * keys) / count)}`,
  );
  cuts.sort();
  return Array.from({ length: count }, (_, i) => ({
    rangeId: i + 1,
    start: i === 0 ? '' : cuts[i - 1]!,
    end: i === count - 1 ? null : cuts[i]!,
    generation: 1,
    replicas,
  }));
}

/** What is wrong with `ds` as a tiling of the keyspace (no gap, no overlap), or undefined. */
export function tilingProblem(ds: readonly Descriptor[]): string | undefined {
  const sorted = [...ds].sort((a, b) => (a.start < b.start ? -1 : a.start > b.start ? 1 : 0));
  let expect: string | null = '';
  for (const d of sorted) {
    if (expect === null) return `${showSpan(d)} lies after a range with no end`;
    if (d.start !== expect) {
      return d.start < expect
        ? `${showSpan(d)} overlaps the range before it`
        : `gap [${expect},${d.start}) before ${showSpan(d)}`;
    }
    expect = d.end;
  }
  if (expect !== null) return `gap [${expect},) at the end`;
  return undefined;
}

/** Disjointness of the spans of one node's replicas; the first overlap found, or undefined. */
export function overlapProblem(ds: readonly Descriptor[]): string | undefined {
  const sorted = [...ds].sort((a, b) => (a.start < b.start ? -1 : a.start > b.start ? 1 : 0));
  for (let i = 1; i < sorted.length; i++) {
    const a = sorted[i - 1]!;
    const b = sorted[i]!;
    if (spansOverlap(a, b)) return `${showSpan(a)} overlaps ${showSpan(b)}`;
  }
  return undefined;
}

/** One range's descriptor from a log index on (the first entry: from its first index). */
interface SpanChange {
  readonly fromIndex: number;
  readonly descriptor: Descriptor;
}

/**
 * The checkers' record of every range's descriptors along its log, kept from the first
 * replica to apply each split. Methods return a problem (a violation message) or undefined.
 */
export class Directory {
  /** rangeId -> descriptor changes, by ascending log index. */
  private readonly history = new Map<number, SpanChange[]>();
  /** rangeId -> the descriptor of its highest generation seen. */
  private readonly latestById = new Map<number, Descriptor>();
  /** "rangeId/index" of every split entry applied -> what the first replica made of it. */
  private readonly decided = new Map<string, string>();

  constructor(initial: readonly Descriptor[]) {
    for (const d of initial) this.record(0, d);
  }

  /** The latest descriptor of every range, by range id. */
  latest(): Descriptor[] {
    return [...this.latestById.values()];
  }

  has(rangeId: number): boolean {
    return this.latestById.has(rangeId);
  }

  /** The descriptor range `rangeId` had once it applied every entry up to `index`. */
  spanAt(rangeId: number, index: number): Descriptor | undefined {
    const changes = this.history.get(rangeId);
    if (changes === undefined) return undefined;
    let found: Descriptor | undefined;
    for (const c of changes) {
      if (c.fromIndex > index) break;
      found = c.descriptor;
    }
    return found;
  }

  /**
   * A replica of range `rangeId` applied its split entry at `index`: `split` holds the two
   * descriptors it made, or is undefined if it refused the split. The first replica to
   * apply that entry decides (its new descriptors must split the old one and keep the
   * keyspace tiled); every other replica must do the same. Returns [problem, first].
   */
  applySplit(
    rangeId: number,
    index: number,
    split: { readonly left: Descriptor; readonly right: Descriptor } | undefined,
  ): [string | undefined, boolean] {
    const key = `${rangeId}/${index}`;
    const outcome = split ? `${showSpan(split.left)} ${showSpan(split.right)}` : 'refused';
    const seen = this.decided.get(key);
    if (seen !== undefined) {
      if (seen === outcome) return [undefined, false];
      return [`r${rangeId} index ${index}: ${outcome}, the first replica: ${seen}`, false];
    }
    this.decided.set(key, outcome);
    if (split === undefined) return [undefined, true];
    const { left, right } = split;
    const before = this.spanAt(rangeId, index - 1);
    if (before === undefined || left.rangeId !== rangeId || this.history.has(right.rangeId)) {
      return [`r${rangeId} index ${index}: split into ${outcome} makes no new range`, true];
    }
    if (
      left.generation !== before.generation + 1 ||
      right.generation !== left.generation ||
      left.start !== before.start ||
      left.end !== right.start ||
      right.end !== before.end
    ) {
      return [`split of ${showSpan(before)} into ${outcome}`, true];
    }
    this.record(index, left);
    this.record(index, right);
    return [tilingProblem(this.latest()), true];
  }

  /** Whether `d` is a descriptor its range had at some point. */
  isKnown(d: Descriptor): boolean {
    return (this.history.get(d.rangeId) ?? []).some((c) => sameDescriptor(c.descriptor, d));
  }

  /**
   * A replica of `d.rangeId` holds descriptor `d` once it applied `index` (after a snapshot
   * install, or a restart): it must be the one the range had there.
   */
  check(index: number, d: Descriptor): string | undefined {
    const expected = this.spanAt(d.rangeId, index);
    if (expected === undefined) return `r${d.rangeId} is unknown`;
    if (!sameDescriptor(expected, d)) {
      return `r${d.rangeId} at index ${index} is ${showSpan(d)}, but was ${showSpan(expected)}`;
    }
    return undefined;
  }

  private record(fromIndex: number, d: Descriptor): void {
    let changes = this.history.get(d.rangeId);
    if (changes === undefined) this.history.set(d.rangeId, (changes = []));
    changes.push({ fromIndex, descriptor: d });
    const latest = this.latestById.get(d.rangeId);
    if (latest === undefined || latest.generation < d.generation) this.latestById.set(d.rangeId, d);
  }
}
