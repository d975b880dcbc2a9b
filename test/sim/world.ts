// The deterministic simulator: N nodes hosting the replicas of several ranges of one
// keyspace (docs/ranges.md), with simulated time and clocks (bounded drift), a network that
// drops, delays, duplicates and reorders messages and can be partitioned (symmetric,
// one-way, partial), storage that loses whatever was not synced when a node crashes, clients
// doing set/get/cas/del through a range cache, and a workload that splits ranges. Everything
// is chosen from one seed, so a run replays exactly.
//
// Each node hosts its ranges the way src/node/node.ts does: a split applied by a range's
// replica shrinks it and opens the right-hand range on that node (it campaigns at once on
// the node whose replica of the parent led, elsewhere after the parent's lease); messages
// for a range the node does not have are held briefly and make it ask the sender for the
// descriptor, and when no local range overlaps that span it creates an uninitialized
// replica (never ticked, never voting) that the range's leader initializes by snapshot.
//
// With quiescence on, nodes also exchange a node heartbeat every tick over the same
// network (node liveness, as the node does), quiescent replicas are not ticked, and a
// quiescent follower is told when its leader's node lapses.
//
// Checkers run after every event (per range: one leader per term, no overlapping leases, a
// lease excludes newer commits, committed entries never change, log matching, the machine
// owns the role, a quiescent replica is quiet; across ranges: one lease per key, spans on a
// node are disjoint, descriptors agree, the latest descriptors tile the keyspace, a key is
// written and read only by the range that holds it) and at the end (linearizability of every
// client history, final reads all succeed, replicas converge and every node's ranges tile
// the keyspace, and with quiescence an idle settled cluster is all quiescent).

import type { ConsensusOptions, Entry, Message, PersistedState } from '../../ranges/core/types.ts';
import { RangeReplica } from '../../ranges/replica/replica.ts';
import { type CachedRange, RangeCache } from '../../src/client/range-cache.ts';
import { Prng } from '../../src/lib/prng.ts';
import {
  type Durable as DurableOf,
  makeDurable,
  type StateMachineOps,
  type StorageOp,
} from './durable.ts';
import type { HistoryOp } from './history.ts';
import {
  type Command,
  type CommandResult,
  correctRules,
  decodeCommand,
  encodeCommand,
  type KvRules,
  KvStateMachine,
} from './kv.ts';
import {
  type Descriptor,
  Directory,
  initialDescriptors,
  inSpan,
  overlapProblem,
  showSpan,
  spansOverlap,
  strictlyInside,
  tilingProblem,
} from './ranges.ts';

/**
 * A deliberate bug in the simulated host, to show that the checkers catch it
 * (docs/simulation.md, "Mutations"); never set in the seed configurations.
 */
export type Mutation =
  /** The left range serves reads of keys that moved to the right range (no serve-time check). */
  | 'serve-outside-span'
  /** Writes apply whatever their key (no apply-time span check). */
  | 'apply-outside-span'
  /** A split leaves the right half's request records in the left range. */
  | 'records-stay'
  /** Every replica of a new range campaigns at once (no wait for the parent's lease). */
  | 'campaign-everywhere'
  /**
   * Lease reads keep the first index they were answered at for 50 ms, whatever changes (a
   * lease gate that is never closed).
   */
  | 'lease-gate-stays-open';

export interface SimConfig {
  readonly name: string;
  readonly nodes: number;
  /** Ranges of the keyspace at bootstrap (ids 1..ranges), cut at evenly spaced keys. */
  readonly ranges: number;
  readonly options: ConsensusOptions;
  readonly tickMs: number;
  /** Simulated time with clients and faults running. */
  readonly durationMs: number;
  /** Healed, fault-free time at the end before the final reads and convergence checks. */
  readonly settleMs: number;
  readonly faults: {
    readonly dropRate: number;
    readonly duplicateRate: number;
    readonly delayMsMax: number;
    /** Chance that a message is delayed up to 10x delayMsMax (a slow path). */
    readonly delaySpikeRate: number;
    readonly partitions: boolean;
    readonly crashes: boolean;
    readonly transfers: boolean;
    /** Mean time between fault events. */
    readonly faultIntervalMs: number;
  };
  /** Override of each clock's rate error (|rate - 1|); only to show that leases then break. */
  readonly clockDriftMax?: number;
  /**
   * Node liveness and quiescence: every node sends a node heartbeat to every other node
   * each tick; a node is live to an observer that heard it within `electionTicks` ticks
   * (on the observer's clock). Replicas get that as CoreEnvironment.isLive, quiescent ones
   * are not ticked, and a quiescent follower whose leader's node is not live is told so.
   */
  readonly quiescence: boolean;
  /**
   * Client load in bursts: busy periods up to busyMsMax, then idle periods (no new
   * operation starts) of idleMsMin..idleMsMax, so ranges quiesce while faults go on.
   */
  readonly idle?: {
    readonly busyMsMax: number;
    readonly idleMsMin: number;
    readonly idleMsMax: number;
  };
  /**
   * The split workload: while faults run, a split of the range holding a random client key
   * at that key is requested every intervalMs on average (0.2x to 1.8x), at most `max`.
   */
  readonly splits?: { readonly intervalMs: number; readonly max: number };
  /** Storage sync (fsync) latency is uniform in [0.1, syncMsMax]. */
  readonly syncMsMax: number;
  /**
   * Apply latency: committed entries take effect (state machine, answers, splits) uniform in
   * [0.05, applyMsMax] ms after the core hands them out, 2% of the time 10x that, as the
   * node's apply transaction does; 0 or absent: at once.
   */
  readonly applyMsMax?: number;
  /** Entries after the snapshot point that trigger log truncation. */
  readonly compactEntries: number;
  readonly clients: number;
  readonly opsPerClient: number;
  readonly keys: number;
  readonly mutation?: Mutation;
  /**
   * Uninitialized replicas answer (pre)vote requests like any follower, as node.ts does
   * (the default); false runs the old rule, "never votes", which can leave a range born
   * without a quorum of initialized replicas with no leader (docs/simulation.md).
   */
  readonly uninitializedVotes?: boolean;
}

export interface Violation {
  readonly checker: string;
  readonly message: string;
  readonly atMs: number;
}

type Durable = DurableOf<KvStateMachine>;

/** Held messages for a range this node does not have yet (node.ts: earlyMessagesMax...). */
const earlyRangesMax = 64;
const earlyMessagesMax = 16;

interface PendingProposal {
  readonly term: number;
  readonly reply: (r: Reply) => void;
}

interface RangeHost {
  readonly rangeId: number;
  readonly node: SimNode;
  replica: RangeReplica;
  kv: KvStateMachine;
  /**
   * False for a replica learned from a peer and not yet initialized by a snapshot (empty,
   * never ticked, never votes), as node.ts: a bootstrap range, or applied > 0.
   */
  initialized: boolean;
  proposals: Map<number, PendingProposal>;
  reads: Map<number, (r: Reply) => void>;
  /** Mutation 'lease-gate-stays-open': the lease read index kept, and until when. */
  keptLeaseRead?: { at: number; untilMs: number };
  /** Reads whose read state arrived before the entries they wait for were applied. */
  readsWaiting: { index: number; id: number }[];
  /** Committed entries handed out by the core and not applied yet (apply latency). */
  applying: Entry[];
  lastRole: string;
  lastTerm: number;
  lastQuiescent: boolean;
  /** Real time its lease runs to, as of its last event; -Infinity when it holds none. */
  leaseUntilMs: number;
  /** The keys that lease covers: its range's span at its commit index. */
  leaseSpan: Descriptor;
}

/** One storage operation in a node's queue; `create` makes a new range's state durable. */
type NodeOp =
  | { readonly rangeId: number; readonly op: StorageOp }
  | { readonly rangeId: number; readonly create: Durable };

interface SimNode {
  readonly id: number;
  up: boolean;
  epoch: number;
  bootAtMs: number;
  clockOffsetMs: number;
  readonly clockRate: number;
  syncScheduled: boolean;
  applyScheduled: boolean;
  /** The open replicas, by range id (rebuilt from `durable` at every boot). */
  ranges: Map<number, RangeHost>;
  /** What survives a crash: the durable state of every range on this node. */
  readonly durable: Map<number, Durable>;
  /** Storage operations of all ranges not synced yet, in order (one store per node). */
  ops: NodeOp[];
  /** Node liveness: when this node last heard each node's heartbeat, on its own clock. */
  heardAtMs: number[];
  /** Messages for ranges not here yet, held a moment (see holdEarly). */
  early: Map<number, { sinceMs: number; msgs: Message[] }>;
  /** When this node last asked a peer for a range's descriptor, on its own clock. */
  learning: Map<number, number>;
}

type Reply =
  | { readonly kind: 'ok'; readonly value: string | null; readonly result?: CommandResult }
  | { readonly kind: 'notLeader'; readonly hint: number }
  /** RangeKeyMismatch: the range's current descriptor, and the one holding the key if known. */
  | { readonly kind: 'mismatch'; readonly descriptors: readonly Descriptor[] }
  | { readonly kind: 'retry' };

interface Request {
  readonly f: 'get' | 'set' | 'cas' | 'del' | 'split';
  readonly key: string;
  readonly value: string | null;
  readonly expect: string | null;
  readonly requestId: string;
  /** The range and generation the client routed by; range 0: by key (its cache has a gap). */
  readonly rangeId: number;
  readonly generation: number;
  /** split: the new range's id. */
  readonly rightId: number;
}

