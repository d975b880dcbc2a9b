// The Rasputin client: set/get/cas/del/scan over NATS (docs/protocol.md).
//
// A call:
//   1. validates its input locally (limits named in the error) and encodes its op once;
//      a write gets a 16-byte random request id, kept for every retry, so the servers
//      apply it at most once;
//   2. joins the queue of its target subject; at the end of the event-loop turn every
//      queue is cut into batches (batchOpsMax ops, payload limit) and each batch goes out
//      as one NATS request without waiting for earlier ones (pipelining);
//   3. settles from its own result in the reply, or is retried: another subject at once
//      after "no responders" or an attempt timeout, with jittered exponential backoff
//      after a retryable error (NotLeader, Unavailable, Overloaded, ...);
//   4. settles exactly once: with its result, a typed error, TimeoutError at its deadline
//      (outcome unknown) or AbortError when its signal fires. Replies for a settled call
//      are ignored.
//
// Routing (docs/ranges.md): the client keeps a cache of range descriptors (RangeCache).
// It starts out believing range 1 covers every key (true until the first split) and
// learns from the descriptors that RangeKeyMismatch errors carry, and from the meta
// directory when an op's key falls in a gap of the cache. An op whose key the cache places in a range goes to
// `<p>.range.<id>` (that range's leader), in a request that names the range and the
// generation the client routed by; a node where that generation is stale answers
// RangeKeyMismatch with the current descriptors, and the op is rerouted at once. An op the
// cache cannot place, or whose range had no responders or answered NotLeader (its hint is
// a node id, not a subject), goes to `<p>.kv`: any node, which forwards it to the leader
// of the range holding its key.
//
// A subscription (subscription.ts, docs/streams.md) reads each range's stream with events
// ops: calls routed by range id, not by key, each alone in its request (its reply waits
// for the long poll) with an attempt timeout that covers the poll's wait.
//
// A scan is a sequence of scan ops (pages), each a call as above: a page asks for the span
// [start, end) and the node answers for the part its range covers, up to the page's limit
// and byte budget, with `next` (the key to continue from) when it stopped early. The next
// page starts at `next`. With several ranges, `next` at a range's end moves the scan to
// the next range.

import { randomFillSync } from 'node:crypto';
import {
  connect,
  type NatsConnection,
  InvalidArgumentError as NatsInvalidArgumentError,
  type Subscription as NatsSubscription,
} from '@nats-io/transport-node';
import {
  AbortedError,
  ClientClosedError,
  errorFromWire,
  InternalError,
  InvalidArgumentError,
  retryableCodes,
  TimeoutError,
  UnavailableError,
} from '../protocol/errors.ts';
import {
  decode,
  encode,
  frameRequest,
  isWrite,
  limits,
  type OpName,
  protocolVersion,
  requestFrameBytesMax,
  scanLimitMin,
  type WireOp,
  type WireResult,
} from '../protocol/wire.ts';
import {
  decodeCounter,
  decodeDescriptor,
  directoryEnd,
  directoryKey,
  directoryStart,
  encodeDescriptor,
  inSpan,
  type RangeDescriptor,
  rangeIdCounterKey,
} from '../storage/descriptor.ts';
import { checkPrefix, defaultPrefix, subjects } from '../transport/subjects.ts';
import { watchPattern } from '../transport/watch-subject.ts';
import { asCachedRange, type CachedRange, RangeCache } from './range-cache.ts';
import { NoRespondersError, Requests, RequestTimeoutError } from './requests.ts';
import {
  decodeCursor,
  type EventsPage,
  type EventsSource,
  type RangeSpan,
  readPage,
  type SubscribeOptions,
  Subscription,
  subscribeDefaults,
} from './subscription.ts';
import { WatchQueue } from './watch-queue.ts';

export interface ClientOptions {
  /** NATS server URLs; default: env RASPUTIN_NATS (comma-separated) or nats://127.0.0.1:4222. */
  servers?: string | string[];
  /** Subject prefix of the cluster; default 'rasputin'. */
  prefix?: string;
  /** Deadline of each call, retries included; default 5000. */
  timeoutMs?: number;
  /** Connection name shown by nats-server. */
  name?: string;
}

export interface CallOptions {
  /** Deadline of this call, retries included; default: the client's timeoutMs. */
  timeoutMs?: number;
  signal?: AbortSignal;
}

export interface ClientStats {
  /** NATS requests sent. */
  requests: number;
  /** Ops carried by those requests (an op retried twice counts three times). */
  ops: number;
  /** Op sends after the first send of that op. */
  retries: number;
}

export interface GetResult {
  value: Buffer;
}

export interface CasResult {
  success: boolean;
  /** The current value after the operation: the new one on success, null when absent. */
  value: Buffer | null;
}

export interface DelResult {
  /** The last value; null when the key was absent. */
  value: Buffer | null;
}

/**
 * A watch notification (docs/streams.md): a mutation, applied; at most once, no history.
 * The same object goes to every watcher of the client with the same pattern: do not change it.
 */
export interface WatchEvent {
  key: Buffer;
  op: 'set' | 'del';
  /** set: the new value. */
  value?: Buffer;
  /** The log position of the mutation in its range's lineage (per key, increasing). */
  revision: number;
  /** The range that applied it. */
  range: number;
}

/**
 * A client.watch() loop: an async iterator of notifications. A loop that falls more than
 * 10,000 notifications behind loses the newest past that (at most once); `dropped` counts
 * them, so a consumer can tell it missed some (and re-read what it needs).
 */
export interface Watch extends AsyncIterableIterator<WatchEvent, void, undefined> {
  /** Notifications this loop lost because it was 10,000 behind. */
  readonly dropped: number;
}

export interface ScanEntry {
  key: Buffer;
  value: Buffer;
}

export interface ScanResult {
  /** In key order, each key once. */
  entries: ScanEntry[];
  /** Present when the limit cut the scan short: the key to continue from (scan(next, end)). */
  next?: Buffer;
}

export interface ScanOptions extends CallOptions {
  /** Entries to return at most: 1 .. scanCallLimitMax, default scanCallLimitDefault. */
  limit?: number;
}

export interface ScanAllOptions extends CallOptions {
  /**
   * Entries asked for per page (one scan op): 1 .. limits.scanLimitMax, default
   * limits.scanLimitMax. A page also stops at limits.scanBytesMax bytes. `timeoutMs` is the
   * deadline of each page.
   */
  pageSize?: number;
}

/** Named limits of Client.scan (a call follows `next` over several scan ops). */
export const scanLimits = {
  /** Entries Client.scan returns when no limit is given. */
  scanCallLimitDefault: 100,
  /** Entries one Client.scan call may ask for; use scanAll for more. */
  scanCallLimitMax: 10_000,
} as const;

