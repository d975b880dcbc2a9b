// Subscribe (docs/streams.md): an ordered, resumable stream of the mutations of the keys
// under a prefix, pulled from the range leaders (docs/protocol.md, "Subscribe").
//
// A subscription keeps one stream per range that holds part of the prefix's span, each at
// the revision it has delivered up to (revisions count per range lineage: there is no
// global revision). Its cursor is that vector, [[rangeId, revision], ...], encoded
// (encodeCursor). It:
//   1. starts from a cursor, or from now: from the first key of the prefix's span, asks
//      the range holding it where its stream is now (eventsHead: a linearizable read that
//      also returns the range's descriptor) and moves on to that range's end, until the
//      span is covered;
//   2. polls every stream at once (events ops, long polled at the range's leader: the
//      leader answers when it has something, or after waitMs with nothing), one poll in
//      flight per stream, so at most one page per stream waits in memory;
//   3. yields the events of each page in revision order, each with the cursor that
//      resumes right after it, and moves the stream past the page (revisions with no
//      event for the prefix included) once the consumer asks for more;
//   4. at a split marker in a range's stream (revision S), starts the right-hand range's
//      stream after S when its span overlaps the prefix's, and drops the range's own
//      stream when its remaining (left) span no longer does. A key's events before S are
//      in the parent's stream and after S in the right-hand one, which is only started
//      once the marker has been delivered: per-key order holds across splits.
// Retryable failures (no leader, a leader change, a timeout, back pressure) are retried
// with backoff, forever, from the same revision: nothing is lost or repeated. A stream
// whose revision was compacted ends the subscription with CompactedError, never a gap.

import { createHash } from 'node:crypto';
import { hasPrefix } from '../lib/bytes.ts';
import {
  AbortedError,
  CompactedError,
  InternalError,
  InvalidArgumentError,
  RasputinError,
  retryableCodes,
} from '../protocol/errors.ts';
import { decode, encode, type WireResult } from '../protocol/wire.ts';
import { asCachedRange, type CachedRange } from './range-cache.ts';

/**
 * One mutation delivered by a subscription. The event (and its buffers) may be shared with
 * the other subscriptions of the same client that stand at the same place of the stream:
 * do not change it; copy what you want to change.
 */
export interface SubscribeEvent {
  key: Buffer;
  op: 'set' | 'del';
  /** set: the new value; del: null. */
  value: Buffer | null;
  /**
   * The value before the mutation; absent when the key had none, or when it was too large
   * to send with the event (then prevValueOmitted is true).
   */
  prevValue?: Buffer;
  /** The event's set had a prevValue that was left out (key + value + prevValue over limits.eventBytesMax). */
  prevValueOmitted?: boolean;
  /** The log position of the mutation in its range's lineage: per key, it only grows. */
  revision: number;
  /** The range whose stream delivered it. */
  range: number;
  /** Opaque: subscribe with { fromRevision: cursor } to resume right after this event. */
  cursor: string;
}

export interface SubscribeOptions {
  /**
   * A cursor (SubscribeEvent.cursor or Subscription.cursor, of a subscription of the same
   * prefix): the subscription resumes right after it. Default: from now.
   */
  fromRevision?: string;
  /** Ends the subscription (the loop ends; no error). */
  signal?: AbortSignal;
  /**
   * How long a range leader may hold a poll that finds nothing new: 0 ..
   * limits.eventsWaitMsMax, default subscribeDefaults.waitMs. A leader that dies with a
   * poll held delays delivery by up to this (plus a second) before the next leader is asked.
   */
  waitMs?: number;
  /** Events asked for per poll: 1 .. limits.eventsLimitMax, default the maximum. */
  pageSize?: number;
}

export const subscribeDefaults = {
  waitMs: 5000,
} as const;

/** A range as a subscription needs it: its id and span. */
export type RangeSpan = Pick<CachedRange, 'rangeId' | 'start' | 'end'>;

/** An event of a page, checked. */
export type PageEvent =
  | {
      revision: number;
      op: 'set';
      key: Buffer;
      value: Buffer;
      prevValue?: Buffer;
      prevValueOmitted?: boolean;
    }
  | { revision: number; op: 'del'; key: Buffer; prevValue: Buffer }
  | { revision: number; op: 'split'; left: CachedRange; right: CachedRange };