interface QueuedEvent {
  readonly at: number;
  readonly seq: number;
  readonly fn: () => void;
}

/** A binary heap of events by (time, insertion order): the simulator's only scheduler. */
class EventQueue {
  private heap: QueuedEvent[] = [];
  private seq = 0;

  push(at: number, fn: () => void): void {
    const e = { at, seq: this.seq++, fn };
    const h = this.heap;
    h.push(e);
    let i = h.length - 1;
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (before(h[p]!, e)) break;
      h[i] = h[p]!;
      i = p;
    }
    h[i] = e;
  }

  pop(): QueuedEvent | undefined {
    const h = this.heap;
    const top = h[0];
    const last = h.pop();
    if (top === undefined || last === undefined || h.length === 0) return top;
    let i = 0;
    for (;;) {
      const l = 2 * i + 1;
      if (l >= h.length) break;
      const r = l + 1;
      const c = r < h.length && before(h[r]!, h[l]!) ? r : l;
      if (before(last, h[c]!)) break;
      h[i] = h[c]!;
      i = c;
    }
    h[i] = last;
    return top;
  }

  get size(): number {
    return this.heap.length;
  }
}

function before(a: QueuedEvent, b: QueuedEvent): boolean {
  return a.at < b.at || (a.at === b.at && a.seq < b.seq);
}

function configOf(d: Descriptor) {
  return { voters: d.replicas, outgoing: [], learners: [] };
}

function toCached(d: Descriptor): CachedRange {
  return {
    rangeId: d.rangeId,
    start: Buffer.from(d.start),
    end: d.end === null ? null : Buffer.from(d.end),
    generation: d.generation,
  };
}

/** The per-range state of the per-event checkers. */
interface RangeCheck {
  /** index -> term and command bytes of every committed entry seen. */
  readonly committed: Map<number, { term: number; data: string }>;
  /** (index, term) -> command bytes of every entry written to a log. */
  readonly written: Map<string, string>;
  /** term -> the replica that led it. */
  readonly leaders: Map<number, number>;
  lastLeader: string;
  /** term -> the latest real time a leader of that term believed its lease ran to. */
  readonly leaseUntil: Map<number, number>;
  /** term -> when a leader of that term first advanced its commit index. */
  readonly firstCommitAt: Map<number, number>;
  /** The latest lapse (its leader's term, whether its node was down), until an election. */
  lapsed: { term: number; leaderDown: boolean } | undefined;
}

function newRangeCheck(): RangeCheck {
  return {
    committed: new Map(),
    written: new Map(),
    leaders: new Map(),
    lastLeader: '',
    leaseUntil: new Map(),
    firstCommitAt: new Map(),
    lapsed: undefined,
  };
}

export interface RunStats {
  simulatedMs: number;
  messages: number;
  faults: number;
  crashes: number;
  operations: number;
  leaderChanges: number;
  /** Replicas that went quiescent, and that woke (by a message, a client, or a lapse). */
  quiesces: number;
  /** Of `quiesces`, those while faults and clients run (before the cluster settles). */
  quiescesUnderFaults: number;
  wakes: number;
  /** Quiescent followers woken because their leader's node was not live. */
  lapses: number;
  /** Elections of a newer term after such a lapse; `...LeaderDown`: its node had crashed. */
  lapseElections: number;
  lapseElectionsLeaderDown: number;
  /** Splits the workload asked for; split entries applied (new ranges) and refused. */
  splitsRequested: number;
  splitsApplied: number;
  splitsRefused: number;
  /** Ranges in the keyspace at the end. */
  rangesAtEnd: number;
  /** Uninitialized replicas created from a peer's descriptor, and initialized by snapshot. */
  uninitializedCreated: number;
  uninitializedInitialized: number;
  /** Snapshot installs that shrank a replica's span: it learned a split by snapshot. */
  snapshotSplits: number;
  /** Messages held for a range not here yet and stepped when the split applied. */
  earlyReplayed: number;
  /** RangeKeyMismatch answers to clients (stale cache, or a write proposed before a split). */
  mismatches: number;
  /** Reads served at once by the lease (leaseReadIndex), and reads that took a read id. */
  localReads: number;
  queuedReads: number;
  /** Per simulated second: committed normal entries (all ranges). */
  commitsPerSecond: number[];
}

export class World {
  readonly config: SimConfig;
  readonly seed: number;
  readonly violations: Violation[] = [];
  readonly history: HistoryOp[] = [];
  readonly stats: RunStats = {
    simulatedMs: 0,
    messages: 0,
    faults: 0,
    crashes: 0,
    operations: 0,
    leaderChanges: 0,
    quiesces: 0,
    quiescesUnderFaults: 0,
    wakes: 0,
    lapses: 0,
    lapseElections: 0,
    lapseElectionsLeaderDown: 0,
    splitsRequested: 0,
    splitsApplied: 0,
    splitsRefused: 0,
    rangesAtEnd: 0,
    uninitializedCreated: 0,
    uninitializedInitialized: 0,
    snapshotSplits: 0,
    earlyReplayed: 0,
    mismatches: 0,
    localReads: 0,
    queuedReads: 0,
    commitsPerSecond: [],
  };
  /** Readable trace; printed whole with --trace, the tail on a failure. */
  readonly trace: string[] = [];
  traceLive = false;

  nowMs = 0;
  private readonly queue = new EventQueue();
  private readonly prng: Prng;
  readonly nodes: SimNode[] = [];
  /** blocked[a][b]: messages from node a to node b are dropped. */
  private blocked: boolean[][];
  private faultsOn = true;
  private readonly initial: readonly Descriptor[];
  /** Every range's descriptors along its log, as the checkers see them. */
  private readonly directory: Directory;
  private readonly checks = new Map<number, RangeCheck>();
  /** Range ids for splits (the node takes them from a counter in the meta range). */
  private nextRangeId: number;
  private readonly kvRules: KvRules;
  /** Client idle periods [start, end) in simulated ms, ascending. */
  private readonly idlePeriods: [number, number][] = [];
  private readonly livenessTimeoutMs: number;
  /** How long messages for an unknown range are held, and how often its descriptor is asked. */
  private readonly earlyHoldMs: number;
  private clientsActive = 0;

  constructor(config: SimConfig, seed: number) {
    this.config = config;
    this.seed = seed;
    this.prng = new Prng(seed);
    this.blocked = Array.from({ length: config.nodes + 1 }, () =>
      new Array<boolean>(config.nodes + 1).fill(false),
    );
    this.kvRules = {
      applyOutsideSpan: config.mutation === 'apply-outside-span',
      recordsStay: config.mutation === 'records-stay',
    };
    if (config.mutation === undefined) this.kvRules = correctRules;
    this.initial = initialDescriptors(config.ranges, config.keys, config.nodes);
    this.directory = new Directory(this.initial);
    for (const d of this.initial) this.checks.set(d.rangeId, newRangeCheck());
    this.nextRangeId = config.ranges + 1;
    this.livenessTimeoutMs = config.options.electionTicks * config.tickMs;
    // node.ts holds early messages for 1 s with 100 ms ticks: ten ticks.
    this.earlyHoldMs = config.options.electionTicks * config.tickMs;
    if (config.idle) {
      const idle = config.idle;
      const p = this.prng.fork();
      for (let t = p.range(0, idle.busyMsMax); t < config.durationMs; ) {
        const end = t + p.range(idle.idleMsMin, idle.idleMsMax);
        this.idlePeriods.push([t, end]);
        t = end + p.range(0, idle.busyMsMax);
      }
    }
    // Any two clocks differ in rate by less than maxDriftRate, unless a run breaks the bound.
    const driftMax = config.clockDriftMax ?? config.options.maxDriftRate * 0.45;
    for (let id = 1; id <= config.nodes; id++) {
      const node: SimNode = {
        id,
        up: false,
        epoch: 0,
        bootAtMs: 0,
        clockOffsetMs: 0,
        clockRate: 1 + this.prng.range(-driftMax, driftMax),
        syncScheduled: false,
        applyScheduled: false,
        ranges: new Map(),
        durable: new Map(),
        ops: [],
        heardAtMs: new Array<number>(config.nodes + 1).fill(Number.NEGATIVE_INFINITY),
        early: new Map(),
        learning: new Map(),
      };
      for (const d of this.initial) {
        node.durable.set(d.rangeId, {
          hardState: { term: 0, vote: 0, commit: 0 },
          snapshot: { index: 0, term: 0, config: configOf(d) },
          entries: [],
          kv: new KvStateMachine(d, this.kvRules),
        });
      }
      this.nodes.push(node);
    }
  }

  log(line: string): void {
    const l = `${this.nowMs.toFixed(3).padStart(10)} ${line}`;
    if (this.traceLive) console.log(l);
    this.trace.push(l);
    if (!this.traceLive && this.trace.length > 4000) this.trace.splice(0, 2000);
  }

  private violation(checker: string, message: string): void {
    if (this.violations.length < 20) {
      this.violations.push({ checker, message, atMs: this.nowMs });
      this.log(`VIOLATION ${checker}: ${message}`);
    }
  }

  private rangeCheck(rangeId: number): RangeCheck {
    let rc = this.checks.get(rangeId);
    if (rc === undefined) this.checks.set(rangeId, (rc = newRangeCheck()));
    return rc;
  }

  // ------------------------------------------------------------------ nodes

  private localNowMs(node: SimNode): number {
    return node.clockOffsetMs + (this.nowMs - node.bootAtMs) * node.clockRate;
  }

