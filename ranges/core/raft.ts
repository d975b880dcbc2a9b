// The Harpoon consensus core: Raft with PreVote, follower-granted leader leases, and
// abdication without a quorum of grants. Pure and synchronous: time is ticks plus an
// injected monotonic clock, randomness an injected seeded source, and I/O is the caller's.
//
// The role switch is not here: the range machine (ranges/replica/machine.ts) owns which
// role is live. Every handler below belongs to one role and returns the role change it
// wants (or undefined); only the machine calls the become* functions.
//
// Quiescence (the lifecycle state beside active): an idle leader and its caught-up
// followers stop ticking. The host asks wantsQuiesce() after a tick or a message batch and
// the machine runs quiesce(); while quiescent, messages go to stepQuiescent(), which
// returns a WAKE when one needs the active role; the machine runs wake(). See
// docs/consensus.md, "Quiescence".
//
// Output: see ready.ts. Messages that depend on durable state (vote and append
// acknowledgements, vote requests) are held inside the core until the write they depend
// on is reported persisted, so a caller cannot send them early.

import { assert, InvariantViolation } from './assert.ts';
import { entryBytes, RaftLog } from './log.ts';
import {
  becomeProbe,
  becomeReplicate,
  isPaused,
  newProgress,
  type Progress,
  updateMatch,
} from './progress.ts';
import { allMembers, allVoters, isVoter, quorumValue, voteOutcome } from './quorum.ts';
import type { Ready, StorageWrite } from './ready.ts';
import type {
  Append,
  AppendResponse,
  Configuration,
  ConsensusOptions,
  CoreEnvironment,
  Entry,
  Heartbeat,
  LogIndex,
  Message,
  PersistedState,
  ProposeError,
  ReadState,
  ReplicaId,
  Role,
  SnapshotChunk,
  SnapshotMeta,
  SnapshotResponse,
  Term,
  VoteRequest,
} from './types.ts';
import { none } from './types.ts';

export type RoleChange =
  | { readonly type: 'BECOME_FOLLOWER'; readonly term: Term; readonly leader: ReplicaId }
  | { readonly type: 'BECOME_PRECANDIDATE' }
  | { readonly type: 'BECOME_CANDIDATE'; readonly transfer: boolean }
  | { readonly type: 'BECOME_LEADER' };

/** Result of stepping a batch of messages: a role change and the messages left after it. */
export interface StepResult {
  readonly change: RoleChange;
  readonly rest: readonly Message[];
}

/**
 * Lifecycle changes between active and quiescent (a leader or follower keeps its role).
 * `leaderLapsed`: the follower wakes because its leader's node is no longer live, and
 * campaigns soon (within one election timeout, at a random point).
 */
export type LifecycleChange =
  | { readonly type: 'QUIESCE' }
  | { readonly type: 'WAKE'; readonly leaderLapsed: boolean };

/** Result of stepping a batch while quiescent: wake, then step `rest` in the active role. */
export interface WakeResult {
  readonly change: { readonly type: 'WAKE'; readonly leaderLapsed: boolean };
  readonly rest: readonly Message[];
}

/** A follower's record of the leader's quiesce heartbeat it accepted. */
interface QuiesceRequest {
  readonly term: Term;
  readonly leader: ReplicaId;
  readonly index: LogIndex;
  /** The heartbeat's lease round: the leader sent every message up to it before quiescing. */
  readonly seq: number;
}

interface PendingRead {
  readonly id: number;
  readonly index: LogIndex;
  /** The lease round whose quorum confirms leadership; 0 until a round is started. */
  seq: number;
}

interface Receiving {
  readonly meta: SnapshotMeta;
  readonly chunks: Uint8Array[];
  received: number;
}

/**
 * leaseHeldUntilMs when no expiry is known: before any clock reading (clocks start at 0),
 * and a small integer for V8 (-Infinity would be a heap number).
 */
const leaseNeverMs = -0x40000000;
/** Shared empty outputs of ready() (never written to: a ready with nothing allocates nothing). */
const noMessages: Message[] = [];
const noReadStates: ReadState[] = [];
const noReads: number[] = [];

interface InFlightWrite {
  readonly id: number;
  readonly lastIndex: LogIndex;
  readonly lastTerm: Term;
  readonly snapshotIndex: LogIndex | undefined;
  held: Message[];
}

const isLeaderMessage = (m: Message): boolean =>
  m.type === 'append' || m.type === 'heartbeat' || m.type === 'snapshot' || m.type === 'timeoutNow';

/**
 * An empty map that throws on write, shared by every replica: a replica keeps its votes,
 * progress and lease rounds in it while its role has none (an empty Map costs about 200
 * bytes, and a node holds thousands of replicas). Code that needs one makes its own.
 */
class NeverWrittenMap extends Map<never, never> {
  override set(): this {
    throw new InvariantViolation('the shared empty map is never written');
  }
}
const sharedEmpty = new NeverWrittenMap();

function neverWritten<K, V>(): Map<K, V> {
  return sharedEmpty as unknown as Map<K, V>;
}

export class RaftCore {
  readonly id: ReplicaId;
  readonly options: ConsensusOptions;
  private readonly env: CoreEnvironment;

  config: Configuration;
  term: Term;
  vote: ReplicaId;
  leader: ReplicaId = none;
  /** Mirror of the machine's role, written only by the become* functions. */
  role: Role = 'follower';
  /**
   * Mirror of the machine's lifecycle (quiescent or active), written only by quiesce() and
   * wake(). Invariant: quiescent implies role is leader or follower.
   */
  quiescent = false;
  readonly log: RaftLog;

  // What a lease read reads (hasValidLease, leaseReadIndex), declared together so that they
  // share a cache line or two of the object: a leader of many busy ranges checks one
  // range's lease after another's, each mostly out of the CPU's caches
  // (docs/architecture.md, "Lookups over packed keys").
  /** options.mode is 'harpoon' (leases); a field of the core, read without the options. */
  private readonly harpoon: boolean = false;
  /** Index of the leader's first entry of its term; reads wait until it commits. */
  private leaderStartIndex: LogIndex = 0;
  /** Set for the rest of a term once a transfer started: that term serves no lease reads. */
  private leaseReadsDisabled = false;
  /**
   * A lease expiry computed earlier (hasValidLease), rounded down to a whole millisecond,
   * or leaseNeverMs. Between two drops of the lease rounds (a role change, quiescence) the
   * lease start only moves forward: acked seqs only grow, a later round was sent later,
   * and a round is forgotten only once it is too old to hold a lease. So an expiry
   * computed earlier is a lower bound of the current one, and a read before it needs no
   * quorum computation (which cost a lease read at 256 ranges about 0.7 us, profiled).
   * Whole milliseconds: V8 keeps a small integer in the object itself, where a fraction
   * is a separate heap number, one more object a lease read reads (rounding down only
   * shortens the lease). Reset with the rounds (dropLeaseRounds).
   */
  private leaseHeldUntilMs = leaseNeverMs;
  /** Leader: ticks since the last proposal, read, transfer or wake. */
  private idleTicks = 0;

  private electionElapsedTicks = 0;
  private heartbeatElapsedTicks = 0;
  /** The last round skipped a follower (heartbeatOwed has something to look at). */
  private heartbeatsOwed = false;
  private randomizedElectionTicks: number;
  // votes, progress and seqSentAtMs are shared empty maps (never written) while the role
  // does not use them; a campaign, a new leader and a lease round make their own.
  private votes: Map<ReplicaId, boolean> = neverWritten();
  private progress: Map<ReplicaId, Progress> = neverWritten();