const defaultServers = 'nats://127.0.0.1:4222';
const defaultTimeoutMs = 5000;
/** Upper bound of one NATS request attempt; a call retries until its own deadline. */
const attemptTimeoutMsMax = 1000;
/** An events poll's attempt waits this much longer than the poll may be held. */
const pollAttemptSlackMs = 1000;
/** An events poll's call (its retries) ends this much after the poll's wait; then it is asked again. */
const pollCallSlackMs = 3000;
/** No new attempt when less than this is left before the deadline. */
const attemptTimeoutMsMin = 5;
/** Backoff before resending after a retryable error: jittered, doubling, capped. */
const backoffMsMin = 5;
const backoffMsMax = 200;
const requestIdBytes = 16;
const reconnectTimeWaitMs = 100;
const reconnectJitterMs = 100;
/** Longest timeoutMs accepted (setTimeout's limit is about 24.8 days). */
const timeoutMsMax = 2 ** 31 - 1;

type Route = 'range' | 'kv';
type OkResult = Extract<WireResult, { ok: true }>;

/** One call in flight: queued, sent, or waiting to be resent. */
interface Call {
  readonly op: OpName;
  /** The key that routes it (a scan's start). */
  readonly key: Uint8Array;
  /** msgpack of the WireOp, sent as is in every batch and retry. */
  readonly encoded: Uint8Array;
  readonly timeoutMs: number;
  /** performance.now() at which the call fails with TimeoutError. */
  readonly deadlineMs: number;
  readonly signal: AbortSignal | undefined;
  readonly resolve: (r: OkResult) => void;
  readonly reject: (e: Error) => void;
  route: Route;
  /** Set for ops of one range's stream (events): always sent to that range, alone. */
  readonly fixedRangeId: number | undefined;
  /**
   * split and transfer: the generation the op expects of its range (expectGeneration). A
   * RangeKeyMismatch showing the key's range at another one refuses it for good.
   */
  readonly expectGeneration: number | undefined;
  /** The longest one NATS request attempt of this call waits. */
  readonly attemptTimeoutMs: number;
  /** Times this op was put in a NATS request. */
  sends: number;
  settled: boolean;
  lastError: unknown;
  deadlineTimer: NodeJS.Timeout | undefined;
  onAbort: (() => void) | undefined;
  /** Its position in the client's `live` while unsettled, else -1. */
  liveAt: number;
}

export class Client {
  /** Live counters (read-only to callers). */
  readonly stats: Readonly<ClientStats>;
  private readonly counters: ClientStats = { requests: 0, ops: 0, retries: 0 };
  private readonly nc: NatsConnection;
  private readonly prefix: string;
  private readonly kvSubject: string;
  private readonly timeoutMs: number;
  /** Calls waiting for the end of the turn; routed when the turn's batches are cut. */
  private queue: Call[] = [];
  /** Where ranges are, as far as this client knows. */
  private readonly cache = new RangeCache();
  /**
   * The node that last answered for each range as its leader: the ops of ranges one node
   * leads go in one request (as TiKV batches per store).
   */
  private readonly leaders = new Map<number, string>();
  /**
   * Events polls in flight by what they ask for (range, prefix, after, limit, waitMs): the
   * subscriptions of this client that stand at the same place of the same stream (say, many
   * subscriptions of one prefix, all caught up) share one request and its reply.
   */
  private readonly sharedPolls = new Map<string, SharedPoll>();
  /** The NATS subscription of each watch subject, shared by the client's watchers of it. */
  private readonly watchHubs = new Map<string, WatchHub>();
  /** performance.now() of the last directory load started, and whether one is running. */
  private directoryLoadedAtMs = Number.NEGATIVE_INFINITY;
  private directoryLoading = false;
  private flushHandle: NodeJS.Immediate | undefined;
  /**
   * Every unsettled call, so close() can settle them; a call leaves by taking the last
   * one's place (Call.liveAt). Not a Set: V8 links a Set's replaced hash table to the one
   * that replaces it, so once one of those tables had been promoted to the old generation,
   * every call added after it survived the young generation's collections: about 2.5 MB a
   * scavenge at 64 gets in flight against 0.13 MB now (docs/architecture.md, "The
   * client's live calls").
   */
  private readonly live: Call[] = [];
  private readonly backoffTimers = new Set<NodeJS.Timeout>();
  private closed = false;
  private clusterIdSeen: string | undefined;
  /** Every request to the nodes goes through this (one inbox subscription). */
  private readonly requests: Requests;

  private constructor(nc: NatsConnection, prefix: string, timeoutMs: number) {
    this.nc = nc;
    this.requests = new Requests(nc);
    this.prefix = prefix;
    this.kvSubject = subjects.kv(prefix);
    this.timeoutMs = timeoutMs;
    this.stats = this.counters;
    // Until a reply says otherwise, range 1 (the first range, at an unknown generation)
    // is taken to cover every key: a cluster that never split needs no directory read.
    this.cache.update([{ rangeId: 1, start: new Uint8Array(0), end: null, generation: 0 }]);
    void nc.closed().then((err) => this.onConnectionClosed(err instanceof Error ? err : undefined));
  }

  static async connect(opts: ClientOptions = {}): Promise<Client> {
    const prefix = opts.prefix ?? defaultPrefix;
    const prefixProblem = checkPrefix(prefix);
    if (prefixProblem) throw new InvalidArgumentError(prefixProblem);
    const timeoutMs = checkTimeoutMs(opts.timeoutMs ?? defaultTimeoutMs);
    const servers = opts.servers ?? splitServers(process.env.RASPUTIN_NATS) ?? defaultServers;
    let nc: NatsConnection;
    try {
      nc = await connect({
        servers,
        ...(opts.name === undefined ? {} : { name: opts.name }),
        maxReconnectAttempts: -1,
        reconnectTimeWait: reconnectTimeWaitMs,
        reconnectJitter: reconnectJitterMs,
        noAsyncTraces: true,
      });
    } catch (err) {
      throw new UnavailableError(`cannot connect to NATS at ${String(servers)}`, { cause: err });
    }
    return new Client(nc, prefix, timeoutMs);
  }

  /** The cluster id from the replies, once one arrived. */
  get clusterId(): string | undefined {
    return this.clusterIdSeen;
  }

  async set(key: string | Uint8Array, value: string | Uint8Array, o?: CallOptions): Promise<void> {
    const op: WireOp = { op: 'set', key: keyBytes(key), value: valueBytes(value), id: newId() };
    await this.call(op, o);
  }

  async get(key: string | Uint8Array, o?: CallOptions): Promise<GetResult | null> {
    const r = await this.call({ op: 'get', key: keyBytes(key) }, o);
    const value = optionalBytes(r.value, 'get');
    return value === null ? null : { value };
  }

  async cas(
    key: string | Uint8Array,
    expected: string | Uint8Array | null,
    value: string | Uint8Array,
    o?: CallOptions,
  ): Promise<CasResult> {
    const op: WireOp = {
      op: 'cas',
      key: keyBytes(key),
      expect: expected === null ? null : valueBytes(expected, 'expected'),
      value: valueBytes(value),
      id: newId(),
    };
    const r = await this.call(op, o);
    if (typeof r.success !== 'boolean') {
      throw new InternalError('malformed cas result (no success flag): the outcome is unknown');
    }
    return { success: r.success, value: optionalBytes(r.value, 'cas') };
  }

  async del(key: string | Uint8Array, o?: CallOptions): Promise<DelResult> {
    const r = await this.call({ op: 'del', key: keyBytes(key), id: newId() }, o);
    return { value: optionalBytes(r.value, 'del') };
  }

