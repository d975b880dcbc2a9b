// One range replica as its host sees it: the core plus the xstate machine that owns its
// lifecycle and role. The host (the node in src/, or the simulator) drives it:
//
//   replica.tick() every tick; replica.step(messages) for the messages of one turn;
//   replica.propose(datas) and replica.read(id) for clients; then, once per turn,
//   const rd = replica.ready() and follow the order documented in ranges/core/ready.ts.
//
// Quiescence (when the host gives the core node liveness, CoreEnvironment.isLive): an idle
// range goes quiescent by itself after a tick or a message batch. The host then stops
// calling tick() for it (a tick while quiescent does nothing), and calls leaderLapsed()
// when quiescent() and the node of core.leader is no longer live (or restarted). step(),
// propose(), read() and transferLeadership() wake it; wake() does so explicitly.
//
// Every call is dispatched to the handlers of the role the machine is in; a role change
// a handler asks for goes through the machine (see machine.ts).
//
// Hibernation: a quiescent replica holds no actor. Entering quiescent stops the actor (the
// role it slept in is kept here); the next event (WAKE, REMOVE) starts a new actor resumed
// in that quiescent state, which then takes the event. Only the ranges in use pay for an
// actor.

import { type Actor, type AnyActorRef, createActor } from 'xstate';
import { InvariantViolation } from '../core/assert.ts';
import { type LifecycleChange, RaftCore, type RoleChange, type StepResult } from '../core/raft.ts';
import type { Ready } from '../core/ready.ts';
import type {
  ConsensusOptions,
  CoreEnvironment,
  LogIndex,
  Message,
  PersistedState,
  ProposeError,
  ReadError,
  ReplicaId,
  Role,
  Term,
} from '../core/types.ts';
import { coreContext, type ReplicaEvent, replicaMachine } from './machine.ts';

export type ProposeResult = { index: LogIndex; term: Term } | ProposeError;
/** role() answers the role while active or quiescent (see quiescent()). */
export type Lifecycle = Role | 'initializing' | 'removed';

type MachineValue = 'initializing' | 'removed' | { active: Role } | { quiescent: Role };

/**
 * Stops a replica's actor and takes it out of its actor system. stop() refuses an actor
 * made with a parent (it joins the parent's system, but the parent's machine never spawned
 * it, so it has no stopChild to call); _stop() is what a parent's stopChild runs: the actor
 * stops and unregisters from the system, which would otherwise keep it forever.
 * (xstate's version is pinned; test/unit/machine.test.ts checks that it unregisters.)
 */
function stopActor(actor: Actor<typeof replicaMachine>): void {
  if (actor._parent === undefined) {
    actor.stop();
    return;
  }
  (actor as unknown as { _stop(): void })._stop();
}

/**
 * The lease gate: a lease read whose clock reading is before leaseGateMs is served at
 * leaseGateIndex without asking the core (RangeReplica.leaseReadIndex). Opened by a lease
 * read the core granted, at the lease's proven expiry (RaftCore.leaseProvenUntilMs) and
 * the commit index it read; closed (0) by every RangeReplica method that can change the
 * core: its role, lifecycle, commit index, lease rounds or a transfer. So while it is
 * open, the core, an awake leader, would answer the same. The core is changed only through
 * those methods (the host's log compaction aside, which no lease read reads). Ticks close
 * it too, so the first lease read after each tick goes to the core and keeps the range
 * awake. Only the replica writes it.
 */
export interface LeaseGate {
  leaseGateMs: number;
  leaseGateIndex: LogIndex;
}

export class RangeReplica {
  /**
   * The lease gate (see LeaseGate), in an object of the host's when it gave one
   * (attachGate): its host reads it without reading the replica.
   */
  private gate: LeaseGate = { leaseGateMs: 0, leaseGateIndex: 0 };
  readonly core: RaftCore;
  /**
   * The machine's actor; none while the range is quiescent (hibernation: an actor and its
   * snapshot cost about 1.6 KiB, and a node may host thousands of idle ranges). The next
   * event starts a new actor from the quiescent state the last one stopped in.
   */
  private actor: Actor<typeof replicaMachine> | undefined;
  private readonly parent: AnyActorRef | undefined;
  /** The machine's role (or lifecycle when not started or removed), read back after every event. */
  private state: Lifecycle = 'initializing';
  /** Whether the machine is in quiescent (the role in `state` sleeps). */
  private asleep = false;
  /** xstate events sent, for the cost-per-operation figures of the benchmark. */
  eventsSent = 0;

