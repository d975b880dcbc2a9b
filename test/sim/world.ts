// The deterministic simulator: N nodes, each hosting one replica of each of G groups,
// with simulated time and clocks (bounded drift), a network that drops, delays,
// duplicates and reorders messages and can be partitioned (symmetric, one-way, partial),
// storage that loses whatever was not synced when a node crashes, and clients doing
// set/get/cas/del. Everything is chosen from one seed, so a run replays exactly.
//
// With quiescence on, nodes also exchange a node heartbeat every tick over the same
// network (node liveness, as the node does), quiescent replicas are not ticked, and a
// quiescent follower is told when its leader's node lapses.
//
// Checkers run after every event (one leader per term, no overlapping leases, committed
// entries never change, log matching, the machine's role and lifecycle equal the core's,
// a quiescent replica sends nothing of an active one) and at the end (linearizability of
// every client history, no acknowledged write lost, final reads all succeed, replicas
// converge, and with quiescence an idle settled cluster is all quiescent).

import type { ConsensusOptions, Entry, Message, PersistedState } from '../../ranges/core/types.ts';
import { RangeReplica } from '../../ranges/replica/replica.ts';
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
  decodeCommand,
  encodeCommand,
  KvStateMachine,
} from './kv.ts';

/** The simulator's KV state machine as durable storage restores and advances it. */
const kvOps: StateMachineOps<KvStateMachine> = {
  decode: (bytes) => KvStateMachine.decode(bytes),
  apply: (kv, e) => {
    if (e.kind === 'normal') kv.apply(e.index, decodeCommand(e.data));
    else kv.appliedIndex = e.index;
  },
};

export interface SimConfig {
  readonly name: string;
  readonly nodes: number;
  readonly groups: number;
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
  /** Storage sync (fsync) latency is uniform in [0.1, syncMsMax]. */
  readonly syncMsMax: number;
  /** Entries after the snapshot point that trigger log truncation. */
  readonly compactEntries: number;
  readonly clients: number;
  readonly opsPerClient: number;
  readonly keys: number;
}

export interface Violation {
  readonly checker: string;
  readonly message: string;
  readonly atMs: number;
}

type Durable = DurableOf<KvStateMachine>;

interface PendingProposal {
  readonly term: number;
  readonly reply: (r: Reply) => void;
}

interface GroupHost {
  readonly group: number;
  replica: RangeReplica;
  kv: KvStateMachine;
  durable: Durable;
  ops: StorageOp[];
  maxWriteId: number;
  proposals: Map<number, PendingProposal>;
  reads: Map<number, (r: Reply) => void>;
  /** Reads whose read state arrived before the entries they wait for were applied. */
  readsWaiting: { index: number; id: number }[];
  lastRole: string;
  lastTerm: number;
  lastQuiescent: boolean;
}

interface SimNode {
  readonly id: number;
  up: boolean;
  epoch: number;
  bootAtMs: number;
  clockOffsetMs: number;
  readonly clockRate: number;
  syncScheduled: boolean;
  groups: GroupHost[];
  /** Node liveness: when this node last heard each node's heartbeat, on its own clock. */
  heardAtMs: number[];
}

type Reply =
  | { readonly kind: 'ok'; readonly value: string | null; readonly result?: CommandResult }
  | { readonly kind: 'notLeader'; readonly hint: number }
  | { readonly kind: 'retry' };

