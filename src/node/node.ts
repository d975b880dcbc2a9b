// The running node: hosts the range replicas of this process over one LMDB environment
// and one NATS connection, ticks them, moves their output to storage and the network,
// and serves clients.
//
// Subscribe (docs/streams.md): a range's leader serves pages of the range's stream of
// mutation events (`events` ops) from its committed state, and holds an op that finds
// nothing new for up to its waitMs (long polling, at most --events-polls-max held per
// node), answering it when a turn that applied entries of the range becomes durable. It
// keeps nothing per subscriber beyond a held op. Every second it proposes compactEvents
// for the revisions that passed out of the --events-retain window.
//
// One turn (runTurn, scheduled once per event-loop turn when anything happened):
//   1. proposals collected since the last turn go to each leader as one batch;
//   2. every replica's Ready: messages into the per-node outbox, writes and applies of
//      all ranges into ONE storage transaction (group commit);
//   3. commit it: apply results answer the clients whose entries they were, reads whose
//      index is applied are served;
//   4. one NATS message per destination node;
//   5. when the transaction is durable, each replica is told (persisted), which
//      releases its acknowledgements and votes in the next turn.

import { webcrypto } from 'node:crypto';
import { connect, type Msg, type NatsConnection, type Subscription } from '@nats-io/transport-node';
import { type Actor, createActor, createMachine } from 'xstate';
import {
  decisions,
  type Operation,
  placementMachine,
  type RangeReport,
  type RangeStatsReport,
} from '../../placement/index.ts';
import type {
  CoreEnvironment,
  Entry,
  Message,
  ReplicaId,
  Snapshot,
} from '../../ranges/core/types.ts';
import { defaultOptions } from '../../ranges/core/types.ts';
import { type LeaseGate, type Lifecycle, RangeReplica } from '../../ranges/replica/replica.ts';
import { Client } from '../client/client.ts';
import { Logger } from '../lib/logger.ts';
import { Prng } from '../lib/prng.ts';
import {
  checkOp,
  checkRequest,
  compactOp,
  decode,
  encode,
  frameRequest,
  limits,
  protocolVersion,
  type WireDescriptor,
  type WireEvent,
  type WireOp,
  type WireResult,
} from '../protocol/wire.ts';
import {
  type ApplyResult,
  compareBytes,
  decodeCommand,
  encodeCommand,
  encodeRangeCommand,
  isSplitCommand,
  type RangeCommand,
} from '../storage/commands.ts';
import {
  asDescriptor,
  bootstrapRecords,
  decodeDescriptor,
  descriptorToWire,
  directoryEnd,
  directoryStart,
  findSpan,
  inSpan,
  makeDescriptor,
  metaRangeId,
  PackedSpans,
  type RangeDescriptor,
  Repacked,
  type ReplicaDescriptor,
  sameDescriptor,
  showSpan,
  systemPrefix,
  systemPrefixEnd,
} from '../storage/descriptor.ts';
import { type RangeEvent, Store, scanEntryBytes, type Turn } from '../storage/store.ts';
import { decodeEnvelope, encodeEnvelope } from '../transport/raft-codec.ts';
import { kvQueue, subjects } from '../transport/subjects.ts';
import { watchSubject } from '../transport/watch-subject.ts';
import { AgedPositions } from './aged-positions.ts';
import type { NodeConfig } from './config.ts';
import { EventsTail, type TailItem, TailReplyEncoder, toWireEvent } from './events-tail.ts';

type Done = (r: WireResult) => void;

/**
 * A page for an events op: `result` as sent, except that a page from the events tail has
 * its events in `items` (encoded already) instead of in result.events.
 */
type Page =
  | { readonly result: WireResult; readonly caughtUp: boolean; readonly items?: undefined }
  | {
      readonly result: Extract<WireResult, { ok: true }>;
      readonly caughtUp: boolean;
      readonly items: readonly TailItem[];
    };

/** The reply bytes of a page, made once for every poll answered with it (null: too big). */
interface SharedReply {
  bytes: Uint8Array | null | undefined;
}

/** An events op held by a leader until its range applies more (long polling). */
interface HeldPoll {
  readonly op: WireOp;
  /**
   * The revision to read after. It moves on, while the op is held, past revisions with no
   * event for the op's prefix, so a wake reads only what is new.
   */
  after: number;
  readonly done: Done;
  timer: NodeJS.Timeout | undefined;
}

interface RangeHost extends LeaseGate {
  readonly rangeId: number;
  /** The committed descriptor (refreshed after every apply that can change it). */
  descriptor: RangeDescriptor;
  /** descriptor.generation, beside it: a routed op's check reads it without the descriptor. */
  generation: number;
  /** The range's position in byStart when the node's packed spans were last made. */
  spanSlot: number;
  /** Highest index whose apply is committed in LMDB: reads and compaction go up to here. */
  applied: number;
  /** Client operations answered since `opsSinceMs` (below). */
  ops: number;
  /**
   * False for a replica created for a range this node learned of from its peers (a split
   * it has not applied): it is not ticked (never campaigns) until a snapshot initializes
   * it, but it votes (docs/ranges.md, "Uninitialized replicas").
   */
  initialized: boolean;
  readonly replica: RangeReplica;
  /** replica id -> node id, from the descriptor. */
  readonly nodeOf: Map<ReplicaId, string>;
  /** setKey: the key of a set, which may be answered at commit (answerCommittedSets). */
  proposals: { data: Uint8Array; done: Done; setKey?: Uint8Array }[];
  // writes, reads and polls are a leader's; each is created on first use (an empty Map
  // costs about 200 bytes, and a node follows most of its ranges) and dropped when the
  // replica stops leading.
  /** Proposed entries by index, answered when that index applies (a set maybe at commit). */
  writes: Map<number, { term: number; done: Done; setKey?: Uint8Array }> | undefined;
  /**
   * The last index where h's span may have changed: a split entry or a snapshot this node
   * handed to a turn (0: none). Sets answer at commit only once h.applied reaches it.
   */
  spanChangeIndex: number;
  /**
   * The last committed index answerCommittedSets looked at: each committed entry is looked
   * at once, in order, whether at its hand-out to the apply or earlier, at commit
   * (answerCommittedEarly).
   */
  setsScannedTo: number;
  /** Sets answerCommittedEarly answered whose entries were not yet handed out (holdsApply). */
  setsAnsweredEarly: number;
  /** Reads (get, scan) by read id, served once their read state's index is applied. */
  reads: Map<number, { op: WireOp; done: Done }> | undefined;
  readsWaiting: { index: number; id: number }[];
  /**
   * Committed entries a follower holds back from its turns' applies, in order, and when the
   * first of them was held (applyHeld: "Followers apply late" in docs/ranges.md).
   */
  heldApply: Entry[] | undefined;
  heldApplySinceMs: number;
  /**
   * When a read or a subscribe poll at this leader last had to wait for the applied index
   * (performance.now()): a leader holds nothing back for a second after (holdsApply).
   */
  readWaitedAtMs: number;
  /** Highest index applied by a turn whose results this node has seen (maybe not durable). */
  appliedSeen: number;
  /** Client operations answered since `opsSinceMs`, and the last full second's rate. */
  opsSinceMs: number;
  opsPerS: number;
  leaderSub: Subscription | undefined;
  /**
   * Span size (keys, bytes): undefined when the span changed (a split, a snapshot), and
   * recomputed then; after other applies marked stale and recomputed for reports at most
   * every spanStatsIntervalMs (see statsOf).
   */
  spanStats: { keys: number; bytes: number; atMs: number; costMs: number } | undefined;
  spanStatsStale: boolean;
  /**
   * The spanStats the last full report carried: a count made since (by a status request,
   * say) is reported in full at the next report, even once the range is idle.
   */
  reportedStats: RangeHost['spanStats'];
  /** When this node last reported the range in full to the placement driver (performance.now()). */
  reportedAtMs: number;
  /** The descriptor the last full report carried: until it changes, numbers alone will do. */
  reportedDescriptor: RangeDescriptor | undefined;
  /** Subscribe polls held here until the range applies more (leader only). */
  polls: Set<HeldPoll> | undefined;
  /** A wake of the held polls is scheduled (see scheduleWake). */
  wakeScheduled: boolean;
  /** The newest events, encoded, for polls at the head (leader only; events-tail.ts). */
  tail: EventsTail | undefined;
  /** History commands (compactEvents, forgetRequests) of this leader in flight (one of each at most). */
  historyInFlight: number;
  /** Positions applied --events-retain-s and --dedup-window-s ago (leader; compactHistory). */
  ages: { events: AgedPositions; requests: AgedPositions } | undefined;
  /** The applied index when compactHistory first looked at the range led here, or -1. */
  historyFrom: number;
  /** Over the node's log memory budget: the next turn truncates this log (trimLogs). */
  trimLog: boolean;
  /**
   * Set by such a truncation when its turn applied entries (a follower's held ones): once
   * the range has applied this index (durable), its next turn truncates up to it too. 0: none.
   */
  trimOnApplied: number;
  /** replica.core.log.memoryBytes as the node's total (logMemoryTotal) last counted it. */
  logMemorySeen: number;
}

/** Every replica's consensus options (one object for all: thousands of ranges). */
const replicaOptions = {
  ...defaultOptions,
  appendBytesMax: 256 * 1024,
  snapshotChunkBytesMax: 256 * 1024,
} as const;

/** Messages for a range not here yet wait this long for its split to apply here. */
const earlyHoldMs = 1000;
const earlyRangesMax = 64;
const earlyMessagesMax = 16;
/** How long a leader's new commit index waits for an append to carry it (oweCommitNotice). */
const commitNoticeDelayMs = 3;
/** Held subscribe polls wake this long after the apply that has their events. */
const pollWakeDelayMs = 5;
/** An events tail no poll used for this long is dropped (expireTails). */
const tailIdleMs = 30_000;
/** The events tails of one node hold at most this many bytes in all (expireTails). */
const tailsBytesMax = 32 * 1024 * 1024;
/** Ranges listed in one status reply (about 200 bytes each, under max_payload). */
const statusRangesMax = 2000;
/**
 * How often range leaders report to the placement driver: a range whose data or load
 * changed, every second, in full; an unchanged one, every 5 s as just its id and generation
 * ("fresh": the last full report still holds), and in full every minute or when the meta
 * range's leader changes (a new driver starts from an empty view).
 */
const reportIntervalMs = 1000;
const reportIdleIntervalMs = 5000;
const reportFullIntervalMs = 60_000;
/**
 * Positions a time-bounded history command must move its point by (compactHistory): each
 * command is an entry, so smaller steps could keep an idle range proposing them forever.
 */
const historyStepMin = 64;
/**
 * A range's size is counted again for reports at most this often while it takes writes,
 * and at most once per 100 times what the last count took: counting walks every key of
 * the span (a range of a million keys takes about 100 ms), and sizes change slowly next
 * to the split threshold. Status requests (rasputin ranges) count stale ranges at once.
 */
const spanStatsIntervalMs = 10_000;

/** The node's side of every range's CoreEnvironment (RangeEnvironment). */
interface EnvShared {
  random(): number;
  takeSnapshot(rangeId: number): Snapshot;
  nodeLive(nodeId: string): boolean;
}

/**
 * A range's CoreEnvironment: three fields and methods on the prototype, where four
 * closures and their contexts cost about 400 bytes per range (a node hosts thousands).
 */
class RangeEnvironment implements CoreEnvironment {
  constructor(
    private readonly shared: EnvShared,
    private readonly rangeId: number,
    private readonly nodeOf: ReadonlyMap<ReplicaId, string>,
  ) {}

  nowMs(): number {
    return performance.now();
  }

  random(): number {
    return this.shared.random();
  }

  takeSnapshot(): Snapshot {
    return this.shared.takeSnapshot(this.rangeId);
  }

  /** Quiescence (DESIGN.md): a replica's node is live if this node heard from it. */
  isLive(id: ReplicaId): boolean {
    const node = this.nodeOf.get(id);
    return node !== undefined && this.shared.nodeLive(node);
  }
}

/**
 * replica id -> node id of a replica list, one map per list: descriptors share their
 * (interned, frozen) replica lists, and so do ranges their maps (never written).
 */
const nodeOfByReplicas = new WeakMap<readonly ReplicaDescriptor[], Map<ReplicaId, string>>();

function nodeOfReplicas(replicas: readonly ReplicaDescriptor[]): Map<ReplicaId, string> {
  let m = nodeOfByReplicas.get(replicas);
  if (m === undefined) {
    m = new Map(replicas.map((r) => [r.replicaId, r.nodeId]));
    nodeOfByReplicas.set(replicas, m);
  }
  return m;
}

const reportsPerMessage = 2000;
/** Fresh ranges per message (two numbers each: well under max_payload). */
const freshPerMessage = 20_000;
/** Numbers-only reports in one message (at most about 40 bytes each). */
const statsPerMessage = 10_000;
/** Bytes of one outgoing raft NATS message before a new one is started. */
const raftPayloadBytesSoftMax = 768 * 1024;
/** Client attempts give up after 1 s; a forwarded request must answer before that. */
const forwardTimeoutMs = 900;
/** Replies stay under nats-server's default max_payload with room for the envelope. */
const replyBytesMax = limits.payloadBytesMax - 4096;