  /** Opens a replica of `rangeId` on `node` over `state`, with `kv` as its state machine. */
  private openRange(
    node: SimNode,
    rangeId: number,
    state: PersistedState,
    kv: KvStateMachine,
    initialized: boolean,
  ): RangeHost {
    const random = this.prng.fork();
    const host: RangeHost = {
      rangeId,
      node,
      kv,
      initialized,
      proposals: new Map(),
      reads: new Map(),
      readsWaiting: [],
      applying: [],
      lastRole: 'follower',
      lastTerm: state.hardState.term,
      lastQuiescent: false,
      leaseUntilMs: Number.NEGATIVE_INFINITY,
      leaseSpan: kv.descriptor,
      replica: undefined as unknown as RangeReplica,
    };
    host.replica = new RangeReplica(node.id, state, this.config.options, {
      nowMs: () => this.localNowMs(node),
      random: () => random.next(),
      // Replica ids are node ids here.
      ...(this.config.quiescence
        ? { isLive: (replica: number) => this.isLive(node, replica) }
        : {}),
      takeSnapshot: () => {
        const core = host.replica.core;
        const index = host.kv.appliedIndex;
        return {
          meta: { index, term: core.log.term(index)!, config: core.config },
          data: host.kv.encode(),
        };
      },
    });
    node.ranges.set(rangeId, host);
    return host;
  }

  private isInitial(rangeId: number): boolean {
    return rangeId <= this.config.ranges;
  }

  private boot(node: SimNode): void {
    node.up = true;
    node.epoch++;
    node.bootAtMs = this.nowMs;
    node.clockOffsetMs = this.prng.range(0, 1e6); // a new process's monotonic clock
    node.heardAtMs.fill(Number.NEGATIVE_INFINITY); // a new process has heard no one yet
    node.ranges = new Map();
    for (const [rangeId, d] of node.durable) {
      const kv = d.kv.clone();
      const initialized = this.isInitial(rangeId) || kv.appliedIndex > 0;
      const state: PersistedState = {
        hardState: d.hardState,
        snapshot: d.snapshot,
        entries: d.entries,
        applied: kv.appliedIndex,
      };
      this.openRange(node, rangeId, state, kv, initialized);
      if (initialized) this.checkDescriptor(node, kv);
    }
    this.checkNodeSpans(node);
    this.scheduleTick(node, node.epoch);
  }

  private crash(node: SimNode): void {
    for (const h of node.ranges.values()) {
      if (h.lastRole === 'leader') this.endLease(this.rangeCheck(h.rangeId), h.lastTerm);
      this.leaseholders.delete(h);
    }
    node.up = false;
    node.epoch++;
    node.syncScheduled = false;
    node.applyScheduled = false;
    node.ops = []; // not synced: lost
    node.early.clear();
    node.learning.clear();
    this.stats.crashes++;
    this.log(`n${node.id} CRASH`);
  }

  /** Crashes a node within half a millisecond and restarts it later, keeping a quorum up. */
  private crashSoon(node: SimNode): void {
    const n = this.config.nodes;
    const epoch = node.epoch;
    this.queue.push(this.nowMs + this.prng.range(0, 0.5), () => {
      const down = this.nodes.filter((x) => !x.up).length;
      if (!node.up || node.epoch !== epoch || down >= Math.floor((n - 1) / 2)) return;
      this.crash(node);
      this.queue.push(this.nowMs + this.prng.range(20, 1500), () => {
        if (node.up) return;
        this.log(`n${node.id} RESTART`);
        this.boot(node);
      });
    });
  }

  private scheduleTick(node: SimNode, epoch: number): void {
    const realMs = this.config.tickMs / node.clockRate;
    this.queue.push(this.nowMs + realMs, () => {
      if (!node.up || node.epoch !== epoch) return;
      if (this.config.quiescence) this.sendNodeHeartbeats(node);
      // A split applied during this loop opens a range: tick the ones open at its start.
      for (const h of [...node.ranges.values()]) {
        if (!h.initialized) continue; // waits for its snapshot, never campaigns
        const r = h.replica;
        if (!r.quiescent()) {
          r.tick();
        } else if (r.role() === 'follower' && !this.isLive(node, r.core.leader)) {
          this.leaderLapsed(node, h);
        } else {
          continue; // a quiescent replica is not ticked
        }
        this.process(node, h);
      }
      this.scheduleTick(node, epoch);
    });
  }

  // ------------------------------------------------------------------ node liveness

  /** One node heartbeat to every other node, over the same faulty network as the ranges. */
  private sendNodeHeartbeats(node: SimNode): void {
    for (const other of this.nodes) {
      if (other.id === node.id) continue;
      this.transmit(node.id, other.id, () => {
        other.heardAtMs[node.id] = this.localNowMs(other);
      });
    }
  }

  /** Whether `observer` heard from node `id` within the liveness timeout (itself: always). */
  private isLive(observer: SimNode, id: number): boolean {
    if (id === observer.id) return true;
    const heard = observer.heardAtMs[id] ?? Number.NEGATIVE_INFINITY;
    return this.localNowMs(observer) - heard < this.livenessTimeoutMs;
  }

  /** The host's part of a lapse: wake the quiescent follower, and count the lapse. */
  private leaderLapsed(node: SimNode, h: RangeHost): void {
    const core = h.replica.core;
    const leaderNode = this.nodes[core.leader - 1];
    this.log(`n${node.id} r${h.rangeId} leader n${core.leader} lapsed`);
    this.stats.lapses++;
    const rc = this.rangeCheck(h.rangeId);
    if (rc.lapsed === undefined || rc.lapsed.term < core.term) {
      rc.lapsed = { term: core.term, leaderDown: leaderNode?.up === false };
    }
    h.replica.leaderLapsed();
  }

  // ------------------------------------------------------------------ storage

  private scheduleSync(node: SimNode): void {
    if (node.syncScheduled) return;
    node.syncScheduled = true;
    const epoch = node.epoch;
    this.queue.push(this.nowMs + this.prng.range(0.1, this.config.syncMsMax), () => {
      if (!node.up || node.epoch !== epoch) return;
      node.syncScheduled = false;
      this.sync(node);
    });
  }

  /** Makes every queued storage operation of the node durable, in order, then reports it. */
  private sync(node: SimNode): void {
    const ops = node.ops;
    node.ops = [];
    const maxWrite = new Map<number, number>();
    const installed = new Set<number>();
    for (const o of ops) {
      if ('create' in o) {
        node.durable.set(o.rangeId, o.create);
        continue;
      }
      const d = node.durable.get(o.rangeId);
      if (d === undefined) {
        this.violation('invariant', `n${node.id} r${o.rangeId}: a write before the range exists`);
        continue;
      }
      makeDurable(d, o.op, this.durableOps(node, d));
      if (o.op.kind === 'write') {
        maxWrite.set(o.rangeId, o.op.write.id);
        if (o.op.write.snapshot) installed.add(o.rangeId);
      }
    }
    for (const [rangeId, id] of maxWrite) {
      const h = node.ranges.get(rangeId)!;
      if (installed.has(rangeId) && !h.initialized) {
        // As node.ts: initialized once its snapshot is durable; from now on it is ticked.
        h.initialized = true;
        this.stats.uninitializedInitialized++;
        this.log(`n${node.id} r${h.rangeId} initialized by snapshot ${showSpan(h.kv.descriptor)}`);
      }
      h.replica.persisted(id);
      this.process(node, h);
    }
  }

  /**
   * The state machine as durable storage advances it: a split entry made durable makes the
   * new range's state durable with it (one transaction in the node's store).
   */
  private durableOps(node: SimNode, left: Durable): StateMachineOps<KvStateMachine> {
    return {
      decode: (bytes) => KvStateMachine.decode(bytes, this.kvRules),
      apply: (kv, e) => {
        if (e.kind !== 'normal') {
          kv.appliedIndex = e.index;
          return;
        }
        kv.apply(e.index, decodeCommand(e.data), (right) => {
          const rangeId = right.descriptor.rangeId;
          if (node.durable.has(rangeId)) {
            this.violation('invariant', `n${node.id} r${rangeId} is created twice`);
          }
          node.durable.set(rangeId, {
            hardState: { term: e.term, vote: 0, commit: e.index },
            snapshot: { index: e.index, term: e.term, config: left.snapshot.config },
            entries: [],
            kv: right,
          });
        });
      },
    };
  }

  private queueOp(node: SimNode, op: NodeOp): void {
    node.ops.push(op);
    this.scheduleSync(node);
  }

  // ------------------------------------------------------------------ one range's turn

  /** One host turn: collect ready output, send, persist, apply, serve reads. */
  private process(node: SimNode, h: RangeHost): void {
    const r = h.replica;
    const applyLater = (this.config.applyMsMax ?? 0) > 0;
    for (let turns = 0; turns < 8 && r.hasReady(); turns++) {
      const rd = r.ready();
      if (r.quiescent()) this.checkQuiet(node, h, rd.messages);
      for (const m of rd.messages) this.sendMessage(node.id, h.rangeId, m);
      if (rd.write) {
        this.checkWrittenEntries(h.rangeId, rd.write.entries);
        if (rd.write.snapshot) {
          // Entries handed out before the snapshot apply first, as in one store.
          if (h.applying.length > 0) this.applyNow(node, h);
          this.installSnapshot(node, h, rd.write.snapshot.data, rd.write.snapshot.meta.index);
        }
        this.queueOp(node, { rangeId: h.rangeId, op: { kind: 'write', write: rd.write } });
      }
      if (rd.committed.length > 0) {
        if (applyLater) {
          h.applying.push(...rd.committed);
          this.scheduleApply(node);
        } else {
          this.applyEntries(node, h, rd.committed);
        }
      }
      for (const rs of rd.readStates) h.readsWaiting.push({ index: rs.index, id: rs.id });
      for (const id of rd.droppedReads) {
        const reply = h.reads.get(id);
        h.reads.delete(id);
        reply?.({ kind: 'notLeader', hint: 0 });
      }
    }
    if (h.readsWaiting.length > 0) this.serveReads(h);
    this.maybeCompact(node, h);
    this.observe(node, h);
  }