export interface EventsPage {
  /** Ascending revisions, all above the poll's `after`. */
  events: PageEvent[];
  /** The revision to poll after next: at or above the page's last event. */
  after: number;
}

/** How a subscription reaches the cluster (the Client; a fake in tests). */
export interface EventsSource {
  /** Where the stream of the range holding `key` is now (linearizable), and that range. */
  head(key: Uint8Array, signal: AbortSignal): Promise<{ after: number; range: RangeSpan }>;
  /** A page of range `rangeId`'s stream after `after`, long polled up to waitMs. */
  page(
    rangeId: number,
    prefix: Uint8Array,
    after: number,
    limit: number,
    waitMs: number,
    signal: AbortSignal,
  ): Promise<EventsPage>;
  /** Called at the start of a subscription from now: a chance to load the directory. */
  prime?(signal: AbortSignal): Promise<void>;
  /** Descriptors seen in split markers (the client learns them for routing). */
  learn?(ranges: readonly CachedRange[]): void;
}

/** Backoff between retries of a poll or a head: jittered, doubling, capped. */
const retryBackoffMsMin = 50;
const retryBackoffMsMax = 1000;
/** Ranges a subscription from now covers at most (a bound on its start loop). */
const subscribeRangesMax = 100_000;
const cursorVersion = 1;

// -------------------------------------------------------------------- spans and cursors

/** The span of the keys that start with `prefix`: [prefix, end), end null = no end. */
export function prefixSpan(prefix: Uint8Array): { start: Buffer; end: Buffer | null } {
  const start = Buffer.from(prefix);
  const end = Buffer.from(prefix);
  for (let i = end.length - 1; i >= 0; i--) {
    if (end[i]! < 0xff) {
      end[i]!++;
      return { start, end: end.subarray(0, i + 1) };
    }
  }
  return { start, end: null };
}

export function spansOverlap(
  a: { start: Uint8Array; end: Uint8Array | null },
  b: { start: Uint8Array; end: Uint8Array | null },
): boolean {
  const aBeforeB = a.end !== null && Buffer.compare(a.end, b.start) <= 0;
  const bBeforeA = b.end !== null && Buffer.compare(b.end, a.start) <= 0;
  return !aBeforeB && !bBeforeA;
}

/** 4 bytes of the prefix's hash: a cursor is refused by a subscription of another prefix. */
function prefixTag(prefix: Uint8Array): Buffer {
  return createHash('sha256').update(prefix).digest().subarray(0, 4);
}

/** base64url of msgpack [1, prefix tag (4 bytes), [[rangeId, revision], ...]]. */
export function encodeCursor(prefix: Uint8Array, streams: ReadonlyMap<number, number>): string {
  return encodeTagged(prefixTag(prefix), streams);
}

function encodeTagged(tag: Buffer, streams: ReadonlyMap<number, number>): string {
  const vector = [...streams].sort((a, b) => a[0] - b[0]);
  return Buffer.from(encode([cursorVersion, tag, vector])).toString('base64url');
}

/**
 * Where a page's events stand: the subscription's streams before the page (or after its
 * last split marker), never changed once made; an event's cursor is these with its own
 * range at its revision, encoded only when someone reads it (most events' cursors never
 * are, and a subscriber of thousands of events per second would spend its time on them).
 */
class CursorBase {
  constructor(
    readonly tag: Buffer,
    readonly streams: ReadonlyMap<number, number>,
  ) {}

  encode(rangeId: number, revision: number): string {
    const streams = new Map(this.streams);
    streams.set(rangeId, revision);
    return encodeTagged(this.tag, streams);
  }
}