export class Node {
  readonly config: NodeConfig;
  readonly log: Logger;
  private store!: Store;
  private nc!: NatsConnection;
  private clusterId = '';
  private readonly ranges = new Map<number, RangeHost>();
  /** Leadership transfers of ranges led here, answered when the range's leader steps down. */
  private readonly transfers = new Map<number, Set<{ done: Done; timer: NodeJS.Timeout }>>();
  /**
   * The actor system of this node's range replicas: each replica's machine is an actor of
   * it (one system for all, instead of one per range). The root actor does nothing.
   */
  private readonly replicaSystem = createActor(createMachine({ id: 'replicas' })).start();
  /** Randomness for the replicas' election timeouts, seeded from the OS. */
  private readonly prng = new Prng(webcrypto.getRandomValues(new Uint32Array(1))[0]!);
  /** Ranges whose events may be due for compaction (compactEvents looks at these only). */
  private readonly eventsDue = new Set<RangeHost>();
  /** Ranges with an events tail (expireTails). */
  private readonly tails = new Set<RangeHost>();
  /** Assembles replies from tail pages (for the cluster id it was made with). */
  private tailReply: { cid: string; encoder: TailReplyEncoder } | undefined;
  /** What every range's CoreEnvironment reads from its node. */
  private readonly envShared: EnvShared = {
    random: () => this.prng.next(),
    takeSnapshot: (rangeId) => this.store.takeSnapshot(rangeId),
    nodeLive: (nodeId) => this.nodeLive(nodeId),
  };
  /** The local ranges by start key, for routing `<p>.kv` requests. */
  private byStart: RangeHost[] = [];
  /**
   * byStart's spans packed for lookups, with the descriptor each was made from; made again
   * on a lookup after byStart or a descriptor changed (index, refreshDescriptor), at most
   * every packSpansEveryMs (lookups read the descriptors meanwhile).
   */
  private readonly spans = new Repacked(() => {
    const descriptors = this.byStart.map((h, i) => {
      h.spanSlot = i;
      return h.descriptor;
    });
    return { packed: new PackedSpans(descriptors), descriptors };
  });
  /** A client of the cluster, for what the node asks of other ranges (ids, the directory). */
  private client: Client | undefined;
  /** The placement driver; active while this node leads the meta range (range 1). */
  private placement!: Actor<typeof placementMachine>;
  private placementSub: Subscription | undefined;
  /** The meta range's applied index at the driver's last directory read, and when. */
  private directoryRead: { applied: number; atMs: number } | undefined;
  /** When fresh-range lists were last sent (report). */
  private freshSentAtMs = Number.NEGATIVE_INFINITY;
  /** The meta range's leader (a node id) as of the last report. */
  private reportedMetaLeader: string | undefined;
  private reporter: NodeJS.Timeout | undefined;
  /** Messages for ranges not here yet, by range id (a split about to apply here). */
  private readonly early = new Map<
    number,
    { sinceMs: number; msgs: { from: string; m: Message }[] }
  >();
  /** Ranges this node heard of and asked a peer about, by id: when (performance.now()). */
  private readonly learning = new Map<number, number>();
  private readonly subs: Subscription[] = [];
  private ticker: NodeJS.Timeout | undefined;
  /** Leaders owing their followers a commit notice (oweCommitNotice), and its timer. */
  private commitNoticesOwed = new Set<RangeHost>();
  private commitNoticeTimer: NodeJS.Timeout | undefined;
  private turnScheduled = false;
  /**
   * Messages the durable callbacks released since the last turn (takeMessages), by node:
   * the next turn sends them with its own, one envelope per node.
   */
  private released = new Map<string, [number, Message][]>();
  /** Ranges with something to do in the next turn (the turn visits only these). */
  private dirty = new Set<RangeHost>();
  /** Initialized ranges that are not quiescent: the ones ticked. */
  private readonly awake = new Set<RangeHost>();
  /** Node liveness: when each peer node was last heard from (any raft envelope). */
  private readonly lastHeard = new Map<string, number>();
  /** Peers in any local range, and whether each was live at the last tick. */
  private peers = new Map<string, boolean>();
  private heartbeatDue = false;
  /** The logs' memory over every range, as the turns counted it (trimLogs). */
  private logMemoryTotal = 0;
  private logTrimmedAtMs = Number.NEGATIVE_INFINITY;
  private ticks = 0;
  private nextReadId = 1;
  private stopping = false;
  /** A Store.tidy transaction is in flight. */
  private tidying = false;
  private readonly peerStores = new Map<string, string>();
  /** Counters for `rasputin status` and the benchmark. */
  readonly stats = {
    turns: 0,
    /**
     * Milliseconds the turns ran on the event loop (their store transactions' bodies run
     * later, on their own: storeTxnBodyMs).
     */
    turnMs: 0,
    raftMessagesIn: 0,
    raftBatchesOut: 0,
    clientRequests: 0,
    dropped: 0,
    /** Subscribe polls held now, over every range (bounded by --events-polls-max). */
    pollsHeld: 0,
    /** Pages of events read for subscribe polls: from the events tails, from LMDB. */
    eventPagesFromTail: 0,
    eventPagesFromStore: 0,
    /** Sets answered when their entry committed; those left to their apply by a span change. */
    setsAnsweredAtCommit: 0,
    setsHeldForSpan: 0,
    /**
     * Reads a leader could not serve at once under its lease (none held, or not applied
     * that far yet): each waited for a read index (a round of heartbeats) or an apply.
     */
    readsWaited: 0,
    /** trimLogs rounds that found the logs over --log-memory-max. */
    logTrims: 0,
    /** Store.tidy transactions run while every range was quiescent (tidyStore). */
    tidies: 0,
    /**
     * History commands this node proposed as a leader (compactHistory): compactEvents, and
     * forgetRequests (--dedup-window-s).
     */
    eventsCompactionsProposed: 0,
    requestsForgetsProposed: 0,
  };

  constructor(config: NodeConfig) {
    this.config = config;
    this.log = new Logger(`node ${config.nodeId}`, { file: config.logfile });
  }

  // ------------------------------------------------------------------ start and stop

  async start(): Promise<void> {
    const c = this.config;
    this.log.info(
      `starting: node-id=${c.nodeId} nats=${c.natsUrl} storage-dir=${c.storageDir} ` +
        `initial-nodes=${c.initialNodes.join(',')} prefix=${c.prefix} tick-ms=${c.tickMs} ` +
        `log-entries-max=${c.logEntriesMax} log-memory-max=${c.logMemoryMax} ` +
        `events-retain=${c.eventsRetainRevisions} events-retain-s=${c.eventsRetainS} ` +
        `dedup-window-s=${c.dedupWindowS} ` +
        `events-polls-max=${c.eventsPollsMax} follower-apply-ms=${c.followerApplyMs} ` +
        `leader-apply-ms=${c.leaderApplyMs}`,
    );
    this.store = Store.open(c.storageDir);
    const owner = this.store.getMeta('nodeId');
    if (owner !== undefined && owner !== c.nodeId) {
      throw new Error(
        `storage dir ${c.storageDir} belongs to node ${owner}, not ${c.nodeId}; ` +
          'use that node id or another directory',
      );
    }
    if (owner === undefined) await this.store.setMeta('nodeId', c.nodeId);
    this.nc = await connect({
      servers: c.natsUrl,
      name: `rasputin-${c.nodeId}`,
      maxReconnectAttempts: -1,
      reconnectTimeWait: 250,
      waitOnFirstConnect: true,
    });
    await this.refuseDuplicate();
    await this.bootstrap();
    for (const d of this.store.ranges()) this.openRange(d);
    this.client = await Client.connect({
      servers: c.natsUrl,
      prefix: c.prefix,
      name: `rasputin-${c.nodeId}-internal`,
      timeoutMs: 5000,
    });
    this.placement = createActor(placementMachine, {
      input: {
        issue: (op: Operation) => this.issuePlacement(op),
        config: {
          splitBytesThreshold: c.splitBytes,
          ...(c.balanceLeaders ? {} : { leaderTransfersInFlightMax: 0 }),
        },
      },
    });
    this.placement.start();
    this.subscribe();
    this.ticker = setInterval(() => this.tick(), c.tickMs);
    this.reporter = setInterval(
      () =>
        this.guardedCall('report', () => {
          this.report();
          this.compactHistory();
          this.expireTails();
        }),
      reportIntervalMs,
    );
    void this.watchConnection();
    this.log.info(
      `ready: store ${this.store.storeId}, cluster ${this.clusterId || '(joining)'}, ` +
        `${this.ranges.size} range(s)`,
    );
  }

  /** Another live process answering for this node id with another store is fatal. */
  private async refuseDuplicate(): Promise<void> {
    try {
      const reply = await this.nc.request(
        subjects.adminWhoami(this.config.prefix, this.config.nodeId),
        encode({ v: protocolVersion }),
        { timeout: 500 },
      );
      // Any answer means a live process already serves this node id (with this store or
      // another one): two replicas with one identity would vote twice.
      const other = decode(reply.data) as { store?: unknown };
      throw new Error(
        `another process already serves node id ${this.config.nodeId} ` +
          `(store ${String(other.store)}); refusing to start`,
      );
    } catch (err) {
      if ((err as Error).message.includes('refusing to start')) throw err;
      // no responders or timeout: nobody else is this node
    }
  }

  /** First start: the range covering the whole keyspace, over the initial nodes. */
  private async bootstrap(): Promise<void> {
    this.clusterId = this.store.getMeta('clusterId') ?? '';
    if (this.store.ranges().length > 0) return;
    const nodes = [...this.config.initialNodes].sort();
    if (nodes[0] === this.config.nodeId && this.clusterId === '') {
      this.clusterId = webcrypto.randomUUID();
      await this.store.setMeta('clusterId', this.clusterId);
      this.log.info(`bootstrapped cluster ${this.clusterId}`);
    }
    const descriptor = makeDescriptor(
      1,
      new Uint8Array(0),
      null,
      nodes.map((nodeId, i) => ({ nodeId, replicaId: i + 1, role: 'voter' as const })),
      1,
    );
    await this.store.createRange(
      descriptor,
      { voters: descriptor.replicas.map((r) => r.replicaId), outgoing: [], learners: [] },
      bootstrapRecords(descriptor),
    );
  }