  private installSnapshot(node: SimNode, h: RangeHost, data: Uint8Array, index: number): void {
    const before = h.kv.descriptor;
    h.kv = KvStateMachine.decode(data, this.kvRules);
    const after = h.kv.descriptor;
    this.log(`n${node.id} r${h.rangeId} install snapshot @${index} ${showSpan(after)}`);
    if (after.rangeId !== h.rangeId || after.generation < before.generation) {
      // The node's store asserts this (installSnapshot: "generations never go back").
      this.violation(
        'generation-never-goes-back',
        `n${node.id} r${h.rangeId} was ${showSpan(before)}, installed ${showSpan(after)}`,
      );
    } else if (after.generation > before.generation && h.initialized) {
      this.stats.snapshotSplits++;
    }
    this.checkDescriptor(node, h.kv);
    this.checkNodeSpans(node);
  }

  private scheduleApply(node: SimNode): void {
    if (node.applyScheduled) return;
    node.applyScheduled = true;
    const epoch = node.epoch;
    let delay = this.prng.range(0.05, this.config.applyMsMax!);
    if (this.faultsOn && this.prng.chance(0.02)) delay *= 10;
    this.queue.push(this.nowMs + delay, () => {
      if (!node.up || node.epoch !== epoch) return;
      node.applyScheduled = false;
      for (const h of [...node.ranges.values()]) {
        if (h.applying.length === 0) continue;
        this.applyNow(node, h);
        this.process(node, h);
      }
    });
  }

  private applyNow(node: SimNode, h: RangeHost): void {
    const entries = h.applying;
    h.applying = [];
    this.applyEntries(node, h, entries);
  }

  /**
   * Applies committed entries of one range: the state machine, the answers to proposals,
   * and the ranges its splits create, which open right after the apply (node.ts
   * splitApplied). The apply is durable with the node's next sync.
   */
  private applyEntries(node: SimNode, h: RangeHost, entries: readonly Entry[]): void {
    const wasLeader = h.replica.role() === 'leader';
    const created: { kv: KvStateMachine; entry: Entry }[] = [];
    for (const e of entries) this.applyEntry(node, h, e, created);
    this.queueOp(node, { rangeId: h.rangeId, op: { kind: 'apply', entries } });
    for (const c of created) this.openSplit(node, h, c.kv, c.entry, wasLeader);
  }

  private applyEntry(
    node: SimNode,
    h: RangeHost,
    e: Entry,
    created: { kv: KvStateMachine; entry: Entry }[],
  ): void {
    const rc = this.rangeCheck(h.rangeId);
    const data = e.kind === 'normal' ? new TextDecoder().decode(e.data) : e.kind;
    const seen = rc.committed.get(e.index);
    if (seen === undefined) {
      rc.committed.set(e.index, { term: e.term, data });
      if (e.kind === 'normal') {
        const second = Math.floor(this.nowMs / 1000);
        this.stats.commitsPerSecond[second] = (this.stats.commitsPerSecond[second] ?? 0) + 1;
      }
    } else if (seen.term !== e.term || seen.data !== data) {
      this.violation(
        'committed-entries-never-change',
        `r${h.rangeId} n${node.id} applied index ${e.index} term ${e.term} but term ${seen.term} was committed there`,
      );
    }
    let result: CommandResult | undefined;
    if (e.kind === 'normal') {
      const cmd = decodeCommand(e.data);
      result = h.kv.apply(e.index, cmd, (kv) => created.push({ kv, entry: e }));
      if (cmd.op === 'split') this.splitDecided(node, h, e.index, result);
      else if (result.op !== 'mismatch') {
        this.checkKeyOwner(node, h.rangeId, e.index - 1, cmd.key, 'applied a write of');
      }
    } else {
      h.kv.appliedIndex = e.index;
    }
    const p = h.proposals.get(e.index);
    if (p) {
      h.proposals.delete(e.index);
      if (p.term !== e.term || !result) {
        p.reply({ kind: 'retry' }); // our entry was overwritten: that attempt failed
      } else if (result.op === 'mismatch') {
        // Proposed before a split that applied first (or a stale split): reroute.
        const key = e.kind === 'normal' ? decodeCommand(e.data).key : '';
        p.reply(this.mismatch(node, h, key));
      } else {
        p.reply({ kind: 'ok', value: null, result });
      }
    }
  }

  /** A replica applied a split entry (`result` says whether it split or refused). */
  private splitDecided(node: SimNode, h: RangeHost, index: number, result: CommandResult): void {
    const split = result.op === 'split' ? result : undefined;
    const [problem, first] = this.directory.applySplit(h.rangeId, index, split);
    if (problem !== undefined) this.violation('descriptors-agree', problem);
    if (!first) return;
    if (split === undefined) {
      this.stats.splitsRefused++;
      this.log(
        `r${h.rangeId} split entry ${index} refused: ${result.op === 'mismatch' ? result.why : ''}`,
      );
      return;
    }
    this.stats.splitsApplied++;
    this.rangeCheck(split.right.rangeId);
    this.log(
      `r${h.rangeId} SPLIT @${index} (first n${node.id}): ${showSpan(split.left)} ${showSpan(split.right)}`,
    );
    const tiling = tilingProblem(this.directory.latest());
    if (tiling !== undefined) this.violation('ranges-tile', tiling);
  }

  /**
   * The right-hand range of a split `left` applied here opens on this node (node.ts
   * splitApplied): its log starts at the split entry; on the node whose replica of the
   * parent led it campaigns at once, elsewhere it waits out any lease the parent's leader
   * may still hold over the new span. Messages held for it are stepped now.
   */
  private openSplit(
    node: SimNode,
    left: RangeHost,
    kv: KvStateMachine,
    e: Entry,
    wasLeader: boolean,
  ): void {
    const rangeId = kv.descriptor.rangeId;
    if (node.ranges.has(rangeId)) {
      this.violation('invariant', `n${node.id} r${rangeId} is opened twice`);
      return;
    }
    const state: PersistedState = {
      hardState: { term: e.term, vote: 0, commit: e.index },
      snapshot: { index: e.index, term: e.term, config: left.replica.core.config },
      entries: [],
      applied: e.index,
    };
    const h = this.openRange(node, rangeId, state, kv, true);
    const o = this.config.options;
    if (wasLeader || this.config.mutation === 'campaign-everywhere') {
      h.replica.splitOff(Number.NEGATIVE_INFINITY);
      h.replica.campaignNow();
    } else {
      h.replica.splitOff(this.localNowMs(node) + o.leaseDurationMs * (1 + 2 * o.maxDriftRate));
    }
    this.log(`n${node.id} r${rangeId} opened by split ${wasLeader ? '(campaigns)' : ''}`);
    const early = node.early.get(rangeId);
    node.early.delete(rangeId);
    if (early && this.localNowMs(node) - early.sinceMs <= this.earlyHoldMs) {
      this.stats.earlyReplayed += early.msgs.length;
      h.replica.step(early.msgs);
    }
    this.checkNodeSpans(node);
    this.process(node, h);
  }

  private serveReads(h: RangeHost): void {
    const keep: { index: number; id: number }[] = [];
    for (const w of h.readsWaiting) {
      if (h.kv.appliedIndex < w.index) {
        keep.push(w);
        continue;
      }
      const reply = h.reads.get(w.id);
      h.reads.delete(w.id);
      reply?.({ kind: 'ok', value: null }); // the reply closure reads the key itself
    }
    h.readsWaiting = keep;
  }

  private maybeCompact(node: SimNode, h: RangeHost): void {
    const core = h.replica.core;
    const applied = h.kv.appliedIndex;
    if (applied - core.log.snapshot.index < this.config.compactEntries) return;
    if (applied > core.log.stable) return;
    core.compact(applied);
    this.queueOp(node, { rangeId: h.rangeId, op: { kind: 'compact', meta: core.log.snapshot } });
  }

  // ------------------------------------------------------------------ ranges not here yet

  /** Keeps a few messages for a range this node does not have yet (node.ts holdEarly). */
  private holdEarly(node: SimNode, rangeId: number, m: Message): void {
    const now = this.localNowMs(node);
    for (const [id, e] of node.early) if (now - e.sinceMs > this.earlyHoldMs) node.early.delete(id);
    let held = node.early.get(rangeId);
    if (!held) {
      if (node.early.size >= earlyRangesMax) return;
      node.early.set(rangeId, (held = { sinceMs: now, msgs: [] }));
    }
    if (held.msgs.length < earlyMessagesMax) held.msgs.push(m);
  }