/** The streams of a cursor made for `prefix`; InvalidArgumentError when it is not one. */
export function decodeCursor(cursor: unknown, prefix: Uint8Array): Map<number, number> {
  const refuse = (why: string) =>
    new InvalidArgumentError(`not a subscribe cursor (${why})`, 'cursor');
  if (typeof cursor !== 'string' || cursor.length === 0 || cursor.length > 1_000_000) {
    throw refuse('a non-empty string');
  }
  let raw: unknown;
  try {
    raw = decode(Buffer.from(cursor, 'base64url'));
  } catch {
    throw refuse('undecodable');
  }
  if (!Array.isArray(raw) || raw.length !== 3 || raw[0] !== cursorVersion) {
    throw refuse('unknown format');
  }
  const [, tag, vector] = raw as [number, unknown, unknown];
  if (!(tag instanceof Uint8Array) || Buffer.compare(tag, prefixTag(prefix)) !== 0) {
    throw new InvalidArgumentError(
      'the cursor belongs to a subscription of another prefix',
      'cursor',
    );
  }
  if (!Array.isArray(vector) || vector.length === 0) throw refuse('no streams');
  const streams = new Map<number, number>();
  for (const pair of vector as unknown[]) {
    if (!Array.isArray(pair) || pair.length !== 2) throw refuse('a malformed stream');
    const [rangeId, revision] = pair as [unknown, unknown];
    if (typeof rangeId !== 'number' || !Number.isSafeInteger(rangeId) || rangeId < 1) {
      throw refuse('a malformed range id');
    }
    if (typeof revision !== 'number' || !Number.isSafeInteger(revision) || revision < 0) {
      throw refuse('a malformed revision');
    }
    if (streams.has(rangeId)) throw refuse('a range twice');
    streams.set(rangeId, revision);
  }
  return streams;
}

// -------------------------------------------------------------------- pages

/**
 * The page of an events result, checked against what the subscription relies on: events
 * ascend above `after`, keys are under `prefix`, the next `after` does not go back. Throws
 * InternalError when the result cannot be relied on.
 */
export function readPage(
  r: Extract<WireResult, { ok: true }>,
  rangeId: number,
  after: number,
  prefix: Uint8Array,
): EventsPage {
  const malformed = (why: string) =>
    new InternalError(`malformed events result from range ${rangeId} (${why})`);
  if (!Array.isArray(r.events)) throw malformed('no events');
  if (typeof r.after !== 'number' || !Number.isSafeInteger(r.after)) throw malformed('no after');
  const events: PageEvent[] = [];
  let last = after;
  for (const x of r.events as unknown[]) {
    if (typeof x !== 'object' || x === null) throw malformed('an event is not a map');
    const e = x as Record<string, unknown>;
    const revision = e.revision;
    if (typeof revision !== 'number' || !Number.isSafeInteger(revision) || revision <= last) {
      throw malformed('revisions out of order');
    }
    last = revision;
    if (e.op === 'split') {
      const left = asCachedRange(e.left);
      const right = asCachedRange(e.right);
      if (left === undefined || right === undefined || left.rangeId !== rangeId) {
        throw malformed('a split marker');
      }
      events.push({ revision, op: 'split', left, right });
      continue;
    }
    if (e.op !== 'set' && e.op !== 'del') throw malformed(`op ${String(e.op)}`);
    if (!(e.key instanceof Uint8Array) || !hasPrefix(e.key, prefix)) {
      throw malformed('a key outside the prefix');
    }
    const key = Buffer.from(e.key);
    if (e.op === 'del') {
      if (!(e.prevValue instanceof Uint8Array)) throw malformed('a del without prevValue');
      events.push({ revision, op: 'del', key, prevValue: Buffer.from(e.prevValue) });
      continue;
    }
    if (!(e.value instanceof Uint8Array)) throw malformed('a set without a value');
    if (e.prevValue !== undefined && !(e.prevValue instanceof Uint8Array)) {
      throw malformed('a prevValue that is not bytes');
    }
    events.push({
      revision,
      op: 'set',
      key,
      value: Buffer.from(e.value),
      ...(e.prevValue instanceof Uint8Array ? { prevValue: Buffer.from(e.prevValue) } : {}),
      ...(e.prevValueOmitted === true ? { prevValueOmitted: true } : {}),
    });
  }
  if (r.after < last) throw malformed('after goes back');
  return { events, after: r.after };
}

/**
 * A split marker of range `rangeId` at revision S: the stream has delivered up to S; the
 * right-hand range starts after S when its span overlaps the prefix's, and the range's
 * own stream goes on only while its (left) span does. Pure: changes `streams`.
 */
export function followSplit(
  streams: Map<number, number>,
  span: { start: Uint8Array; end: Uint8Array | null },
  rangeId: number,
  marker: { revision: number; left: RangeSpan; right: RangeSpan },
): void {
  const S = marker.revision;
  streams.set(rangeId, Math.max(streams.get(rangeId) ?? 0, S));
  if (spansOverlap(marker.right, span)) {
    streams.set(marker.right.rangeId, Math.max(streams.get(marker.right.rangeId) ?? 0, S));
  }
  if (!spansOverlap(marker.left, span)) streams.delete(rangeId);
}