  constructor(
    id: ReplicaId,
    state: PersistedState,
    options: ConsensusOptions,
    env: CoreEnvironment,
    /**
     * An actor whose system this replica's actor joins (a node's replicas share one; an
     * actor system of its own costs about 1.8 KiB per replica). Its events and errors are
     * not relayed anywhere the replica relies on: a failed machine throws from the call.
     */
    parent?: AnyActorRef,
  ) {
    this.core = new RaftCore(id, state, options, env);
    this.parent = parent;
    this.send({ type: 'START' });
  }

  /**
   * An actor of the machine: at its initial state for the first event, else resumed in
   * the quiescent state (role `state`) its predecessor stopped in. Resuming runs no action.
   */
  private startActor(): Actor<typeof replicaMachine> {
    const resume = this.state === 'initializing' ? undefined : this.state;
    if (resume !== undefined && !this.asleep) {
      throw new InvariantViolation(`no actor for a replica in ${resume}`);
    }
    const actor = createActor(replicaMachine, {
      input: { core: this.core },
      ...(resume !== undefined
        ? {
            snapshot: replicaMachine.resolveState({
              value: { quiescent: resume },
              context: coreContext(this.core),
            }),
          }
        : {}),
      ...(this.parent ? { parent: this.parent } : {}),
    });
    actor.start();
    return actor;
  }

  private send(event: ReplicaEvent): void {
    this.eventsSent++;
    const actor = (this.actor ??= this.startActor());
    actor.send(event);
    const snap = actor.getSnapshot();
    // An invariant failure inside an action stops the actor: crash, never limp on.
    if (snap.status === 'error') throw snap.error;
    const v = snap.value as MachineValue;
    if (typeof v === 'string') {
      this.state = v;
      this.asleep = false;
    } else if ('active' in v) {
      this.state = v.active;
      this.asleep = false;
    } else {
      this.state = v.quiescent;
      this.asleep = true;
    }
    // Quiescent (hibernating) or removed: the actor goes; a quiescent range's next event
    // (WAKE, REMOVE) resumes a new one where this one stopped.
    if (this.asleep || this.state === 'removed') {
      stopActor(actor);
      this.actor = undefined;
    }
  }

  private change(c: RoleChange | LifecycleChange | undefined): void {
    if (c) this.send(c);
  }

  /**
   * The role the machine is in (the core's `role` mirrors it); a quiescent leader is still
   * 'leader'. 'initializing' or 'removed' outside the active and quiescent lifecycles.
   */
  role(): Lifecycle {
    return this.state;
  }

  /** Whether the range sleeps: the host need not tick it (the core's `quiescent` mirrors it). */
  quiescent(): boolean {
    return this.asleep;
  }

  /** Ticks an active replica; a quiescent one ignores ticks (the host may skip them). */
  tick(): void {
    this.gate.leaseGateMs = 0;
    if (this.asleep) return;
    this.change(this.tickRole());
    this.maybeQuiesce();
  }

  /** Sends QUIESCE when the core asks for it (an idle leader, a follower told to quiesce). */
  private maybeQuiesce(): void {
    if ((this.state === 'leader' || this.state === 'follower') && this.core.wantsQuiesce()) {
      this.send({ type: 'QUIESCE' });
    }
  }

  /** Wakes a quiescent replica (a no-op when active): a leader heartbeats at once. */
  wake(): void {
    this.gate.leaseGateMs = 0;
    if (this.asleep) this.send({ type: 'WAKE', leaderLapsed: false });
  }

  /**
   * The host's node liveness says the node of this quiescent follower's leader
   * (core.leader) lapsed or restarted: the follower wakes and campaigns within one election
   * timeout (PreVote first). A no-op unless quiescent and a follower.
   */
  leaderLapsed(): void {
    this.gate.leaseGateMs = 0;
    if (this.asleep && this.state === 'follower') {
      this.send({ type: 'WAKE', leaderLapsed: true });
    }
  }

  private tickRole(): RoleChange | undefined {
    const core = this.core;
    switch (this.state) {
      case 'follower':
        return core.tickFollower();
      case 'preCandidate':
      case 'candidate':
        return core.tickCampaign();
      case 'leader':
        return core.tickLeader();
      default:
        return undefined;
    }
  }