  /**
   * Asks the sender of a message for a range this node does not have for its descriptor
   * (at most once per earlyHoldMs per range), over the faulty network (node.ts learnRange).
   */
  private learnRange(node: SimNode, rangeId: number, from: number): void {
    const now = this.localNowMs(node);
    const asked = node.learning.get(rangeId);
    if (asked !== undefined && now - asked < this.earlyHoldMs) return;
    node.learning.set(rangeId, now);
    const epoch = node.epoch;
    this.transmit(node.id, from, () => {
      const peer = this.nodes[from - 1]!;
      const ph = peer.ranges.get(rangeId);
      const d = ph?.initialized ? ph.kv.descriptor : undefined;
      this.transmit(from, node.id, () => {
        if (node.epoch === epoch && d !== undefined) this.learned(node, d);
      });
    });
  }

  /**
   * A peer's descriptor of a range this node may lack: when no local range overlaps its
   * span, an uninitialized replica of it opens (empty, not ticked, but voting) and waits
   * for the leader's snapshot. Its descriptor is kept at generation 0, as node.ts does: it
   * is a peer's view, and the leader's snapshot brings the authoritative one. An overlapping local range has not caught up yet: it will
   * apply the split and open the range itself, or install a snapshot with a smaller span.
   */
  private learned(node: SimNode, d: Descriptor): void {
    if (node.ranges.has(d.rangeId) || !d.replicas.includes(node.id)) return;
    for (const h of node.ranges.values()) {
      if (spansOverlap(h.kv.descriptor, d)) {
        this.log(
          `n${node.id} learn ${showSpan(d)}: waits, overlaps local ${showSpan(h.kv.descriptor)}`,
        );
        return;
      }
    }
    const durable: Durable = {
      hardState: { term: 0, vote: 0, commit: 0 },
      snapshot: { index: 0, term: 0, config: configOf(d) },
      entries: [],
      kv: new KvStateMachine({ ...d, generation: 0 }, this.kvRules),
    };
    this.queueOp(node, { rangeId: d.rangeId, create: durable });
    const state: PersistedState = {
      hardState: durable.hardState,
      snapshot: durable.snapshot,
      entries: [],
      applied: 0,
    };
    const h = this.openRange(node, d.rangeId, state, durable.kv.clone(), false);
    this.stats.uninitializedCreated++;
    this.log(`n${node.id} r${d.rangeId} uninitialized replica ${showSpan(d)}`);
    if (!this.directory.isKnown(d)) {
      this.violation('descriptors-agree', `n${node.id} learned unknown ${showSpan(d)}`);
    }
    this.checkNodeSpans(node);
    this.process(node, h);
  }

  // ------------------------------------------------------------------ checkers

  private checkWrittenEntries(rangeId: number, entries: readonly Entry[]): void {
    const w = this.rangeCheck(rangeId).written;
    for (const e of entries) {
      const key = `${e.index}/${e.term}`;
      const data = e.kind === 'normal' ? new TextDecoder().decode(e.data) : e.kind;
      const seen = w.get(key);
      if (seen === undefined) w.set(key, data);
      else if (seen !== data) {
        this.violation(
          'log-matching',
          `r${rangeId} two different entries at index ${e.index} term ${e.term}`,
        );
      }
    }
  }

  /** A replica's descriptor is the one its range had at its applied index. */
  private checkDescriptor(node: SimNode, kv: KvStateMachine): void {
    const problem = this.directory.check(kv.appliedIndex, kv.descriptor);
    if (problem !== undefined) this.violation('descriptors-agree', `n${node.id}: ${problem}`);
  }

  /** The spans of one node's replicas (initialized or not) are disjoint. */
  private checkNodeSpans(node: SimNode): void {
    const problem = overlapProblem([...node.ranges.values()].map((h) => h.kv.descriptor));
    if (problem !== undefined) this.violation('node-spans-disjoint', `n${node.id}: ${problem}`);
  }

  /**
   * A key is written and read only by the range that held it at that point of its log, as
   * the first replica to apply each split decided (the same check as the state machine's,
   * from the checkers' record instead of the replica's own state).
   */
  private checkKeyOwner(
    node: SimNode,
    rangeId: number,
    index: number,
    key: string,
    what: string,
  ): void {
    const d = this.directory.spanAt(rangeId, index);
    if (d === undefined || !inSpan(d, key)) {
      this.violation(
        'key-owned-by-one-range',
        `n${node.id} r${rangeId} ${what} ${key} at index ${index}, span ${d ? showSpan(d) : '?'}`,
      );
    }
  }

  /**
   * A quiescent replica sends nothing an active one would: no append, snapshot, vote
   * request or TimeoutNow, and only the quiesce heartbeats of its last turn as a leader.
   */
  private checkQuiet(node: SimNode, h: RangeHost, messages: readonly Message[]): void {
    for (const m of messages) {
      const active =
        m.type === 'append' ||
        m.type === 'snapshot' ||
        m.type === 'prevote' ||
        m.type === 'vote' ||
        m.type === 'timeoutNow' ||
        (m.type === 'heartbeat' && m.quiesce !== true);
      if (active) {
        this.violation(
          'quiescent-is-quiet',
          `n${node.id} r${h.rangeId} sent ${m.type} while quiescent`,
        );
      }
    }
  }

  /** Per-event checks of one replica: role mirror, leader per term, role-change trace. */
  private observe(node: SimNode, h: RangeHost): void {
    const core = h.replica.core;
    const role = h.replica.role();
    const quiescent = h.replica.quiescent();
    if (role !== core.role || quiescent !== core.quiescent) {
      this.violation(
        'machine-owns-role',
        `n${node.id} r${h.rangeId} machine is ${role}${quiescent ? ' (quiescent)' : ''}, core is ` +
          `${core.role}${core.quiescent ? ' (quiescent)' : ''}`,
      );
    }
    const rc = this.rangeCheck(h.rangeId);
    this.checkLease(node, h, rc);
    if (role !== h.lastRole || core.term !== h.lastTerm) {
      this.log(`n${node.id} r${h.rangeId} ${h.lastRole}@${h.lastTerm} -> ${role}@${core.term}`);
      h.lastRole = role;
      h.lastTerm = core.term;
    }
    if (quiescent !== h.lastQuiescent) {
      this.log(`n${node.id} r${h.rangeId} ${quiescent ? 'quiesce' : 'wake'} ${role}@${core.term}`);
      h.lastQuiescent = quiescent;
      if (quiescent) {
        this.stats.quiesces++;
        if (this.faultsOn) this.stats.quiescesUnderFaults++;
      } else {
        this.stats.wakes++;
      }
    }
    if (role === 'leader') {
      if (core.log.committed > 0 && core.log.term(core.log.committed) === core.term) {
        this.observeCommit(rc, h.rangeId, core.term);
      }
      const other = rc.leaders.get(core.term);
      if (other === undefined) {
        rc.leaders.set(core.term, node.id);
      } else if (other !== node.id) {
        this.violation(
          'one-leader-per-term',
          `r${h.rangeId} term ${core.term}: n${other} and n${node.id}`,
        );
      }
      const tag = `${core.term}/${node.id}`;
      if (rc.lastLeader !== tag) {
        if (rc.lastLeader !== '') this.stats.leaderChanges++;
        rc.lastLeader = tag;
      }
      const lapse = rc.lapsed;
      if (lapse !== undefined && core.term > lapse.term) {
        // A quiescent range whose leader's node lapsed woke and elected a new leader.
        this.stats.lapseElections++;
        if (lapse.leaderDown) this.stats.lapseElectionsLeaderDown++;
        rc.lapsed = undefined;
        this.log(`r${h.rangeId} elected n${node.id}@${core.term} after a lapse`);
      }
    }
  }

  /** Replicas that held a valid lease when last observed (see checkLease). */
  private readonly leaseholders = new Set<RangeHost>();

  /**
   * Lease checks. A replica's lease changes only in its own events (a lease is valid while
   * it leads, active, with an own-term commit and no transfer, until an expiry its acks
   * fix), so they run when it is observed after one; the lease then lasts until its expiry
   * or the replica's next event. They assert:
   * - at most one replica of a range holds a valid lease at any instant;
   * - the lease invariant itself: while a leader of term T believes its lease runs until
   *   real time E, no leader of a newer term commits anything before E (else a lease
   *   read could miss that write);
   * - one lease per key: no two leaders of different ranges hold valid leases over a
   *   common key at once. A leaseholder serves reads only once it applied its commit index
   *   (and checks the span then), so the keys its lease covers are its range's span at its
   *   commit index, not its possibly older applied descriptor: a leader that committed a
   *   split serves no read of the right-hand span, whenever the apply happens.
   */
  private checkLease(node: SimNode, h: RangeHost, rc: RangeCheck): void {
    const core = h.replica.core;
    if (h.lastRole === 'leader' && (core.role !== 'leader' || core.term !== h.lastTerm)) {
      // It stopped leading that term: from now on it serves no lease read of it.
      this.endLease(rc, h.lastTerm);
    }
    h.leaseUntilMs = Number.NEGATIVE_INFINITY;
    this.leaseholders.delete(h);
    if (core.role !== 'leader') return;
    if (core.leaseYielded()) {
      // A transfer ends the lease early: from now on the leader serves no lease read.
      this.endLease(rc, core.term);
      return;
    }
    if (!core.hasValidLease()) return;
    const expiry = this.realTimeOf(node, core.leaseExpiryMs());
    const span = this.directory.spanAt(h.rangeId, core.log.committed) ?? h.kv.descriptor;
    for (const other of this.leaseholders) {
      if (!other.node.up || other.node.ranges.get(other.rangeId) !== other) {
        this.leaseholders.delete(other); // crashed
        continue;
      }
      if (other.leaseUntilMs <= this.nowMs) continue;
      if (other.rangeId === h.rangeId) {
        this.violation(
          'no-overlapping-leases',
          `r${h.rangeId} n${other.node.id} and n${node.id} both hold a lease`,
        );
      } else if (spansOverlap(other.leaseSpan, span)) {
        this.violation(
          'one-lease-per-key',
          `n${other.node.id} ${showSpan(other.leaseSpan)} and n${node.id} ${showSpan(span)} ` +
            'both hold a lease',
        );
      }
    }
    h.leaseUntilMs = expiry;
    h.leaseSpan = span;
    this.leaseholders.add(h);
    if ((rc.leaseUntil.get(core.term) ?? Number.NEGATIVE_INFINITY) < expiry) {
      rc.leaseUntil.set(core.term, expiry);
      for (const [term, at] of rc.firstCommitAt) {
        if (term > core.term && at < expiry)
          this.leaseBroken(h.rangeId, core.term, expiry, term, at);
      }
    }
  }