  // Leader lease (harpoon): every leader message carries `seq`; seqSentAtMs maps each
  // round to the time it was first sent (earliest send, so lease accounting is
  // conservative). A round is opened each heartbeat and for ReadIndex.
  private seq = 0;
  private seqSentAtMs: Map<number, number> = neverWritten();
  /**
   * When this replica became leader or last woke from quiescence: abdication counts from
   * here at the earliest, so the time a leader slept never makes it abdicate.
   */
  private activeSinceMs = 0;
  /** A leader that woke owes its followers a heartbeat (a new lease round) in ready(). */
  private wakeRoundPending = false;
  private transferee: ReplicaId = none;
  private transferElapsedTicks = 0;
  private uncommittedBytes = 0;

  // Follower side of leases.
  private grantedUntilMs = Number.NEGATIVE_INFINITY;
  private grantedTo: ReplicaId = none;
  /** After a restart this replica may have forgotten a grant: it votes for no one until then. */
  private voteBlackoutUntilMs = Number.NEGATIVE_INFINITY;
  /** A replica of a group just split off does not campaign before this (see splitOff). */
  private campaignNotBeforeMs = Number.NEGATIVE_INFINITY;

  // Quiescence (and idleTicks, above).
  /** Follower: the quiesce heartbeat it accepted, until another leader message arrives. */
  private quiesceRequest: QuiesceRequest | undefined;
  /**
   * Quiescent follower: the lease round of its leader's quiesce heartbeat. A leader message
   * of this term with a round up to it was sent before the leader quiesced (a late or
   * duplicated one) and does not wake the follower; a woken leader opens a new round first.
   */
  private quiescedSeq = 0;

  private pendingReads: PendingRead[] = [];
  private readStates: ReadState[] = [];
  private droppedReads: number[] = [];
  private receiving: Receiving | undefined;

  // Output bookkeeping.
  private outbox: Message[] = [];
  private heldForNextWrite: Message[] = [];
  private inFlightWrites: InFlightWrite[] = [];
  private nextWriteId = 1;
  private dirtyFrom: LogIndex = Number.POSITIVE_INFINITY;
  private pendingSnapshotWrite: { meta: SnapshotMeta; data: Uint8Array } | undefined;
  private writtenTerm: Term;
  private writtenVote: ReplicaId;
  private broadcastPending = false;

  constructor(
    id: ReplicaId,
    state: PersistedState,
    options: ConsensusOptions,
    env: CoreEnvironment,
  ) {
    assert(id !== none, 'replica ids are non-zero');
    assert(options.heartbeatTicks < options.electionTicks, 'heartbeat is shorter than election');
    this.id = id;
    this.options = options;
    this.harpoon = options.mode === 'harpoon';
    this.env = env;
    this.config = state.snapshot.config;
    this.term = state.hardState.term;
    this.vote = state.hardState.vote;
    this.writtenTerm = this.term;
    this.writtenVote = this.vote;
    this.log = new RaftLog(state.snapshot, state.entries, state.hardState.commit);
    assert(state.applied >= state.snapshot.index, 'applied is at or after the snapshot');
    this.log.applying = Math.min(state.applied, this.log.lastIndex());
    this.log.committed = Math.max(this.log.committed, this.log.applying);
    this.randomizedElectionTicks = this.randomElectionTicks();
    if (options.mode === 'harpoon' && this.term > 0) {
      // It may have granted a lease before the restart and forgotten it.
      this.voteBlackoutUntilMs = env.nowMs() + options.leaseDurationMs;
    }
  }

  // ---------------------------------------------------------------- queries

  isPromotable(): boolean {
    return isVoter(this.config, this.id);
  }

  /**
   * Whether a lease read may be served now. A quiescent leader holds no lease. `nowMs`, a
   * reading of the environment's clock the host took earlier (see leaseReadIndex), stands
   * for now when given.
   */
  hasValidLease(nowMs?: number): boolean {
    if (!this.harpoon || this.role !== 'leader' || this.quiescent) return false;
    if (this.leaseReadsDisabled || !this.ownTermCommitted()) return false;
    const now = nowMs ?? this.env.nowMs();
    if (now < this.leaseHeldUntilMs) return true;
    const expiryMs = this.leaseExpiryMs();
    this.leaseHeldUntilMs = expiryMs > leaseNeverMs ? Math.floor(expiryMs) : leaseNeverMs;
    return now < expiryMs;
  }

  /**
   * The lease expiry hasValidLease last proved, whole milliseconds rounded down (or a
   * negative number): a lower bound of the lease until the core changes (RangeReplica's
   * lease gate).
   */
  leaseProvenUntilMs(): number {
    return this.leaseHeldUntilMs;
  }

  /** Forgets the lease rounds, and with them the lease expiry kept from them (hasValidLease). */
  private dropLeaseRounds(): void {
    this.seqSentAtMs = neverWritten();
    this.leaseHeldUntilMs = leaseNeverMs;
  }

  /** A leader that started a leadership transfer serves no lease read for the rest of its term. */
  leaseYielded(): boolean {
    return this.role === 'leader' && this.leaseReadsDisabled;
  }

  /** When the leader's quorum lease ends, on its own clock (with the drift margin). */
  leaseExpiryMs(): number {
    const o = this.options;
    return this.leaseStartMs() + o.leaseDurationMs - o.leaseDurationMs * o.maxDriftRate;
  }

  /** Send time of the latest lease round a quorum has answered (the leader counts as now). */
  private leaseStartMs(): number {
    const now = this.env.nowMs();
    return quorumValue(
      this.config,
      (id) => {
        if (id === this.id) return now;
        const pr = this.progress.get(id);
        return pr === undefined ? undefined : this.seqSentAtMs.get(pr.ackedSeq);
      },
      Number.NEGATIVE_INFINITY,
    );
  }

  /** Voters other than this replica: whom a campaign asks. */
  private peerVoters(): ReplicaId[] {
    return allVoters(this.config).filter((id) => id !== this.id);
  }

  private ownTermCommitted(): boolean {
    return this.role === 'leader' && this.log.committed >= this.leaderStartIndex;
  }

  status() {
    return {
      id: this.id,
      role: this.role,
      term: this.term,
      leader: this.leader,
      commit: this.log.committed,
      applied: this.log.applying,
      lastIndex: this.log.lastIndex(),
      lease: this.hasValidLease(),
      quiescent: this.quiescent,
    };
  }

  // ---------------------------------------------------------------- role entry (machine only)

  becomeFollower(term: Term, leader: ReplicaId): RoleChange | undefined {
    assert(term >= this.term, 'terms never go backwards');
    if (term > this.term) {
      this.term = term;
      this.vote = none;
    }
    this.resetRoleState();
    this.role = 'follower';
    this.leader = leader;
    return undefined;
  }

  becomePreCandidate(): RoleChange | undefined {
    assert(this.isPromotable(), 'only voters campaign');
    this.resetRoleState();
    this.role = 'preCandidate';
    this.leader = none;
    this.votes = new Map([[this.id, true]]);
    for (const to of this.peerVoters()) {
      this.send({
        type: 'prevote',
        from: this.id,
        to,
        term: this.term + 1,
        lastIndex: this.log.lastIndex(),
        lastTerm: this.log.lastTerm(),
        transfer: false,
      });
    }
    return this.tally(true);
  }

  becomeCandidate(transfer: boolean): RoleChange | undefined {
    assert(this.isPromotable(), 'only voters campaign');
    this.resetRoleState();
    this.role = 'candidate';
    this.term += 1;
    this.vote = this.id;
    this.leader = none;
    this.votes = new Map([[this.id, true]]);
    for (const to of this.peerVoters()) {
      // Held until term and vote are durable.
      this.hold({
        type: 'vote',
        from: this.id,
        to,
        term: this.term,
        lastIndex: this.log.lastIndex(),
        lastTerm: this.log.lastTerm(),
        transfer,
      });
    }
    return this.tally(false);
  }