  /**
   * The entries of [start, end) in key order, up to `o.limit` (default 100, at most
   * scanLimits.scanCallLimitMax); `start` '' (the default) is the start of the keyspace,
   * `end` null (the default) is no end. Follows the nodes' continuations until the limit
   * or the end; `next` says where to continue when the limit cut it short.
   *
   * Each page (one scan op, up to limits.scanLimitMax entries and limits.scanBytesMax
   * bytes) is a linearizable read of its part of the span, served by the range's leader
   * like a get; a scan over several pages is not one snapshot: every page reflects the
   * state at its own point in time. `o.timeoutMs` is the deadline of the whole call.
   */
  async scan(
    start: string | Uint8Array = '',
    end: string | Uint8Array | null = null,
    o: ScanOptions = {},
  ): Promise<ScanResult> {
    let from = scanStartBytes(start);
    const to = scanEndBytes(end);
    const limit = checkScanLimit(
      o.limit ?? scanLimits.scanCallLimitDefault,
      scanLimits.scanCallLimitMax,
      'scanCallLimitMax',
    );
    const timeoutMs = checkTimeoutMs(o.timeoutMs ?? this.timeoutMs);
    const deadlineMs = performance.now() + timeoutMs;
    const entries: ScanEntry[] = [];
    while (entries.length < limit) {
      const leftMs = deadlineMs - performance.now();
      if (leftMs <= 0) {
        throw new TimeoutError(
          `scan timed out after ${timeoutMs} ms (${entries.length} entries read)`,
        );
      }
      const pageLimit = Math.min(limit - entries.length, limits.scanLimitMax);
      const page = await this.scanPage(from, to, pageLimit, {
        timeoutMs: Math.ceil(leftMs),
        ...(o.signal ? { signal: o.signal } : {}),
      });
      for (const e of page.entries) entries.push(e);
      if (page.next === undefined) return { entries };
      from = page.next;
    }
    return { entries, next: Buffer.from(from) };
  }

  /**
   * Every entry of [start, end) in key order, fetched a page (one scan op) at a time as the
   * caller iterates: for scans too big for one scan() call. Each page is a linearizable
   * read of its part of the span; the whole is not one snapshot. Breaking out of the loop
   * stops fetching. Bad input throws here, before anything is sent.
   */
  scanAll(
    start: string | Uint8Array = '',
    end: string | Uint8Array | null = null,
    o: ScanAllOptions = {},
  ): AsyncGenerator<ScanEntry, void, undefined> {
    const from = scanStartBytes(start);
    const to = scanEndBytes(end);
    const pageSize = checkScanLimit(
      o.pageSize ?? limits.scanLimitMax,
      limits.scanLimitMax,
      'scanLimitMax',
    );
    const callOptions: CallOptions = {
      timeoutMs: checkTimeoutMs(o.timeoutMs ?? this.timeoutMs),
      ...(o.signal ? { signal: o.signal } : {}),
    };
    return this.scanPages(from, to, pageSize, callOptions);
  }

  private async *scanPages(
    start: Uint8Array,
    end: Uint8Array | null,
    pageSize: number,
    o: CallOptions,
  ): AsyncGenerator<ScanEntry, void, undefined> {
    let from = start;
    for (;;) {
      const page = await this.scanPage(from, end, pageSize, o);
      yield* page.entries;
      if (page.next === undefined) return;
      from = page.next;
    }
  }

  /**
   * One scan op. Checks what a continuation relies on: keys ascend inside [start, end) and
   * `next` lies after them (so following it always makes progress); `next` at or past the
   * end means the span is done.
   */
  private async scanPage(
    start: Uint8Array,
    end: Uint8Array | null,
    limit: number,
    o: CallOptions,
  ): Promise<{ entries: ScanEntry[]; next?: Buffer }> {
    const op: WireOp = { op: 'scan', key: start, ...(end === null ? {} : { end }), limit };
    const r = await this.call(op, o);
    const malformed = (why: string) => new InternalError(`malformed scan result (${why})`);
    if (!Array.isArray(r.entries)) throw malformed('no entries');
    if (r.entries.length > limit) throw malformed(`${r.entries.length} entries, limit ${limit}`);
    const entries: ScanEntry[] = [];
    let last: Uint8Array | undefined;
    for (const [key, value] of r.entries) {
      const after =
        last === undefined ? Buffer.compare(key, start) >= 0 : Buffer.compare(key, last) > 0;
      if (!after) throw malformed('keys out of order or before the start');
      if (end !== null && Buffer.compare(key, end) >= 0)
        throw malformed('a key at or past the end');
      entries.push({ key: Buffer.from(key), value: Buffer.from(value) });
      last = key;
    }
    const next = r.next instanceof Uint8Array ? r.next : undefined;
    if (next === undefined || (end !== null && Buffer.compare(next, end) >= 0)) return { entries };
    if (Buffer.compare(next, last ?? start) <= 0) throw malformed('next does not move forward');
    return { entries, next: Buffer.from(next) };
  }

  /**
   * Splits the range holding `key` at `key` (docs/ranges.md); resolves with the
   * descriptors of both sides once the split is applied, or with the one range's
   * descriptor when a range already starts at `key`. With `expectGeneration`, the split
   * is refused (RangeKeyMismatchError) unless the range is at that generation.
   */
  async split(
    key: string | Uint8Array,
    o?: CallOptions & { expectGeneration?: number },
  ): Promise<RangeDescriptor[]> {
    const g = o?.expectGeneration;
    const r = await this.call(
      { op: 'split', key: keyBytes(key), ...(g === undefined ? {} : { generation: g }) },
      o,
    );
    const ds = (r.descriptors ?? []).map((d) => asCachedRange(d));
    if (ds.length === 0 || ds.some((d) => d === undefined)) {
      throw new InternalError('malformed split result (descriptors)');
    }
    this.cache.update(ds as CachedRange[]);
    return r.descriptors as RangeDescriptor[];
  }

  /**
   * Moves the leadership of the range holding `key` to its voter on node `nodeId`
   * (docs/ranges.md, "Leadership transfer"). Resolves once the old leader has stepped down,
   * with the range's descriptor and the node leading it then ('' when the election is not
   * over yet); at once when `nodeId` leads it already. InvalidArgumentError when that node
   * holds no voter of the range; with `expectGeneration`, RangeKeyMismatchError unless the
   * range is at that generation.
   */
  async transferLeader(
    key: string | Uint8Array,
    nodeId: string,
    o?: CallOptions & { expectGeneration?: number },
  ): Promise<{ descriptor: RangeDescriptor; leader: string }> {
    const g = o?.expectGeneration;
    const r = await this.call(
      {
        op: 'transfer',
        key: keyBytes(key),
        node: nodeId,
        ...(g === undefined ? {} : { generation: g }),
      },
      o,
    );
    const d = r.descriptors?.length === 1 ? asCachedRange(r.descriptors[0]!) : undefined;
    if (d === undefined) throw new InternalError('malformed transfer result (descriptor)');
    return {
      descriptor: r.descriptors![0] as RangeDescriptor,
      leader: typeof r.leader === 'string' ? r.leader : '',
    };
  }

