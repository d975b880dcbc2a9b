// Types of the Harpoon consensus core. Pure data: no I/O, no clocks, no randomness here.

/** A replica of one range. Replica ids are never reused within a cluster. */
export type ReplicaId = number;
export type Term = number;
export type LogIndex = number;

/** `none` for "no replica" in votes and leader hints. */
export const none: ReplicaId = 0;

/**
 * Which election rules run. Harpoon is the product; the other two exist only so that
 * Harpoon can be measured against them.
 * - `raft`: plain Raft: no PreVote, no leases, no leader stickiness, ReadIndex reads.
 * - `etcd`: PreVote and CheckQuorum, as etcd-io/raft runs them, ReadIndex reads.
 * - `harpoon`: PreVote, follower-granted leases, stickiness, abdication, lease reads.
 */
export type ConsensusMode = 'raft' | 'etcd' | 'harpoon';

export type EntryKind = 'normal' | 'noop' | 'config';

export interface Entry {
  readonly index: LogIndex;
  readonly term: Term;
  readonly kind: EntryKind;
  /** Opaque command bytes for `normal` entries; empty for `noop`. */
  readonly data: Uint8Array;
}

/**
 * A voting configuration, joint-aware: while `outgoing` is non-empty the configuration is
 * joint and every decision (commit, election, lease) needs a quorum of both halves.
 * Learners receive the log but never vote and never count toward a quorum.
 * Invariant: a replica id appears at most once across voters and learners.
 */
export interface Configuration {
  readonly voters: readonly ReplicaId[];
  readonly outgoing: readonly ReplicaId[];
  readonly learners: readonly ReplicaId[];
}

/** What must be durable before a vote or acknowledgement depending on it leaves. */
export interface HardState {
  readonly term: Term;
  readonly vote: ReplicaId;
  readonly commit: LogIndex;
}

export interface SnapshotMeta {
  readonly index: LogIndex;
  readonly term: Term;
  readonly config: Configuration;
}

export interface Snapshot {
  readonly meta: SnapshotMeta;
  /** The state machine's bytes at `meta.index`, opaque to the core. */
  readonly data: Uint8Array;
}

interface MessageBase {
  readonly from: ReplicaId;
  readonly to: ReplicaId;
  readonly term: Term;
}

/** PreVote and Vote requests; `term` is the term the candidate would campaign at. */
export interface VoteRequest extends MessageBase {
  readonly type: 'prevote' | 'vote';
  readonly lastIndex: LogIndex;
  readonly lastTerm: Term;
  /** Set when the campaign follows a leadership transfer: leases of the old leader yield. */
  readonly transfer: boolean;
}

export interface VoteResponse extends MessageBase {
  readonly type: 'prevoteResponse' | 'voteResponse';
  readonly reject: boolean;
}

/** Every leader message carries a lease sequence number; responses echo it. */
export interface Append extends MessageBase {
  readonly type: 'append';
  readonly prevIndex: LogIndex;
  readonly prevTerm: Term;
  readonly entries: readonly Entry[];
  readonly commit: LogIndex;
  readonly seq: number;
  /**
   * No entries, sent only to tell a follower in replicate state the new commit index: the
   * follower answers it only when it rejects it (its log does not match at prevIndex).
   * With many ranges, a range's put was four messages plus this one to each follower and
   * its answer, which said nothing the leader did not know.
   */
  readonly commitOnly?: boolean;
}

export interface AppendResponse extends MessageBase {
  readonly type: 'appendResponse';
  readonly reject: boolean;
  /** Accepted: the follower's match index. Rejected: the prevIndex that did not match. */
  readonly index: LogIndex;
  /** Rejected: a hint of where the follower's log could match (its last index). */
  readonly hint: LogIndex;
  readonly seq: number;
}

export interface Heartbeat extends MessageBase {
  readonly type: 'heartbeat';
  readonly commit: LogIndex;
  readonly seq: number;
  /**
   * Set on the last heartbeat of a leader that goes quiescent (absent means false): a
   * follower whose log ends at `commit` goes quiescent too and does not answer.
   */
  readonly quiesce?: boolean;
}

export interface HeartbeatResponse extends MessageBase {
  readonly type: 'heartbeatResponse';
  readonly seq: number;
}

export interface SnapshotChunk extends MessageBase {
  readonly type: 'snapshot';
  readonly meta: SnapshotMeta;
  /** Byte offset of `data` in the whole snapshot. */
  readonly offset: number;
  readonly data: Uint8Array;
  readonly done: boolean;
  readonly seq: number;
}