interface Request {
  readonly f: 'get' | 'set' | 'cas' | 'del';
  readonly key: string;
  readonly value: string | null;
  readonly expect: string | null;
  readonly requestId: string;
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

const emptyConfig = (n: number) => ({
  voters: Array.from({ length: n }, (_, i) => i + 1),
  outgoing: [],
  learners: [],
});

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
  /** Per group: committed normal entries per simulated second bucket. */
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
  /** Per group: index -> term and command bytes of every committed entry seen. */
  private readonly committed: Map<number, { term: number; data: string }>[] = [];
  /** Per group: (index, term) -> command bytes of every entry written to a log. */
  private readonly written: Map<string, string>[] = [];
  /** Per group: term -> the replica that led it. */
  private readonly leaders: Map<number, number>[] = [];
  private lastLeader: string[] = [];
  /** Per group: term -> the latest real time a leader of that term believed its lease ran to. */
  private readonly leaseUntil: Map<number, number>[] = [];
  /** Per group: term -> when a leader of that term first advanced its commit index. */
  private readonly firstCommitAt: Map<number, number>[] = [];
  /** Per group: the latest lapse (its leader's term, whether its node was down), until an election. */
  private readonly lapsed: ({ term: number; leaderDown: boolean } | undefined)[] = [];
  /** Client idle periods [start, end) in simulated ms, ascending. */
  private readonly idlePeriods: [number, number][] = [];
  private readonly livenessTimeoutMs: number;
  private clientsActive = 0;