  becomeLeader(): RoleChange | undefined {
    assert(this.role === 'candidate', 'only a candidate becomes leader');
    this.resetRoleState();
    this.role = 'leader';
    this.leader = this.id;
    this.activeSinceMs = this.env.nowMs();
    this.leaseReadsDisabled = false;
    this.progress = new Map();
    for (const id of allMembers(this.config)) {
      if (id === this.id) continue;
      this.progress.set(id, newProgress(this.log.lastIndex() + 1));
    }
    this.openLeaseRound();
    // An entry of its own term: reads and commits of older entries wait until it commits.
    const noop: Entry = {
      index: this.log.lastIndex() + 1,
      term: this.term,
      kind: 'noop',
      data: new Uint8Array(0),
    };
    this.leaderStartIndex = noop.index;
    this.uncommittedBytes = 0;
    this.appendOwn([noop]);
    this.maybeCommit(); // a single voter commits once its write is durable
    return undefined;
  }

  private resetRoleState(): void {
    assert(!this.quiescent, 'a quiescent replica wakes before its role changes');
    this.idleTicks = 0;
    this.quiesceRequest = undefined;
    this.wakeRoundPending = false;
    this.electionElapsedTicks = 0;
    this.heartbeatElapsedTicks = 0;
    this.randomizedElectionTicks = this.randomElectionTicks();
    this.votes = neverWritten();
    this.progress = neverWritten();
    this.transferee = none;
    this.transferElapsedTicks = 0;
    this.receiving = undefined;
    this.leaseReadsDisabled = true;
    for (const r of this.pendingReads) this.droppedReads.push(r.id);
    this.pendingReads = [];
    this.dropLeaseRounds();
  }

  private randomElectionTicks(): number {
    const e = this.options.electionTicks;
    return e + Math.floor(this.env.random() * e);
  }

  // ---------------------------------------------------------------- ticks

  tickFollower(): RoleChange | undefined {
    this.electionElapsedTicks++;
    if (!this.isPromotable() || this.electionElapsedTicks < this.randomizedElectionTicks) {
      return undefined;
    }
    return this.campaignChange();
  }

  /** Pre-candidates and candidates whose election timed out start over. */
  tickCampaign(): RoleChange | undefined {
    this.electionElapsedTicks++;
    if (this.electionElapsedTicks < this.randomizedElectionTicks) return undefined;
    return this.campaignChange();
  }

  private campaignChange(): RoleChange | undefined {
    const mode = this.options.mode;
    if (this.env.nowMs() < this.campaignNotBeforeMs) return undefined;
    if (mode === 'raft') return { type: 'BECOME_CANDIDATE', transfer: false };
    if (mode === 'harpoon') {
      const now = this.env.nowMs();
      // Its own vote is a vote: not while a grant it gave (or may have given) is live.
      if (now < this.grantedUntilMs || now < this.voteBlackoutUntilMs) return undefined;
    }
    return { type: 'BECOME_PRECANDIDATE' };
  }

  /**
   * This replica's group was just created by a split of a group it belongs to (DESIGN.md,
   * "Safety rules for splits"). It never granted a vote or a lease in this group, so it
   * needs no restart blackout; unless it is the one that campaigns at once (the replica
   * on the node of the parent's leader, see campaignNow), it waits until
   * `campaignNotBeforeMs`, past any lease the parent's leader may still hold over the new
   * span.
   */
  splitOff(campaignNotBeforeMs: number): void {
    this.voteBlackoutUntilMs = Number.NEGATIVE_INFINITY;
    this.campaignNotBeforeMs = campaignNotBeforeMs;
  }

  /** A follower that is a voter starts a campaign now (PreVote first, as on a timeout). */
  campaignNow(): RoleChange | undefined {
    if (this.role !== 'follower' || !this.isPromotable()) return undefined;
    this.campaignNotBeforeMs = Number.NEGATIVE_INFINITY;
    return this.campaignChange();
  }

  tickLeader(): RoleChange | undefined {
    const o = this.options;
    this.heartbeatElapsedTicks++;
    this.electionElapsedTicks++;
    if (this.transferee !== none && ++this.transferElapsedTicks >= o.electionTicks) {
      this.transferee = none; // abort; lease reads stay off for this term
    }
    for (const pr of this.progress.values()) if (pr.sending) pr.sending.idleTicks++;
    if (o.mode === 'harpoon') {
      const now = this.env.nowMs();
      const since = Math.max(this.leaseStartMs(), this.activeSinceMs);
      if (now - since >= o.leaseDurationMs) {
        return { type: 'BECOME_FOLLOWER', term: this.term, leader: none }; // abdicate
      }
    }
    if (o.mode === 'etcd' && this.electionElapsedTicks >= o.electionTicks) {
      this.electionElapsedTicks = 0;
      const active = quorumValue(
        this.config,
        (id) => (id === this.id || this.progress.get(id)?.recentActive ? 1 : 0),
        0,
      );
      for (const pr of this.progress.values()) pr.recentActive = false;
      if (active < 1) return { type: 'BECOME_FOLLOWER', term: this.term, leader: none };
    }
    this.idleTicks++;
    if (this.heartbeatElapsedTicks >= o.heartbeatTicks) {
      this.heartbeatElapsedTicks = 0;
      // About to quiesce (the host asks wantsQuiesce next): its quiesce heartbeat will do.
      if (this.leaderWantsQuiesce()) return undefined;
      this.openLeaseRound();
      this.heartbeatRound();
    } else this.heartbeatOwed();
    this.sendCommitNotices();
    return undefined;
  }

  /**
   * Under lazyCommit, a commit index no append or heartbeat carried since it advanced goes
   * to each follower in replicate as a commitOnly append, once a tick: a follower's apply
   * lags the leader's by at most a tick when no write follows, and by nothing more than
   * the next append's when one does (most do, under load).
   */
  private sendCommitNotices(): void {
    if (!this.commitOwed()) return; // (commitOwed allocates nothing: every tick of every range)
    for (const [to, pr] of this.progress) {
      if (this.owesCommit(pr)) this.sendAppend(to, pr, false, true);
    }
  }

  /** Whether a follower in replicate has not been told the commit index (lazyCommit). */
  commitOwed(): boolean {
    if (this.role !== 'leader' || !this.options.lazyCommit) return false;
    for (const pr of this.progress.values()) if (this.owesCommit(pr)) return true;
    return false;
  }

  /**
   * The lowest match index of the live followers in replicate (those being fed appends;
   * live by the host's node liveness, when it gives one), or undefined when not leader or
   * none is. Compacting the log past it makes that follower catch up from a snapshot; the
   * host trims a log under memory pressure no further. A follower that is down stays in
   * replicate until it answers again, so it must not hold the log.
   */
  replicatingMatchFloor(): LogIndex | undefined {
    if (this.role !== 'leader') return undefined;
    let floor: LogIndex | undefined;
    for (const [id, pr] of this.progress) {
      if (pr.state !== 'replicate' || (this.env.isLive !== undefined && !this.env.isLive(id))) {
        continue;
      }
      if (floor === undefined || pr.match < floor) floor = pr.match;
    }
    return floor;
  }

  private owesCommit(pr: Progress): boolean {
    return pr.state === 'replicate' && pr.commitSent < this.log.committed;
  }

  /**
   * The followers hear the commit index at once, not at the next tick (lazyCommit): the
   * host asks for it when an applied entry has effects at the followers' apply that
   * should not wait (a split: the new range's replicas start there). Leader only.
   */
  noticeCommit(): void {
    this.sendCommitNotices();
  }