  /**
   * The meta directory: every range's descriptor as last recorded there, by start key.
   * It may lag behind a split by a moment (each range's own descriptor is the
   * authority); `rasputin ranges` shows the live view.
   */
  async ranges(o?: CallOptions): Promise<RangeDescriptor[]> {
    const out: RangeDescriptor[] = [];
    for await (const e of this.scanAll(directoryStart, directoryEnd, o)) {
      const d = decodeDescriptor(e.value);
      if (d !== undefined) out.push(d);
    }
    out.sort((a, b) => Buffer.compare(a.start, b.start));
    return out;
  }

  /** System: the next range id from the meta range's counter (used by nodes to split). */
  async allocRangeId(o?: CallOptions): Promise<number> {
    const r = await this.call({ op: 'alloc', key: rangeIdCounterKey, id: newId() }, o);
    const id = r.value instanceof Uint8Array ? decodeCounter(r.value) : undefined;
    if (id === undefined) throw new InternalError('malformed alloc result');
    return id;
  }

  /**
   * System: records a descriptor in the meta directory unless it holds that range at the
   * same or a newer generation. Resolves with whether it was written.
   */
  async putDescriptor(d: RangeDescriptor, o?: CallOptions): Promise<boolean> {
    const op: WireOp = {
      op: 'desc',
      key: directoryKey(d.rangeId),
      value: encodeDescriptor(d),
      generation: d.generation,
      id: newId(),
    };
    const r = await this.call(op, o);
    return r.success === true;
  }

  /** The ranges this client routes by (for tests and tools). */
  cachedRanges(): readonly CachedRange[] {
    return this.cache.all();
  }

  /**
   * Loads the meta directory into the range cache in the background, at most once a
   * second; meanwhile, ops the cache cannot place go to `<p>.kv`.
   */
  refreshDirectory(): void {
    const now = performance.now();
    if (this.closed || this.directoryLoading || now - this.directoryLoadedAtMs < 1000) return;
    this.directoryLoading = true;
    this.directoryLoadedAtMs = now;
    this.ranges({ timeoutMs: 2000 })
      .then((ds) => {
        this.cache.update(ds.map((d) => asCachedRange(d)!).filter((d) => d !== undefined));
      })
      .catch(() => {
        // No cluster yet, or it is busy: ops go to `<p>.kv` meanwhile.
      })
      .finally(() => {
        this.directoryLoading = false;
      });
  }

  /**
   * At-most-once notifications of applied mutations, from now on (docs/streams.md):
   * `pattern` '' watches every key, a pattern ending with '.' every key that starts with
   * it, any other pattern exactly that key. Nothing is replayed and a notification can be
   * lost (a leader change, a slow consumer, a NATS reconnect): use subscribe for streams
   * without gaps. Ends when `signal` fires or the client closes.
   */
  watch(pattern: string | Uint8Array = '', o: { signal?: AbortSignal } = {}): Watch {
    const bytes = toBytes(pattern, 'watch pattern');
    if (bytes.length > limits.keyBytesMax) {
      throw new InvalidArgumentError(
        `watch pattern is ${bytes.length} bytes, over keyBytesMax ${limits.keyBytesMax}`,
        'keyBytesMax',
      );
    }
    if (this.closed) throw new ClientClosedError();
    const subject = watchPattern(this.prefix, bytes);
    let hub = this.watchHubs.get(subject);
    if (hub === undefined) hub = this.openWatchHub(subject);
    const watchers = hub.watchers;
    const stop = () => w.end();
    const w = new WatchQueue<WatchEvent>(watchQueueMax, () => {
      o.signal?.removeEventListener('abort', stop);
      watchers.delete(w);
      if (watchers.size === 0 && this.watchHubs.get(subject) === hub) {
        this.watchHubs.delete(subject);
        if (!hub.sub.isClosed()) hub.sub.unsubscribe();
      }
    });
    watchers.add(w);
    o.signal?.addEventListener('abort', stop, { once: true });
    if (o.signal?.aborted) stop();
    return w;
  }

  /**
   * One NATS subscription per watch subject for all of this client's watchers of it: each
   * notification is decoded once and queued to every watcher (at most watchQueueMax each;
   * a watcher that falls further behind loses the newest, as at-most-once allows).
   */
  private openWatchHub(subject: string): WatchHub {
    const watchers = new Set<WatchQueue<WatchEvent>>();
    const sub = this.nc.subscribe(subject, {
      callback: (err, msg) => {
        if (err) {
          // The subscription failed (say, the server refused it): every loop throws it.
          for (const w of [...watchers]) {
            w.fail(new UnavailableError(`watch of ${subject} failed: ${err.message}`));
          }
          return;
        }
        const e = asWatchEvent(msg.data);
        if (e === undefined) return;
        for (const w of watchers) w.push(e);
      },
    });
    const hub: WatchHub = { sub, watchers };
    this.watchHubs.set(subject, hub);
    // The connection closed (client.close): every watcher's loop ends.
    void sub.closed.then(() => {
      if (this.watchHubs.get(subject) === hub) this.watchHubs.delete(subject);
      for (const w of [...watchers]) w.end();
    });
    return hub;
  }

  /**
   * An ordered, resumable stream of the mutations of the keys that start with `prefix`
   * ('' = every key), from now or right after a cursor (o.fromRevision), pulled from the
   * range leaders (docs/streams.md): every applied set, successful cas and del of an
   * existing key arrives once, in revision order per key, across leader changes, node
   * crashes and splits. Each event carries a cursor to resume after it. A subscription
   * that fell behind the retained history fails with CompactedError (never a gap); it
   * retries everything else without end. Ends when `o.signal` fires or the loop breaks.
   * From now: "now" is fixed when subscribe is called (`started` resolves once it is).
   * Bad input (a prefix over keyBytesMax, a cursor of another prefix) throws here.
   */
  subscribe(prefix: string | Uint8Array = '', o: SubscribeOptions = {}): Subscription {
    const bytes = toBytes(prefix, 'subscribe prefix');
    if (bytes.length > limits.keyBytesMax) {
      throw new InvalidArgumentError(
        `subscribe prefix is ${bytes.length} bytes, over keyBytesMax ${limits.keyBytesMax}`,
        'keyBytesMax',
      );
    }
    const waitMs = o.waitMs ?? subscribeDefaults.waitMs;
    if (!Number.isInteger(waitMs) || waitMs < 0 || waitMs > limits.eventsWaitMsMax) {
      throw new InvalidArgumentError(
        `waitMs must be an integer in [0, ${limits.eventsWaitMsMax}], got ${String(waitMs)}`,
        'eventsWaitMsMax',
      );
    }
    const pageSize = o.pageSize ?? limits.eventsLimitMax;
    if (!Number.isInteger(pageSize) || pageSize < 1 || pageSize > limits.eventsLimitMax) {
      throw new InvalidArgumentError(
        `pageSize must be an integer in [1, ${limits.eventsLimitMax}], got ${String(pageSize)}`,
        'eventsLimitMax',
      );
    }
    const from = o.fromRevision === undefined ? undefined : decodeCursor(o.fromRevision, bytes);
    if (this.closed) throw new ClientClosedError();
    return new Subscription(this.eventsSource, bytes, {
      from,
      waitMs,
      pageSize,
      signal: o.signal,
    });
  }