// -------------------------------------------------------------------- the subscription

type Outcome =
  | { readonly rangeId: number; readonly page: EventsPage }
  | { readonly rangeId: number; readonly error: Error };

/**
 * A running subscription: an async iterator of events (use it once, with for await). Its
 * start is fixed when it is created (from now: the heads are read at once); `started`
 * resolves with the cursor of that start.
 */
export class Subscription implements AsyncIterableIterator<SubscribeEvent> {
  /** Resolves with the cursor of the start once it is fixed (from now: the heads read). */
  readonly started: Promise<string>;
  private readonly source: EventsSource;
  private readonly prefix: Buffer;
  /** The prefix's check in cursors (computed once: cursors are made per event). */
  private readonly tag: Buffer;
  private readonly span: { start: Buffer; end: Buffer | null };
  private readonly waitMs: number;
  private readonly pageSize: number;
  private readonly stop = new AbortController();
  private readonly startStreams: Promise<Map<number, number>>;
  /** The pages' events, each page as one batch (run). */
  private readonly pages: AsyncGenerator<Delivered[], void, undefined>;
  /** The batch being handed out, one event per next(). */
  private batch: Delivered[] = [];
  private batchAt = 0;
  /** A next() waiting for the next batch: later calls queue behind it. */
  private pending: Promise<IteratorResult<SubscribeEvent, void>> | undefined;
  /** The cursor of everything delivered so far (see `cursor`), encoded when read. */
  private position: string | Delivered | CursorBase | undefined;
  private readonly unlink: () => void;

  constructor(
    source: EventsSource,
    prefix: Uint8Array,
    o: {
      from: Map<number, number> | undefined;
      waitMs: number;
      pageSize: number;
      signal: AbortSignal | undefined;
    },
  ) {
    this.source = source;
    this.prefix = Buffer.from(prefix);
    this.tag = prefixTag(prefix);
    this.span = prefixSpan(prefix);
    this.waitMs = o.waitMs;
    this.pageSize = o.pageSize;
    const signal = o.signal;
    const onAbort = () => this.stop.abort();
    signal?.addEventListener('abort', onAbort, { once: true });
    if (signal?.aborted) this.stop.abort();
    this.unlink = () => signal?.removeEventListener('abort', onAbort);
    this.startStreams = o.from === undefined ? this.headsNow() : Promise.resolve(new Map(o.from));
    this.started = this.startStreams.then((streams) => {
      const cursor = encodeTagged(this.tag, streams);
      this.position ??= cursor;
      return cursor;
    });
    // Whoever never looks at `started` sees its failure from the iterator instead.
    this.started.catch(() => {});
    this.pages = this.run();
  }

  /**
   * The cursor of everything delivered so far, including revisions with no event for the
   * prefix that were passed: resume from it (fromRevision) to continue right here.
   * Undefined until the start is fixed. Save it now and then when events are rare: an old
   * cursor can fall out of the retained history (CompactedError) even if nothing was missed.
   */
  get cursor(): string | undefined {
    const p = this.position;
    if (p instanceof Delivered) return p.cursor;
    if (p instanceof CursorBase) {
      const cursor = encodeTagged(p.tag, p.streams);
      this.position = cursor;
      return cursor;
    }
    return p;
  }

  next(): Promise<IteratorResult<SubscribeEvent, void>> {
    if (this.pending !== undefined) return this.pending.then(() => this.next());
    // Events of a page already read are handed out without going through the generator
    // (an async generator's yield costs more than the rest of an event's delivery).
    if (this.batchAt < this.batch.length && !this.stop.signal.aborted) {
      const e = this.batch[this.batchAt++]!;
      this.position = e;
      return Promise.resolve({ value: e, done: false });
    }
    this.batch = [];
    this.batchAt = 0;
    const p = this.pages.next().then(
      (r): Promise<IteratorResult<SubscribeEvent, void>> | IteratorResult<SubscribeEvent, void> => {
        this.pending = undefined;
        if (r.done === true) return { value: undefined, done: true };
        this.batch = r.value;
        return this.next();
      },
      (err: unknown) => {
        this.pending = undefined;
        throw err;
      },
    );
    this.pending = p;
    return p;
  }

  /** Ends the subscription (what `break` in a for await loop calls). */
  return(): Promise<IteratorResult<SubscribeEvent, void>> {
    this.stop.abort();
    this.batch = [];
    return this.pages.return(undefined).then(() => ({ value: undefined, done: true }));
  }

