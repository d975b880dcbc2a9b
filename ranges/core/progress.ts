// What a leader knows of one follower: how far its log matches, what is in flight, and
// which lease request it last answered. Plain data plus small pure helpers.

import type { LogIndex, Snapshot } from './types.ts';

/**
 * - probe: one append at a time until the follower's match point is found;
 * - replicate: appends are pipelined, up to inflightAppendsMax in flight;
 * - snapshot: the follower's next entry was compacted away; a snapshot is being sent.
 */
export type ProgressState = 'probe' | 'replicate' | 'snapshot';

export interface SnapshotSend {
  readonly snapshot: Snapshot;
  /** Next byte to send; everything before was acknowledged. */
  offset: number;
  /** Ticks since the last chunk was sent or acknowledged. */
  idleTicks: number;
}

export interface Progress {
  /** Highest index known durable and matching on the follower. Invariant: match < next. */
  match: LogIndex;
  next: LogIndex;
  state: ProgressState;
  /** probe: an append is outstanding and unanswered. */
  probeSent: boolean;
  /** replicate: the last index of each append in flight, ascending. */
  inflight: LogIndex[];
  /** Highest lease sequence number the follower answered in this term. */
  ackedSeq: number;
  /** For CheckQuorum (etcd mode): heard from since the last check. */
  recentActive: boolean;
  /** The commit index last sent, so a commit change is broadcast once. */
  commitSent: LogIndex;
  /** match at the previous heartbeat response, to detect lost pipelined appends. */
  matchAtLastHeartbeat: LogIndex;
  /** An append with entries went to the follower since the last heartbeat round. */
  appendedSinceRound: boolean;
  /**
   * The last round skipped the follower (appendedSinceRound) and nothing answered has
   * carried that round's seq to it since: the next tick heartbeats it (heartbeatOwed).
   */
  roundOwed: boolean;
  sending: SnapshotSend | undefined;
}

export function newProgress(next: LogIndex): Progress {
  return {
    match: 0,
    next,
    state: 'probe',
    probeSent: false,
    inflight: [],
    ackedSeq: 0,
    recentActive: false,
    commitSent: 0,
    matchAtLastHeartbeat: 0,
    appendedSinceRound: false,
    roundOwed: false,
    sending: undefined,
  };
}

export function isPaused(pr: Progress, inflightAppendsMax: number): boolean {
  switch (pr.state) {
    case 'probe':
      return pr.probeSent;
    case 'replicate':
      return pr.inflight.length >= inflightAppendsMax;
    case 'snapshot':
      return true;
  }
}

export function becomeProbe(pr: Progress): void {
  pr.state = 'probe';
  pr.next = pr.match + 1;
  pr.probeSent = false;
  pr.inflight = [];
  pr.sending = undefined;
}

export function becomeReplicate(pr: Progress): void {
  pr.state = 'replicate';
  pr.next = pr.match + 1;
  pr.probeSent = false;
  pr.inflight = [];
  pr.sending = undefined;
}

/** Records an accepted match index; returns whether it moved forward. */
export function updateMatch(pr: Progress, index: LogIndex): boolean {
  let moved = false;
  if (index > pr.match) {
    pr.match = index;
    moved = true;
  }
  pr.next = Math.max(pr.next, index + 1);
  while (pr.inflight.length > 0 && pr.inflight[0]! <= index) pr.inflight.shift();
  return moved;
}