  /** What subscriptions read the cluster through. */
  private readonly eventsSource: EventsSource = {
    head: (key, signal) => this.eventsHead(key, signal),
    page: (rangeId, prefix, after, limit, waitMs, signal) =>
      this.eventsPage(rangeId, prefix, after, limit, waitMs, signal),
    prime: async () => {
      const ds = await this.ranges({ timeoutMs: 2000 });
      this.cache.update(ds.map((d) => asCachedRange(d)).filter((d) => d !== undefined));
    },
    learn: (ranges) => {
      this.cache.update(ranges);
    },
  };

  /** eventsHead: the stream position of the range holding `key` now, and that range. */
  private async eventsHead(
    key: Uint8Array,
    signal: AbortSignal,
  ): Promise<{ after: number; range: RangeSpan }> {
    const r = await this.call({ op: 'eventsHead', key }, { signal });
    const range = asCachedRange(r.descriptors?.[0]);
    if (typeof r.after !== 'number' || range === undefined) {
      throw new InternalError('malformed eventsHead result');
    }
    this.cache.update([range]);
    return { after: r.after, range };
  }

  /**
   * events: a page of range `rangeId`'s stream after `after`, long polled for up to waitMs.
   * Identical polls in flight share one request (sharedPolls) and its checked page (the
   * events' buffers too), and one caller giving up (its signal) does not end the others' wait.
   */
  private async eventsPage(
    rangeId: number,
    prefix: Uint8Array,
    after: number,
    limit: number,
    waitMs: number,
    signal: AbortSignal,
  ): Promise<EventsPage> {
    if (signal.aborted) throw new AbortedError('events poll aborted', { outcomeUnknown: false });
    let hex = prefixHex.get(prefix);
    if (hex === undefined) prefixHex.set(prefix, (hex = Buffer.from(prefix).toString('hex')));
    const key = `${rangeId}/${after}/${limit}/${waitMs}/${hex}`;
    let shared = this.sharedPolls.get(key);
    if (shared === undefined) {
      const abort = new AbortController();
      const op: WireOp = { op: 'events', key: prefix, rangeId, after, limit, waitMs };
      const result = this.call(
        op,
        { timeoutMs: waitMs + pollCallSlackMs, signal: abort.signal },
        { rangeId, attemptTimeoutMs: waitMs + pollAttemptSlackMs },
      ).then((r) => readPage(r, rangeId, after, prefix));
      const poll: SharedPoll = { result, waiters: 0, abort };
      shared = poll;
      this.sharedPolls.set(key, poll);
      const forget = () => {
        if (this.sharedPolls.get(key) === poll) this.sharedPolls.delete(key);
      };
      result.then(forget, forget);
    }
    const poll = shared;
    poll.waiters++;
    try {
      return await untilAborted(poll.result, signal);
    } finally {
      if (--poll.waiters === 0 && this.sharedPolls.get(key) === poll) {
        // No one waits for it any more: end the request (a settled one is unaffected).
        this.sharedPolls.delete(key);
        poll.abort.abort();
      }
    }
  }

  /** Fails every unsettled call with ClientClosedError and closes the NATS connection. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.shutDown(undefined);
    if (!this.nc.isClosed()) await this.nc.close();
  }

  // ------------------------------------------------------------------ calls

  private call(
    op: WireOp,
    o: CallOptions | undefined,
    fixed?: { rangeId: number; attemptTimeoutMs: number },
  ): Promise<OkResult> {
    const signal = o?.signal;
    if (this.closed) return Promise.reject(new ClientClosedError());
    if (signal?.aborted) {
      const message = `${op.op} aborted before it was sent`;
      return Promise.reject(
        new AbortedError(message, { outcomeUnknown: false, cause: signal.reason }),
      );
    }
    const timeoutMs = checkTimeoutMs(o?.timeoutMs ?? this.timeoutMs);
    const encoded = encode(op);
    const opBytesMax = this.requestBytesMax() - requestFrameBytesMax;
    if (encoded.length > opBytesMax) {
      const message =
        `${op.op} is ${encoded.length} bytes encoded, over the ${opBytesMax} bytes one ` +
        `request can carry (payloadBytesMax ${limits.payloadBytesMax})`;
      return Promise.reject(new InvalidArgumentError(message, 'payloadBytesMax'));
    }
    return new Promise<OkResult>((resolve, reject) => {
      const call: Call = {
        op: op.op,
        key: op.key,
        encoded,
        timeoutMs,
        deadlineMs: performance.now() + timeoutMs,
        signal,
        resolve,
        reject,
        route: 'range',
        fixedRangeId: fixed?.rangeId,
        expectGeneration: op.op === 'split' || op.op === 'transfer' ? op.generation : undefined,
        attemptTimeoutMs: fixed?.attemptTimeoutMs ?? attemptTimeoutMsMax,
        sends: 0,
        settled: false,
        lastError: undefined,
        deadlineTimer: undefined,
        onAbort: undefined,
        liveAt: this.live.length,
      };
      call.deadlineTimer = setTimeout(() => this.expire(call), timeoutMs);
      if (signal) {
        call.onAbort = () => this.abort(call);
        signal.addEventListener('abort', call.onAbort, { once: true });
      }
      this.live.push(call);
      this.enqueue(call);
    });
  }

  private enqueue(call: Call): void {
    if (call.settled || this.closed) return;
    this.queue.push(call);
    this.flushHandle ??= setImmediate(() => this.flush());
  }

  /** Marks a call settled and drops its timers and listener; false if it already was. */
  private settle(call: Call): boolean {
    if (call.settled) return false;
    call.settled = true;
    const last = this.live.pop()!;
    if (last !== call) {
      this.live[call.liveAt] = last;
      last.liveAt = call.liveAt;
    }
    call.liveAt = -1;
    clearTimeout(call.deadlineTimer);
    if (call.onAbort) call.signal?.removeEventListener('abort', call.onAbort);
    return true;
  }

  private succeed(call: Call, r: OkResult): void {
    if (this.settle(call)) call.resolve(r);
  }

  private fail(call: Call, err: Error): void {
    if (this.settle(call)) call.reject(err);
  }

  private expire(call: Call): void {
    const after = `${call.op} timed out after ${call.timeoutMs} ms`;
    const message =
      call.sends === 0
        ? `${after} before it was sent`
        : `${after} (${call.sends} attempts): the outcome is unknown`;
    this.fail(call, new TimeoutError(message, { cause: call.lastError }));
  }

  private abort(call: Call): void {
    const outcomeUnknown = call.sends > 0 && isWrite(call.op);
    const message =
      call.sends === 0
        ? `${call.op} aborted before it was sent`
        : outcomeUnknown
          ? `${call.op} aborted after it was sent: the outcome is unknown`
          : `${call.op} aborted`;
    this.fail(call, new AbortedError(message, { outcomeUnknown, cause: call.signal?.reason }));
  }

  // ------------------------------------------------------------------ batches

  private requestBytesMax(): number {
    const serverMax = this.nc.info?.max_payload;
    return typeof serverMax === 'number' && serverMax > 0
      ? Math.min(limits.payloadBytesMax, serverMax)
      : limits.payloadBytesMax;
  }