  throw(err?: unknown): Promise<IteratorResult<SubscribeEvent, void>> {
    this.stop.abort();
    this.batch = [];
    return this.pages.throw(err).then(() => ({ value: undefined, done: true }));
  }

  [Symbol.asyncIterator](): this {
    return this;
  }

  /**
   * The events of range `rangeId`'s page, as delivered at `streams` (which it moves past
   * the page's events and split markers). Made once per page and place: another
   * subscription of the same prefix at the same streams gets the same batch.
   */
  private deliver(rangeId: number, page: EventsPage, streams: Map<number, number>): Delivered[] {
    const at = [...streams]
      .sort((a, b) => a[0] - b[0])
      .map(([id, revision]) => `${id}:${revision}`)
      .join(',');
    let made = madeFromPage.get(page);
    const known = made?.get(at);
    if (known !== undefined) {
      streams.clear();
      for (const [id, revision] of known.after) streams.set(id, revision);
      return known.batch;
    }
    // The streams as they are before the page; copied again only when a split marker
    // changes them, so each event's cursor is this plus its own revision.
    let base = new CursorBase(this.tag, new Map(streams));
    const batch: Delivered[] = [];
    let last = -1;
    for (const e of page.events) {
      if (!streams.has(rangeId)) {
        throw new InternalError(`an event of range ${rangeId} after it left the prefix`);
      }
      if (e.op === 'split') {
        followSplit(streams, this.span, rangeId, e);
        this.source.learn?.([e.left, e.right]);
        base = new CursorBase(this.tag, new Map(streams));
        last = -1;
        continue;
      }
      last = e.revision;
      batch.push(new Delivered(e, rangeId, base));
    }
    // The events after the last marker move the range's stream to the last of them.
    if (last >= 0) streams.set(rangeId, last);
    if (made === undefined) madeFromPage.set(page, (made = new Map()));
    made.set(at, { batch, after: new Map(streams) });
    return batch;
  }

  /** Ends the subscription: a loop over it ends; polls in flight are abandoned. */
  close(): void {
    this.stop.abort();
    this.unlink();
  }

  /** The streams of the prefix's ranges as they are now (see the header, step 1). */
  private async headsNow(): Promise<Map<number, number>> {
    const signal = this.stop.signal;
    await this.source.prime?.(signal).catch(() => {});
    const streams = new Map<number, number>();
    let key: Buffer = this.span.start;
    for (let i = 0; i < subscribeRangesMax; i++) {
      const { after, range } = await this.retrying(() => this.source.head(key, signal));
      const holds =
        Buffer.compare(range.start, key) <= 0 &&
        (range.end === null || Buffer.compare(range.end, key) > 0);
      if (!holds) {
        throw new InternalError(`eventsHead: range ${range.rangeId} does not hold the key`);
      }
      if (!streams.has(range.rangeId)) streams.set(range.rangeId, after);
      if (
        range.end === null ||
        (this.span.end !== null && Buffer.compare(range.end, this.span.end) >= 0)
      ) {
        return streams;
      }
      key = Buffer.from(range.end);
    }
    throw new InternalError(`the prefix spans over ${subscribeRangesMax} ranges`);
  }

  /**
   * Runs `attempt` until it succeeds or fails for good (see isRetryable); retryable failures
   * are retried with backoff, without end. Rejects with AbortedError once stopped.
   */
  private async retrying<T>(attempt: () => Promise<T>): Promise<T> {
    const signal = this.stop.signal;
    for (let failures = 0; ; failures++) {
      if (signal.aborted) throw stopped();
      try {
        return await attempt();
      } catch (err) {
        if (signal.aborted) throw stopped();
        if (!isRetryable(err)) throw err;
      }
      const ceilingMs = Math.min(
        retryBackoffMsMax,
        retryBackoffMsMin * 2 ** Math.min(failures, 10),
      );
      await sleep(ceilingMs / 2 + (Math.random() * ceilingMs) / 2, signal);
    }
  }