  /**
   * A heartbeat round's messages: none to a follower in replicate that got appends with
   * entries since the last round. Under load its next append carries the new round's seq
   * and its answer renews the lease as a heartbeat's would; if none goes, the next round
   * heartbeats it, so its part of the lease lags by at most one round (the lease lasts
   * four and a half). With many busy ranges this spared most per-range heartbeats and
   * their answers. A round's lease start is when it opened, before any message carrying
   * its seq, whichever message that is.
   */
  private heartbeatRound(): void {
    for (const [to, pr] of this.progress) {
      if (!pr.appendedSinceRound || pr.state !== 'replicate') this.heartbeatTo(to, pr);
      else {
        pr.roundOwed = true;
        this.heartbeatsOwed = true;
      }
      pr.appendedSinceRound = false;
    }
  }

  /**
   * The tick after a round: heartbeats each follower that round skipped and that no append
   * with entries (answered, with the round's seq) reached since. Without it, a follower
   * skipped just before writes stopped heard a newer seq only at the next round, and its
   * part of the lease was 2 * heartbeatTicks old at the check before that round; now it is
   * at most heartbeatTicks + 1.
   */
  private heartbeatOwed(): void {
    if (!this.heartbeatsOwed) return; // (most ticks of most ranges: no loop)
    this.heartbeatsOwed = false;
    for (const [to, pr] of this.progress) if (pr.roundOwed) this.heartbeatTo(to, pr);
  }

  // ---------------------------------------------------------------- quiescence

  /** Quiescence runs in harpoon mode when enabled and the host provides node liveness. */
  private quiescenceEnabled(): boolean {
    const o = this.options;
    return o.mode === 'harpoon' && o.quiesceAfterTicks > 0 && this.env.isLive !== undefined;
  }

  /**
   * Whether this replica should go quiescent now; the host asks after each tick and each
   * message batch, and sends the machine QUIESCE when it says yes. Cheap when it is no.
   */
  wantsQuiesce(): boolean {
    if (this.quiescent) return false;
    if (this.role === 'leader') return this.leaderWantsQuiesce();
    if (this.role !== 'follower') return false;
    const q = this.quiesceRequest;
    return (
      q !== undefined &&
      q.term === this.term &&
      q.leader === this.leader &&
      q.index === this.log.lastIndex() &&
      this.log.committed === q.index
    );
  }

  /**
   * An idle leader quiesces when nothing is left to do or to tell: no proposal or read for
   * quiesceAfterTicks, no transfer, no pending read, its whole log committed, durable and
   * handed to the state machine, no message of this turn left to send, every follower
   * holding the whole log with no snapshot in flight, and a quorum heard from within the
   * lease period (a leader cut off from its quorum does not quiesce, it abdicates).
   */
  private leaderWantsQuiesce(): boolean {
    if (this.idleTicks < this.options.quiesceAfterTicks || !this.quiescenceEnabled()) return false;
    if (this.transferee !== none || this.pendingReads.length > 0 || this.readStates.length > 0) {
      return false;
    }
    const last = this.log.lastIndex();
    const log = this.log;
    if (log.committed !== last || log.stable !== last || log.applying !== last) return false;
    if (this.inFlightWrites.length > 0 || this.dirtyFrom !== Number.POSITIVE_INFINITY) return false;
    // Nothing left to say from this turn (a probe, a commit update): quiesce at a later tick.
    if (this.outbox.length > 0 || this.broadcastPending) return false;
    for (const pr of this.progress.values()) {
      if (pr.match !== last || pr.state === 'snapshot') return false;
    }
    return this.env.nowMs() < this.leaseExpiryMs();
  }

  /**
   * Entry into quiescent (machine only). A leader keeps leadership but not its lease: it
   * forgets every lease round (late answers can no longer count) and tells its followers
   * to quiesce with a heartbeat carrying the commit index. A follower just stops.
   */
  quiesce(): void {
    assert(!this.quiescent, 'quiesce once');
    assert(
      this.role === 'leader' || this.role === 'follower',
      'only a leader or follower quiesces',
    );
    this.quiescent = true;
    this.quiescedSeq = this.quiesceRequest?.seq ?? 0;
    this.quiesceRequest = undefined;
    if (this.role !== 'leader') return;
    for (const [to, pr] of this.progress) {
      this.send({
        type: 'heartbeat',
        from: this.id,
        to,
        term: this.term,
        commit: Math.min(pr.match, this.log.committed),
        seq: this.seq,
        quiesce: true,
      });
    }
    this.dropLeaseRounds();
  }

  /**
   * Exit from quiescent (machine only). A leader restarts its lease bookkeeping: abdication
   * counts from now, and it opens a new lease round at once (every message it sends from
   * now on carries it), which goes out in the next ready() with a heartbeat, the appends of
   * new proposals, or a read's round; so its first read uses ReadIndex (or the lease that
   * round earns). A follower restarts its election timer; when its leader's node lapsed,
   * the timer is short (a random point within one election timeout), so one of the
   * followers campaigns soon and they rarely collide.
   */
  wake(leaderLapsed: boolean): void {
    assert(this.quiescent, 'wake only from quiescent');
    this.quiescent = false;
    this.idleTicks = 0;
    this.quiesceRequest = undefined;
    this.electionElapsedTicks = 0;
    this.heartbeatElapsedTicks = 0;
    if (this.role === 'leader') {
      this.activeSinceMs = this.env.nowMs();
      for (const pr of this.progress.values()) {
        pr.probeSent = false;
        pr.matchAtLastHeartbeat = -1; // no heartbeat round answered since the wake
      }
      this.openLeaseRound();
      this.wakeRoundPending = true;
      return;
    }
    this.randomizedElectionTicks = leaderLapsed
      ? 1 + Math.floor(this.env.random() * this.options.electionTicks)
      : this.randomElectionTicks();
  }

  /** Whether a quiescent follower's leader is on a live node, as the host sees it. */
  private leaderLive(): boolean {
    return this.leader !== none && this.env.isLive !== undefined && this.env.isLive(this.leader);
  }

  /**
   * Steps messages while quiescent. Answers what needs no active role and returns a WAKE
   * (with the rest of the batch, starting at the message that woke it) otherwise:
   * - responses of our term or older: dropped (a quiescent replica waits for none);
   * - a (pre)vote request to a follower: refused, staying quiescent, while the leader's
   *   node is live; it wakes (and handles the request normally) when the leader's node
   *   lapsed (leaderLapsed), when the request comes from the leader itself (it lost
   *   leadership, say by restarting) or carries the transfer flag;
   * - a (pre)vote request to a leader: wakes it; it refuses as leader and its wake
   *   heartbeat brings the requester back;
   * - a message our leader sent before it quiesced (a late or duplicated one: its lease
   *   round is not newer than the quiesce heartbeat's), or a repeated quiesce heartbeat
   *   that finds our log complete: dropped;
   * - a leader message of an older term: answered as by an active replica;
   * - anything else (a leader message, a higher term): wakes it.
   */
  stepQuiescent(messages: readonly Message[]): WakeResult | undefined {
    assert(this.quiescent, 'stepQuiescent only while quiescent');
    for (let i = 0; i < messages.length; i++) {
      const m = messages[i]!;
      const wake = this.quiescentWakes(m);
      if (wake !== undefined) {
        return {
          change: { type: 'WAKE', leaderLapsed: wake === 'lapsed' },
          rest: messages.slice(i),
        };
      }
    }
    return undefined;
  }