  step(messages: readonly Message[]): void {
    this.gate.leaseGateMs = 0;
    let rest = messages;
    // Each round either consumes every message or makes one change (a wake or a role change).
    for (let rounds = 0; rest.length > 0 && rounds <= 2 * messages.length + 4; rounds++) {
      const r = this.asleep ? this.core.stepQuiescent(rest) : this.stepRole(rest);
      if (r === undefined) break;
      this.send(r.change);
      rest = r.rest;
    }
    this.maybeQuiesce();
  }

  private stepRole(messages: readonly Message[]): StepResult | undefined {
    const core = this.core;
    switch (this.state) {
      case 'follower':
        return core.stepFollower(messages);
      case 'preCandidate':
        return core.stepPreCandidate(messages);
      case 'candidate':
        return core.stepCandidate(messages);
      case 'leader':
        return core.stepLeader(messages);
      default:
        return undefined; // not started, or removed: drop
    }
  }

  /** Proposes a batch; a quiescent leader wakes first. */
  propose(datas: readonly Uint8Array[]): ProposeResult {
    this.gate.leaseGateMs = 0;
    if (this.state !== 'leader') return { code: 'notLeader', leaderHint: this.core.leader };
    this.wake();
    return this.core.propose(datas);
  }

  /**
   * The index a read can be served at now by the lease (core.leaseReadIndex), or
   * undefined: not the leader, quiescent (no lease), or no valid lease. Sends no event.
   * `nowMs`: see RaftCore.leaseReadIndex.
   */
  leaseReadIndex(nowMs?: number): LogIndex | undefined {
    const gate = this.gate;
    if (nowMs !== undefined && nowMs < gate.leaseGateMs) return gate.leaseGateIndex;
    if (this.state !== 'leader' || this.asleep) return undefined;
    const at = this.core.leaseReadIndex(nowMs);
    if (at !== undefined && nowMs !== undefined) {
      gate.leaseGateMs = this.core.leaseProvenUntilMs();
      gate.leaseGateIndex = at;
    }
    return at;
  }

  /**
   * Keeps the lease gate in `gate`, an object of the host's (its record of the range, say,
   * which a lease read reads anyway), closed.
   */
  attachGate(gate: LeaseGate): void {
    gate.leaseGateMs = 0;
    this.gate = gate;
  }

  /**
   * Starts a linearizable read; its ReadState comes out of ready(). A quiescent leader
   * wakes first and holds no lease then: the read uses ReadIndex.
   */
  read(id: number): ReadError | null {
    this.gate.leaseGateMs = 0;
    if (this.state !== 'leader') return { code: 'notLeader', leaderHint: this.core.leader };
    this.wake();
    this.core.read(id);
    return null;
  }

  transferLeadership(target: ReplicaId): { code: 'invalidTarget' | 'notLeader' } | null {
    this.gate.leaseGateMs = 0;
    if (this.state !== 'leader') return { code: 'notLeader' };
    this.wake();
    return this.core.transferLeadership(target) ?? null;
  }

  /** See RaftCore.commitOwed (an active leader only). */
  commitOwed(): boolean {
    return this.state === 'leader' && !this.asleep && this.core.commitOwed();
  }

  /** See RaftCore.noticeCommit (an active leader only). */
  noticeCommit(): void {
    this.gate.leaseGateMs = 0;
    if (this.state === 'leader' && !this.asleep) this.core.noticeCommit();
  }

  /** See RaftCore.splitOff. */
  splitOff(campaignNotBeforeMs: number): void {
    this.gate.leaseGateMs = 0;
    this.core.splitOff(campaignNotBeforeMs);
  }

  /** A follower campaigns now (the first replica of a range split off on its leader's node). */
  campaignNow(): void {
    this.gate.leaseGateMs = 0;
    if (this.state !== 'follower') return;
    this.wake();
    this.change(this.core.campaignNow());
  }

  remove(): void {
    this.gate.leaseGateMs = 0;
    if (this.state !== 'removed') this.send({ type: 'REMOVE' });
  }

  hasReady(): boolean {
    return this.core.hasReady();
  }

  ready(): Ready {
    this.gate.leaseGateMs = 0;
    return this.core.ready();
  }

  /** The messages ready to send and nothing else (RaftCore.takeMessages). */
  takeMessages(): readonly Message[] {
    return this.core.takeMessages();
  }

  persisted(writeId: number): void {
    this.gate.leaseGateMs = 0;
    this.core.persisted(writeId);
  }

  compact(index: LogIndex): void {
    this.gate.leaseGateMs = 0;
    this.core.compact(index);
  }
}