  /** The lease of the leader of `term` ends now (it stopped leading, or crashed). */
  private endLease(rc: RangeCheck, term: number): void {
    const until = rc.leaseUntil.get(term);
    if (until !== undefined && until > this.nowMs) rc.leaseUntil.set(term, this.nowMs);
  }

  /** A leader of `term` advanced its commit index now. */
  private observeCommit(rc: RangeCheck, rangeId: number, term: number): void {
    if (rc.firstCommitAt.has(term)) return;
    rc.firstCommitAt.set(term, this.nowMs);
    for (const [leaseTerm, until] of rc.leaseUntil) {
      if (leaseTerm < term && this.nowMs < until) {
        this.leaseBroken(rangeId, leaseTerm, until, term, this.nowMs);
      }
    }
  }

  private leaseBroken(
    rangeId: number,
    leaseTerm: number,
    until: number,
    term: number,
    at: number,
  ): void {
    this.violation(
      'lease-excludes-newer-commits',
      `r${rangeId}: the term ${leaseTerm} leader held a lease until ${until.toFixed(3)} ms but ` +
        `the term ${term} leader committed at ${at.toFixed(3)} ms`,
    );
  }

  /**
   * A lease read's index, which the replica may answer from its lease gate, is what the
   * core would answer at that clock reading: an awake leader's committed index under a
   * valid lease. (hasValidLease refreshes the core's cached lower bound of the lease, which
   * changes no answer.)
   */
  private checkLeaseRead(node: SimNode, h: RangeHost, at: number, nowMs: number): void {
    const core = h.replica.core;
    // hasValidLease is false for anything but an awake leader.
    const as = core.hasValidLease(nowMs) ? core.log.committed : undefined;
    if (at !== as) {
      this.violation(
        'lease-read-as-core',
        `n${node.id} r${h.rangeId}: a lease read answered index ${at} at ${nowMs.toFixed(3)} ms ` +
          `where the core answers ${as ?? 'no lease'}`,
      );
    }
  }

  /** Converts a node's local clock reading to simulated real time. */
  private realTimeOf(node: SimNode, localMs: number): number {
    return node.bootAtMs + (localMs - node.clockOffsetMs) / node.clockRate;
  }

  // ------------------------------------------------------------------ network

  private sendMessage(from: number, rangeId: number, m: Message): void {
    this.stats.messages++;
    const to = m.to;
    if (
      this.faultsOn &&
      this.config.faults.crashes &&
      m.type === 'appendResponse' &&
      !m.reject &&
      this.prng.chance(0.002)
    ) {
      // The worst moment: right after an acknowledgement leaves.
      this.crashSoon(this.nodes[from - 1]!);
    }
    this.transmit(from, to, () => {
      const node = this.nodes[to - 1]!;
      const h = node.ranges.get(rangeId);
      if (h === undefined) {
        // A range the sender has and this node not yet (node.ts onRaft).
        this.holdEarly(node, rangeId, m);
        this.learnRange(node, rangeId, from);
        return;
      }
      if (!h.initialized && this.config.uninitializedVotes === false) {
        if (m.type === 'vote' || m.type === 'prevote') return; // the old rule: never votes
      }
      h.replica.step([m]);
      this.process(node, h);
    });
  }

  /**
   * Sends something from node `from` to node `to` over the faulty network: it may be
   * dropped (also by a partition), duplicated and delayed; `deliver` runs on arrival if
   * the receiver is up and not cut off then.
   */
  private transmit(from: number, to: number, deliver: () => void): void {
    const f = this.config.faults;
    if (this.blocked[from]![to]) return;
    if (this.faultsOn && this.prng.chance(f.dropRate)) return;
    const copies = this.faultsOn && this.prng.chance(f.duplicateRate) ? 2 : 1;
    for (let i = 0; i < copies; i++) {
      let delay = this.prng.range(0.05, f.delayMsMax);
      if (this.faultsOn && this.prng.chance(f.delaySpikeRate)) delay *= 10;
      this.queue.push(this.nowMs + delay, () => {
        if (!this.nodes[to - 1]!.up || this.blocked[from]![to]) return;
        deliver();
      });
    }
  }

  private heal(): void {
    for (const row of this.blocked) row.fill(false);
  }

  // ------------------------------------------------------------------ faults

  private scheduleFault(): void {
    const f = this.config.faults;
    this.queue.push(this.nowMs + this.prng.range(0.2, 1.8) * f.faultIntervalMs, () => {
      if (!this.faultsOn) return;
      this.injectFault();
      this.scheduleFault();
    });
  }

  private injectFault(): void {
    const f = this.config.faults;
    const n = this.config.nodes;
    const kinds: string[] = ['heal'];
    if (f.partitions) kinds.push('split', 'isolate', 'oneway', 'bridge');
    if (f.crashes) kinds.push('crash', 'crash', 'powerloss');
    if (f.transfers) kinds.push('transfer');
    const kind = this.prng.pick(kinds);
    this.stats.faults++;
    switch (kind) {
      case 'heal':
        this.heal();
        this.log('FAULT heal');
        return;
      case 'split': {
        this.heal();
        const side = this.nodes.map(() => this.prng.chance(0.5));
        for (let a = 1; a <= n; a++) {
          for (let b = 1; b <= n; b++) if (side[a - 1] !== side[b - 1]) this.blocked[a]![b] = true;
        }
        this.log(`FAULT split ${side.map((s, i) => `n${i + 1}:${s ? 'A' : 'B'}`).join(' ')}`);
        return;
      }
      case 'isolate': {
        const a = 1 + this.prng.int(n);
        for (let b = 1; b <= n; b++) {
          this.blocked[a]![b] = true;
          this.blocked[b]![a] = true;
        }
        this.blocked[a]![a] = false;
        this.log(`FAULT isolate n${a}`);
        return;
      }
      case 'oneway': {
        const a = 1 + this.prng.int(n);
        const b = 1 + ((a + this.prng.int(n - 1)) % n);
        this.blocked[a]![b] = true;
        this.log(`FAULT one-way cut n${a} -> n${b}`);
        return;
      }
      case 'bridge': {
        // A partial partition: two nodes cannot talk to each other, the rest is intact.
        const a = 1 + this.prng.int(n);
        const b = 1 + ((a + this.prng.int(n - 1)) % n);
        this.blocked[a]![b] = true;
        this.blocked[b]![a] = true;
        this.log(`FAULT cut n${a} <-> n${b}`);
        return;
      }
      case 'crash': {
        const up = this.nodes.filter((x) => x.up);
        if (up.length > 0) this.crashSoon(this.prng.pick(up));
        return;
      }
      case 'powerloss': {
        // Every node loses power at once: whatever was not synced is gone everywhere.
        this.log('FAULT power loss');
        for (const node of this.nodes) {
          if (!node.up) continue;
          this.crash(node);
          this.queue.push(this.nowMs + this.prng.range(5, 300), () => {
            if (node.up) return;
            this.log(`n${node.id} RESTART`);
            this.boot(node);
          });
        }
        return;
      }
      case 'transfer': {
        for (const node of this.nodes) {
          if (!node.up) continue;
          for (const h of [...node.ranges.values()]) {
            if (h.replica.role() !== 'leader') continue;
            const target = 1 + ((node.id + this.prng.int(n - 1)) % n);
            this.log(`FAULT transfer r${h.rangeId} n${node.id} -> n${target}`);
            h.replica.transferLeadership(target);
            this.process(node, h);
          }
        }
        return;
      }
    }
  }

  // ------------------------------------------------------------------ clients

  /** The local initialized replica whose span holds `key`. */
  private localRangeFor(node: SimNode, key: string): RangeHost | undefined {
    for (const h of node.ranges.values()) {
      if (h.initialized && inSpan(h.kv.descriptor, key)) return h;
    }
    return undefined;
  }

  /** RangeKeyMismatch for `key` at h: h's descriptor, and the local holder of the key's. */
  private mismatch(node: SimNode, h: RangeHost, key: string): Reply {
    const descriptors = [h.kv.descriptor];
    const other = this.localRangeFor(node, key);
    if (other !== undefined && other !== h) descriptors.push(other.kv.descriptor);
    return { kind: 'mismatch', descriptors };
  }