  /** undefined: handled while quiescent; 'wake' or 'lapsed': wake to handle it. */
  private quiescentWakes(m: Message): 'wake' | 'lapsed' | undefined {
    switch (m.type) {
      case 'prevoteResponse':
      case 'voteResponse':
      case 'appendResponse':
      case 'heartbeatResponse':
      case 'snapshotResponse':
        // A granted pre-vote answer carries term + 1 but changes nothing.
        return m.term > this.term && m.type !== 'prevoteResponse' ? 'wake' : undefined;
      case 'prevote':
      case 'vote':
        if (this.role === 'leader' || m.transfer || m.from === this.leader) return 'wake';
        if (!this.leaderLive()) return 'lapsed';
        // A refused request never changes our term.
        this.hold({
          type: m.type === 'vote' ? 'voteResponse' : 'prevoteResponse',
          from: this.id,
          to: m.from,
          term: this.term,
          reject: true,
        });
        return undefined;
      case 'heartbeat':
        if (this.sentBeforeQuiesce(m)) return undefined;
        if (
          m.quiesce === true &&
          m.term === this.term &&
          m.from === this.leader &&
          m.commit === this.log.lastIndex() &&
          this.log.committed === m.commit
        ) {
          // The leader woke and quiesced again while this follower slept through it.
          this.quiescedSeq = m.seq;
          return undefined;
        }
        return m.term < this.term ? this.answerStale(m) : 'wake';
      case 'append':
      case 'snapshot':
        if (this.sentBeforeQuiesce(m)) return undefined;
        return m.term < this.term ? this.answerStale(m) : 'wake';
      case 'timeoutNow':
        return m.term < this.term ? this.answerStale(m) : 'wake';
    }
  }

  /** A quiescent follower's leader sent `m` before it quiesced. */
  private sentBeforeQuiesce(m: Message & { readonly seq: number }): boolean {
    return (
      this.role === 'follower' &&
      m.term === this.term &&
      m.from === this.leader &&
      m.seq <= this.quiescedSeq
    );
  }

  /** A leader message of an older term: tell its sender our term, as checkTerm does. */
  private answerStale(m: Message): undefined {
    const checked = this.checkTerm(m);
    assert(checked === undefined, 'a stale message is fully handled by checkTerm');
    return undefined;
  }

  private openLeaseRound(): void {
    this.seq++;
    const now = this.env.nowMs();
    if (this.seqSentAtMs === sharedEmpty) this.seqSentAtMs = new Map();
    this.seqSentAtMs.set(this.seq, now);
    // Rounds older than two lease periods can no longer support a lease: forget them.
    const horizon = now - 2 * this.options.leaseDurationMs;
    for (const [s, at] of this.seqSentAtMs) {
      if (at >= horizon || this.seqSentAtMs.size <= 2) break;
      this.seqSentAtMs.delete(s);
    }
  }

  private broadcastHeartbeat(): void {
    for (const [to, pr] of this.progress) this.heartbeatTo(to, pr);
  }

  private heartbeatTo(to: ReplicaId, pr: Progress): void {
    const commit = Math.min(pr.match, this.log.committed);
    pr.commitSent = Math.max(pr.commitSent, commit);
    const hb: Heartbeat = {
      type: 'heartbeat',
      from: this.id,
      to,
      term: this.term,
      commit,
      seq: this.seq,
    };
    this.send(hb);
    pr.roundOwed = false;
  }

  // ---------------------------------------------------------------- stepping messages

  /**
   * Checks a message's term against ours. Returns the message to handle in the current
   * role, or a role change (handle the message again in the new role), or undefined when
   * the message is fully handled here.
   */
  private checkTerm(m: Message): Message | RoleChange | undefined {
    if (m.type === 'prevote' || m.type === 'vote') {
      if (this.refusesVote(m)) {
        // A refused request never changes our term.
        this.hold({
          type: m.type === 'vote' ? 'voteResponse' : 'prevoteResponse',
          from: this.id,
          to: m.from,
          term: this.term,
          reject: true,
        });
        return undefined;
      }
      if (m.type === 'vote' && m.term > this.term) {
        return { type: 'BECOME_FOLLOWER', term: m.term, leader: none };
      }
      if (m.term < this.term) {
        this.hold({
          type: m.type === 'vote' ? 'voteResponse' : 'prevoteResponse',
          from: this.id,
          to: m.from,
          term: this.term,
          reject: true,
        });
        return undefined;
      }
      return m;
    }
    if (m.type === 'prevoteResponse' && !m.reject && m.term === this.term + 1) return m;
    if (m.term > this.term) {
      return { type: 'BECOME_FOLLOWER', term: m.term, leader: isLeaderMessage(m) ? m.from : none };
    }
    if (m.term < this.term) {
      if (m.type === 'append' || m.type === 'heartbeat' || m.type === 'snapshot') {
        // A stale leader: tell it our term so it steps down.
        this.hold({
          type: 'appendResponse',
          from: this.id,
          to: m.from,
          term: this.term,
          reject: true,
          index: 0,
          hint: 0,
          seq: 0,
        });
      }
      return undefined;
    }
    return m;
  }

  /** Leader stickiness: whether a (pre)vote request is refused whatever its log says. */
  private refusesVote(m: VoteRequest): boolean {
    const mode = this.options.mode;
    if (mode === 'raft') return false;
    if (mode === 'etcd') {
      // CheckQuorum's in-lease rule: heard from a leader within the election timeout.
      return (
        !m.transfer &&
        this.leader !== none &&
        this.electionElapsedTicks < this.options.electionTicks
      );
    }
    const now = this.env.nowMs();
    if (now < this.voteBlackoutUntilMs) return true;
    if (m.transfer) {
      // The old leader stopped lease reads before it sent TimeoutNow; its leases yield.
      return this.role === 'leader' && m.from !== this.transferee;
    }
    if (this.role === 'leader') return true;
    return now < this.grantedUntilMs && this.grantedTo !== m.from;
  }

  private handleVoteRequest(m: VoteRequest): void {
    const canVote =
      this.vote === m.from ||
      (this.vote === none && this.leader === none) ||
      (m.type === 'prevote' && m.term > this.term);
    const grant = canVote && this.log.isUpToDate(m.lastIndex, m.lastTerm);
    if (grant && m.type === 'vote') {
      this.electionElapsedTicks = 0;
      this.vote = m.from;
    }
    this.hold({
      type: m.type === 'vote' ? 'voteResponse' : 'prevoteResponse',
      from: this.id,
      to: m.from,
      // A granted pre-vote answers for the proposed term, so the candidate can count it.
      term: grant ? m.term : this.term,
      reject: !grant,
    });
  }

  /** Runs `handle` on each message in order until one asks for a role change. */
  private stepEach(
    messages: readonly Message[],
    handle: (m: Message) => RoleChange | undefined,
  ): StepResult | undefined {
    for (let i = 0; i < messages.length; i++) {
      const checked = this.checkTerm(messages[i]!);
      if (checked === undefined) continue;
      if ('from' in checked) {
        const change = handle(checked);
        if (change) return { change, rest: messages.slice(i + 1) };
      } else {
        // Re-handle this message under the new role.
        return { change: checked, rest: messages.slice(i) };
      }
    }
    return undefined;
  }

  stepFollower(messages: readonly Message[]): StepResult | undefined {
    return this.stepEach(messages, (m) => {
      switch (m.type) {
        case 'prevote':
        case 'vote':
          this.handleVoteRequest(m);
          return undefined;
        case 'append':
          this.heardFromLeader(m.from);
          this.handleAppend(m);
          return undefined;
        case 'heartbeat':
          this.heardFromLeader(m.from);
          this.log.commitTo(Math.min(m.commit, this.log.lastIndex()));
          if (m.quiesce === true && this.acceptsQuiesce(m)) {
            // Caught up: go quiescent (the host asks wantsQuiesce), without an answer, which
            // would only reach a quiescent leader.
            this.quiesceRequest = { term: this.term, leader: m.from, index: m.commit, seq: m.seq };
            return undefined;
          }
          this.hold({
            type: 'heartbeatResponse',
            from: this.id,
            to: m.from,
            term: this.term,
            seq: m.seq,
          });
          return undefined;
        case 'snapshot':
          this.heardFromLeader(m.from);
          this.handleSnapshotChunk(m);
          return undefined;
        case 'timeoutNow':
          if (!this.isPromotable()) return undefined;
          return { type: 'BECOME_CANDIDATE', transfer: true };
        default:
          return undefined; // stale responses
      }
    });
  }