  constructor(config: SimConfig, seed: number) {
    this.config = config;
    this.seed = seed;
    this.prng = new Prng(seed);
    this.blocked = Array.from({ length: config.nodes + 1 }, () =>
      new Array<boolean>(config.nodes + 1).fill(false),
    );
    for (let g = 0; g < config.groups; g++) {
      this.committed.push(new Map());
      this.written.push(new Map());
      this.leaders.push(new Map());
      this.lastLeader.push('');
      this.leaseUntil.push(new Map());
      this.firstCommitAt.push(new Map());
      this.lapsed.push(undefined);
    }
    this.livenessTimeoutMs = config.options.electionTicks * config.tickMs;
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
        groups: [],
        heardAtMs: new Array<number>(config.nodes + 1).fill(Number.NEGATIVE_INFINITY),
      };
      for (let g = 0; g < config.groups; g++) {
        const durable: Durable = {
          hardState: { term: 0, vote: 0, commit: 0 },
          snapshot: { index: 0, term: 0, config: emptyConfig(config.nodes) },
          entries: [],
          kv: new KvStateMachine(),
        };
        node.groups.push(this.newGroupHost(node, g, durable));
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

  // ------------------------------------------------------------------ nodes

  private localNowMs(node: SimNode): number {
    return node.clockOffsetMs + (this.nowMs - node.bootAtMs) * node.clockRate;
  }

  private newGroupHost(node: SimNode, group: number, durable: Durable): GroupHost {
    const kv = durable.kv.clone();
    const state: PersistedState = {
      hardState: durable.hardState,
      snapshot: durable.snapshot,
      entries: durable.entries,
      applied: kv.appliedIndex,
    };
    const random = this.prng.fork();
    const host: GroupHost = {
      group,
      kv,
      durable,
      ops: [],
      maxWriteId: 0,
      proposals: new Map(),
      reads: new Map(),
      readsWaiting: [],
      lastRole: 'follower',
      lastTerm: durable.hardState.term,
      lastQuiescent: false,
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
    return host;
  }

  private boot(node: SimNode): void {
    node.up = true;
    node.epoch++;
    node.bootAtMs = this.nowMs;
    node.clockOffsetMs = this.prng.range(0, 1e6); // a new process's monotonic clock
    node.heardAtMs.fill(Number.NEGATIVE_INFINITY); // a new process has heard no one yet
    node.groups = node.groups.map((h) => this.newGroupHost(node, h.group, h.durable));
    this.scheduleTick(node, node.epoch);
  }

  private crash(node: SimNode): void {
    node.up = false;
    node.epoch++;
    node.syncScheduled = false;
    for (const h of node.groups) h.ops = []; // not synced: lost
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
      for (const h of node.groups) {
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
  private leaderLapsed(node: SimNode, h: GroupHost): void {
    const core = h.replica.core;
    const leaderNode = this.nodes[core.leader - 1];
    this.log(`n${node.id} g${h.group} leader n${core.leader} lapsed`);
    this.stats.lapses++;
    const seen = this.lapsed[h.group];
    if (seen === undefined || seen.term < core.term) {
      this.lapsed[h.group] = { term: core.term, leaderDown: leaderNode?.up === false };
    }
    h.replica.leaderLapsed();
  }

  private scheduleSync(node: SimNode): void {
    if (node.syncScheduled) return;
    node.syncScheduled = true;
    const epoch = node.epoch;
    this.queue.push(this.nowMs + this.prng.range(0.1, this.config.syncMsMax), () => {
      if (!node.up || node.epoch !== epoch) return;
      node.syncScheduled = false;
      for (const h of node.groups) {
        const ops = h.ops;
        h.ops = [];
        let maxWrite = 0;
        for (const op of ops) {
          makeDurable(h.durable, op, kvOps);
          if (op.kind === 'write') maxWrite = op.write.id;
        }
        if (maxWrite > 0) h.replica.persisted(maxWrite);
        this.process(node, h);
      }
    });
  }

  /** One host turn: collect ready output, send, persist, apply, serve reads. */
  private process(node: SimNode, h: GroupHost): void {
    const r = h.replica;
    for (let turns = 0; turns < 8 && r.hasReady(); turns++) {
      const rd = r.ready();
      if (r.quiescent()) this.checkQuiet(node, h, rd.messages);
      for (const m of rd.messages) this.sendMessage(node.id, h.group, m);
      if (rd.write) {
        this.checkWrittenEntries(h.group, rd.write.entries);
        if (rd.write.snapshot) {
          h.kv = KvStateMachine.decode(rd.write.snapshot.data);
          this.log(`n${node.id} g${h.group} install snapshot @${rd.write.snapshot.meta.index}`);
        }
        h.ops.push({ kind: 'write', write: rd.write });
        this.scheduleSync(node);
      }
      if (rd.committed.length > 0) {
        for (const e of rd.committed) this.applyEntry(node, h, e);
        h.ops.push({ kind: 'apply', entries: rd.committed });
        this.scheduleSync(node);
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

  private serveReads(h: GroupHost): void {
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

  private maybeCompact(_node: SimNode, h: GroupHost): void {
    const core = h.replica.core;
    const applied = h.kv.appliedIndex;
    if (applied - core.log.snapshot.index < this.config.compactEntries) return;
    if (applied > core.log.stable) return;
    core.compact(applied);
    h.ops.push({ kind: 'compact', meta: core.log.snapshot });
  }

  private applyEntry(node: SimNode, h: GroupHost, e: Entry): void {
    const data = e.kind === 'normal' ? new TextDecoder().decode(e.data) : e.kind;
    const seen = this.committed[h.group]!.get(e.index);
    if (seen === undefined) {
      this.committed[h.group]!.set(e.index, { term: e.term, data });
      if (e.kind === 'normal') {
        const second = Math.floor(this.nowMs / 1000);
        this.stats.commitsPerSecond[second] = (this.stats.commitsPerSecond[second] ?? 0) + 1;
      }
    } else if (seen.term !== e.term || seen.data !== data) {
      this.violation(
        'committed-entries-never-change',
        `g${h.group} n${node.id} applied index ${e.index} term ${e.term} but term ${seen.term} was committed there`,
      );
    }
    let result: CommandResult | undefined;
    if (e.kind === 'normal') result = h.kv.apply(e.index, decodeCommand(e.data));
    else h.kv.appliedIndex = e.index;
    const p = h.proposals.get(e.index);
    if (p) {
      h.proposals.delete(e.index);
      if (p.term === e.term && result) p.reply({ kind: 'ok', value: null, result });
      else p.reply({ kind: 'retry' }); // our entry was overwritten: that attempt failed
    }
  }

  private checkWrittenEntries(group: number, entries: readonly Entry[]): void {
    const w = this.written[group]!;
    for (const e of entries) {
      const key = `${e.index}/${e.term}`;
      const data = e.kind === 'normal' ? new TextDecoder().decode(e.data) : e.kind;
      const seen = w.get(key);
      if (seen === undefined) w.set(key, data);
      else if (seen !== data) {
        this.violation(
          'log-matching',
          `g${group} two different entries at index ${e.index} term ${e.term}`,
        );
      }
    }
  }

  /**
   * A quiescent replica sends nothing an active one would: no append, snapshot, vote
   * request or TimeoutNow, and only the quiesce heartbeats of its last turn as a leader.
   */
  private checkQuiet(node: SimNode, h: GroupHost, messages: readonly Message[]): void {
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
          `n${node.id} g${h.group} sent ${m.type} while quiescent`,
        );
      }
    }
  }

  /** Per-event checks of one replica: role mirror, leader per term, role-change trace. */
  private observe(node: SimNode, h: GroupHost): void {
    const core = h.replica.core;
    const role = h.replica.role();
    const quiescent = h.replica.quiescent();
    if (role !== core.role || quiescent !== core.quiescent) {
      this.violation(
        'machine-owns-role',
        `n${node.id} machine is ${role}${quiescent ? ' (quiescent)' : ''}, core is ` +
          `${core.role}${core.quiescent ? ' (quiescent)' : ''}`,
      );
    }
    if (role !== h.lastRole || core.term !== h.lastTerm) {
      this.log(`n${node.id} g${h.group} ${h.lastRole}@${h.lastTerm} -> ${role}@${core.term}`);
      h.lastRole = role;
      h.lastTerm = core.term;
    }
    if (quiescent !== h.lastQuiescent) {
      this.log(`n${node.id} g${h.group} ${quiescent ? 'quiesce' : 'wake'} ${role}@${core.term}`);
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
        this.observeCommit(h.group, core.term);
      }
      const leaders = this.leaders[h.group]!;
      const other = leaders.get(core.term);
      if (other === undefined) {
        leaders.set(core.term, node.id);
      } else if (other !== node.id) {
        this.violation(
          'one-leader-per-term',
          `g${h.group} term ${core.term}: n${other} and n${node.id}`,
        );
      }
      const tag = `${core.term}/${node.id}`;
      if (this.lastLeader[h.group] !== tag) {
        if (this.lastLeader[h.group] !== '') this.stats.leaderChanges++;
        this.lastLeader[h.group] = tag;
      }
      const lapse = this.lapsed[h.group];
      if (lapse !== undefined && core.term > lapse.term) {
        // A quiescent range whose leader's node lapsed woke and elected a new leader.
        this.stats.lapseElections++;
        if (lapse.leaderDown) this.stats.lapseElectionsLeaderDown++;
        this.lapsed[h.group] = undefined;
        this.log(`g${h.group} elected n${node.id}@${core.term} after a lapse`);
      }
    }
  }

  /**
   * Lease checks, after every event:
   * - at most one replica of a group holds a valid lease at any instant;
   * - the lease invariant itself: while a leader of term T believes its lease runs until
   *   real time E, no leader of a newer term commits anything before E (else a lease
   *   read could miss that write).
   */
  private checkLeases(): void {
    for (let g = 0; g < this.config.groups; g++) {
      this.endLostLeases(g);
      let holder = 0;
      for (const node of this.nodes) {
        if (!node.up) continue;
        const core = node.groups[g]!.replica.core;
        if (core.leaseYielded()) {
          // A transfer ends the lease early: from now on the leader serves no lease read.
          const held = this.leaseUntil[g]!;
          const until = held.get(core.term);
          if (until !== undefined && until > this.nowMs) held.set(core.term, this.nowMs);
        }
        if (!core.hasValidLease()) continue;
        if (holder !== 0) {
          this.violation(
            'no-overlapping-leases',
            `g${g} n${holder} and n${node.id} both hold a lease`,
          );
        }
        holder = node.id;
        const expiry = this.realTimeOf(node, core.leaseExpiryMs());
        const held = this.leaseUntil[g]!;
        if ((held.get(core.term) ?? Number.NEGATIVE_INFINITY) < expiry) {
          held.set(core.term, expiry);
          for (const [term, at] of this.firstCommitAt[g]!) {
            if (term > core.term && at < expiry) this.leaseBroken(g, core.term, expiry, term, at);
          }
        }
      }
    }
  }

  /**
   * A leader that stopped leading (stepped down, or crashed) serves no lease read from now
   * on: its lease ends now. A quiescent leader is still leader, and keeps its entry.
   */
  private endLostLeases(g: number): void {
    const held = this.leaseUntil[g]!;
    for (const [term, until] of held) {
      if (until <= this.nowMs) continue;
      const leading = this.nodes.some((n) => {
        const core = n.groups[g]!.replica.core;
        return n.up && core.role === 'leader' && core.term === term;
      });
      if (!leading) held.set(term, this.nowMs);
    }
  }

  /** A leader of `term` advanced its commit index now. */
  private observeCommit(group: number, term: number): void {
    const first = this.firstCommitAt[group]!;
    if (first.has(term)) return;
    first.set(term, this.nowMs);
    for (const [leaseTerm, until] of this.leaseUntil[group]!) {
      if (leaseTerm < term && this.nowMs < until)
        this.leaseBroken(group, leaseTerm, until, term, this.nowMs);
    }
  }

  private leaseBroken(g: number, leaseTerm: number, until: number, term: number, at: number): void {
    this.violation(
      'lease-excludes-newer-commits',
      `g${g}: the term ${leaseTerm} leader held a lease until ${until.toFixed(3)} ms but ` +
        `the term ${term} leader committed at ${at.toFixed(3)} ms`,
    );
  }

  /** Converts a node's local clock reading to simulated real time. */
  private realTimeOf(node: SimNode, localMs: number): number {
    return node.bootAtMs + (localMs - node.clockOffsetMs) / node.clockRate;
  }

  // ------------------------------------------------------------------ network

  private sendMessage(from: number, group: number, m: Message): void {
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
      const h = this.nodes[to - 1]!.groups[group]!;
      h.replica.step([m]);
      this.process(this.nodes[to - 1]!, h);
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
          for (const h of node.groups) {
            if (h.replica.role() !== 'leader') continue;
            const target = 1 + ((node.id + this.prng.int(n - 1)) % n);
            this.log(`FAULT transfer g${h.group} n${node.id} -> n${target}`);
            h.replica.transferLeadership(target);
            this.process(node, h);
          }
        }
        return;
      }
    }
  }

  // ------------------------------------------------------------------ clients

  private groupOf(key: string): number {
    let hash = 0;
    for (let i = 0; i < key.length; i++) hash = (hash * 31 + key.charCodeAt(i)) >>> 0;
    return hash % this.config.groups;
  }

  /** Delivers a client request to a node (no loss on client links, only delay). */
  private request(nodeId: number, req: Request, reply: (r: Reply) => void): void {
    const deliver = (r: Reply) =>
      this.queue.push(this.nowMs + this.prng.range(0.05, 1), () => reply(r));
    this.queue.push(this.nowMs + this.prng.range(0.05, 1), () => {
      const node = this.nodes[nodeId - 1]!;
      if (!node.up) return; // the client times out
      const h = node.groups[this.groupOf(req.key)]!;
      if (req.f === 'get') {
        const readId = this.nextReadId++;
        const err = h.replica.read(readId);
        if (err) {
          deliver({ kind: 'notLeader', hint: err.leaderHint });
        } else {
          const epoch = node.epoch;
          h.reads.set(readId, (r) => {
            if (r.kind === 'ok' && node.epoch === epoch) {
              deliver({ kind: 'ok', value: h.kv.data.get(req.key) ?? null });
            } else deliver(r);
          });
        }
      } else {
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
        const res = h.replica.propose([encodeCommand(cmd)]);
        if ('code' in res) {
          deliver(
            res.code === 'notLeader'
              ? { kind: 'notLeader', hint: res.leaderHint }
              : { kind: 'retry' },
          );
        } else {
          h.proposals.set(res.index, { term: res.term, reply: deliver });
        }
      }
      this.process(node, h);
    });
  }

  private nextReadId = 1;

  private runClient(process: number, ops: number, final: string[] | null): void {
    const prng = this.prng.fork();
    const keys = Array.from({ length: this.config.keys }, (_, i) => `k${i}`);
    let leaderGuess = 1 + prng.int(this.config.nodes);
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
      const f: Request['f'] = final
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
      const req: Request = { f, key, value, expect, requestId: `${process}-${opNo}` };
      const invoke = this.nowMs;
      let attempt = 0;
      let proposed = false;
      let done = false;
      const finish = (type: HistoryOp['type'], r?: Reply) => {
        done = true;
        let v: string | null = req.value;
        let ok: boolean | null = null;
        if (r?.kind === 'ok') {
          if (f === 'get') v = r.value;
          if (r.result?.op === 'del') v = r.result.value;
          if (r.result?.op === 'cas') ok = r.result.success;
          if (f === 'set' || (f === 'cas' && ok)) this.lastValues.set(key, req.value!);
        }
        if (f === 'del' && type !== 'ok') v = null;
        this.history.push({
          process,
          f,
          key,
          value: v,
          expect: req.expect,
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
        const target = leaderGuess;
        this.request(target, req, (r) => {
          if (done || mine !== attempt) return;
          if (r.kind === 'ok') finish('ok', r);
          else {
            leaderGuess =
              r.kind === 'notLeader' && r.hint !== 0 ? r.hint : 1 + prng.int(this.config.nodes);
            attempt++;
            this.queue.push(this.nowMs + prng.range(1, 10), tryOnce);
          }
        });
        this.queue.push(this.nowMs + attemptMs, () => {
          if (done || mine !== attempt) return;
          leaderGuess = 1 + prng.int(this.config.nodes);
          tryOnce();
        });
      };
      tryOnce();
    };
    this.queue.push(this.afterIdle(this.nowMs + prng.range(0, 20), prng), nextOp);
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

  /** The node currently leading group g with the highest term, or 0. */
  leaderOf(group: number): number {
    let best = 0;
    let bestTerm = -1;
    for (const node of this.nodes) {
      const core = node.groups[group]!.replica.core;
      if (node.up && core.role === 'leader' && core.term > bestTerm) {
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
   * An idle, healed cluster goes quiet: every replica is quiescent, and every group has
   * one leader whose term and commit index its followers share.
   */
  private checkSettledQuiescent(): void {
    for (let g = 0; g < this.config.groups; g++) {
      const cores = this.nodes.map((n) => n.groups[g]!.replica.core);
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
          `g${g}: awake [${awake.join(', ')}], ` +
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
    this.checkLeases();
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
      this.checkLeases();
    }
    this.nowMs = Math.max(this.nowMs, untilMs);
  }

  private checkConvergence(): void {
    for (let g = 0; g < this.config.groups; g++) {
      const hosts = this.nodes.map((n) => n.groups[g]!);
      const maxApplied = Math.max(...hosts.map((h) => h.kv.appliedIndex));
      const digests = new Set(hosts.map((h) => h.kv.digest()));
      const lagging = hosts.filter((h) => h.kv.appliedIndex !== maxApplied);
      if (lagging.length > 0) {
        this.violation(
          'replicas-converge',
          `g${g}: applied ${hosts.map((h) => h.kv.appliedIndex).join(',')} after settling`,
        );
      } else if (digests.size > 1) {
        this.violation('state-machines-agree', `g${g}: replicas at ${maxApplied} differ`);
      }
    }
  }
}