export interface SnapshotResponse extends MessageBase {
  readonly type: 'snapshotResponse';
  /** The snapshot index this answers for. */
  readonly index: LogIndex;
  /** The next byte offset the follower wants; with `done` the snapshot is installed. */
  readonly offset: number;
  readonly done: boolean;
  readonly reject: boolean;
  readonly seq: number;
}

/** Leadership transfer: the target campaigns at once, without PreVote. */
export interface TimeoutNow extends MessageBase {
  readonly type: 'timeoutNow';
}

export type Message =
  | VoteRequest
  | VoteResponse
  | Append
  | AppendResponse
  | Heartbeat
  | HeartbeatResponse
  | SnapshotChunk
  | SnapshotResponse
  | TimeoutNow;

export type MessageType = Message['type'];

/** Tunables of one group. Names carry their units last. */
export interface ConsensusOptions {
  readonly mode: ConsensusMode;
  /** A follower campaigns after a random timeout in [electionTicks, 2 * electionTicks). */
  readonly electionTicks: number;
  /** The leader sends a heartbeat (a lease request) every heartbeatTicks. */
  readonly heartbeatTicks: number;
  /** How long a follower's grant lasts, on the follower's monotonic clock. */
  readonly leaseDurationMs: number;
  /** Bound on the relative rate difference of any two clocks (e.g. 0.01 = 1%). */
  readonly maxDriftRate: number;
  /** In-flight append messages per follower in replicate mode. */
  readonly inflightAppendsMax: number;
  /** Bytes of entries per append message. */
  readonly appendBytesMax: number;
  /** Bytes of snapshot data per chunk. */
  readonly snapshotChunkBytesMax: number;
  /** Proposals beyond this many uncommitted bytes are refused (back pressure). */
  readonly uncommittedBytesMax: number;
  /**
   * A harpoon leader goes quiescent after this many ticks without a proposal or a read,
   * once every follower has its whole log (0: never). Quiescence also needs the host's
   * node liveness (CoreEnvironment.isLive).
   */
  readonly quiesceAfterTicks: number;
  /**
   * A new commit index that no append with entries carries waits for the next tick (or
   * the next append, heartbeat or the host's noticeCommit) instead of going
   * out at once in an append of its own: at one write in flight that append cost every
   * follower a message and a separate fsynced apply per write. Followers then apply up to
   * a tick later than the leader when writes stop. false: sent at once.
   */
  readonly lazyCommit: boolean;
}

export const defaultOptions: ConsensusOptions = {
  mode: 'harpoon',
  electionTicks: 10,
  heartbeatTicks: 2,
  leaseDurationMs: 900,
  maxDriftRate: 0.02,
  inflightAppendsMax: 64,
  appendBytesMax: 512 * 1024,
  snapshotChunkBytesMax: 256 * 1024,
  uncommittedBytesMax: 64 * 1024 * 1024,
  quiesceAfterTicks: 10,
  lazyCommit: true,
};

/**
 * The injected ports of a replica: a monotonic clock, a seeded random source, the state
 * machine's snapshot, and (optionally) the host's node liveness.
 */
export interface CoreEnvironment {
  /**
   * Monotonic milliseconds, from 0 or later (performance.now(), say); never goes backwards
   * within one process.
   */
  readonly nowMs: () => number;
  /** Uniform in [0, 1), from a seeded generator. */
  readonly random: () => number;
  /** The state machine's snapshot at the applied index, taken when a follower needs one. */
  readonly takeSnapshot: () => Snapshot;
  /**
   * Node liveness as this host sees it: whether the node hosting `replica` is live (its
   * node heartbeat was heard within the liveness timeout). Without it a replica never
   * goes quiescent. Read only by a quiescent follower asked for a (pre)vote.
   */
  readonly isLive?: (replica: ReplicaId) => boolean;
}

/** What a replica starts from: the durable state, or nothing for a new one. */
export interface PersistedState {
  readonly hardState: HardState;
  /** The snapshot the state machine was last restored from or compacted to. */
  readonly snapshot: SnapshotMeta;
  /** Durable log entries after `snapshot.index`, contiguous. */
  readonly entries: readonly Entry[];
  /** The state machine's durable applied index; >= snapshot.index. */
  readonly applied: LogIndex;
}

export type Role = 'follower' | 'preCandidate' | 'candidate' | 'leader';

export type ProposeError =
  | { readonly code: 'notLeader'; readonly leaderHint: ReplicaId }
  | { readonly code: 'transferring' }
  | { readonly code: 'overloaded'; readonly uncommittedBytes: number };

export type ReadError = { readonly code: 'notLeader'; readonly leaderHint: ReplicaId };

export interface ReadState {
  /** The caller's read id. */
  readonly id: number;
  /** Serve the read once the applied index reaches this. */
  readonly index: LogIndex;
  readonly via: 'lease' | 'readIndex';
}