  stepPreCandidate(messages: readonly Message[]): StepResult | undefined {
    return this.stepCampaigner(messages, true);
  }

  stepCandidate(messages: readonly Message[]): StepResult | undefined {
    return this.stepCampaigner(messages, false);
  }

  /**
   * A pre-candidate's (pre) or a candidate's step. They differ only in the responses they
   * count (prevoteResponse, voteResponse; the other kind is stale) and in what winning
   * makes them (tally).
   */
  private stepCampaigner(messages: readonly Message[], pre: boolean): StepResult | undefined {
    const counted = pre ? 'prevoteResponse' : 'voteResponse';
    return this.stepEach(messages, (m) => {
      switch (m.type) {
        case 'prevote':
        case 'vote':
          this.handleVoteRequest(m);
          return undefined;
        case 'append':
        case 'heartbeat':
        case 'snapshot':
          return { type: 'BECOME_FOLLOWER', term: m.term, leader: m.from };
        case 'prevoteResponse':
        case 'voteResponse':
          if (m.type !== counted) return undefined;
          this.votes.set(m.from, !m.reject);
          return this.tally(pre);
        default:
          return undefined;
      }
    });
  }

  stepLeader(messages: readonly Message[]): StepResult | undefined {
    return this.stepEach(messages, (m) => {
      switch (m.type) {
        case 'prevote':
        case 'vote':
          this.handleVoteRequest(m);
          return undefined;
        case 'append':
        case 'heartbeat':
        case 'snapshot':
          assert(false, 'two leaders in one term');
          return undefined;
        case 'appendResponse':
          this.handleAppendResponse(m);
          return undefined;
        case 'heartbeatResponse': {
          const pr = this.acked(m.from, m.seq);
          if (pr) this.handleHeartbeatResponse(m.from, pr);
          return undefined;
        }
        case 'snapshotResponse':
          this.handleSnapshotResponse(m);
          return undefined;
        default:
          return undefined;
      }
    });
  }

  /**
   * The campaign's outcome so far: winning makes a pre-candidate (pre) a candidate and a
   * candidate the leader; losing makes either a follower.
   */
  private tally(pre: boolean): RoleChange | undefined {
    const outcome = voteOutcome(this.config, this.votes);
    if (outcome === 'won') {
      return pre ? { type: 'BECOME_CANDIDATE', transfer: false } : { type: 'BECOME_LEADER' };
    }
    if (outcome === 'lost') return { type: 'BECOME_FOLLOWER', term: this.term, leader: none };
    return undefined;
  }

  /** A follower whose log ends at the quiesce heartbeat's commit index quiesces with it. */
  private acceptsQuiesce(m: Heartbeat): boolean {
    return (
      this.quiescenceEnabled() &&
      this.receiving === undefined &&
      m.commit === this.log.lastIndex() &&
      this.log.committed === m.commit
    );
  }

  /** A follower heard from the leader of its term: reset the timer and grant a lease. */
  private heardFromLeader(leader: ReplicaId): void {
    this.leader = leader;
    this.electionElapsedTicks = 0;
    this.quiesceRequest = undefined;
    if (this.options.mode === 'harpoon') {
      this.grantedUntilMs = this.env.nowMs() + this.options.leaseDurationMs;
      this.grantedTo = leader;
    }
  }

  private handleAppend(m: Append): void {
    const respond = (reject: boolean, index: LogIndex, hint: LogIndex) =>
      this.hold({
        type: 'appendResponse',
        from: this.id,
        to: m.from,
        term: this.term,
        reject,
        index,
        hint,
        seq: m.seq,
      });
    // A commit-only append (no entries) is answered only when rejected: an acceptance
    // would tell the leader nothing new (Append.commitOnly).
    const quiet = m.commitOnly === true && m.entries.length === 0;
    if (m.prevIndex < this.log.committed) {
      if (!quiet) respond(false, this.log.committed, 0);
      return;
    }
    if (this.log.matchTerm(m.prevIndex, m.prevTerm)) {
      const from = this.log.appendAfterMatch(m.entries);
      if (from !== undefined) this.dirtyFrom = Math.min(this.dirtyFrom, from);
      const lastNew = m.prevIndex + m.entries.length;
      this.log.commitTo(Math.min(m.commit, lastNew));
      if (!quiet) respond(false, lastNew, 0);
      return;
    }
    // Skip back over entries of terms newer than the leader's prevTerm.
    let hint = Math.min(m.prevIndex - 1, this.log.lastIndex());
    while (hint > this.log.committed && (this.log.term(hint) ?? 0) > m.prevTerm) hint--;
    respond(true, m.prevIndex, hint);
  }

  private handleSnapshotChunk(m: SnapshotChunk): void {
    const respond = (offset: number, done: boolean, reject: boolean) =>
      this.hold({
        type: 'snapshotResponse',
        from: this.id,
        to: m.from,
        term: this.term,
        index: m.meta.index,
        offset,
        done,
        reject,
        seq: m.seq,
      });
    if (m.meta.index <= this.log.committed) {
      this.receiving = undefined;
      respond(0, true, false);
      return;
    }
    if (this.log.matchTerm(m.meta.index, m.meta.term)) {
      // Our log already holds the snapshot's last entry: keep the log (and any entries we
      // acknowledged after it), just learn the commit.
      this.receiving = undefined;
      this.log.commitTo(m.meta.index);
      respond(0, true, false);
      return;
    }
    let r = this.receiving;
    if (r === undefined || r.meta.index !== m.meta.index || r.meta.term !== m.meta.term) {
      if (m.offset !== 0) {
        respond(0, false, true);
        return;
      }
      r = this.receiving = { meta: m.meta, chunks: [], received: 0 };
    }
    if (m.offset !== r.received) {
      respond(r.received, false, false);
      return;
    }
    r.chunks.push(m.data);
    r.received += m.data.length;
    if (!m.done) {
      respond(r.received, false, false);
      return;
    }
    const data = new Uint8Array(r.received);
    let at = 0;
    for (const c of r.chunks) {
      data.set(c, at);
      at += c.length;
    }
    this.receiving = undefined;
    this.log.restore(m.meta);
    this.config = m.meta.config;
    this.dirtyFrom = Number.POSITIVE_INFINITY;
    this.pendingSnapshotWrite = { meta: m.meta, data };
    respond(r.received, true, false);
  }

  /** Records a lease grant; returns the follower's progress when the sender is known. */
  private acked(from: ReplicaId, seq: number): Progress | undefined {
    const pr = this.progress.get(from);
    if (pr === undefined) return undefined;
    pr.recentActive = true;
    if (seq > pr.ackedSeq && seq <= this.seq) pr.ackedSeq = seq;
    if (this.pendingReads.length > 0) this.releaseConfirmedReads();
    return pr;
  }

  private handleAppendResponse(m: AppendResponse): void {
    const pr = this.acked(m.from, m.seq);
    if (pr === undefined) return;
    if (m.reject) {
      if (pr.state === 'replicate') {
        if (m.index <= pr.match) return; // stale
        becomeProbe(pr);
        pr.next = Math.max(pr.match + 1, Math.min(m.index, m.hint + 1));
      } else if (pr.state === 'probe') {
        if (m.index !== pr.next - 1) return; // stale
        pr.next = Math.max(pr.match + 1, Math.min(m.index, m.hint + 1));
        pr.probeSent = false;
      } else {
        return;
      }
      this.sendAppend(m.from, pr, true);
      return;
    }
    const moved = updateMatch(pr, m.index);
    if (pr.state === 'probe' && moved) becomeReplicate(pr);
    else if (pr.state === 'probe') pr.probeSent = false;
    if (moved) {
      this.maybeCommit();
      this.maybeSendTimeoutNow(m.from, pr);
    }
    this.sendAppend(m.from, pr, false);
  }