  /**
   * Sends every queued call, routed now by the range cache, all without waiting: the calls
   * of ranges whose leader is known go to that node together (one request per node, as
   * TiKV batches per store); the others one request per range, or to `<p>.kv`.
   */
  private flush(): void {
    this.flushHandle = undefined;
    if (this.closed) return;
    const queue = this.queue;
    this.queue = [];
    // One pass, grouped by node at once: with 64 calls over as many ranges, grouping by
    // range first made a group per call.
    const byNode = new Map<string, { calls: Call[]; ranges: CachedRange[]; mixed: boolean }>();
    const alone = new Map<number, { range: CachedRange | undefined; calls: Call[] }>();
    let missed = false;
    for (const call of queue) {
      if (call.settled) continue;
      if (call.fixedRangeId !== undefined) {
        // Generation 0: the request names no range, so no generation check applies.
        const stream = { rangeId: call.fixedRangeId, start: call.key, end: null, generation: 0 };
        this.send(stream, [call]);
        continue;
      }
      const range = call.route === 'range' ? this.cache.lookup(call.key) : undefined;
      if (call.route === 'range' && range === undefined) missed = true;
      const node =
        range !== undefined && range.generation > 0 ? this.leaders.get(range.rangeId) : undefined;
      if (node !== undefined) {
        const g = byNode.get(node);
        if (g === undefined) byNode.set(node, { calls: [call], ranges: [range!], mixed: false });
        else {
          if (g.ranges[0]!.rangeId !== range!.rangeId) g.mixed = true;
          g.calls.push(call);
          g.ranges.push(range!);
        }
        continue;
      }
      const id = range?.rangeId ?? 0; // 0: `<p>.kv`
      const g = alone.get(id);
      if (g === undefined) alone.set(id, { range, calls: [call] });
      else g.calls.push(call);
    }
    if (missed) this.refreshDirectory();
    for (const g of byNode.values()) {
      if (g.mixed) this.sendRouted(g.calls, g.ranges);
      else this.sendBatches(g.ranges[0], g.calls);
    }
    for (const g of alone.values()) this.sendBatches(g.range, g.calls);
  }

  /** The calls of one range (or of `<p>.kv`), in requests of up to batchOpsMax ops. */
  private sendBatches(range: CachedRange | undefined, calls: Call[]): void {
    this.inBatches(calls, 0, (from, to) => this.send(range, calls.slice(from, to)));
  }

  /**
   * The calls of several ranges that one node leads (`ranges[i]` routes `calls[i]`), in
   * requests of up to batchOpsMax ops with a route (range id, generation) per op, sent to
   * one of those ranges' subjects.
   */
  private sendRouted(calls: Call[], ranges: CachedRange[]): void {
    this.inBatches(calls, routeBytesMax, (from, to) => {
      if (to - from === 1) this.send(ranges[from], calls.slice(from, to));
      else this.send(ranges[from], calls.slice(from, to), ranges.slice(from, to));
    });
  }

  /**
   * Cuts `calls` into requests of up to batchOpsMax ops that fit a request (each op's
   * encoded bytes plus `extraBytes`), and calls send(from, to) for each, in order.
   */
  private inBatches(
    calls: readonly Call[],
    extraBytes: number,
    send: (from: number, to: number) => void,
  ): void {
    const opsBytesMax = this.requestBytesMax() - requestFrameBytesMax;
    let from = 0;
    let bytes = 0;
    for (let i = 0; i < calls.length; i++) {
      const opBytes = calls[i]!.encoded.length + extraBytes;
      if (i > from && (i - from === limits.batchOpsMax || bytes + opBytes > opsBytesMax)) {
        send(from, i);
        from = i;
        bytes = 0;
      }
      bytes += opBytes;
    }
    if (calls.length > from) send(from, calls.length);
  }

  /**
   * One request: to a range's leader (naming the range and generation), or to `<p>.kv`;
   * with `routes` (one range per op), ops of several ranges for the node leading `range`.
   */
  private send(range: CachedRange | undefined, batch: Call[], routes?: CachedRange[]): void {
    const subject = range ? subjects.range(this.prefix, range.rangeId) : this.kvSubject;
    // Once a reply told us the cluster id, requests carry it: a node of another cluster on
    // the same prefix refuses them before applying anything.
    const cid =
      this.clusterIdSeen !== undefined && this.clusterIdSeen.length <= 60
        ? this.clusterIdSeen
        : undefined;
    const payload = routes
      ? frameRequest(
          batch.map((c) => c.encoded),
          cid,
          undefined,
          routes,
        )
      : frameRequest(
          batch.map((c) => c.encoded),
          cid,
          range && range.generation > 0 ? { id: range.rangeId, gen: range.generation } : undefined,
        );
    const nowMs = performance.now();
    let remainingMs = 1;
    let attemptMs = attemptTimeoutMsMax;
    for (const call of batch) {
      remainingMs = Math.max(remainingMs, call.deadlineMs - nowMs);
      attemptMs = Math.max(attemptMs, call.attemptTimeoutMs);
      if (call.sends > 0) this.counters.retries++;
      call.sends++;
    }
    this.counters.requests++;
    this.counters.ops += batch.length;
    const timeout = Math.max(1, Math.ceil(Math.min(attemptMs, remainingMs)));
    const rangeIds = range ? batch.map((_, i) => (routes ? routes[i]! : range).rangeId) : undefined;
    this.requests.request(
      subject,
      payload,
      timeout,
      (data) => this.onReply(batch, data, rangeIds),
      (err) => {
        for (const id of rangeIds ?? []) this.leaders.delete(id);
        this.onRequestFailed(subject, range, batch, err);
      },
    );
  }

  /** The request got no reply: no responders, attempt timeout, or a connection problem. */
  private onRequestFailed(
    subject: string,
    range: CachedRange | undefined,
    batch: Call[],
    err: unknown,
  ): void {
    const route: Route = range ? 'range' : 'kv';
    if (this.closed) return;
    const noResponders = err instanceof NoRespondersError;
    const timedOut = err instanceof RequestTimeoutError;
    if (err instanceof NatsInvalidArgumentError) {
      // The server's max_payload shrank under us (a reconnect to another server).
      const e = new InvalidArgumentError(`request refused by the NATS client: ${err.message}`);
      for (const call of batch) this.fail(call, e);
      return;
    }
    const nowMs = performance.now();
    const later: Call[] = [];
    for (const call of batch) {
      if (call.settled) continue;
      call.lastError = noResponders ? new UnavailableError(`no responders on ${subject}`) : err;
      if (nowMs >= call.deadlineMs) {
        this.expire(call);
        continue;
      }
      // Too close to the deadline for another attempt: its timer settles the call.
      if (call.deadlineMs - nowMs < attemptTimeoutMsMin) continue;
      // The leader's subject had no listener or no answer: ask any node. Any node had
      // none either: a leader may have appeared since.
      call.route = route === 'range' ? 'kv' : 'range';
      // A range's stream has one place to ask: without a leader there, wait a little.
      const elsewhere = noResponders && route === 'range' && call.fixedRangeId === undefined;
      if (elsewhere || timedOut) this.enqueue(call);
      else later.push(call);
    }
    this.retryLater(later);
  }