  /**
   * Adds a new range to the by-start index (binary search: thousands of splits must not
   * re-sort every range) and its replicas' nodes to the peers. A range's start never
   * changes (a split or a snapshot only moves its end), so the order stays right.
   */
  private index(h: RangeHost): void {
    let lo = 0;
    let hi = this.byStart.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (compareBytes(this.byStart[mid]!.descriptor.start, h.descriptor.start) < 0) lo = mid + 1;
      else hi = mid;
    }
    this.byStart.splice(lo, 0, h);
    this.spans.invalidate();
    for (const r of h.descriptor.replicas) {
      if (r.nodeId !== this.config.nodeId && !this.peers.has(r.nodeId)) {
        this.peers.set(r.nodeId, false);
      }
    }
  }

  /** This node and the peers it hears from (nodeLive). */
  private liveNodes(now: number): string[] {
    const live = [this.config.nodeId];
    for (const id of this.peers.keys()) if (this.nodeLive(id, now)) live.push(id);
    return live;
  }

  /** Node liveness (DESIGN.md): heard from within one election timeout. */
  private nodeLive(nodeId: string, now = performance.now()): boolean {
    if (nodeId === this.config.nodeId) return true;
    const heard = this.lastHeard.get(nodeId);
    return heard !== undefined && now - heard < this.livenessMs();
  }

  private livenessMs(): number {
    return defaultOptions.electionTicks * this.config.tickMs;
  }

  /** The local range whose span holds `key`, if any. */
  private rangeFor(key: Uint8Array): RangeHost | undefined {
    const spans = this.spans.get();
    if (spans === undefined) return findSpan(this.byStart, key, (x) => x.descriptor);
    const i = spans.packed.find(key);
    if (i < 0) return undefined;
    const h = this.byStart[i]!;
    // The packed spans are those of h's descriptor unless it changed unseen: then search.
    return spans.descriptors[i] === h.descriptor
      ? h
      : findSpan(this.byStart, key, (x) => x.descriptor);
  }

  /**
   * Whether h's span holds `key`: inSpan(h.descriptor, key), answered from the packed spans
   * at h's slot when they hold it. A request's ops over many ranges then read no range's
   * key buffers (docs/architecture.md, "Lookups over packed keys").
   */
  private holds(h: RangeHost, key: Uint8Array): boolean {
    const spans = this.spans.get();
    const i = h.spanSlot;
    if (spans?.descriptors[i] === h.descriptor && spans.packed.holdsAt(i, key)) return true;
    return inSpan(h.descriptor, key);
  }

  private openRange(descriptor: RangeDescriptor): RangeHost {
    const loaded = this.store.loadRange(descriptor.rangeId);
    if (!loaded) throw new Error(`range ${descriptor.rangeId} has no state`);
    const me = descriptor.replicas.find((r) => r.nodeId === this.config.nodeId);
    if (!me) throw new Error(`range ${descriptor.rangeId} has no replica on this node`);
    const rangeId = descriptor.rangeId;
    const nodeOf = nodeOfReplicas(descriptor.replicas);
    const replica = new RangeReplica(
      me.replicaId,
      loaded.state,
      replicaOptions,
      new RangeEnvironment(this.envShared, rangeId, nodeOf),
      this.replicaSystem,
    );
    const h: RangeHost = {
      rangeId,
      descriptor,
      generation: descriptor.generation,
      // What a lease read reads first, together in the object (see the note on RaftCore's
      // lease fields).
      spanSlot: -1,
      applied: loaded.state.applied,
      ops: 0,
      // The replica's lease gate (LeaseGate, attachGate below): written by the replica only.
      leaseGateMs: 0,
      leaseGateIndex: 0,
      replica,
      // Range 1 starts empty at bootstrap; any other range starts at its split entry or
      // from a snapshot, so an empty one is waiting for its snapshot.
      initialized: rangeId === metaRangeId || loaded.state.applied > 0,
      nodeOf,
      proposals: [],
      writes: undefined,
      spanChangeIndex: 0,
      setsScannedTo: 0,
      setsAnsweredEarly: 0,
      reads: undefined,
      readsWaiting: [],
      heldApply: undefined,
      heldApplySinceMs: 0,
      readWaitedAtMs: Number.NEGATIVE_INFINITY,
      appliedSeen: loaded.state.applied,
      opsSinceMs: performance.now(),
      opsPerS: 0,
      leaderSub: undefined,
      spanStats: undefined,
      spanStatsStale: false,
      trimLog: false,
      trimOnApplied: 0,
      logMemorySeen: 0,
      reportedStats: undefined,
      reportedAtMs: Number.NEGATIVE_INFINITY,
      reportedDescriptor: undefined,
      polls: undefined,
      wakeScheduled: false,
      tail: undefined,
      historyInFlight: 0,
      ages: undefined,
      historyFrom: -1,
    };
    replica.attachGate(h);
    this.ranges.set(rangeId, h);
    this.index(h);
    this.dirty.add(h);
    if (h.initialized) this.awake.add(h);
    return h;
  }

  private subscribe(): void {
    const p = this.config.prefix;
    this.subs.push(
      this.nc.subscribe(subjects.raft(p, this.config.nodeId), {
        callback: this.guarded((msg) => this.onRaft(msg)),
      }),
      this.nc.subscribe(subjects.kv(p), {
        queue: kvQueue,
        callback: this.guarded((msg) => this.onKv(msg)),
      }),
      this.nc.subscribe(subjects.adminStatus(p), {
        callback: this.guarded((msg) => this.reply(msg, this.status())),
      }),
      this.nc.subscribe(subjects.adminPlacement(p), {
        callback: this.guarded((msg) => this.onAdminPlacement(msg)),
      }),
      this.nc.subscribe(subjects.adminRange(p, this.config.nodeId), {
        callback: this.guarded((msg) => this.onAdminRange(msg)),
      }),
      this.nc.subscribe(subjects.adminWhoami(p, this.config.nodeId), {
        callback: this.guarded((msg) =>
          this.reply(msg, { v: protocolVersion, store: this.store.storeId }),
        ),
      }),
    );
  }

  /**
   * A subscription callback that never lets an exception escape into nats.js (which
   * would stop reading the socket for good, leaving a live but deaf node). Every handler
   * validates its input, so an exception here is a broken invariant: exit, and let the
   * supervisor restart the node from its durable state.
   */
  private guarded(handle: (msg: Msg) => void): (err: Error | null, msg: Msg) => void {
    return (err, msg) => {
      if (err) return;
      try {
        handle(msg);
      } catch (e) {
        this.fatal(`handling a message on ${msg.subject}: ${(e as Error).stack ?? String(e)}`);
      }
    };
  }

  private async watchConnection(): Promise<void> {
    void this.nc.closed().then((err) => {
      if (!this.stopping) this.fatal(`the NATS connection closed: ${err?.message ?? 'closed'}`);
    });
    for await (const s of this.nc.status()) {
      if (s.type === 'disconnect' || s.type === 'reconnect') {
        this.log.warn(`nats ${s.type}`);
      }
    }
  }

  async stop(): Promise<void> {
    if (this.stopping) return;
    this.stopping = true;
    if (this.ticker) clearInterval(this.ticker);
    if (this.commitNoticeTimer) clearTimeout(this.commitNoticeTimer);
    if (this.reporter) clearInterval(this.reporter);
    this.placement?.stop();
    // Held subscribe polls are answered now: their clients move on at once.
    const stopping: WireResult = { ok: false, code: 'Unavailable', msg: 'the node is stopping' };
    for (const h of this.ranges.values()) this.failPolls(h, stopping);
    await this.client?.close().catch(() => {});
    // Drain what is in flight, but never hang on a connection that went bad.
    const drained = this.nc?.drain().catch(() => {});
    const timer = new Promise((done) => setTimeout(done, 2000).unref());
    await Promise.race([drained, timer]);
    if (this.nc && !this.nc.isClosed()) await this.nc.close().catch(() => {});
    await this.store?.close();
    this.log.info('stopped');
  }

  // ------------------------------------------------------------------ events

  /**
   * Ticks the ranges that are awake (quiescent ones cost nothing), sends this node's
   * heartbeat to every peer (node liveness), and wakes the quiescent followers of a node
   * whose liveness lapsed.
   */
  private tick(): void {
    const now = performance.now();
    this.ticks++;
    for (const h of this.awake) {
      if (h.replica.quiescent()) {
        this.awake.delete(h);
        h.opsPerS = 0;
        continue;
      }
      // Most ticks of a busy range change nothing a turn must handle (no message, no
      // write, no role change, not quiesced: its turn compacts the log): such a range is
      // left out of the next turn. (Quiescent before the tick it is not: see above.)
      const role = h.replica.role();
      h.replica.tick();
      if (leftWork(h, role, false) || this.heldApplyDue(h, now) !== undefined) {
        this.dirty.add(h);
      }
      if (now - h.opsSinceMs >= 1000) {
        h.opsPerS = Math.round((h.ops * 1000) / (now - h.opsSinceMs));
        h.ops = 0;
        h.opsSinceMs = now;
      }
    }
    this.heartbeatDue = true;
    const lapsed: string[] = [];
    for (const [node, wasLive] of this.peers) {
      const live = this.nodeLive(node, now);
      if (wasLive && !live) lapsed.push(node);
      this.peers.set(node, live);
    }
    // On a lapse, and every few seconds (a quiesce heartbeat delayed past a lapse).
    if (lapsed.length > 0 || this.ticks % 20 === 0) this.wakeLapsed(now);
    this.scheduleTurn();
    if (this.awake.size === 0 && this.dirty.size === 0) this.tidyStore();
  }

  /**
   * A node with every range quiescent deletes what its turns left for later, one bounded
   * transaction a tick (Store.tidy; docs/architecture.md, "Cleanup after a pause").
   */
  private tidyStore(): void {
    if (this.tidying || this.stopping || !this.store.tidyDue()) return;
    this.tidying = true;
    this.stats.tidies++;
    this.store.tidy().then(
      () => {
        this.tidying = false;
      },
      (err: Error) => this.storageFailed(err),
    );
  }

  /** Quiescent followers whose leader's node is not live campaign (replica.leaderLapsed). */
  private wakeLapsed(now: number): void {
    for (const h of this.ranges.values()) {
      if (!h.replica.quiescent() || h.replica.role() === 'leader') continue;
      const node = h.nodeOf.get(h.replica.core.leader);
      if (node !== undefined && this.nodeLive(node, now)) continue;
      h.replica.leaderLapsed();
      this.touch(h);
    }
  }

  /** A range has work for the next turn (and is awake if it left quiescence). */
  private touch(h: RangeHost): void {
    this.dirty.add(h);
    if (h.initialized && !h.replica.quiescent()) this.awake.add(h);
  }

  /**
   * A turn for what client ops left to do: proposals, reads the lease does not cover (each
   * marks its range dirty). Ops answered at once (lease reads, subscribe polls, refusals)
   * need none: a turn per such request was a turn per poll with nothing in it.
   */
  private turnIfDirty(): void {
    if (this.dirty.size > 0) this.scheduleTurn();
  }

  /**
   * A leader committed entries no append carried to its followers yet (lazyCommit): if no
   * append does within commitNoticeDelayMs (the next write of the range, which at one
   * write in flight follows within a millisecond or so), its commit index goes out alone
   * then. The core's own fallback, the next tick, would send the notices of every range
   * at once, in one long turn on each follower.
   */
  private oweCommitNotice(h: RangeHost): void {
    this.commitNoticesOwed.add(h);
    this.commitNoticeTimer ??= setTimeout(() => {
      this.commitNoticeTimer = undefined;
      const owed = this.commitNoticesOwed;
      this.commitNoticesOwed = new Set();
      if (this.stopping) return;
      this.guardedCall('commit notices', () => {
        for (const r of owed) {
          if (!r.replica.commitOwed()) continue;
          r.replica.noticeCommit();
          this.touch(r);
        }
        this.turnIfDirty();
      });
    }, commitNoticeDelayMs);
  }

  private scheduleTurn(): void {
    if (this.turnScheduled || this.stopping) return;
    this.turnScheduled = true;
    setImmediate(() => this.runTurn());
  }

  private onRaft(msg: Msg): void {
    const d = decodeEnvelope(msg.data);
    if (!d.ok) {
      this.stats.dropped++;
      this.log.limited('warn', 'raft-garbage', `dropped a raft message: ${d.why}`);
      return;
    }
    const e = d.env;
    if (e.from === this.config.nodeId) {
      this.stats.dropped++;
      this.log.limited(
        'warn',
        'raft-from-self',
        'dropped raft messages claiming to come from this node',
      );
      return;
    }
    if (!this.config.initialNodes.includes(e.from) && !this.knownNode(e.from)) {
      this.stats.dropped++;
      this.log.limited(
        'warn',
        `raft-from-${e.from}`,
        `dropped raft messages from unknown node ${e.from}`,
      );
      return;
    }
    if (!this.checkIdentity(e.from, e.store, e.cid)) return;
    this.lastHeard.set(e.from, performance.now());
    this.stats.raftMessagesIn += e.msgs.length;
    // A sender puts each range's messages of a turn next to each other: each run of one
    // range's messages is stepped together (no map of lists per envelope).
    let run: Message[] = [];
    let runHost: RangeHost | undefined;
    for (const [rangeId, m] of e.msgs) {
      const h = this.ranges.get(rangeId);
      if (!h) {
        // A range a peer has and this node not yet: a split it has not applied (the
        // messages wait a moment for it: the new leader's first votes usually arrive
        // just before this node learns the split committed), or one it will only learn
        // of by snapshot.
        this.holdEarly(rangeId, e.from, m);
        this.learnRange(rangeId, e.from);
        this.stats.dropped++;
        this.log.limited(
          'warn',
          `raft-range-${rangeId}`,
          `dropped a message for range ${rangeId} from ${e.from}: not here (yet)`,
        );
        continue;
      }
      if (h.nodeOf.get(m.from) !== e.from || m.to !== h.replica.core.id) {
        this.stats.dropped++;
        this.log.limited(
          'warn',
          `raft-range-${rangeId}`,
          `dropped a message for range ${rangeId} from ${e.from}`,
        );
        continue;
      }
      if (h !== runHost) {
        if (runHost !== undefined) this.stepRun(runHost, run);
        runHost = h;
        run = [];
      }
      run.push(m);
    }
    if (runHost !== undefined) {
      this.stepRun(runHost, run);
      this.scheduleTurn();
    }
  }

  /**
   * Steps one range's messages of an envelope. The range is visited in the next turn only
   * if they left something to do there (leftWork, as after a tick): a leader's second
   * acknowledgement of an entry that the first one already committed, say, changes
   * nothing a turn handles. (Leases need no visit: a lease read computes its lease from
   * the acknowledgements when it comes.)
   */
  private stepRun(h: RangeHost, messages: readonly Message[]): void {
    const role = h.replica.role();
    const quiescent = h.replica.quiescent();
    h.replica.step(messages);
    if (leftWork(h, role, quiescent) || !h.initialized) this.touch(h);
  }

  /**
   * Asks `from` for its descriptor of an unknown range (at most once a second per range)
   * and, when no local range overlaps its span, creates an uninitialized replica of it: it
   * answers appends (rejecting them, so the leader sends a snapshot), votes, and never
   * campaigns (docs/ranges.md, "Uninitialized replicas"). A
   * local replica whose span overlaps it has not applied the split yet: it will create the
   * range itself, or install a snapshot with a smaller span first.
   */
  private learnRange(rangeId: number, from: string): void {
    const now = performance.now();
    const asked = this.learning.get(rangeId);
    if (asked !== undefined && now - asked < 1000) return;
    this.learning.set(rangeId, now);
    this.nc
      .request(
        subjects.adminRange(this.config.prefix, from),
        encode({ v: protocolVersion, rangeId }),
        { timeout: 1000 },
      )
      .then(async (reply) => {
        const d = asDescriptor((decode(reply.data) as { descriptor?: unknown }).descriptor);
        if (d === undefined || d.rangeId !== rangeId || this.stopping) return;
        if (this.ranges.has(rangeId) || this.store.descriptor(rangeId) !== undefined) return;
        const me = d.replicas.find((r) => r.nodeId === this.config.nodeId);
        if (me === undefined) return;
        const overlap = this.store.overlapping(d);
        if (overlap !== undefined) {
          this.log.limited(
            'info',
            `learn-${rangeId}`,
            `range ${rangeId} ${showSpan(d)} overlaps local range ${overlap.rangeId} ` +
              `${showSpan(overlap)}; waiting for that range to catch up`,
          );
          return;
        }
        // Generation 0: the descriptor is a peer's view (a candidate may be ahead of the
        // leader); the leader's snapshot brings the authoritative one, whatever its
        // generation.
        await this.store.createRange(makeDescriptor(d.rangeId, d.start, d.end, d.replicas, 0), {
          voters: d.replicas.filter((r) => r.role === 'voter').map((r) => r.replicaId),
          outgoing: [],
          learners: d.replicas.filter((r) => r.role === 'learner').map((r) => r.replicaId),
        });
        if (this.ranges.has(rangeId) || this.stopping) return;
        this.openRange(d);
        this.log.info(
          `range ${rangeId} ${showSpan(d)}: uninitialized replica, awaiting a snapshot`,
        );
      })
      .catch((err: Error) => {
        this.log.limited(
          'warn',
          `learn-${rangeId}`,
          `could not learn range ${rangeId}: ${err.message}`,
        );
      });
  }

  /** Keeps a few messages for a range this node does not have yet (see onRaft). */
  private holdEarly(rangeId: number, from: string, m: Message): void {
    const now = performance.now();
    for (const [id, e] of this.early) if (now - e.sinceMs > earlyHoldMs) this.early.delete(id);
    let held = this.early.get(rangeId);
    if (!held) {
      if (this.early.size >= earlyRangesMax) return;
      this.early.set(rangeId, (held = { sinceMs: now, msgs: [] }));
    }
    if (held.msgs.length < earlyMessagesMax) held.msgs.push({ from, m });
  }

  /** `<p>.admin.range.<node>`: this node's descriptor of a range (or none). */
  private onAdminRange(msg: Msg): void {
    let rangeId: unknown;
    try {
      rangeId = (decode(msg.data) as { rangeId?: unknown }).rangeId;
    } catch {
      rangeId = undefined;
    }
    const h = typeof rangeId === 'number' ? this.ranges.get(rangeId) : undefined;
    this.reply(msg, {
      v: protocolVersion,
      cid: this.clusterId,
      descriptor: h?.initialized ? descriptorToWire(h.descriptor) : null,
    });
  }

  private knownNode(nodeId: string): boolean {
    for (const h of this.ranges.values())
      for (const n of h.nodeOf.values()) if (n === nodeId) return true;
    return false;
  }

  /** Cluster and store fencing (DESIGN.md, Identity). */
  private checkIdentity(from: string, store: string, cid: string): boolean {
    if (this.clusterId === '' && cid !== '') {
      this.clusterId = cid;
      void this.store.setMeta('clusterId', cid);
      this.log.info(`joined cluster ${cid} (learned from ${from})`);
    } else if (cid !== this.clusterId) {
      this.stats.dropped++;
      this.log.limited(
        'warn',
        `cid-${from}`,
        `refused messages from ${from}: cluster ${cid || '(none)'} is not ours (${this.clusterId})`,
      );
      return false;
    }
    const known = this.peerStores.get(from) ?? this.store.getMeta(`peer.${from}`);
    if (known === undefined) {
      this.peerStores.set(from, store);
      void this.store.setMeta(`peer.${from}`, store);
    } else if (known !== store) {
      this.stats.dropped++;
      this.log.limited(
        'error',
        `store-${from}`,
        `refused messages from ${from}: store ${store} is not the store ${known} this node ` +
          'knew (a wiped store rejoining, or two processes with one node id)',
      );
      return false;
    }
    return true;
  }

  // ------------------------------------------------------------------ clients

  private reply(msg: Msg, body: unknown): void {
    if (!msg.reply) return;
    try {
      msg.respond(encode(body));
    } catch (err) {
      this.log.limited('warn', 'respond', `could not respond: ${(err as Error).message}`);
    }
  }

  /**
   * Sends one reply with every result. A reply over the NATS payload limit (say, many
   * large values) would be lost: results are replaced from the end by a retryable
   * Overloaded until it fits. A write replaced so is applied; its retry (same request
   * id) returns the recorded result.
   */
  private replyResults(msg: Msg, res: WireResult[]): void {
    const tooLarge: WireResult = {
      ok: false,
      code: 'Overloaded',
      msg: 'reply too large for one message; retry this op',
    };
    // Estimate first (values and scanned entries dominate), then confirm on the encoded bytes.
    const sizeOf = (r: WireResult) => {
      if (!r.ok) return 64;
      let n = 64 + (r.value ? r.value.length : 0) + (r.next ? r.next.length : 0);
      if (r.entries) for (const [k, v] of r.entries) n += scanEntryBytes(k, v);
      if (r.events) for (const e of r.events) n += wireEventBytes(e);
      return n;
    };
    let estimate = 64;
    for (const r of res) estimate += sizeOf(r);
    for (let i = res.length - 1; i > 0 && estimate > replyBytesMax; i--) {
      estimate -= sizeOf(res[i]!) - sizeOf(tooLarge);
      res[i] = tooLarge;
    }
    const node = this.config.nodeId;
    let body = encode({ v: protocolVersion, cid: this.clusterId, node, res });
    for (let i = res.length - 1; i >= 0 && body.length > replyBytesMax; i--) {
      if (res[i] === tooLarge) continue;
      res[i] = tooLarge;
      body = encode({ v: protocolVersion, cid: this.clusterId, node, res });
    }
    if (!msg.reply) return;
    try {
      msg.respond(body);
    } catch (err) {
      this.log.limited('warn', 'respond', `could not respond: ${(err as Error).message}`);
    }
  }

  private fail(msg: Msg, code: string, text: string, limit?: string): void {
    this.reply(msg, {
      v: protocolVersion,
      cid: this.clusterId,
      code,
      msg: text,
      ...(limit ? { limit } : {}),
    });
  }

  /**
   * Decodes and checks a client request; answers it with the error and returns undefined
   * when it is refused as a whole.
   */
  private readRequest(msg: Msg):
    | {
        ops: unknown[];
        range: { id: number; gen: number } | undefined;
        routes: (readonly [number, number])[] | undefined;
      }
    | undefined {
    this.stats.clientRequests++;
    let raw: unknown;
    try {
      raw = decode(msg.data);
    } catch {
      this.fail(msg, 'BadRequest', 'request is not msgpack');
      return undefined;
    }
    const req = checkRequest(raw);
    if (!req.ok) {
      this.fail(msg, req.code, req.msg, req.limit);
      return undefined;
    }
    if (req.value.cid && this.clusterId && req.value.cid !== this.clusterId) {
      // A client of another cluster that shares the prefix: apply nothing.
      this.fail(
        msg,
        'BadRequest',
        `request for cluster ${req.value.cid}, this is ${this.clusterId}`,
      );
      return undefined;
    }
    return req.value;
  }

  /** One reply with a result per op, sent once every op has its result. */
  private collector(msg: Msg, count: number): (i: number) => Done {
    const res: WireResult[] = new Array(count);
    let left = count;
    return (i) => {
      const done: Done & { single?: Msg } = (r) => {
        if (res[i] !== undefined) return;
        res[i] = r;
        if (--left === 0) this.replyResults(msg, res);
      };
      // The only op of its request: its reply is that op's result alone (see wakePolls).
      if (count === 1) done.single = msg;
      return done;
    };
  }

  /**
   * Requests on `<p>.kv`, from clients that do not track ranges: each op goes to the local
   * range whose span holds its key; ops of ranges led here are served here, the others are
   * forwarded to their leaders (one request per range) and the answers merged.
   */
  private onKv(msg: Msg): void {
    const req = this.readRequest(msg);
    if (req === undefined) return;
    const doneAt = this.collector(msg, req.ops.length);
    const forward = new Map<RangeHost, { ops: WireOp[]; done: Done[] }>();
    for (let i = 0; i < req.ops.length; i++) {
      const checked = checkOp(req.ops[i]);
      const done = doneAt(i);
      if (!checked.ok) {
        done(opError(checked));
        continue;
      }
      const op = checked.value;
      if (op.op === 'events') {
        // A page of one range's stream: routed by range id, not by key. Forwarded ones
        // do not wait (a forward gives up within a second).
        const r = this.ranges.get(op.rangeId!);
        if (r === undefined) {
          done({ ok: false, code: 'Unavailable', msg: `range ${op.rangeId} is not on this node` });
        } else if (r.replica.role() === 'leader') {
          this.submit(r, op, done);
        } else {
          let f = forward.get(r);
          if (!f) forward.set(r, (f = { ops: [], done: [] }));
          f.ops.push({ ...op, waitMs: 0 });
          f.done.push(done);
        }
        continue;
      }
      const h = this.rangeFor(op.key);
      if (h === undefined) {
        done({
          ok: false,
          code: 'Unavailable',
          msg: 'no local range holds this key yet (a split is catching up); retry',
        });
        continue;
      }
      if (h.replica.role() === 'leader') {
        this.submit(h, op, done);
        continue;
      }
      let f = forward.get(h);
      if (!f) forward.set(h, (f = { ops: [], done: [] }));
      f.ops.push(op);
      f.done.push(done);
    }
    for (const [h, f] of forward) this.forward(h, f.ops, f.done);
    this.scheduleTurn();
  }

  /** Sends ops to a range's leader and hands each op its result. */
  private forward(h: RangeHost, ops: WireOp[], done: Done[]): void {
    const failAll = (r: WireResult) => {
      for (const d of done) d(r);
    };
    const payload = frameRequest(
      ops.map((op) => encode(compactOp(op))),
      this.clusterId || undefined,
    );
    this.nc
      .request(subjects.range(this.config.prefix, h.rangeId), payload, {
        timeout: forwardTimeoutMs,
      })
      .then((reply) => {
        const body = decode(reply.data) as { res?: unknown; code?: unknown; msg?: unknown };
        if (Array.isArray(body.res) && body.res.length === ops.length) {
          for (let i = 0; i < ops.length; i++) done[i]!(body.res[i] as WireResult);
        } else {
          failAll({
            ok: false,
            code: typeof body.code === 'string' ? body.code : 'Unavailable',
            msg: typeof body.msg === 'string' ? body.msg : 'malformed forwarded reply',
          });
        }
      })
      .catch((err: Error) =>
        failAll({ ok: false, code: 'Unavailable', msg: `no leader reachable: ${err.message}` }),
      );
  }

  /** Requests on `<p>.range.<id>`, which only that range's leader listens to. */
  private onClient(msg: Msg, h: RangeHost): void {
    const req = this.readRequest(msg);
    if (req === undefined) return;
    const doneAt = this.collector(msg, req.ops.length);
    if (req.routes !== undefined) {
      this.onRoutedOps(req.ops, req.routes, doneAt);
      return;
    }
    // A client that routed by an older generation learns the new descriptors first.
    const stale = req.range !== undefined && req.range.gen < h.generation;
    const nowMs = performance.now();
    for (let i = 0; i < req.ops.length; i++) {
      const checked = checkOp(req.ops[i]);
      const done = doneAt(i);
      if (!checked.ok) done(opError(checked));
      // A range's stream is read by range id whatever its generation now.
      else if (stale && checked.value.op !== 'events') {
        done(this.mismatch(h, checked.value.key, 'the range split since'));
      } else this.submit(h, checked.value, done, nowMs);
    }
    this.turnIfDirty();
  }

  /**
   * A request with ops of several ranges that the client believes this node leads (one
   * request per leader node, as TiKV batches per store): each op goes to the range its
   * route names, checked like a request to that range's own subject.
   */
  private onRoutedOps(
    ops: unknown[],
    routes: readonly (readonly [number, number])[],
    doneAt: (i: number) => Done,
  ): void {
    const nowMs = performance.now();
    for (let i = 0; i < ops.length; i++) {
      const checked = checkOp(ops[i]);
      const done = doneAt(i);
      const [rangeId, gen] = routes[i]!;
      const h = this.ranges.get(rangeId);
      if (!checked.ok) done(opError(checked));
      else if (h === undefined) {
        done({
          ok: false,
          code: 'NotLeader',
          msg: `range ${rangeId} is not on this node`,
          leader: '',
        });
      } else if (gen > 0 && gen < h.generation && checked.value.op !== 'events') {
        done(this.mismatch(h, checked.value.key, 'the range split since'));
      } else this.submit(h, checked.value, done, nowMs);
    }
    this.turnIfDirty();
  }

  private notLeader(h: RangeHost): WireResult {
    const leader = h.nodeOf.get(h.replica.core.leader) ?? '';
    return { ok: false, code: 'NotLeader', msg: 'not the leader', leader };
  }

  /**
   * RangeKeyMismatch for `key` at range h, with the descriptors a client needs to route it:
   * h's, and that of the local range holding the key when it is another one.
   */
  private mismatch(h: RangeHost, key: Uint8Array, why: string): WireResult {
    const descriptors: WireDescriptor[] = [descriptorToWire(h.descriptor)];
    const other = this.rangeFor(key);
    if (other !== undefined && other !== h && other.initialized) {
      descriptors.push(descriptorToWire(other.descriptor));
    }
    const d = h.descriptor;
    return {
      ok: false,
      code: 'RangeKeyMismatch',
      msg: `${why}: range ${d.rangeId} is ${showSpan(d)} at generation ${d.generation}`,
      descriptors,
    };
  }

  /**
   * `nowMs`: when the op's request arrived (performance.now(), taken once for all its ops);
   * its lease reads are checked, and linearized, at that instant (RaftCore.leaseReadIndex).
   */
  private submit(h: RangeHost, op: WireOp, done: Done, nowMs = performance.now()): void {
    const read = op.op === 'get' || op.op === 'scan' || op.op === 'eventsHead';
    // The replica's lease gate is open (RangeReplica.attachGate): it leads, awake, under a
    // lease valid at nowMs, at a commit index applied here. Such a read is served below
    // without reading the replica: a request's ops are of as many ranges.
    const gated = read && nowMs < h.leaseGateMs && h.applied >= h.leaseGateIndex;
    if (!gated && h.replica.role() !== 'leader') {
      done(this.notLeader(h));
      return;
    }
    if (op.op === 'events') {
      if (op.rangeId !== h.rangeId) {
        done({
          ok: false,
          code: 'BadRequest',
          msg: `events of range ${op.rangeId} asked of range ${h.rangeId}`,
        });
        return;
      }
      this.poll(h, op, done);
      return;
    }
    if (!this.holds(h, op.key)) {
      done(this.mismatch(h, op.key, 'key outside the range'));
      return;
    }
    h.ops++;
    if (read) {
      // A read the lease covers, at an index this node has applied (and made visible), is
      // served at once: no read id, no turn (TiKV's local reader).
      if (gated) {
        this.serveRead(h, op, done, true);
        return;
      }
      const at = h.replica.leaseReadIndex(nowMs);
      if (at !== undefined && h.applied >= at) {
        this.serveRead(h, op, done, true);
        return;
      }
      this.touch(h);
      this.stats.readsWaited++;
      h.readWaitedAtMs = nowMs;
      const id = this.nextReadId++;
      if (h.replica.read(id)) {
        done(this.notLeader(h));
        return;
      }
      (h.reads ??= new Map()).set(id, { op, done });
      return;
    }
    this.touch(h);
    if (op.op === 'split' || op.op === 'transfer') {
      if (op.generation !== undefined && op.generation !== h.descriptor.generation) {
        done(this.mismatch(h, op.key, `${op.op} expected generation ${op.generation}`));
      } else if (op.op === 'split') this.startSplit(h, op.key, done);
      else this.startTransfer(h, op.node!, done);
      return;
    }
    let data: Uint8Array;
    switch (op.op) {
      case 'set':
        data = encodeCommand({ op: 'set', key: op.key, value: op.value!, id: op.id! });
        break;
      case 'cas':
        data = encodeCommand({
          op: 'cas',
          key: op.key,
          expect: op.expect ?? null,
          value: op.value!,
          id: op.id!,
        });
        break;
      case 'del':
        data = encodeCommand({ op: 'del', key: op.key, id: op.id! });
        break;
      case 'alloc':
        data = encodeCommand({ op: 'alloc', key: op.key, id: op.id! });
        break;
      case 'desc':
        data = encodeCommand({
          op: 'desc',
          key: op.key,
          value: op.value!,
          generation: op.generation!,
          id: op.id!,
        });
        break;
    }
    h.proposals.push(op.op === 'set' ? { data, done, setKey: op.key } : { data, done });
  }

  /**
   * Moves the leadership of h, led here, to its voter on `nodeId` (docs/ranges.md,
   * "Leadership transfer"): the core stops serving lease reads and proposals, catches the
   * target up, and tells it to campaign at once. The op answers when this replica steps
   * down (followLeadership), or fails after two election timeouts, once the core has
   * abandoned the transfer.
   */
  private startTransfer(h: RangeHost, nodeId: string, done: Done): void {
    const d = h.descriptor;
    if (nodeId === this.config.nodeId) {
      done({ ok: true, descriptors: [descriptorToWire(d)], leader: nodeId });
      return;
    }
    const target = d.replicas.find((r) => r.nodeId === nodeId && r.role === 'voter');
    if (target === undefined) {
      done({
        ok: false,
        code: 'InvalidArgument',
        msg: `node ${nodeId} holds no voter of range ${d.rangeId} (${d.replicas.map((r) => r.nodeId).join(', ')})`,
      });
      return;
    }
    const refused = h.replica.transferLeadership(target.replicaId);
    if (refused !== null) {
      done(
        refused.code === 'notLeader'
          ? this.notLeader(h)
          : {
              ok: false,
              code: 'InvalidArgument',
              msg: `cannot transfer range ${d.rangeId} to ${nodeId}`,
            },
      );
      return;
    }
    this.log.info(`range ${h.rangeId}: transferring leadership to ${nodeId}`);
    const waitMs = 2 * this.livenessMs();
    const pending = {
      done,
      timer: setTimeout(() => {
        const waiting = this.transfers.get(h.rangeId);
        if (!waiting?.delete(pending)) return;
        if (waiting.size === 0) this.transfers.delete(h.rangeId);
        done({
          ok: false,
          code: 'Unavailable',
          msg: `range ${h.rangeId}: leadership did not move to ${nodeId} within ${waitMs} ms`,
        });
      }, waitMs).unref(),
    };
    let waiting = this.transfers.get(h.rangeId);
    if (waiting === undefined) this.transfers.set(h.rangeId, (waiting = new Set()));
    waiting.add(pending);
  }

  /**
   * A split of h at `key` (docs/ranges.md): a new range id from the meta range, then the
   * split command in h's log, proposed under the generation h has now; the split answers
   * when it applies. A range that already starts at `key` needs no split.
   */
  private startSplit(h: RangeHost, key: Uint8Array, done: Done): void {
    const d = h.descriptor;
    if (compareBytes(key, d.start) === 0) {
      done({ ok: true, descriptors: [descriptorToWire(d)] });
      return;
    }
    if (compareBytes(key, systemPrefixEnd) < 0) {
      done({
        ok: false,
        code: 'InvalidArgument',
        msg: 'split keys sort after the system keys (0x00 "sys/..."): range 1 keeps them',
        limit: 'systemPrefix',
      });
      return;
    }
    const generation = d.generation;
    this.client!.allocRangeId().then(
      (rightId) => {
        if (h.replica.role() !== 'leader') {
          done(this.notLeader(h));
          return;
        }
        h.proposals.push({
          data: encodeCommand({ op: 'split', key, generation, rightId, id: new Uint8Array(0) }),
          done,
        });
        this.touch(h);
        this.scheduleTurn();
      },
      (err: Error) => done({ ok: false, code: 'Unavailable', msg: `no range id: ${err.message}` }),
    );
  }

  // ------------------------------------------------------------------ the turn

  private runTurn(): void {
    this.turnScheduled = false;
    if (this.stopping) return;
    const startMs = performance.now();
    this.stats.turns++;
    const turn = this.store.beginTurn();
    const persistedIds: [RangeHost, number][] = [];
    const applied = new Map<RangeHost, Entry[]>();
    /** Ranges that install a snapshot this turn: their applied index jumps to it. */
    const installed = new Map<RangeHost, number>();
    const outbox = this.released;
    this.released = new Map();
    /** Held entries whose hold ran out that this turn may still apply (heldApplyDue). */
    let heldBudget = heldApplyPerTurn;
    /** Ranges whose hold ran out past this turn's budget: they go on to the next turn. */
    const paced: RangeHost[] = [];
    const hosts = this.dirty;
    this.dirty = new Set();
    for (const h of hosts) {
      this.proposeBatch(h);
      for (let round = 0; round < 4 && h.replica.hasReady(); round++) {
        const rd = h.replica.ready();
        this.queueMessages(h, rd.messages, outbox);
        if (rd.write) {
          // Held entries apply before a snapshot replaces the state they apply to.
          if (rd.write.snapshot && h.heldApply) this.applyHeld(h, turn, applied);
          turn.write(h.rangeId, rd.write);
          persistedIds.push([h, rd.write.id]);
          if (rd.write.snapshot) {
            installed.set(h, rd.write.snapshot.meta.index);
            h.spanChangeIndex = Math.max(h.spanChangeIndex, rd.write.snapshot.meta.index);
          }
        }
        if (rd.committed.length > 0) {
          // Sets answered at commit leave h.writes first: a leader holds only entries that
          // nobody waits on (holdsApply).
          const setsAnswered = this.answerCommittedSets(h, rd.committed) + h.setsAnsweredEarly;
          h.setsAnsweredEarly = 0;
          if (this.holdsApply(h, rd.committed, startMs, setsAnswered)) {
            if (h.heldApply === undefined) {
              h.heldApply = [];
              h.heldApplySinceMs = startMs;
            }
            for (const e of rd.committed) h.heldApply.push(e);
          } else {
            this.applyHeld(h, turn, applied);
            this.applyInTurn(h, rd.committed, turn, applied);
          }
        }
        for (const rs of rd.readStates) h.readsWaiting.push({ index: rs.index, id: rs.id });
        for (const id of rd.droppedReads) {
          const r = h.reads?.get(id);
          h.reads?.delete(id);
          r?.done(this.notLeader(h));
        }
      }
      if (h.writes !== undefined) this.answerCommittedEarly(h);
      const due = this.heldApplyDue(h, startMs);
      if (due === 'now' || (due === 'paced' && heldBudget > 0)) {
        if (due === 'paced') heldBudget -= h.heldApply!.length;
        this.applyHeld(h, turn, applied);
      } else if (due === 'paced') {
        paced.push(h);
      }
      this.maybeCompact(h, turn);
    }
    // Messages first: a leader's appends need not wait for its own write (the leader
    // counts itself toward a commit only once durable), and followers' acknowledgements
    // in the outbox were released by persisted() already.
    if (this.heartbeatDue) {
      // The node heartbeat: every peer hears from this node at least once a tick.
      this.heartbeatDue = false;
      for (const node of this.peers.keys()) if (!outbox.has(node)) outbox.set(node, []);
    }
    this.flushOutbox(outbox);
    if (!turn.isEmpty()) {
      const { results, mutations, eventsOldest, durable } = turn.commit();
      results.then(
        (byRange) => {
          this.tailApplied(installed, applied, mutations, eventsOldest);
          // Splits and snapshots may have changed descriptors and added ranges.
          for (const h of installed.keys()) this.refreshDescriptor(h);
          for (const h of installed.keys()) h.spanStats = undefined;
          for (const h of applied.keys()) {
            h.spanStatsStale = true;
            const rs = byRange.get(h.rangeId) ?? [];
            for (const r of rs) {
              if (!r.ok || !r.split) continue;
              h.spanStats = undefined;
              this.splitApplied(h, r.split.right);
            }
          }
          // Committed entries: the clients can have their answers now; a read at this
          // leader still waits until the apply is visible (durable, below).
          for (const [h, entries] of applied) {
            const rs = byRange.get(h.rangeId) ?? [];
            this.answerApplied(h, entries, rs);
            if (this.config.watch) {
              this.publishWatch(h, entries, mutations.get(h.rangeId));
            }
          }
        },
        (err: Error) => this.storageFailed(err),
      );
      durable.then(
        () => {
          for (const [h, index] of installed) {
            h.applied = index;
            if (!h.initialized && index > 0) {
              h.initialized = true;
              this.log.info(
                `range ${h.rangeId} ${showSpan(h.descriptor)}: initialized by snapshot`,
              );
            }
          }
          for (const [h, entries] of applied) {
            // Held entries applied before a snapshot installed in the same turn end below
            // the snapshot's index, which h.applied already is (above).
            h.applied = Math.max(h.applied, entries[entries.length - 1]!.index);
            this.eventsDue.add(h);
          }
          for (const h of installed.keys()) this.eventsDue.add(h);
          // What the writes released (a follower's acknowledgements) goes out with the next
          // turn's messages; the range is visited in that turn only if more is ready.
          for (const [h, id] of persistedIds) {
            h.replica.persisted(id);
            this.queueMessages(h, h.replica.takeMessages(), this.released);
            if (h.replica.hasReady()) this.touch(h);
          }
          for (const h of applied.keys()) {
            if (h.readsWaiting.length > 0) this.serveReads(h);
            this.touch(h);
          }
          // New events are visible (committed) now: held subscribe polls read them.
          for (const h of new Set([...applied.keys(), ...installed.keys()])) {
            if (h.polls !== undefined && h.polls.size > 0) this.scheduleWake(h);
          }
          this.scheduleTurn();
        },
        (err: Error) => this.storageFailed(err),
      );
    }
    for (const h of paced) {
      this.dirty.add(h);
      this.scheduleTurn();
    }
    for (const h of hosts) {
      const logMemory = h.replica.core.log.memoryBytes;
      this.logMemoryTotal += logMemory - h.logMemorySeen;
      h.logMemorySeen = logMemory;
      if (h.readsWaiting.length > 0) this.serveReads(h);
      if (h.replica.commitOwed()) this.oweCommitNotice(h);
      this.followLeadership(h);
      if (h.replica.hasReady() || h.proposals.length > 0) {
        this.dirty.add(h);
        this.scheduleTurn();
      }
      if (h.initialized && !h.replica.quiescent()) this.awake.add(h);
    }
    if (this.logMemoryTotal > this.config.logMemoryMax) this.trimLogs();
    this.stats.turnMs += performance.now() - startMs;
  }

  /**
   * Whether h holds these committed entries back from this turn's apply (docs/ranges.md,
   * "Followers apply late", "Leaders apply late under writes alone"): a range taking a
   * write every turn or two then applies several in one go instead of one per turn, each
   * apply costing its range's state, progress record, events and bookkeeping in the turn's
   * transaction. Never a split (the new range's replicas must exist here for its first
   * votes) or another kind of entry, nor on a quiescent range. A leader holds only while
   * nothing waits on its apply: no write answered at apply (a cas, a del, a set held for a
   * span change: still in h.writes), no read or held poll now or in the last second; and
   * it starts holding only with sets it answered at commit (`setsAnswered`), so a range
   * that is only read applies what else commits (history commands) at once. (The
   * placement driver's local read of the directory is a hint, written to by cas: it may
   * lag by a hold.)
   */
  private holdsApply(
    h: RangeHost,
    entries: readonly Entry[],
    nowMs: number,
    setsAnswered: number,
  ): boolean {
    if (h.replica.quiescent()) return false;
    if (h.replica.role() === 'leader') {
      if (this.config.leaderApplyMs === 0) return false;
      if (setsAnswered === 0 && h.heldApply === undefined) return false;
      if (this.leaderApplyWanted(h, nowMs)) return false;
      if (h.writes !== undefined) for (const e of entries) if (h.writes.has(e.index)) return false;
    } else if (this.config.followerApplyMs === 0) {
      return false;
    }
    for (const e of entries) if (e.kind !== 'normal' || isSplitCommand(e.data)) return false;
    return true;
  }

  /** Whether a read or a subscribe poll waits, or waited within readWaitQuietMs, on h's apply. */
  private leaderApplyWanted(h: RangeHost, nowMs: number): boolean {
    return (
      h.readsWaiting.length > 0 ||
      (h.polls !== undefined && h.polls.size > 0) ||
      nowMs - h.readWaitedAtMs < readWaitQuietMs
    );
  }

  /**
   * Whether what h holds back (holdsApply) is to apply, at `nowMs`: 'now' when something
   * needs it applied (a read or a subscribe poll at a leader, the log memory budget: a log
   * truncates only up to the applied index, quiescence); 'paced' when its hold ran out or
   * it holds heldApplyMax entries, which a turn applies within its budget of
   * heldApplyPerTurn entries (docs/ranges.md, "Held applies are paced"); undefined while
   * it holds on, or holds nothing.
   */
  private heldApplyDue(h: RangeHost, nowMs: number): 'now' | 'paced' | undefined {
    const held = h.heldApply;
    if (held === undefined) return undefined;
    const leader = h.replica.role() === 'leader';
    if (h.trimLog || h.replica.quiescent() || (leader && this.leaderApplyWanted(h, nowMs))) {
      return 'now';
    }
    const holdMs = leader ? this.config.leaderApplyMs : this.config.followerApplyMs;
    if (nowMs - h.heldApplySinceMs >= holdMs || held.length >= heldApplyMax) return 'paced';
    return undefined;
  }

  /** Hands the entries h held back (holdsApply) to this turn's apply. */
  private applyHeld(h: RangeHost, turn: Turn, applied: Map<RangeHost, Entry[]>): void {
    const held = h.heldApply;
    if (held === undefined) return;
    h.heldApply = undefined;
    this.applyInTurn(h, held, turn, applied);
  }

  private applyInTurn(
    h: RangeHost,
    entries: readonly Entry[],
    turn: Turn,
    applied: Map<RangeHost, Entry[]>,
  ): void {
    turn.apply(h.rangeId, entries);
    const list = applied.get(h) ?? [];
    for (const e of entries) list.push(e);
    applied.set(h, list);
  }

  private proposeBatch(h: RangeHost): void {
    if (h.proposals.length === 0) return;
    const batch = h.proposals;
    h.proposals = [];
    const r = h.replica.propose(batch.map((p) => p.data));
    if ('code' in r) {
      const res: WireResult =
        r.code === 'notLeader'
          ? this.notLeader(h)
          : r.code === 'overloaded'
            ? { ok: false, code: 'Overloaded', msg: `${r.uncommittedBytes} bytes uncommitted` }
            : { ok: false, code: 'NotLeader', msg: 'leadership transfer in progress', leader: '' };
      for (const p of batch) p.done(res);
      return;
    }
    const writes = (h.writes ??= new Map());
    for (let i = 0; i < batch.length; i++) {
      const p = batch[i]!;
      writes.set(r.index + i, { term: r.term, done: p.done, setKey: p.setKey });
    }
  }

  /**
   * Watch (docs/streams.md): the leader publishes each applied mutation of its own term on
   * `<p>.watch.<key tokens>`, at most once, with no state per watcher. Entries of earlier
   * terms were published (or lost) by their own leader, so a leader change repeats none.
   */
  private publishWatch(
    h: RangeHost,
    entries: Entry[],
    mutations: ReadonlyMap<number, RangeEvent> | undefined,
  ): void {
    if (mutations === undefined || h.replica.role() !== 'leader') return;
    const term = h.replica.core.term;
    for (const e of entries) {
      // The store's record of what the entry changed: nothing for a retry, a failed cas,
      // a del of an absent key or a system key (the same events subscribe reads).
      const m = mutations.get(e.index);
      if (m === undefined || m.op === 'split' || e.term !== term) continue;
      try {
        this.nc.publish(
          watchSubject(this.config.prefix, m.key),
          encode({
            v: protocolVersion,
            key: m.key,
            op: m.op,
            ...(m.op === 'set' ? { value: m.value } : {}),
            revision: e.index,
            range: h.rangeId,
          }),
        );
      } catch (err) {
        this.log.limited(
          'warn',
          'watch',
          `could not publish a watch event: ${(err as Error).message}`,
        );
      }
    }
  }

  // ------------------------------------------------------------------ subscribe

  /**
   * An events op (docs/protocol.md, "Subscribe") at h's leader: a page of h's stream
   * after op.after, from the committed state. A page with nothing to return yet is held
   * for op.waitMs, until a turn that applied entries of h becomes durable (wakePolls),
   * and answered then, or empty when the wait ends. Past --events-polls-max held polls on
   * this node, such an op is answered Overloaded (the client backs off and asks again).
   */
  private poll(h: RangeHost, op: WireOp, done: Done): void {
    const page = this.readPage(h, op, op.after!);
    if (!page.caughtUp || !page.result.ok || !op.waitMs) {
      this.answerPage(done, page);
      return;
    }
    if (this.stats.pollsHeld >= this.config.eventsPollsMax) {
      done({
        ok: false,
        code: 'Overloaded',
        msg:
          `node ${this.config.nodeId} holds ${this.stats.pollsHeld} subscribe polls ` +
          '(--events-polls-max): retry later',
      });
      return;
    }
    const held: HeldPoll = { op, after: page.result.after!, done, timer: undefined };
    held.timer = setTimeout(
      () => this.guardedCall('poll', () => this.releasePoll(h, held)),
      op.waitMs,
    );
    (h.polls ??= new Set()).add(held);
    this.stats.pollsHeld++;
    // What the range's leader holds back applies in its next turn (heldApplyDue).
    h.readWaitedAtMs = performance.now();
    if (h.heldApply !== undefined) this.touch(h);
  }

  /**
   * A page of h's stream for an events op, after `after`: the events of keys under the
   * op's prefix and every split marker. `caughtUp` when it holds no event and reached
   * the range's applied index (a long poll may wait for more). From h's events tail when
   * it covers `after` (events-tail.ts; the page's events are then in `items`, not in
   * `result`), else read from the store.
   */
  private readPage(h: RangeHost, op: WireOp, after: number): Page {
    const tail = h.tail ?? this.startTail(h);
    if (tail?.covers(after, h.applied)) {
      this.stats.eventPagesFromTail++;
      tail.usedAtMs = performance.now();
      const { items, next } = tail.page(after, h.applied, op.limit!, op.key, limits.eventsBytesMax);
      return {
        result: { ok: true, after: next, oldest: tail.oldest },
        caughtUp: items.length === 0 && next >= h.applied,
        items,
      };
    }
    return this.readEvents(h, op, after);
  }

  private readEvents(h: RangeHost, op: WireOp, after: number): Page {
    this.stats.eventPagesFromStore++;
    const r = this.store.events(h.rangeId, after, op.limit!, {
      prefix: op.key,
      bytesMax: limits.eventsBytesMax,
    });
    if (r === undefined) {
      const msg = `range ${h.rangeId} has no committed state on this node yet`;
      return { result: { ok: false, code: 'Unavailable', msg }, caughtUp: false };
    }
    if (r.compacted) {
      const result: WireResult = {
        ok: false,
        code: 'Compacted',
        msg:
          `events of range ${h.rangeId} after revision ${after} were compacted: the oldest ` +
          `revision still available is ${r.oldestRetained} (history is kept for the last ` +
          `${this.config.eventsRetainRevisions} revisions of each range, --events-retain, ` +
          `and at most ${this.config.eventsRetainS} s, --events-retain-s)`,
        oldest: r.oldestRetained,
      };
      return { result, caughtUp: false };
    }
    const events = r.events.map((e) => toWireEvent(e));
    return {
      result: { ok: true, events, after: r.next, oldest: r.oldestRetained },
      caughtUp: events.length === 0 && r.next >= r.applied,
    };
  }

  /**
   * A new events tail for h, which holds the events of what h applies from now on; undefined
   * when h has no committed state here.
   */
  private startTail(h: RangeHost): EventsTail | undefined {
    const r = this.store.events(h.rangeId, h.applied, 1);
    if (r === undefined) return undefined;
    h.tail = new EventsTail(
      h.appliedSeen,
      r.oldestRetained,
      limits.eventBytesMax,
      performance.now(),
    );
    this.tails.add(h);
    return h.tail;
  }

  /**
   * A turn's applies ran (not yet durable): the events tails take the events they wrote,
   * and what they compacted. A range that installed a snapshot loses its tail.
   */
  private tailApplied(
    installed: ReadonlyMap<RangeHost, number>,
    applied: ReadonlyMap<RangeHost, Entry[]>,
    mutations: ReadonlyMap<number, ReadonlyMap<number, RangeEvent>>,
    eventsOldest: ReadonlyMap<number, number>,
  ): void {
    for (const [h, index] of installed) {
      h.appliedSeen = index;
      if (h.tail !== undefined) this.dropTail(h);
    }
    for (const [h, entries] of applied) {
      const first = entries[0]!.index;
      const last = entries[entries.length - 1]!.index;
      h.tail?.applied(first, last, mutations.get(h.rangeId));
      // Entries a follower held back apply before a snapshot in the same turn: below it.
      h.appliedSeen = Math.max(h.appliedSeen, last);
    }
    if (this.tails.size === 0) return;
    for (const [rangeId, oldest] of eventsOldest) {
      const tail = this.ranges.get(rangeId)?.tail;
      if (tail !== undefined) tail.oldest = Math.max(tail.oldest, oldest);
    }
  }

  private dropTail(h: RangeHost): void {
    h.tail = undefined;
    this.tails.delete(h);
  }

  /**
   * Every second: drops the tails no poll used for tailIdleMs, then, while the tails hold
   * more than tailsBytesMax in all, the least recently used.
   */
  private expireTails(): void {
    if (this.tails.size === 0) return;
    const now = performance.now();
    let bytes = 0;
    for (const h of this.tails) {
      if (now - h.tail!.usedAtMs > tailIdleMs) this.dropTail(h);
      else bytes += h.tail!.heldBytes;
    }
    if (bytes <= tailsBytesMax) return;
    const byUse = [...this.tails].sort((a, b) => a.tail!.usedAtMs - b.tail!.usedAtMs);
    for (const h of byUse) {
      if (bytes <= tailsBytesMax) break;
      bytes -= h.tail!.heldBytes;
      this.dropTail(h);
    }
  }

  /** Answers an events op with `page`: a tail page's reply is assembled, not encoded. */
  private answerPage(done: Done, page: Page, shared?: SharedReply): void {
    const single = (done as { single?: Msg }).single;
    if (single !== undefined) {
      // The op is its request's only op: its reply is the page alone, the same bytes for
      // every poll at this position (100 subscribers: one encoding, not 100).
      const reply = shared ?? { bytes: undefined };
      if (reply.bytes === undefined) reply.bytes = this.pageReply(page);
      if (reply.bytes !== null) {
        if (single.reply) this.respondRaw(single, reply.bytes);
        return;
      }
    }
    done(
      page.items === undefined
        ? page.result
        : { ...page.result, events: page.items.map((i) => decode(i.bytes) as WireEvent) },
    );
  }

  /** The bytes of a reply holding `page` alone; null past replyBytesMax. */
  private pageReply(page: Page): Uint8Array | null {
    let body: Uint8Array;
    if (page.items !== undefined) {
      if (this.tailReply?.cid !== this.clusterId) {
        const envelope = { v: protocolVersion, cid: this.clusterId, node: this.config.nodeId };
        this.tailReply = { cid: this.clusterId, encoder: new TailReplyEncoder(envelope) };
      }
      const { after, oldest } = page.result;
      body = this.tailReply.encoder.encode(page.items, after!, oldest!);
    } else {
      body = encode({
        v: protocolVersion,
        cid: this.clusterId,
        node: this.config.nodeId,
        res: [page.result],
      });
    }
    return body.length <= replyBytesMax ? body : null;
  }

  /**
   * Wakes h's held polls a few ms after a durable apply, so that under a steady write
   * load one page covers several turns instead of every poll cycling once per turn.
   */
  private scheduleWake(h: RangeHost): void {
    if (h.wakeScheduled) return;
    h.wakeScheduled = true;
    setTimeout(() => {
      h.wakeScheduled = false;
      if (!this.stopping) this.guardedCall('wake polls', () => this.wakePolls(h));
    }, pollWakeDelayMs);
  }

  /**
   * h applied more: each held poll reads again, and is answered once it has something.
   * Subscribers that are caught up sit at the same position with the same prefix: their
   * page is read once.
   */
  private wakePolls(h: RangeHost): void {
    const pages = new Map<string, { page: Page; reply: SharedReply }>();
    for (const held of h.polls ?? []) {
      const at = `${held.after}:${held.op.limit}:${Buffer.from(held.op.key).toString('hex')}`;
      let known = pages.get(at);
      if (known === undefined) {
        known = { page: this.readPage(h, held.op, held.after), reply: { bytes: undefined } };
        pages.set(at, known);
      }
      const { page } = known;
      if (page.caughtUp && page.result.ok) {
        held.after = page.result.after!;
        continue;
      }
      this.dropPoll(h, held);
      this.answerPage(held.done, page, known.reply);
    }
  }

  private respondRaw(msg: Msg, body: Uint8Array): void {
    try {
      msg.respond(body);
    } catch (err) {
      this.log.limited('warn', 'respond', `could not respond: ${(err as Error).message}`);
    }
  }

  /** A held poll's wait ended: it is answered with whatever is there (often nothing). */
  private releasePoll(h: RangeHost, held: HeldPoll): void {
    if (!h.polls?.has(held)) return;
    this.dropPoll(h, held);
    this.answerPage(held.done, this.readPage(h, held.op, held.after));
  }

  private dropPoll(h: RangeHost, held: HeldPoll): void {
    clearTimeout(held.timer);
    h.polls?.delete(held);
    this.stats.pollsHeld--;
  }

  /** Answers every held poll of h with `res` (h stopped leading, or the node stops). */
  private failPolls(h: RangeHost, res: WireResult): void {
    for (const held of h.polls ?? []) {
      this.dropPoll(h, held);
      held.done(res);
    }
  }

  /**
   * Every second: the leader of each range proposes compactEvents for the revisions that
   * passed out of the --events-retain window, once a quarter of the window has
   * (Store.eventsToCompact), or that it applied more than --events-retain-s ago; and
   * forgetRequests for the request ids it applied more than --dedup-window-s ago (by this
   * node's clock, AgedPositions): at most one of each per range in flight, both in one pass
   * when both are due, so a busy range's compactions never starve its forgets. The commands are
   * replicated: every replica retains the same history and remembers the same ids.
   */
  private compactHistory(): void {
    if (this.stopping) return;
    let proposed = false;
    const now = performance.now();
    // Only ranges that applied something (or took the lead) since they were last looked at:
    // the windows move only with the applied index. An idle node visits none.
    const due = [...this.eventsDue];
    this.eventsDue.clear();
    for (const h of due) {
      if (this.ranges.get(h.rangeId) !== h) continue;
      if (!h.initialized || h.historyInFlight > 0 || h.replica.role() !== 'leader') continue;
      for (const cmd of this.historyCommands(h, now)) {
        if (cmd.op === 'compactEvents') this.stats.eventsCompactionsProposed++;
        else this.stats.requestsForgetsProposed++;
        h.historyInFlight++;
        h.proposals.push({
          data: encodeRangeCommand(cmd),
          done: () => {
            // More may be due (a range far behind compacts a quarter window per command).
            if (--h.historyInFlight === 0) this.eventsDue.add(h);
          },
        });
        this.touch(h);
        proposed = true;
      }
    }
    if (proposed) this.scheduleTurn();
  }

  /**
   * The history commands due for h (led here): compactEvents, forgetRequests, either or
   * both. A time-bounded one must move its point by historyStepMin positions or more: the
   * commands are entries too, so a range that went idle is not kept awake by its own.
   */
  private historyCommands(h: RangeHost, now: number): RangeCommand[] {
    const c = this.config;
    let upTo = this.store.eventsToCompact(h.rangeId, c.eventsRetainRevisions);
    if (h.ages === undefined) {
      // Samples only once the range applied historyStepMin entries since it was first looked
      // at here (the earlier ones age all the same): the thousands of ranges a node leads
      // after a split storm, which apply nothing more, keep none.
      if (h.historyFrom < 0) h.historyFrom = h.applied;
      if (h.applied - h.historyFrom < historyStepMin) {
        return upTo === undefined ? [] : [{ op: 'compactEvents', upTo }];
      }
      h.ages = {
        events: new AgedPositions(c.eventsRetainS * 1000),
        requests: new AgedPositions(c.dedupWindowS * 1000),
      };
    }
    const { events, requests } = h.ages;
    events.note(now, h.applied);
    requests.note(now, h.applied);
    const points = this.store.historyPoints(h.rangeId);
    const eventsAged = events.aged(now);
    if (
      eventsAged !== undefined &&
      eventsAged - (points.eventsOldestRetained - 1) >= historyStepMin
    ) {
      upTo = Math.max(upTo ?? 0, eventsAged);
    }
    const out: RangeCommand[] = [];
    if (upTo !== undefined) out.push({ op: 'compactEvents', upTo });
    const requestsAged = requests.aged(now);
    if (
      requestsAged !== undefined &&
      requestsAged + 1 - points.requestsForgottenBelow >= historyStepMin
    ) {
      out.push({ op: 'forgetRequests', below: requestsAged + 1 });
    }
    return out;
  }

  private refreshDescriptor(h: RangeHost): void {
    const d = this.store.descriptor(h.rangeId);
    if (d === undefined || d === h.descriptor) return;
    h.descriptor = d;
    h.generation = d.generation;
    this.spans.invalidate();
  }

  /**
   * Every replica, when it applies a split of h: h shrank; the right-hand range is opened
   * here (its state was created in the same transaction). On the node whose replica of h
   * leads, the new range campaigns at once; elsewhere it waits out any lease h's leader
   * may still hold (DESIGN.md, "Safety rules for splits"), so normally the same node leads
   * both sides. The leader then records both descriptors in the meta directory.
   */
  private splitApplied(h: RangeHost, right: RangeDescriptor): void {
    const wasLeader = h.replica.role() === 'leader';
    // The followers create the new range when they apply the split: tell them it
    // committed now, not at the next tick (lazyCommit), so the new range's votes find it.
    if (wasLeader) h.replica.noticeCommit();
    this.refreshDescriptor(h);
    if (this.ranges.has(right.rangeId)) return;
    const r = this.openRange(right);
    const o = h.replica.core.options;
    if (wasLeader) {
      r.replica.splitOff(Number.NEGATIVE_INFINITY);
      r.replica.campaignNow();
    } else {
      r.replica.splitOff(performance.now() + o.leaseDurationMs * (1 + 2 * o.maxDriftRate));
    }
    // Votes and appends that arrived before the split applied here.
    const early = this.early.get(right.rangeId);
    this.early.delete(right.rangeId);
    if (early && performance.now() - early.sinceMs <= earlyHoldMs) {
      const msgs = early.msgs
        .filter(({ from, m }) => r.nodeOf.get(m.from) === from && m.to === r.replica.core.id)
        .map(({ m }) => m);
      if (msgs.length > 0) r.replica.step(msgs);
    }
    this.log.info(
      `range ${h.rangeId} split: ${showSpan(h.descriptor)} and range ${right.rangeId} ` +
        `${showSpan(right)} at generation ${right.generation}`,
    );
    if (wasLeader) this.recordDescriptors([h.descriptor, right]);
    this.touch(h);
    this.touch(r);
    this.scheduleTurn();
  }

  /** Writes descriptors to the meta directory (compare-and-set by generation). */
  private recordDescriptors(ds: RangeDescriptor[]): void {
    for (const d of ds) {
      this.client!.putDescriptor(d).catch((err: Error) =>
        this.log.limited(
          'warn',
          'directory',
          `could not record range ${d.rangeId} in the directory (the placement driver ` +
            `repairs it): ${err.message}`,
        ),
      );
    }
  }

  /**
   * Sets whose entries committed are answered now, before they apply: a set's result is
   * known once its entry commits (it writes the key, or repeats its first outcome, which
   * was that), unless a split shrinks the span first (then it is RangeKeyMismatch). So a
   * set whose key lies in the span is answered here when every split and snapshot handed
   * to a turn before it is durable (the store's descriptor has it: spanChangeIndex).
   * Reads stay linearizable: one that starts after this answer waits until the entry is
   * applied (its read index is at least the commit index). Saves the wait for the apply
   * transaction's body (0.5-1.4 ms at one put in flight here). Every committed entry is
   * looked at, in order, for splits. Returns how many sets it answered (holdsApply).
   */
  private answerCommittedSets(h: RangeHost, entries: readonly Entry[]): number {
    const writes = h.writes;
    let answered = 0;
    /** The store's descriptor of h, looked up once per call, when a set needs it. */
    let d: RangeDescriptor | undefined;
    for (const e of entries) {
      if (e.index <= h.setsScannedTo) continue;
      h.setsScannedTo = e.index;
      if (e.kind !== 'normal') continue;
      if (isSplitCommand(e.data)) {
        h.spanChangeIndex = Math.max(h.spanChangeIndex, e.index);
        continue;
      }
      const w = writes?.get(e.index);
      if (w?.setKey === undefined || w.term !== e.term) continue;
      if (h.applied >= h.spanChangeIndex) d ??= this.store.descriptor(h.rangeId);
      if (h.applied < h.spanChangeIndex || d === undefined || !inSpan(d, w.setKey)) {
        this.stats.setsHeldForSpan++;
        continue;
      }
      writes!.delete(e.index);
      this.stats.setsAnsweredAtCommit++;
      answered++;
      w.done({ ok: true });
    }
    return answered;
  }

  /**
   * A leader's sets whose entries committed before its own write of them is durable: a
   * quorum of followers has them on disk (the leader counts itself toward a commit only
   * once durable), so they are answered now, by answerCommittedSets' rules, instead of when
   * the local write lands and ready() hands the entries to the apply. The apply still waits
   * for the local write, and so does a read (its read index is at least the commit index).
   * Under a burst of applies the local write can wait behind them for tens of ms while the
   * followers acknowledge in a few (docs/architecture.md, "A write, end to end").
   */
  private answerCommittedEarly(h: RangeHost): void {
    const log = h.replica.core.log;
    const from = Math.max(h.setsScannedTo, log.applying) + 1;
    if (log.committed < from || h.replica.role() !== 'leader') return;
    const entries = log.slice(from, log.committed, Number.POSITIVE_INFINITY);
    h.setsAnsweredEarly += this.answerCommittedSets(h, entries);
  }

  private answerApplied(h: RangeHost, entries: Entry[], results: ApplyResult[]): void {
    for (let i = 0; i < entries.length; i++) {
      const e = entries[i]!;
      const w = h.writes?.get(e.index);
      if (!w) continue;
      h.writes!.delete(e.index);
      const r = results[i];
      if (w.term !== e.term || r === undefined) {
        // Our entry was replaced by another leader's: it did not apply; retry is safe.
        w.done({
          ok: false,
          code: 'NotLeader',
          msg: 'leadership changed before the write committed',
        });
      } else if (r.ok && r.split) {
        w.done({ ok: true, descriptors: [r.split.left, r.split.right] });
      } else if (r.ok) {
        w.done({
          ok: true,
          ...(r.value !== undefined ? { value: r.value } : {}),
          ...(r.success !== undefined ? { success: r.success } : {}),
        });
      } else if (r.code === 'RangeKeyMismatch') {
        // Proposed before a split that applied first: the client reroutes with these.
        const key = decodeCommandKey(e.data);
        w.done(key ? this.mismatch(h, key, r.msg) : { ok: false, code: r.code, msg: r.msg });
      } else {
        w.done({ ok: false, code: r.code, msg: r.msg });
      }
    }
  }

  private serveReads(h: RangeHost): void {
    const keep: { index: number; id: number }[] = [];
    for (const w of h.readsWaiting) {
      if (h.applied < w.index) {
        keep.push(w);
        continue;
      }
      const r = h.reads?.get(w.id);
      if (!r) continue;
      h.reads!.delete(w.id);
      this.serveRead(h, r.op, r.done);
    }
    h.readsWaiting = keep;
  }

  /**
   * A read (get, scan, eventsHead) whose index h has applied: answered from LMDB now.
   * `spanChecked`: the caller checked h's span just now, in the same synchronous call.
   */
  private serveRead(h: RangeHost, op: WireOp, done: Done, spanChecked = false): void {
    // Checked at serve time: after a split applied here, h serves nothing of the
    // right-hand span.
    if (!spanChecked && !this.holds(h, op.key)) {
      done(this.mismatch(h, op.key, 'key outside the range'));
      return;
    }
    if (op.op === 'scan') {
      done(this.scan(h, op));
      return;
    }
    if (op.op === 'eventsHead') {
      // Linearizable: every write acknowledged before the op was sent is at or below
      // h.applied, so polling after it streams exactly what comes later.
      done({ ok: true, after: h.applied, descriptors: [descriptorToWire(h.descriptor)] });
      return;
    }
    done({ ok: true, value: this.store.getValue(op.key) ?? null });
  }

  /**
   * A scan of [op.key, op.end) served from one LMDB read transaction, for the part of the
   * span that this range covers (checked against the descriptor now, at serve time): when
   * the range ends before the span does, the result stops at the range's end and says so
   * with `next` = that end, where the client continues (with the next range).
   */
  private scan(h: RangeHost, op: WireOp): WireResult {
    const d = h.descriptor;
    const start = op.key;
    const end = op.end ?? null;
    const inRange =
      compareBytes(start, d.start) >= 0 && (d.end === null || compareBytes(start, d.end) < 0);
    if (!inRange) {
      return {
        ok: false,
        code: 'RangeKeyMismatch',
        msg: `scan start outside range ${d.rangeId} (generation ${d.generation})`,
      };
    }
    const clamped = d.end !== null && (end === null || compareBytes(d.end, end) < 0);
    const stop = clamped ? d.end : end;
    const limit = op.limit ?? 1;
    // System keys (the directory) are skipped unless the scan starts among them.
    const skips =
      compareBytes(start, systemPrefix) < 0 &&
      (stop === null || compareBytes(stop, systemPrefix) > 0);
    let r: { entries: [Uint8Array, Uint8Array][]; next?: Uint8Array };
    if (!skips) {
      r = this.store.scan(start, stop, limit, limits.scanBytesMax);
    } else {
      r = this.store.scan(start, systemPrefix, limit, limits.scanBytesMax);
      const room = limit - r.entries.length;
      if (
        r.next === undefined &&
        room > 0 &&
        (stop === null || compareBytes(stop, systemPrefixEnd) > 0)
      ) {
        let used = 0;
        for (const [k, v] of r.entries) used += scanEntryBytes(k, v);
        const rest = this.store.scan(
          systemPrefixEnd,
          stop,
          room,
          Math.max(0, limits.scanBytesMax - used),
        );
        // The byte budget may let nothing more in: continue from the first key not returned.
        if (r.entries.length > 0 && rest.entries.length > 0) {
          const [k, v] = rest.entries[0]!;
          if (used + scanEntryBytes(k, v) > limits.scanBytesMax) {
            r = { entries: r.entries, next: k };
          } else {
            r = {
              entries: [...r.entries, ...rest.entries],
              ...(rest.next ? { next: rest.next } : {}),
            };
          }
        } else {
          r = {
            entries: [...r.entries, ...rest.entries],
            ...(rest.next ? { next: rest.next } : {}),
          };
        }
      }
    }
    const next = r.next ?? (clamped ? (d.end ?? undefined) : undefined);
    return { ok: true, entries: r.entries, ...(next !== undefined ? { next } : {}) };
  }

  /**
   * Truncates h's log (in memory and on disk) up to what it has applied and made durable,
   * once more than --log-entries-max such entries are kept, or as soon as the range is
   * quiescent: then every replica holds every entry (a leader quiesces only when its
   * followers match its log), so no follower will need them, and an idle range keeps no
   * entries (about 1.4 KiB of heap each on a node with thousands of idle ranges). A log
   * trimLogs picked goes as far, but a leader's not past what its followers in replicate
   * hold, so they need no snapshot for it.
   */
  private maybeCompact(h: RangeHost, turn: Turn): void {
    const core = h.replica.core;
    let index = Math.min(h.applied, core.log.stable, core.log.applying);
    let keep = this.config.logEntriesMax;
    if (h.replica.quiescent()) keep = 0;
    else if (h.trimLog || (h.trimOnApplied > 0 && h.applied >= h.trimOnApplied)) {
      // h.applied moves when a turn's applies are durable, so what this turn applies (the
      // entries a follower held back, handed over for the trim: heldApplyDue) stays in the
      // log until a later turn: the first one after they are durable truncates them.
      h.trimOnApplied = h.trimLog && core.log.applying > index ? core.log.applying : 0;
      h.trimLog = false;
      keep = 0;
      index = Math.min(index, core.replicatingMatchFloor() ?? index);
    }
    if (index - core.log.snapshot.index <= keep) return;
    core.compact(index);
    turn.compact(h.rangeId, core.log.snapshot);
  }

  /**
   * The node's log memory budget (--log-memory-max, docs/ranges.md "Log memory"): --log-
   * entries-max bounds each range, not thousands of busy ones (256 ranges under a uniform
   * put load: anonymous memory from 150-170 to 315-345 MiB in 4 minutes and growing, flat
   * at 125-140 MiB with the budget). The turns keep the logs' total (logMemoryTotal:
   * every log changes in a turn of its range); past the budget, at most once a tick, the
   * largest logs are marked for truncation in their next turn (maybeCompact) until half
   * the budget would be left.
   */
  private trimLogs(): void {
    const now = performance.now();
    if (now - this.logTrimmedAtMs < this.config.tickMs) return;
    this.logTrimmedAtMs = now;
    const largest = [...this.ranges.values()]
      .filter((h) => h.logMemorySeen > 0)
      .sort((a, b) => b.logMemorySeen - a.logMemorySeen);
    let over = this.logMemoryTotal - this.config.logMemoryMax / 2;
    for (const h of largest) {
      if (over <= 0) break;
      over -= h.logMemorySeen;
      h.trimLog = true;
      this.touch(h);
    }
    this.stats.logTrims++;
    this.scheduleTurn();
  }

  /** Only the leader listens on `<p>.range.<id>`; a replica that stops leading fails its waiters. */
  private followLeadership(h: RangeHost): void {
    const leading = h.replica.role() === 'leader';
    if (leading && !h.leaderSub) {
      this.eventsDue.add(h);
      h.leaderSub = this.nc.subscribe(subjects.range(this.config.prefix, h.rangeId), {
        callback: this.guarded((msg) => this.onClient(msg, h)),
      });
      this.log.info(`range ${h.rangeId}: leader at term ${h.replica.core.term}`);
      // Reported in full at once: the driver's last report names the previous leader.
      h.reportedAtMs = Number.NEGATIVE_INFINITY;
      if (h.rangeId === metaRangeId) this.leadPlacement(true);
    } else if (!leading && h.leaderSub) {
      if (h.rangeId === metaRangeId) this.leadPlacement(false);
      h.leaderSub.unsubscribe();
      h.leaderSub = undefined;
      this.log.info(`range ${h.rangeId}: no longer leader (term ${h.replica.core.term})`);
      const res = this.notLeader(h);
      const { writes, reads } = h;
      h.writes = undefined;
      h.reads = undefined;
      for (const w of writes?.values() ?? []) w.done(res);
      for (const r of reads?.values() ?? []) r.done(res);
      h.readsWaiting = [];
      this.failPolls(h, res);
      h.polls = undefined;
      this.dropTail(h);
      const transfers = this.transfers.get(h.rangeId);
      if (transfers !== undefined) {
        this.transfers.delete(h.rangeId);
        const moved: WireResult = {
          ok: true,
          descriptors: [descriptorToWire(h.descriptor)],
          leader: h.nodeOf.get(h.replica.core.leader) ?? '',
        };
        for (const t of transfers) {
          clearTimeout(t.timer);
          t.done(moved);
        }
      }
    }
  }

  // ------------------------------------------------------------------ placement

  /** The placement driver runs where the meta range's leader is (DESIGN.md). */
  private leadPlacement(leading: boolean): void {
    if (leading) {
      this.placementSub ??= this.nc.subscribe(subjects.adminReport(this.config.prefix), {
        callback: this.guarded((msg) => this.onReport(msg)),
      });
      // A new driver starts from an empty view: the next report reads the directory.
      this.directoryRead = undefined;
      this.placement.send({ type: 'LEAD', nowMs: performance.now() });
      this.log.info('placement driver: active (this node leads the meta range)');
    } else {
      this.placementSub?.unsubscribe();
      this.placementSub = undefined;
      this.placement.send({ type: 'UNLEAD' });
      this.log.info('placement driver: standby');
    }
  }

  /**
   * The descriptor of the local replica of d's range when it says the same as d, else d.
   * The placement driver keeps a descriptor of every range twice (the last report, the
   * directory); on the meta range's leader, which mostly hosts the same ranges, sharing
   * the local ones saves about 1 KB of heap per range (two objects, four key copies).
   */
  private shared(d: RangeDescriptor | undefined): RangeDescriptor | undefined {
    if (d === undefined) return undefined;
    const local = this.ranges.get(d.rangeId)?.descriptor;
    return local !== undefined && sameDescriptor(local, d) ? local : d;
  }

  /** Range leaders' reports, validated: a bad one is dropped, never acted on. */
  private onReport(msg: Msg): void {
    let body: { cid?: unknown; reports?: unknown; fresh?: unknown; stats?: unknown };
    try {
      body = decode(msg.data) as typeof body;
    } catch {
      return;
    }
    if (body.cid !== this.clusterId || !Array.isArray(body.reports)) return;
    const u32 = (v: unknown): v is number =>
      typeof v === 'number' && Number.isInteger(v) && v >= 0 && v <= 0xffff_ffff;
    const n = (v: unknown) => (typeof v === 'number' && Number.isFinite(v) && v >= 0 ? v : 0);
    const fresh: [number, number][] = [];
    if (Array.isArray(body.fresh)) {
      const xs = body.fresh as unknown[];
      for (let i = 0; i + 1 < xs.length; i += 2) {
        const [id, generation] = [xs[i], xs[i + 1]];
        if (u32(id) && u32(generation)) fresh.push([id, generation]);
      }
    }
    const stats: RangeStatsReport[] = [];
    if (Array.isArray(body.stats)) {
      const xs = body.stats as unknown[];
      for (let i = 0; i + 4 < xs.length; i += 5) {
        const [rangeId, generation] = [xs[i], xs[i + 1]];
        if (!u32(rangeId) || !u32(generation)) continue;
        stats.push({
          rangeId,
          generation,
          keys: n(xs[i + 2]),
          bytes: n(xs[i + 3]),
          opsPerS: n(xs[i + 4]),
        });
      }
    }
    const reports: RangeReport[] = [];
    for (const x of body.reports as unknown[]) {
      const r = x as Record<string, unknown>;
      const descriptor = this.shared(asDescriptor(r?.descriptor));
      if (descriptor === undefined || typeof r.leaderNode !== 'string') continue;
      reports.push({
        descriptor,
        leaderNode: r.leaderNode,
        keys: n(r.keys),
        bytes: n(r.bytes),
        opsPerS: n(r.opsPerS),
        // A copy: the driver keeps it, and a view would keep the whole message.
        ...(r.splitKey instanceof Uint8Array ? { splitKey: Buffer.from(r.splitKey) } : {}),
        atMs: performance.now(),
      });
    }
    if (reports.length > 0 || fresh.length > 0 || stats.length > 0) {
      this.placement.send({ type: 'REPORT', reports, fresh, stats, nowMs: performance.now() });
    }
  }

  /**
   * Every second: each range this node leads is reported (descriptor, size, load, and a
   * split key once it is big); the node leading the meta range also hands its driver the
   * directory (read locally: a hint, every operation is a compare-and-set) and a tick.
   * A range whose descriptor is the one its last full report carried, with no split key
   * to give and a full report less than reportFullIntervalMs old, is reported by its
   * numbers alone (`stats`): with thousands of busy ranges, encoding and decoding their
   * descriptors every second was about a tenth of the leading node's CPU (4,096 ranges).
   */
  private report(): void {
    if (this.stopping || this.nc.isClosed()) return;
    const reports: Record<string, unknown>[] = [];
    /** Range id, generation, ...: led ranges whose last full report still holds. */
    const fresh: number[] = [];
    /** Range id, generation, keys, bytes, ops/s, ...: the last full report's descriptor holds. */
    const stats: number[] = [];
    const now = performance.now();
    const meta = this.ranges.get(metaRangeId);
    const metaLeader = meta?.nodeOf.get(meta.replica.core.leader);
    const everyone = metaLeader !== this.reportedMetaLeader;
    this.reportedMetaLeader = metaLeader;
    const freshDue = now - this.freshSentAtMs >= reportIdleIntervalMs;
    if (freshDue) this.freshSentAtMs = now;
    for (const h of this.ranges.values()) {
      if (!h.initialized || h.replica.role() !== 'leader') continue;
      const changed =
        h.spanStats === undefined ||
        h.spanStatsStale ||
        h.spanStats !== h.reportedStats ||
        h.opsPerS > 0;
      const fullDue =
        everyone ||
        now - h.reportedAtMs >= reportFullIntervalMs ||
        h.reportedDescriptor !== h.descriptor;
      if (!changed && !fullDue) {
        if (freshDue) fresh.push(h.rangeId, h.descriptor.generation);
        continue;
      }
      const st = this.statsOf(h, now, spanStatsIntervalMs);
      h.reportedStats = h.spanStats;
      const splitKey =
        st.bytes >= this.config.splitBytes ? this.store.medianKey(h.rangeId) : undefined;
      if (!fullDue && splitKey === undefined) {
        stats.push(h.rangeId, h.descriptor.generation, st.keys, st.bytes, h.opsPerS);
        continue;
      }
      h.reportedAtMs = now;
      h.reportedDescriptor = h.descriptor;
      reports.push({
        descriptor: descriptorToWire(h.descriptor),
        leaderNode: this.config.nodeId,
        keys: st.keys,
        bytes: st.bytes,
        opsPerS: h.opsPerS,
        ...(splitKey ? { splitKey } : {}),
      });
    }
    // In messages well under max_payload (a report is about 220 bytes).
    const send = (body: { reports: unknown[]; fresh?: number[]; stats?: number[] }) =>
      this.nc.publish(
        subjects.adminReport(this.config.prefix),
        encode({ v: protocolVersion, cid: this.clusterId, node: this.config.nodeId, ...body }),
      );
    for (let i = 0; i < reports.length; i += reportsPerMessage) {
      send({ reports: reports.slice(i, i + reportsPerMessage) });
    }
    for (let i = 0; i < fresh.length; i += 2 * freshPerMessage) {
      send({ reports: [], fresh: fresh.slice(i, i + 2 * freshPerMessage) });
    }
    for (let i = 0; i < stats.length; i += 5 * statsPerMessage) {
      send({ reports: [], stats: stats.slice(i, i + 5 * statsPerMessage) });
    }
    if (meta && meta.replica.role() === 'leader') {
      // The directory is read again only when range 1 applied something since; otherwise
      // the driver is told every few seconds that its last read still holds. Decoding
      // thousands of descriptors every few seconds was an idle cost that grew with ranges.
      const nowMs = performance.now();
      const read = this.directoryRead;
      if (read !== undefined && read.applied === meta.applied) {
        if (nowMs - read.atMs >= reportIdleIntervalMs) {
          this.directoryRead = { applied: read.applied, atMs: nowMs };
          this.placement.send({ type: 'DIRECTORY', descriptors: null, nowMs });
        }
        this.placement.send({ type: 'TICK', nowMs, liveNodes: this.liveNodes(nowMs) });
        return;
      }
      const descriptors: RangeDescriptor[] = [];
      for (const [, value] of this.store.scan(directoryStart, directoryEnd, 100_000, 2 ** 30)
        .entries) {
        const d = this.shared(decodeDescriptor(value));
        if (d) descriptors.push(d);
      }
      this.directoryRead = { applied: meta.applied, atMs: nowMs };
      this.placement.send({ type: 'DIRECTORY', descriptors, nowMs });
      this.placement.send({ type: 'TICK', nowMs, liveNodes: this.liveNodes(nowMs) });
    }
  }

  /**
   * h's span size, counted again when its span changed, or when applies made it stale and
   * the last count is older than maxAgeMs (and than 100 times what that count took).
   */
  private statsOf(h: RangeHost, nowMs: number, maxAgeMs: number): { keys: number; bytes: number } {
    const st = h.spanStats;
    if (
      st === undefined ||
      (h.spanStatsStale && nowMs - st.atMs >= Math.max(maxAgeMs, 100 * st.costMs))
    ) {
      const started = performance.now();
      const { keys, bytes } = this.store.spanStats(h.rangeId);
      h.spanStats = { keys, bytes, atMs: nowMs, costMs: performance.now() - started };
      h.spanStatsStale = false;
      return h.spanStats;
    }
    return st;
  }

  /** The memory the logs of all ranges hold (RaftLog.memoryBytes), about. */
  private logMemoryBytes(): number {
    let total = 0;
    for (const h of this.ranges.values()) total += h.replica.core.log.memoryBytes;
    return total;
  }

  /** Carries out a driver operation through the cluster's own API (each one a CAS). */
  private issuePlacement(op: Operation): void {
    this.log.info(`placement: ${op.id}: ${op.reason}`);
    const done = () => this.placement.send({ type: 'OP_DONE', id: op.id });
    const failed = (err: Error) => {
      this.log.warn(`placement: ${op.id} failed: ${err.message}`);
      this.placement.send({ type: 'OP_FAILED', id: op.id, why: err.message });
    };
    const client = this.client;
    if (!client) return;
    if (op.kind === 'split') {
      client
        .split(op.key, { expectGeneration: op.generation, timeoutMs: 10_000 })
        .then(done, failed);
    } else if (op.kind === 'transferLeader') {
      client
        .transferLeader(op.key, op.to, { expectGeneration: op.generation, timeoutMs: 5000 })
        .then(done, failed);
    } else {
      client
        .putDescriptor(op.descriptor as RangeDescriptor, { timeoutMs: 5000 })
        .then(done, failed);
    }
  }

  private onAdminPlacement(msg: Msg): void {
    const active = this.placement.getSnapshot().value === 'active';
    this.reply(msg, {
      v: protocolVersion,
      cid: this.clusterId,
      node: this.config.nodeId,
      active,
      decisions: active ? decisions(this.placement) : [],
    });
  }

  /** A timer callback that exits on an exception instead of limping on (see guarded). */
  private guardedCall(what: string, fn: () => void): void {
    try {
      fn();
    } catch (e) {
      this.fatal(`${what}: ${(e as Error).stack ?? String(e)}`);
    }
  }

  /** Adds h's messages to an outbox, by destination node (flushOutbox sends it). */
  private queueMessages(
    h: RangeHost,
    messages: readonly Message[],
    outbox: Map<string, [number, Message][]>,
  ): void {
    for (const m of messages) {
      const to = h.nodeOf.get(m.to);
      if (to === undefined) continue;
      let list = outbox.get(to);
      if (!list) outbox.set(to, (list = []));
      list.push([h.rangeId, m]);
    }
  }

  private flushOutbox(outbox: Map<string, [number, Message][]>): void {
    const p = this.config.prefix;
    for (const [to, msgs] of outbox) {
      let batch: [number, Message][] = [];
      let bytes = 0;
      const send = (force = false) => {
        if (batch.length === 0 && !force) return;
        this.stats.raftBatchesOut++;
        this.nc.publish(
          subjects.raft(p, to),
          encodeEnvelope({
            v: protocolVersion,
            cid: this.clusterId,
            from: this.config.nodeId,
            store: this.store.storeId,
            msgs: batch,
          }),
        );
        batch = [];
        bytes = 0;
      };
      for (const item of msgs) {
        const size = messageBytes(item[1]);
        if (bytes + size > raftPayloadBytesSoftMax) send();
        batch.push(item);
        bytes += size;
      }
      send(msgs.length === 0);
    }
  }

  private fatal(why: string): void {
    this.log.error(`fatal: ${why}`);
    process.exit(1);
  }

  /** A turn's or a tidy's transaction failed: the node stops (its supervisor restarts it). */
  private storageFailed(err: Error): void {
    this.fatal(`storage failed: ${err.stack ?? err.message}`);
  }

  // ------------------------------------------------------------------ admin

  status() {
    return {
      v: protocolVersion,
      cid: this.clusterId,
      node: this.config.nodeId,
      store: this.store.storeId,
      stats: {
        ...this.stats,
        storeCommits: this.store.stats.commits,
        storeFlushes: this.store.stats.flushes,
        // Events written to the eventlog, and moved from it to the events tree.
        storeEventsPended: this.store.stats.eventsPended,
        storeEventsMoved: this.store.stats.eventsMoved,
        // The turns' transactions: how many reached disk, and their time (ms, summed) waiting
        // for the writer, in their bodies, and from the body's end to durable.
        storeTurnCommits: this.store.stats.turnCommits,
        storeTxnWaitMs: this.store.stats.txnWaitMs,
        storeTxnBodyMs: this.store.stats.txnBodyMs,
        storeTxnSyncMs: this.store.stats.txnSyncMs,
        xstateEvents: [...this.ranges.values()].reduce((n, h) => n + h.replica.eventsSent, 0),
        eventTails: this.tails.size,
        eventTailBytes: [...this.tails].reduce((n, h) => n + (h.tail?.heldBytes ?? 0), 0),
        logMemoryBytes: this.logMemoryBytes(),
      },
      // All the store's counters (StoreStats), and its trees' records, pages and depth.
      storeStats: { ...this.store.stats },
      trees: this.store.trees(),
      rangesTotal: this.ranges.size,
      leadersTotal: [...this.ranges.values()].filter((h) => h.replica.role() === 'leader').length,
      // process.memoryUsage(), bytes: rss, heapTotal, heapUsed, external, arrayBuffers.
      memory: process.memoryUsage(),
      // Within one reply (max_payload): the ranges led here first, then the others.
      ranges: [...this.ranges.values()]
        .sort(
          (a, b) => Number(b.replica.role() === 'leader') - Number(a.replica.role() === 'leader'),
        )
        .slice(0, statusRangesMax)
        .map((h) => {
          const s = h.replica.core.status();
          const st = this.statsOf(h, performance.now(), 0);
          return {
            rangeId: h.rangeId,
            role: h.replica.role(),
            term: s.term,
            leader: h.nodeOf.get(s.leader) ?? '',
            commit: s.commit,
            applied: h.applied,
            lastIndex: s.lastIndex,
            // The log holds (snapshotIndex, lastIndex]; an idle range keeps none of it.
            snapshotIndex: h.replica.core.log.snapshot.index,
            lease: s.lease,
            quiescent: h.replica.quiescent(),
            replicas: h.descriptor.replicas.map((r) => r.nodeId),
            start: h.descriptor.start,
            end: h.descriptor.end,
            generation: h.descriptor.generation,
            keys: st.keys,
            bytes: st.bytes,
            opsPerS: h.opsPerS,
          };
        }),
    };
  }
}