  /** A transfer target that has caught up (by appends or by a snapshot) campaigns now. */
  private maybeSendTimeoutNow(from: ReplicaId, pr: Progress): void {
    if (this.transferee === from && pr.match === this.log.lastIndex()) {
      this.send({ type: 'timeoutNow', from: this.id, to: from, term: this.term });
    }
  }

  private handleHeartbeatResponse(from: ReplicaId, pr: Progress): void {
    if (pr.state === 'replicate' && pr.match < this.log.lastIndex()) {
      // No progress over a whole heartbeat round: appends were lost; probe again.
      if (pr.match === pr.matchAtLastHeartbeat) becomeProbe(pr);
    }
    pr.matchAtLastHeartbeat = pr.match;
    if (pr.state === 'probe') pr.probeSent = false;
    if (
      pr.state === 'snapshot' &&
      pr.sending &&
      pr.sending.idleTicks >= this.options.heartbeatTicks
    ) {
      this.sendSnapshotChunk(from, pr);
      return;
    }
    if (pr.match < this.log.lastIndex()) this.sendAppend(from, pr, false);
  }

  private handleSnapshotResponse(m: SnapshotResponse): void {
    const pr = this.acked(m.from, m.seq);
    if (pr === undefined || pr.state !== 'snapshot' || pr.sending === undefined) return;
    if (m.index !== pr.sending.snapshot.meta.index) return;
    if (m.done) {
      updateMatch(pr, m.index);
      becomeProbe(pr);
      this.maybeCommit();
      this.maybeSendTimeoutNow(m.from, pr);
      this.sendAppend(m.from, pr, false);
      return;
    }
    pr.sending.offset = m.reject ? 0 : m.offset;
    this.sendSnapshotChunk(m.from, pr);
  }

  // ---------------------------------------------------------------- replication (leader)

  /**
   * Sends `to` what it lacks. With nothing but a new commit index to say (a commitOnly
   * append), it waits under lazyCommit unless `commitNotice`: the next append with entries,
   * heartbeat or tick carries it (sendCommitNotices).
   */
  private sendAppend(
    to: ReplicaId,
    pr: Progress,
    sendIfEmpty: boolean,
    commitNotice = false,
  ): void {
    if (isPaused(pr, this.options.inflightAppendsMax)) return;
    if (pr.next < this.log.firstIndex()) {
      pr.state = 'snapshot';
      pr.probeSent = false;
      pr.inflight = [];
      pr.sending = { snapshot: this.env.takeSnapshot(), offset: 0, idleTicks: 0 };
      assert(
        pr.sending.snapshot.meta.index >= this.log.snapshot.index,
        'a snapshot to send covers the compacted log',
      );
      this.sendSnapshotChunk(to, pr);
      return;
    }
    const last = this.log.lastIndex();
    const hasEntries = pr.next <= last;
    const probing = pr.state === 'probe' && pr.match < last;
    if (!hasEntries && !sendIfEmpty && !probing && pr.commitSent >= this.log.committed) return;
    const prevIndex = pr.next - 1;
    const prevTerm = this.log.term(prevIndex);
    assert(prevTerm !== undefined, 'prevIndex is within the log');
    const entries = hasEntries ? this.log.slice(pr.next, last, this.options.appendBytesMax) : [];
    const commit = this.log.committed;
    // Only the commit index is news: the follower need not answer unless it rejects.
    const commitOnly = !hasEntries && !sendIfEmpty && pr.state === 'replicate';
    if (commitOnly && this.options.lazyCommit && !commitNotice) return;
    this.send({
      type: 'append',
      from: this.id,
      to,
      term: this.term,
      prevIndex,
      prevTerm,
      entries,
      commit,
      seq: this.seq,
      commitOnly: commitOnly || undefined,
    });
    pr.commitSent = commit;
    if (entries.length > 0) {
      // Answered, with this seq: it serves the current lease round (heartbeatRound).
      pr.appendedSinceRound = true;
      pr.roundOwed = false;
    }
    if (pr.state === 'replicate') {
      if (entries.length > 0) {
        pr.next = entries[entries.length - 1]!.index + 1;
        pr.inflight.push(pr.next - 1);
      }
    } else {
      pr.probeSent = true;
    }
  }

  private sendSnapshotChunk(to: ReplicaId, pr: Progress): void {
    const s = pr.sending!;
    const data = s.snapshot.data;
    const end = Math.min(data.length, s.offset + this.options.snapshotChunkBytesMax);
    s.idleTicks = 0;
    this.send({
      type: 'snapshot',
      from: this.id,
      to,
      term: this.term,
      meta: s.snapshot.meta,
      offset: s.offset,
      data: data.subarray(s.offset, end),
      done: end === data.length,
      seq: this.seq,
    });
  }

  private maybeCommit(): void {
    const index = quorumValue(
      this.config,
      (id) => (id === this.id ? this.log.stable : this.progress.get(id)?.match),
      0,
    );
    // Raft's commit rule: only an entry of the current term commits by counting.
    if (index <= this.log.committed || this.log.term(index) !== this.term) return;
    let freed = 0;
    for (let i = this.log.committed + 1; i <= index; i++) freed += entryBytes(this.log.entry(i)!);
    this.uncommittedBytes = Math.max(0, this.uncommittedBytes - freed);
    this.log.commitTo(index);
    this.broadcastPending = true;
    if (this.pendingReads.length > 0) this.releaseConfirmedReads();
  }

  private appendOwn(entries: Entry[]): void {
    this.log.appendOwn(entries);
    this.dirtyFrom = Math.min(this.dirtyFrom, entries[0]!.index);
    for (const e of entries) this.uncommittedBytes += entryBytes(e);
    this.broadcastPending = true;
  }

  /** Appends proposals of one turn as one batch. Leader only (the machine checks). */
  propose(datas: readonly Uint8Array[]): { index: LogIndex; term: Term } | ProposeError {
    assert(this.role === 'leader', 'proposals reach the leader only');
    assert(!this.quiescent, 'a quiescent leader wakes before a proposal');
    if (this.transferee !== none) return { code: 'transferring' };
    if (this.uncommittedBytes > this.options.uncommittedBytesMax) {
      return { code: 'overloaded', uncommittedBytes: this.uncommittedBytes };
    }
    this.idleTicks = 0;
    const first = this.log.lastIndex() + 1;
    const entries = datas.map(
      (data, i): Entry => ({ index: first + i, term: this.term, kind: 'normal', data }),
    );
    this.appendOwn(entries);
    return { index: first, term: this.term };
  }

  /**
   * A lease read without a read id (TiKV's local reader): the index a linearizable read
   * may be served at now (the committed index), when a lease is held; undefined otherwise
   * (then use read()). The host serves the read at once if it has applied that index, and
   * otherwise goes through read(). Counts as activity: the range stays awake (quiescence
   * would drop the lease). Same safety as read()'s lease path: the index is taken now.
   *
   * `nowMs`: a reading of the environment's clock (env.nowMs) taken after the read
   * arrived, for a host that checks many reads at once (a request's ops over many ranges:
   * one reading for all of them). The lease is checked at that instant, and the read is
   * linearized there: it arrived before it, and the state read then is the one served,
   * since nothing applies in between.
   */
  leaseReadIndex(nowMs?: number): LogIndex | undefined {
    if (!this.hasValidLease(nowMs)) return undefined;
    this.idleTicks = 0;
    return this.log.committed;
  }

  /** A linearizable read: by lease when one is held, else by ReadIndex. Leader only. */
  read(id: number): void {
    assert(this.role === 'leader', 'reads reach the leader only');
    assert(!this.quiescent, 'a quiescent leader wakes before a read');
    this.idleTicks = 0;
    if (this.hasValidLease()) {
      this.readStates.push({ id, index: this.log.committed, via: 'lease' });
      return;
    }
    // ReadIndex: the index is fixed when our own term's entry has committed (below).
    this.pendingReads.push({ id, index: -1, seq: 0 });
    this.releaseConfirmedReads();
  }