  /** Delivers a client request to a node (no loss on client links, only delay). */
  private request(nodeId: number, req: Request, reply: (r: Reply) => void): void {
    const deliver = (r: Reply) =>
      this.queue.push(this.nowMs + this.prng.range(0.05, 1), () => reply(r));
    this.queue.push(this.nowMs + this.prng.range(0.05, 1), () => {
      const node = this.nodes[nodeId - 1]!;
      if (!node.up) return; // the client times out
      if (req.rangeId === 0) {
        // The client's cache has a gap here: this node tells it what it knows (the node
        // would route the request by key).
        const holder = this.localRangeFor(node, req.key);
        deliver(
          holder ? { kind: 'mismatch', descriptors: [holder.kv.descriptor] } : { kind: 'retry' },
        );
        return;
      }
      const h = node.ranges.get(req.rangeId);
      if (h === undefined || !h.initialized) {
        deliver({ kind: 'retry' }); // as "no responders" on the range's subject
        return;
      }
      if (h.replica.role() !== 'leader') {
        deliver({ kind: 'notLeader', hint: h.replica.core.leader });
        return;
      }
      const d = h.kv.descriptor;
      if (req.generation < d.generation) {
        deliver(this.mismatch(node, h, req.key)); // the range split since
        return;
      }
      if (req.f === 'split') {
        this.handleSplit(node, h, req, deliver);
      } else if (!inSpan(d, req.key)) {
        deliver(this.mismatch(node, h, req.key));
      } else if (req.f === 'get') {
        this.requestRead(node, h, req, deliver);
      } else {
        this.requestWrite(h, req, deliver);
      }
      this.process(node, h);
    });
  }

  private requestRead(
    node: SimNode,
    h: RangeHost,
    req: Request,
    deliver: (r: Reply) => void,
  ): void {
    const epoch = node.epoch;
    const serve = (r: Reply) => {
      if (r.kind !== 'ok' || node.epoch !== epoch) {
        deliver(r.kind === 'ok' ? { kind: 'retry' } : r);
        return;
      }
      // Checked at serve time: after a split applied here, h serves nothing of the
      // right-hand span.
      if (!inSpan(h.kv.descriptor, req.key) && this.config.mutation !== 'serve-outside-span') {
        deliver(this.mismatch(node, h, req.key));
        return;
      }
      this.checkKeyOwner(node, h.rangeId, h.kv.appliedIndex, req.key, 'served a read of');
      deliver({ kind: 'ok', value: h.kv.data.get(req.key) ?? null });
    };
    // As node.ts: a lease read at an index applied here is served at once, without a read id
    // (checked at a clock reading, as node.ts does per request: the replica's lease gate).
    const nowMs = this.localNowMs(node);
    let at = h.replica.leaseReadIndex(nowMs);
    if (this.config.mutation === 'lease-gate-stays-open' && at !== undefined) {
      const kept = h.keptLeaseRead;
      if (kept !== undefined && nowMs < kept.untilMs) at = kept.at;
      else h.keptLeaseRead = { at, untilMs: nowMs + 50 };
    }
    if (at !== undefined) this.checkLeaseRead(node, h, at, nowMs);
    if (at !== undefined && h.kv.appliedIndex >= at) {
      this.stats.localReads++;
      serve({ kind: 'ok', value: null });
      return;
    }
    this.stats.queuedReads++;
    const readId = this.nextReadId++;
    const err = h.replica.read(readId);
    if (err) {
      deliver({ kind: 'notLeader', hint: err.leaderHint });
      return;
    }
    h.reads.set(readId, serve);
  }

  private requestWrite(h: RangeHost, req: Request, deliver: (r: Reply) => void): void {
    const cmd: Command =
      req.f === 'set'
        ? { op: 'set', key: req.key, value: req.value!, requestId: req.requestId }
        : req.f === 'cas'
          ? {
              op: 'cas',
              key: req.key,
              expect: req.expect,
              value: req.value!,
              requestId: req.requestId,
            }
          : { op: 'del', key: req.key, requestId: req.requestId };
    this.propose(h, cmd, deliver);
  }

  /**
   * A split at req.key (docs/ranges.md, step 1-3): idempotent when the range already starts
   * there; refused unless the key is strictly inside and the client's generation is the
   * range's; proposed under the generation the leader has now.
   */
  private handleSplit(
    node: SimNode,
    h: RangeHost,
    req: Request,
    deliver: (r: Reply) => void,
  ): void {
    const d = h.kv.descriptor;
    if (d.start === req.key) {
      deliver({ kind: 'ok', value: null });
    } else if (req.generation !== d.generation || !strictlyInside(d, req.key)) {
      deliver(this.mismatch(node, h, req.key));
    } else {
      const cmd: Command = {
        op: 'split',
        key: req.key,
        generation: d.generation,
        rightId: req.rightId,
      };
      this.propose(h, cmd, deliver);
    }
  }

  private propose(h: RangeHost, cmd: Command, deliver: (r: Reply) => void): void {
    const res = h.replica.propose([encodeCommand(cmd)]);
    if ('code' in res) {
      deliver(
        res.code === 'notLeader' ? { kind: 'notLeader', hint: res.leaderHint } : { kind: 'retry' },
      );
    } else {
      h.proposals.set(res.index, { term: res.term, reply: deliver });
    }
  }

  private nextReadId = 1;

  /**
   * A client's routing: a range cache (src/client/range-cache.ts) that starts from the
   * bootstrap descriptors and learns from RangeKeyMismatch answers, and a leader guess
   * per range. `route` picks where an attempt for `key` goes.
   */
  private newRouter(prng: Prng) {
    const cache = new RangeCache();
    cache.update(this.initial.map(toCached));
    const leaders = new Map<number, number>();
    const randomNode = () => 1 + prng.int(this.config.nodes);
    return {
      route: (key: string): { rangeId: number; generation: number; node: number } => {
        const r = cache.lookup(Buffer.from(key));
        if (r === undefined) return { rangeId: 0, generation: 0, node: randomNode() };
        return {
          rangeId: r.rangeId,
          generation: r.generation,
          node: leaders.get(r.rangeId) ?? randomNode(),
        };
      },
      /** Learns from a failed attempt at `rangeId`. */
      failed: (rangeId: number, r: Reply | undefined): void => {
        if (r?.kind === 'mismatch') {
          this.stats.mismatches++;
          if (cache.update(r.descriptors.map(toCached))) return;
        }
        leaders.set(rangeId, r?.kind === 'notLeader' && r.hint !== 0 ? r.hint : randomNode());
      },
    };
  }

  private runClient(process: number, ops: number, final: string[] | null): void {
    const prng = this.prng.fork();
    const router = this.newRouter(prng);
    const keys = Array.from({ length: this.config.keys }, (_, i) => `k${i}`);
    let opNo = 0;
    const attemptMs = 250;
    const opDeadlineMs = final ? 20_000 : 2_000;
    // Spread each client's operations over the whole run.
    const thinkMsMax = final ? 1 : (2 * this.config.durationMs) / Math.max(1, ops);
    this.clientsActive++;
    const nextOp = () => {
      if (opNo >= ops || (!final && this.nowMs >= this.config.durationMs)) {
        this.clientsActive--;
        return;
      }
      opNo++;
      const key = final ? final[opNo - 1]! : prng.pick(keys);
      const roll = prng.next();
      const f: HistoryOp['f'] = final
        ? 'get'
        : roll < 0.35
          ? 'get'
          : roll < 0.65
            ? 'set'
            : roll < 0.9
              ? 'cas'
              : 'del';
      const value = f === 'set' || f === 'cas' ? `${process}.${opNo}` : null;
      const expect =
        f === 'cas' ? (prng.chance(0.2) ? null : (this.lastValues.get(key) ?? null)) : null;
      const requestId = `${process}-${opNo}`;
      const invoke = this.nowMs;
      let attempt = 0;
      let proposed = false;
      let done = false;
      const finish = (type: HistoryOp['type'], r?: Reply) => {
        done = true;
        let v: string | null = value;
        let ok: boolean | null = null;
        if (r?.kind === 'ok') {
          if (f === 'get') v = r.value;
          if (r.result?.op === 'del') v = r.result.value;
          if (r.result?.op === 'cas') ok = r.result.success;
          if (f === 'set' || (f === 'cas' && ok)) this.lastValues.set(key, value!);
        }
        if (f === 'del' && type !== 'ok') v = null;
        this.history.push({
          process,
          f,
          key,
          value: v,
          expect,
          ok: f === 'cas' ? ok : null,
          type,
          invoke: Math.round(invoke * 1e6),
          complete: Math.round(this.nowMs * 1e6),
        });
        this.stats.operations++;
        this.log(
          `client ${process} ${f} ${key} ${type} ${JSON.stringify(v)}${ok === null ? '' : ` ok=${ok}`}`,
        );
        this.queue.push(this.afterIdle(this.nowMs + prng.range(0, thinkMsMax), prng), nextOp);
      };
      const tryOnce = () => {
        if (done) return;
        if (this.nowMs - invoke > opDeadlineMs) {
          finish(proposed && f !== 'get' ? 'info' : 'fail');
          return;
        }
        const mine = ++attempt;
        if (f !== 'get') proposed = true; // a request in flight may be proposed
        const to = router.route(key);
        const req: Request = {
          f,
          key,
          value,
          expect,
          requestId,
          rangeId: to.rangeId,
          generation: to.generation,
          rightId: 0,
        };
        this.request(to.node, req, (r) => {
          if (done || mine !== attempt) return;
          if (r.kind === 'ok') finish('ok', r);
          else {
            router.failed(to.rangeId, r);
            attempt++;
            this.queue.push(this.nowMs + prng.range(1, 10), tryOnce);
          }
        });
        this.queue.push(this.nowMs + attemptMs, () => {
          if (done || mine !== attempt) return;
          router.failed(to.rangeId, undefined);
          tryOnce();
        });
      };
      tryOnce();
    };
    this.queue.push(this.afterIdle(this.nowMs + prng.range(0, 20), prng), nextOp);
  }