/** A range applies its held entries once it holds this many (holdsApply). */
const heldApplyMax = 256;
/**
 * Held entries a turn applies because their hold ran out or they reached heldApplyMax
 * (heldApplyDue 'paced'), at most, besides the first range's. The holds of a load's
 * ranges run out together (docs/ranges.md, "Held applies are paced"); applied in one
 * turn, they made one long transaction. With 2,000 ms holds at 256 ranges, ranges lost
 * their leaders then (56 in one run), and none did with the applies paced.
 */
const heldApplyPerTurn = heldApplyMax;
/**
 * A leader holds no apply back for this long after a read or a subscribe poll had to wait
 * for its applied index (holdsApply): a range that is read as well as written applies at
 * once, as before, and its reads find their index applied.
 */
const readWaitQuietMs = 1000;

/** Bytes of an event in a reply, about (for the reply budget). */
function wireEventBytes(e: WireEvent): number {
  if (e.op === 'split') return 512 + e.left.start.length * 2 + e.right.start.length * 2;
  const value = e.op === 'set' ? e.value.length : 0;
  return 48 + e.key.length + value + (e.prevValue?.length ?? 0);
}

function decodeCommandKey(data: Uint8Array): Uint8Array | undefined {
  return decodeCommand(data)?.key;
}

function opError(c: { code: string; msg: string; limit?: string }): WireResult {
  return { ok: false, code: c.code, msg: c.msg, ...(c.limit ? { limit: c.limit } : {}) };
}

/**
 * Whether a step or a tick left h something its next turn handles: something ready, or a
 * role or quiescence other than before it (`role`, `quiescent`).
 */
function leftWork(h: RangeHost, role: Lifecycle, quiescent: boolean): boolean {
  const r = h.replica;
  return r.hasReady() || r.role() !== role || r.quiescent() !== quiescent;
}

/** Approximate encoded size of a message, to keep NATS payloads under the limit. */
function messageBytes(m: Message): number {
  if (m.type === 'append') {
    let n = 96;
    for (const e of m.entries) n += e.data.length + 24;
    return n;
  }
  if (m.type === 'snapshot') return m.data.length + 256;
  return 96;
}