  private onReply(batch: Call[], data: Uint8Array, rangeIds?: number[]): void {
    if (this.closed) return;
    const from: { node?: string } = {};
    const results = this.readReply(data, batch.length, from);
    const node = from.node;
    const later: Call[] = [];
    for (let i = 0; i < batch.length; i++) {
      const call = batch[i]!;
      const r = results instanceof Error ? results : results[i]!;
      // Who leads the range: the node that served the op, or the one a NotLeader names.
      const rangeId = rangeIds?.[i];
      if (rangeId !== undefined && !(r instanceof Error)) {
        if (r.ok || (r.code !== 'NotLeader' && r.code !== 'Unavailable')) {
          if (node !== undefined) this.leaders.set(rangeId, node);
        } else if (r.code === 'NotLeader' && r.leader) this.leaders.set(rangeId, r.leader);
        else this.leaders.delete(rangeId);
      }
      if (call.settled) continue;
      if (r instanceof Error) {
        this.fail(call, r);
      } else if (r.ok) {
        this.succeed(call, r);
      } else if (r.code === 'RangeKeyMismatch' && this.otherGeneration(call, r.descriptors)) {
        this.fail(call, errorFromWire(r));
      } else if (r.code === 'RangeKeyMismatch' && this.learn(r.descriptors)) {
        // Rerouted at once by what the error taught the cache.
        call.lastError = errorFromWire(r);
        call.route = 'range';
        this.enqueue(call);
      } else if (retryableCodes.has(r.code)) {
        call.lastError = errorFromWire(r);
        call.route = r.code === 'RangeKeyMismatch' ? 'range' : 'kv';
        if (r.code === 'RangeKeyMismatch') this.refreshDirectory();
        later.push(call);
      } else {
        this.fail(call, errorFromWire(r));
      }
    }
    this.retryLater(later);
  }

  /**
   * Whether a RangeKeyMismatch refuses `call` for good: it expects a generation, and the
   * range that answered holds its key at another one. Rerouting cannot change that.
   */
  private otherGeneration(call: Call, descriptors: readonly unknown[] | undefined): boolean {
    if (call.expectGeneration === undefined) return false;
    const d = asCachedRange(descriptors?.[0]);
    return d !== undefined && d.generation !== call.expectGeneration && inSpan(d, call.key);
  }

  /** Adds descriptors from a reply to the cache; whether that changed anything. */
  private learn(descriptors: readonly unknown[] | undefined): boolean {
    if (!descriptors) return false;
    const ranges: CachedRange[] = [];
    for (const d of descriptors) {
      const r = asCachedRange(d);
      if (r) ranges.push(r);
    }
    return this.cache.update(ranges);
  }

  /**
   * The results of a reply, one per op; a refused request (code, no res) gives every op
   * that error. An unreadable reply is an Error for every op.
   */
  private readReply(
    data: Uint8Array,
    opCount: number,
    from: { node?: string } = {},
  ): (WireResult | Error)[] | Error {
    const malformed = (why: string) =>
      new InternalError(`malformed reply (${why}): the outcome is unknown`);
    let reply: unknown;
    try {
      reply = decode(data);
    } catch (err) {
      return new InternalError('reply is not msgpack: the outcome is unknown', { cause: err });
    }
    if (typeof reply !== 'object' || reply === null) return malformed('not a map');
    const r = reply as Record<string, unknown>;
    if (typeof r.node === 'string' && r.node.length <= 64) from.node = r.node;
    if (typeof r.cid === 'string' && r.cid !== '') {
      if (this.clusterIdSeen === undefined) this.clusterIdSeen = r.cid;
      else if (r.cid !== this.clusterIdSeen) {
        return new InternalError(
          `reply from cluster ${r.cid}, but this client talks to cluster ${this.clusterIdSeen} ` +
            '(two clusters on one prefix?): the outcome is unknown',
        );
      }
    }
    if (r.res === undefined || r.res === null) {
      if (typeof r.code !== 'string') return malformed('neither res nor code');
      const refused: WireResult = {
        ok: false,
        code: r.code,
        msg: typeof r.msg === 'string' ? r.msg : r.code,
        ...(typeof r.limit === 'string' ? { limit: r.limit } : {}),
      };
      return new Array<WireResult>(opCount).fill(refused);
    }
    if (r.v !== protocolVersion) return malformed(`protocol version ${String(r.v)}`);
    if (!Array.isArray(r.res) || r.res.length !== opCount) {
      return malformed(`expected ${opCount} results`);
    }
    return r.res.map((x: unknown, i) => checkResult(x) ?? malformed(`result ${i}`));
  }

  /** Resends calls after a jittered exponential backoff, all in one batch. */
  private retryLater(calls: Call[]): void {
    if (calls.length === 0) return;
    let sends = 1;
    for (const call of calls) sends = Math.max(sends, call.sends);
    const ceilingMs = Math.min(backoffMsMax, backoffMsMin * 2 ** Math.min(sends - 1, 16));
    const delayMs = ceilingMs / 2 + (Math.random() * ceilingMs) / 2;
    const timer = setTimeout(() => {
      this.backoffTimers.delete(timer);
      for (const call of calls) this.enqueue(call);
    }, delayMs);
    this.backoffTimers.add(timer);
  }

  // ------------------------------------------------------------------ shutdown

  private onConnectionClosed(err: Error | undefined): void {
    if (this.closed) return;
    this.shutDown(err);
  }

  private shutDown(cause: Error | undefined): void {
    this.closed = true;
    this.requests.close(new ClientClosedError('the client closed', { cause }));
    if (this.flushHandle) clearImmediate(this.flushHandle);
    this.flushHandle = undefined;
    this.queue = [];
    for (const timer of this.backoffTimers) clearTimeout(timer);
    this.backoffTimers.clear();
    for (const call of [...this.live]) {
      const message =
        call.sends > 0 && isWrite(call.op)
          ? `the client closed while ${call.op} was in flight: the outcome is unknown`
          : `the client closed before ${call.op} completed`;
      this.fail(call, new ClientClosedError(message, { cause }));
    }
  }
}

// -------------------------------------------------------------------- helpers

function splitServers(env: string | undefined): string[] | undefined {
  const list = (env ?? '')
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s !== '');
  return list.length > 0 ? list : undefined;
}

function checkTimeoutMs(timeoutMs: number): number {
  if (typeof timeoutMs !== 'number' || !(timeoutMs > 0) || timeoutMs > timeoutMsMax) {
    throw new InvalidArgumentError(
      `timeoutMs must be a number in (0, ${timeoutMsMax}], got ${String(timeoutMs)}`,
      'timeoutMs',
    );
  }
  return timeoutMs;
}

/**
 * Request ids come from a pool of random bytes filled 256 ids at a time: one randomBytes
 * call cost about 12 us here, a third of a put's client CPU. Each id is still 16 random
 * bytes of its own (a copy, so a pending call does not pin the pool).
 */
const idPoolIds = 256;
let idPool = new Uint8Array(0);
let idPoolAt = 0;

function newId(): Uint8Array {
  if (idPoolAt + requestIdBytes > idPool.length) {
    idPool = randomFillSync(new Uint8Array(requestIdBytes * idPoolIds));
    idPoolAt = 0;
  }
  const id = idPool.slice(idPoolAt, idPoolAt + requestIdBytes);
  idPoolAt += requestIdBytes;
  return id;
}