  /**
   * The split workload: while faults run, asks for a split at a random client key every
   * splits.intervalMs on average, without waiting for the ones in flight (so splits of one
   * range race, and the later ones are refused at apply). Each split retries for 2 s.
   */
  private runSplitter(): void {
    const s = this.config.splits;
    if (s === undefined) return;
    const prng = this.prng.fork();
    const router = this.newRouter(prng);
    const keys = Array.from({ length: this.config.keys - 1 }, (_, i) => `k${i + 1}`);
    let requested = 0;
    const next = () => {
      if (!this.faultsOn || this.nowMs >= this.config.durationMs) return;
      // Sometimes two at once: splits of one range then race, and the later one is refused.
      const burst = prng.chance(0.3) ? 2 : 1;
      for (let i = 0; i < burst && requested < s.max; i++, requested++) {
        this.requestSplit(prng.pick(keys), router, prng);
      }
      this.queue.push(this.nowMs + prng.range(0.2, 1.8) * s.intervalMs, next);
    };
    this.queue.push(this.nowMs + prng.range(0.2, 1.8) * s.intervalMs, next);
  }

  /** One split request of the workload, retried for 2 s. */
  private requestSplit(key: string, router: ReturnType<World['newRouter']>, prng: Prng): void {
    this.stats.splitsRequested++;
    const rightId = this.nextRangeId++;
    const invoke = this.nowMs;
    let attempt = 0;
    let done = false;
    const tryOnce = () => {
      if (done) return;
      if (this.nowMs - invoke > 2_000) {
        this.log(`split ${key} r${rightId} gave up`);
        return;
      }
      const mine = ++attempt;
      const to = router.route(key);
      const req: Request = {
        f: 'split',
        key,
        value: null,
        expect: null,
        requestId: `split-${rightId}`,
        rangeId: to.rangeId,
        generation: to.generation,
        rightId,
      };
      this.request(to.node, req, (r) => {
        if (done || mine !== attempt) return;
        if (r.kind === 'ok') {
          done = true;
          this.log(`split ${key} r${rightId} ok`);
          return;
        }
        router.failed(to.rangeId, r);
        attempt++;
        this.queue.push(this.nowMs + prng.range(1, 10), tryOnce);
      });
      this.queue.push(this.nowMs + 250, () => {
        if (done || mine !== attempt) return;
        router.failed(to.rangeId, undefined);
        tryOnce();
      });
    };
    this.log(`split ${key} r${rightId} requested`);
    tryOnce();
  }

  /** The time an operation due at `at` starts: after the idle period it falls in, if any. */
  private afterIdle(at: number, prng: Prng): number {
    for (const [start, end] of this.idlePeriods) {
      if (at < start) break;
      if (at < end) return end + prng.range(0, 20);
    }
    return at;
  }

  private readonly lastValues = new Map<string, string>();

  // ------------------------------------------------------------------ run

  /** Boots every node; with faults, the fault schedule starts too. */
  start(withFaults: boolean): void {
    for (const node of this.nodes) this.boot(node);
    this.faultsOn = withFaults;
    if (withFaults) this.scheduleFault();
  }

  /** Starts `count` clients of `ops` operations each (process ids from 1). */
  startClients(count: number, ops: number): void {
    for (let c = 1; c <= count; c++) this.runClient(c, ops, null);
  }

  /** The node currently leading range `rangeId` with the highest term, or 0. */
  leaderOf(rangeId: number): number {
    let best = 0;
    let bestTerm = -1;
    for (const node of this.nodes) {
      const core = node.ranges.get(rangeId)?.replica.core;
      if (node.up && core !== undefined && core.role === 'leader' && core.term > bestTerm) {
        best = node.id;
        bestTerm = core.term;
      }
    }
    return best;
  }

  /** Drops every message from node a to node b from now on. */
  block(a: number, b: number): void {
    this.blocked[a]![b] = true;
    this.log(`FAULT block n${a} -> n${b}`);
  }

  /** Runs the whole randomized run; returns when the final checks are done. */
  run(): void {
    this.start(true);
    this.startClients(this.config.clients, this.config.opsPerClient);
    this.runSplitter();
    this.runUntil(this.config.durationMs);
    // Heal everything and let the cluster settle.
    this.faultsOn = false;
    this.heal();
    for (const node of this.nodes) {
      if (!node.up) {
        this.log(`n${node.id} RESTART (settle)`);
        this.boot(node);
      }
    }
    this.log('SETTLE');
    this.runUntil(this.nowMs + this.config.settleMs);
    // Final reads of every key, so a lost write shows up in the history.
    const keys = Array.from({ length: this.config.keys }, (_, i) => `k${i}`);
    this.runClient(0, keys.length, keys);
    const end = this.nowMs + 30_000;
    while (this.clientsActive > 0 && this.nowMs < end && this.step()) {}
    this.checkFinalReads();
    this.runUntil(this.nowMs + this.config.settleMs);
    this.checkConvergence();
    if (this.config.quiescence) this.checkSettledQuiescent();
    this.stats.rangesAtEnd = this.directory.latest().length;
    this.stats.simulatedMs = this.nowMs;
  }

  /** After healing and settling, every final read succeeds: no range is left stuck. */
  private checkFinalReads(): void {
    const finals = this.history.filter((op) => op.process === 0);
    const failed = finals.filter((op) => op.type !== 'ok');
    if (finals.length !== this.config.keys || failed.length > 0) {
      this.violation(
        'settled-available',
        `${finals.length - failed.length} of ${this.config.keys} final reads succeeded`,
      );
    }
  }

  /**
   * An idle, healed cluster goes quiet: every replica is quiescent, and every range has
   * one leader whose term and commit index its followers share.
   */
  private checkSettledQuiescent(): void {
    for (const d of this.directory.latest()) {
      const cores = this.nodes.flatMap((n) => {
        const h = n.ranges.get(d.rangeId);
        return h ? [h.replica.core] : [];
      });
      const awake = cores.filter((c) => !c.quiescent).map((c) => `n${c.id} ${c.role}@${c.term}`);
      const leaders = cores.filter((c) => c.role === 'leader');
      const leader = leaders[0];
      const agree =
        leaders.length === 1 &&
        leader !== undefined &&
        cores.every(
          (c) =>
            c.term === leader.term &&
            c.leader === leader.id &&
            c.log.committed === leader.log.committed,
        );
      if (awake.length > 0 || !agree) {
        this.violation(
          'settled-quiescent',
          `r${d.rangeId}: awake [${awake.join(', ')}], ` +
            `${cores.map((c) => `n${c.id} ${c.role}@${c.term} leader=${c.leader} commit=${c.log.committed}`).join('; ')}`,
        );
      }
    }
  }

  private step(): boolean {
    const e = this.queue.pop();
    if (e === undefined) return false;
    this.nowMs = e.at;
    e.fn();
    return true;
  }

  runUntil(untilMs: number): void {
    // Bounded: events are finite per simulated ms (ticks, messages, clients).
    for (;;) {
      const e = this.queue.pop();
      if (e === undefined) break;
      if (e.at > untilMs) {
        this.queue.push(e.at, e.fn);
        break;
      }
      this.nowMs = e.at;
      e.fn();
    }
    this.nowMs = Math.max(this.nowMs, untilMs);
  }

  /**
   * After settling: the latest descriptors tile the keyspace; every node holds an
   * initialized replica of each of those ranges at that descriptor (so its ranges tile the
   * keyspace too) and nothing else; the replicas of each range applied the same index and
   * hold the same state.
   */
  private checkConvergence(): void {
    const latest = this.directory.latest();
    const tiling = tilingProblem(latest);
    if (tiling !== undefined) this.violation('ranges-tile', `at the end: ${tiling}`);
    for (const node of this.nodes) {
      const mine = [...node.ranges.values()];
      const wrong = mine.filter((h) => {
        const d = latest.find((x) => x.rangeId === h.rangeId);
        return !h.initialized || d === undefined || d.generation !== h.kv.descriptor.generation;
      });
      if (wrong.length > 0 || mine.length !== latest.length) {
        this.violation(
          'replicas-converge',
          `n${node.id} holds ${mine.map((h) => `${showSpan(h.kv.descriptor)}${h.initialized ? '' : ' (uninitialized)'}`).join(' ')}; ` +
            `the ranges are ${latest.map(showSpan).join(' ')}`,
        );
      }
    }
    for (const d of latest) {
      const hosts = this.nodes.flatMap((n) => {
        const h = n.ranges.get(d.rangeId);
        return h ? [h] : [];
      });
      if (hosts.length !== this.nodes.length) continue; // reported above
      const maxApplied = Math.max(...hosts.map((h) => h.kv.appliedIndex));
      const digests = new Set(hosts.map((h) => h.kv.digest()));
      const lagging = hosts.filter((h) => h.kv.appliedIndex !== maxApplied);
      if (lagging.length > 0) {
        this.violation(
          'replicas-converge',
          `r${d.rangeId}: applied ${hosts.map((h) => h.kv.appliedIndex).join(',')} after settling`,
        );
      } else if (digests.size > 1) {
        this.violation('state-machines-agree', `r${d.rangeId}: replicas at ${maxApplied} differ`);
      }
    }
  }
}