  /** Moves ReadIndex reads forward: fix their index, start a round, release confirmed ones. */
  private releaseConfirmedReads(): void {
    if (!this.ownTermCommitted()) return;
    const confirmedSeq = quorumValue(
      this.config,
      (id) => (id === this.id ? Number.POSITIVE_INFINITY : this.progress.get(id)?.ackedSeq),
      0,
    );
    let needRound = false;
    const keep: PendingRead[] = [];
    for (const r of this.pendingReads) {
      const read = r.index < 0 ? { id: r.id, index: this.log.committed, seq: 0 } : r;
      if (read.seq === 0) needRound = true;
      else if (read.seq <= confirmedSeq) {
        this.readStates.push({ id: read.id, index: read.index, via: 'readIndex' });
        continue;
      }
      keep.push(read);
    }
    this.pendingReads = keep;
    if (needRound) this.broadcastPending = true; // the round opens once per turn, in ready()
  }

  /** Opens a lease round for reads waiting for one; returns whether it did. */
  private startReadRound(): boolean {
    let unsent = false;
    for (const r of this.pendingReads) if (r.seq === 0) unsent = true;
    if (!unsent) return false;
    this.openLeaseRound();
    for (const r of this.pendingReads) if (r.seq === 0) r.seq = this.seq;
    this.broadcastHeartbeat();
    this.releaseConfirmedReads(); // a single voter confirms at once
    return true;
  }

  transferLeadership(target: ReplicaId): { code: 'invalidTarget' } | undefined {
    assert(this.role === 'leader', 'only a leader transfers');
    assert(!this.quiescent, 'a quiescent leader wakes before a transfer');
    const pr = this.progress.get(target);
    if (target === this.id || pr === undefined || !isVoter(this.config, target)) {
      return { code: 'invalidTarget' };
    }
    // Stop lease reads first: the target's campaign overrides the grants we hold.
    this.leaseReadsDisabled = true;
    this.idleTicks = 0;
    this.transferee = target;
    this.transferElapsedTicks = 0;
    if (pr.match === this.log.lastIndex()) {
      this.send({ type: 'timeoutNow', from: this.id, to: target, term: this.term });
    } else {
      this.sendAppend(target, pr, false);
    }
    return undefined;
  }

  /** The state machine applied durably up to `index`; entries up to there may be dropped. */
  compact(index: LogIndex): void {
    const term = this.log.term(index);
    assert(term !== undefined, 'compact to an index in the log');
    this.log.compact(index, { index, term, config: this.config });
  }

  // ---------------------------------------------------------------- output

  private send(m: Message): void {
    this.outbox.push(m);
  }

  /** Messages that may leave only after every write issued so far is durable. */
  private hold(m: Message): void {
    this.heldForNextWrite.push(m);
  }

  hasReady(): boolean {
    return (
      this.outbox.length > 0 ||
      this.heldForNextWrite.length > 0 ||
      this.broadcastPending ||
      this.wakeRoundPending ||
      this.dirtyFrom !== Number.POSITIVE_INFINITY ||
      this.pendingSnapshotWrite !== undefined ||
      this.term !== this.writtenTerm ||
      this.vote !== this.writtenVote ||
      this.readStates.length > 0 ||
      this.droppedReads.length > 0 ||
      Math.min(this.log.committed, this.log.stable) > this.log.applying
    );
  }

  /** Collects this turn's output. See ready.ts for what the caller must do with it. */
  ready(): Ready {
    if (this.role === 'leader') {
      const opened = this.startReadRound();
      if (this.wakeRoundPending) {
        // The first round after waking; a read's round (just opened) serves as well, and
        // so do the appends of proposals (no follower is paused after a wake).
        this.wakeRoundPending = false;
        if (!opened) {
          if (this.broadcastPending) {
            for (const [to, pr] of this.progress) this.sendAppend(to, pr, true);
            this.broadcastPending = false;
          } else {
            this.broadcastHeartbeat();
          }
        }
      }
      if (this.broadcastPending) {
        for (const [to, pr] of this.progress) this.sendAppend(to, pr, false);
      }
    }
    this.broadcastPending = false;

    let write: StorageWrite | null = null;
    const hardChanged = this.term !== this.writtenTerm || this.vote !== this.writtenVote;
    const entriesDirty = this.dirtyFrom !== Number.POSITIVE_INFINITY;
    if (hardChanged || entriesDirty || this.pendingSnapshotWrite !== undefined) {
      const id = this.nextWriteId++;
      const entries = entriesDirty
        ? this.log.slice(this.dirtyFrom, this.log.lastIndex(), Number.POSITIVE_INFINITY)
        : [];
      write = {
        id,
        hardState: { term: this.term, vote: this.vote, commit: this.log.committed },
        entries,
        snapshot: this.pendingSnapshotWrite ?? null,
      };
      const held = this.heldForNextWrite;
      if (held.length > 0) this.heldForNextWrite = [];
      this.inFlightWrites.push({
        id,
        lastIndex: this.log.lastIndex(),
        lastTerm: this.log.lastTerm(),
        snapshotIndex: this.pendingSnapshotWrite?.meta.index,
        held: held.length > 0 ? held : noMessages,
      });
      this.writtenTerm = this.term;
      this.writtenVote = this.vote;
      this.dirtyFrom = Number.POSITIVE_INFINITY;
      this.pendingSnapshotWrite = undefined;
    } else if (this.heldForNextWrite.length > 0) {
      const last = this.inFlightWrites[this.inFlightWrites.length - 1];
      if (last) {
        if (last.held === noMessages) last.held = this.heldForNextWrite;
        else last.held.push(...this.heldForNextWrite);
      } else {
        this.outbox.push(...this.heldForNextWrite);
      }
      this.heldForNextWrite = [];
    }

    // With hundreds of ranges in a turn most of these are empty: a shared empty array
    // instead of a new one each (at 256 busy ranges, garbage collection took about 15% of
    // a node's CPU in a profile).
    const messages = this.takeMessages();
    const readStates = this.readStates;
    if (readStates.length > 0) this.readStates = [];
    const droppedReads = this.droppedReads;
    if (droppedReads.length > 0) this.droppedReads = [];
    return {
      messages,
      write,
      committed: this.log.nextToApply(),
      readStates: readStates.length > 0 ? readStates : noReadStates,
      droppedReads: droppedReads.length > 0 ? droppedReads : noReads,
    };
  }

  /**
   * The messages ready to send, and nothing else of a Ready: what persisted() released (a
   * follower's acknowledgements) and what the leader queued since the last ready(). A host
   * may send them at once, say from its durable callback, without a whole ready(); what
   * else is ready stays for ready() (hasReady() tells).
   */
  takeMessages(): readonly Message[] {
    const messages = this.outbox;
    if (messages.length === 0) return noMessages;
    this.outbox = [];
    return messages;
  }

  /** The caller made writes up to `writeId` durable, in order. */
  persisted(writeId: number): void {
    while (this.inFlightWrites.length > 0 && this.inFlightWrites[0]!.id <= writeId) {
      const w = this.inFlightWrites.shift()!;
      if (w.snapshotIndex !== undefined && this.log.snapshot.index === w.snapshotIndex) {
        this.log.stable = Math.max(this.log.stable, w.snapshotIndex);
      }
      // Entries a later conflict replaced are not what this write made durable.
      if (this.log.term(w.lastIndex) === w.lastTerm) {
        this.log.stable = Math.max(this.log.stable, w.lastIndex);
      }
      this.outbox.push(...w.held);
    }
    if (this.role === 'leader') this.maybeCommit();
  }
}