function toBytes(x: unknown, what: string): Uint8Array {
  if (typeof x === 'string') return Buffer.from(x, 'utf8');
  if (x instanceof Uint8Array) return x;
  throw new InvalidArgumentError(`${what} must be a string or a Uint8Array`);
}

function keyBytes(key: unknown): Uint8Array {
  const bytes = toBytes(key, 'key');
  if (bytes.length === 0)
    throw new InvalidArgumentError('key must not be empty (keyBytesMin 1)', 'keyBytesMin');
  if (bytes.length > limits.keyBytesMax) {
    throw new InvalidArgumentError(
      `key is ${bytes.length} bytes, over keyBytesMax ${limits.keyBytesMax}`,
      'keyBytesMax',
    );
  }
  return bytes;
}

/** A scan's start: may be empty (the start of the keyspace). */
function scanStartBytes(start: unknown): Uint8Array {
  const bytes = toBytes(start, 'scan start');
  if (bytes.length > limits.keyBytesMax) {
    throw new InvalidArgumentError(
      `scan start is ${bytes.length} bytes, over keyBytesMax ${limits.keyBytesMax}`,
      'keyBytesMax',
    );
  }
  return bytes;
}

/** A scan's end: null (or undefined) is no end; otherwise a key (not empty). */
function scanEndBytes(end: unknown): Uint8Array | null {
  if (end === null || end === undefined) return null;
  const bytes = toBytes(end, 'scan end');
  if (bytes.length === 0) {
    throw new InvalidArgumentError(
      'scan end must not be empty (null means no end; keyBytesMin 1)',
      'keyBytesMin',
    );
  }
  if (bytes.length > limits.keyBytesMax) {
    throw new InvalidArgumentError(
      `scan end is ${bytes.length} bytes, over keyBytesMax ${limits.keyBytesMax}`,
      'keyBytesMax',
    );
  }
  return bytes;
}

function checkScanLimit(limit: unknown, max: number, maxName: string): number {
  if (typeof limit !== 'number' || !Number.isInteger(limit) || limit < scanLimitMin) {
    throw new InvalidArgumentError(
      `scan limit must be an integer of at least scanLimitMin ${scanLimitMin}, got ${String(limit)}`,
      'scanLimitMin',
    );
  }
  if (limit > max) {
    throw new InvalidArgumentError(`scan limit ${limit} is over ${maxName} ${max}`, maxName);
  }
  return limit;
}

function valueBytes(value: unknown, what = 'value'): Uint8Array {
  const bytes = toBytes(value, what);
  if (bytes.length > limits.valueBytesMax) {
    throw new InvalidArgumentError(
      `${what} is ${bytes.length} bytes, over valueBytesMax ${limits.valueBytesMax}`,
      'valueBytesMax',
    );
  }
  return bytes;
}

/** A result checked for shape, or undefined when it is malformed. */
function checkResult(x: unknown): WireResult | undefined {
  if (typeof x !== 'object' || x === null) return undefined;
  const r = x as Record<string, unknown>;
  if (r.ok === true) {
    const valueOk = r.value === undefined || r.value === null || r.value instanceof Uint8Array;
    const successOk = r.success === undefined || typeof r.success === 'boolean';
    const entriesOk =
      r.entries === undefined ||
      (Array.isArray(r.entries) &&
        r.entries.every(
          (e: unknown) =>
            Array.isArray(e) &&
            e.length === 2 &&
            e[0] instanceof Uint8Array &&
            e[1] instanceof Uint8Array,
        ));
    const nextOk = r.next === undefined || r.next === null || r.next instanceof Uint8Array;
    const descriptorsOk = r.descriptors === undefined || Array.isArray(r.descriptors);
    const eventsOk = r.events === undefined || Array.isArray(r.events);
    const revisionsOk = [r.after, r.oldest].every(
      (n) => n === undefined || (typeof n === 'number' && Number.isSafeInteger(n) && n >= 0),
    );
    return valueOk && successOk && entriesOk && nextOk && descriptorsOk && eventsOk && revisionsOk
      ? (r as WireResult)
      : undefined;
  }
  if (r.ok === false && typeof r.code === 'string') {
    return {
      ok: false,
      code: r.code,
      msg: typeof r.msg === 'string' ? r.msg : r.code,
      ...(typeof r.leader === 'string' ? { leader: r.leader } : {}),
      ...(typeof r.limit === 'string' ? { limit: r.limit } : {}),
      ...(Array.isArray(r.descriptors) ? { descriptors: r.descriptors } : {}),
      ...(typeof r.oldest === 'number' ? { oldest: r.oldest } : {}),
    };
  }
  return undefined;
}

/** Bytes a route ([rangeId, gen] in msgpack) adds to an op, at most. */
const routeBytesMax = 16;

function asWatchEvent(data: Uint8Array): WatchEvent | undefined {
  let raw: unknown;
  try {
    raw = decode(data);
  } catch {
    return undefined;
  }
  if (typeof raw !== 'object' || raw === null) return undefined;
  const r = raw as Record<string, unknown>;
  if (!(r.key instanceof Uint8Array) || (r.op !== 'set' && r.op !== 'del')) return undefined;
  if (typeof r.revision !== 'number' || typeof r.range !== 'number') return undefined;
  if (r.op === 'set' && !(r.value instanceof Uint8Array)) return undefined;
  return {
    key: Buffer.from(r.key),
    op: r.op,
    ...(r.op === 'set' ? { value: Buffer.from(r.value as Uint8Array) } : {}),
    revision: r.revision,
    range: r.range,
  };
}

function optionalBytes(value: Uint8Array | null | undefined, op: OpName): Buffer | null {
  if (value === undefined || value === null) return null;
  if (!(value instanceof Uint8Array)) {
    throw new InternalError(`malformed ${op} result (value is not bytes)`);
  }
  return Buffer.from(value);
}

/** A subscription's prefix (the same object on every poll) in hex, for sharedPolls' keys. */
const prefixHex = new WeakMap<Uint8Array, string>();

/** An events poll in flight that several subscriptions of a client wait for. */
interface SharedPoll {
  readonly result: Promise<EventsPage>;
  waiters: number;
  readonly abort: AbortController;
}

/** `p`, or an AbortedError as soon as `signal` fires (p goes on for whoever else waits). */
function untilAborted<T>(p: Promise<T>, signal: AbortSignal): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const onAbort = () =>
      reject(new AbortedError('events poll aborted', { outcomeUnknown: false }));
    if (signal.aborted) {
      onAbort();
      return;
    }
    signal.addEventListener('abort', onAbort, { once: true });
    p.then(
      (v) => {
        signal.removeEventListener('abort', onAbort);
        resolve(v);
      },
      (err: unknown) => {
        signal.removeEventListener('abort', onAbort);
        reject(err);
      },
    );
  });
}

/** Notifications a watcher may have queued; it loses newer ones beyond (at most once). */
const watchQueueMax = 10_000;

interface WatchHub {
  readonly sub: NatsSubscription;
  readonly watchers: Set<WatchQueue<WatchEvent>>;
}