  private poll(rangeId: number, after: number): Promise<Outcome> {
    const signal = this.stop.signal;
    return this.retrying(() =>
      this.source.page(rangeId, this.prefix, after, this.pageSize, this.waitMs, signal),
    ).then(
      (page): Outcome => ({ rangeId, page }),
      (error: Error): Outcome => ({
        rangeId,
        error:
          error instanceof CompactedError
            ? new CompactedError(
                `${error.message}; resubscribe from now (and read the current state, ` +
                  'e.g. with scanAll) or from a newer cursor',
                error.oldestRetained,
                rangeId,
              )
            : error,
      }),
    );
  }

  private async *run(): AsyncGenerator<Delivered[], void, undefined> {
    const signal = this.stop.signal;
    const ready: Outcome[] = [];
    let wake: (() => void) | undefined;
    const onAbort = () => wake?.();
    signal.addEventListener('abort', onAbort);
    try {
      let streams: Map<number, number>;
      try {
        streams = await this.startStreams;
      } catch (err) {
        if (signal.aborted) return;
        throw err;
      }
      const polling = new Set<number>();
      for (;;) {
        for (const [rangeId, after] of streams) {
          if (polling.has(rangeId)) continue;
          polling.add(rangeId);
          void this.poll(rangeId, after).then((outcome) => {
            ready.push(outcome);
            wake?.();
          });
        }
        while (ready.length === 0 && !signal.aborted) {
          await new Promise<void>((resolve) => {
            wake = resolve;
          });
        }
        wake = undefined;
        if (signal.aborted) return;
        const outcome = ready.shift()!;
        const rangeId = outcome.rangeId;
        polling.delete(rangeId);
        if ('error' in outcome) throw outcome.error;
        const batch = this.deliver(rangeId, outcome.page, streams);
        // The consumer takes the batch's events one by one (next); the generator goes on
        // once it asks for more after the last.
        if (batch.length > 0) yield batch;
        if (signal.aborted) return;
        const at = streams.get(rangeId);
        if (at !== undefined && outcome.page.after > at) {
          streams.set(rangeId, outcome.page.after);
          // Encoded only if someone reads sub.cursor (a page per poll, per subscription).
          this.position = new CursorBase(this.tag, new Map(streams));
        }
        if (streams.size === 0) {
          throw new InternalError('split markers left no range of the prefix to read');
        }
      }
    } finally {
      signal.removeEventListener('abort', onAbort);
      this.stop.abort();
      this.unlink();
    }
  }
}

/**
 * The batches made from a page (the client shares a page among the subscriptions that
 * polled for the same thing), by the streams they were made at, with the streams after
 * the page: subscriptions that stand at the same place share the events too.
 */
const madeFromPage = new WeakMap<
  EventsPage,
  Map<string, { batch: Delivered[]; after: ReadonlyMap<number, number> }>
>();

/**
 * A SubscribeEvent as delivered: a class (a getter in an object literal makes every event
 * a slow object), with its cursor encoded when first read.
 */
class Delivered implements SubscribeEvent {
  readonly key: Buffer;
  readonly op: 'set' | 'del';
  readonly value: Buffer | null;
  readonly prevValue?: Buffer;
  readonly prevValueOmitted?: boolean;
  readonly revision: number;
  readonly range: number;
  /** The streams the event's cursor is made of (with its range at its revision). */
  readonly #base: CursorBase;
  #cursor: string | undefined;

  constructor(e: Exclude<PageEvent, { op: 'split' }>, range: number, base: CursorBase) {
    this.key = e.key;
    this.op = e.op;
    this.value = e.op === 'set' ? e.value : null;
    if (e.prevValue !== undefined) this.prevValue = e.prevValue;
    if (e.op === 'set' && e.prevValueOmitted === true) this.prevValueOmitted = true;
    this.revision = e.revision;
    this.range = range;
    this.#base = base;
  }

  get cursor(): string {
    this.#cursor ??= this.#base.encode(this.range, this.revision);
    return this.#cursor;
  }
}

/**
 * Failures a subscription retries (no leader, a leader change, a timeout, back pressure);
 * it ends with any other (CompactedError, InvalidArgumentError, ClientClosedError, ...).
 */
function isRetryable(err: unknown): boolean {
  return err instanceof RasputinError && retryableCodes.has(err.code);
}

function stopped(): AbortedError {
  return new AbortedError('the subscription ended', { outcomeUnknown: false });
}

/** Resolves after `ms`, or at once when the signal fires. */
function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) {
      resolve();
      return;
    }
    const done = () => {
      clearTimeout(timer);
      signal.removeEventListener('abort', done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal.addEventListener('abort', done, { once: true });
  });
}
