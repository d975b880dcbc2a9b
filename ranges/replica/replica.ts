// One range replica as its host sees it: the core plus the xstate machine that owns its
// lifecycle and role. The host (the node in src/, or the simulator) drives it:
//
//   replica.tick() every tick; replica.step(messages) for the messages of one turn;
//   replica.propose(datas) and replica.read(id) for clients; then, once per turn,
//   const rd = replica.ready() and follow the order documented in ranges/core/ready.ts.
//
// Every call is dispatched to the handlers of the role the machine is in; a role change
// a handler asks for goes through the machine (see machine.ts).

import { type Actor, createActor } from 'xstate';
import { RaftCore, type RoleChange, type StepResult } from '../core/raft.ts';
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
import { type ReplicaEvent, replicaMachine } from './machine.ts';

export type ProposeResult = { index: LogIndex; term: Term } | ProposeError;
export type Lifecycle = Role | 'initializing' | 'removed';

export class RangeReplica {
  readonly core: RaftCore;
  private readonly actor: Actor<typeof replicaMachine>;
  /** The machine's state, read back after every event it handles. */
  private state: Lifecycle = 'initializing';
  /** xstate events sent, for the cost-per-operation figures of the benchmark. */
  eventsSent = 0;

  constructor(
    id: ReplicaId,
    state: PersistedState,
    options: ConsensusOptions,
    env: CoreEnvironment,
  ) {
    this.core = new RaftCore(id, state, options, env);
    this.actor = createActor(replicaMachine, { input: { core: this.core } });
    this.actor.start();
    this.send({ type: 'START' });
  }

  private send(event: ReplicaEvent): void {
    this.eventsSent++;
    this.actor.send(event);
    const snap = this.actor.getSnapshot();
    // An invariant failure inside an action stops the actor: crash, never limp on.
    if (snap.status === 'error') throw snap.error;
    const v = snap.value;
    this.state = typeof v === 'string' ? (v as Lifecycle) : (v as { active: Role }).active;
  }

  private change(c: RoleChange | undefined): void {
    if (c) this.send(c);
  }

  /** The state the machine is in (the core's `role` mirrors it). */
  role(): Lifecycle {
    return this.state;
  }

  tick(): void {
    this.change(this.tickRole());
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
    let rest = messages;
    // Each round either consumes every message or makes one role change.
    for (let rounds = 0; rest.length > 0 && rounds <= messages.length + 4; rounds++) {
      const r = this.stepRole(rest);
      if (r === undefined) return;
      this.send(r.change);
      rest = r.rest;
    }
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

  propose(datas: readonly Uint8Array[]): ProposeResult {
    if (this.state !== 'leader') return { code: 'notLeader', leaderHint: this.core.leader };
    return this.core.propose(datas);
  }

  /** Starts a linearizable read; its ReadState comes out of ready(). */
  read(id: number): ReadError | null {
    if (this.state !== 'leader') return { code: 'notLeader', leaderHint: this.core.leader };
    this.core.read(id);
    return null;
  }

  transferLeadership(target: ReplicaId): { code: 'invalidTarget' | 'notLeader' } | null {
    if (this.state !== 'leader') return { code: 'notLeader' };
    return this.core.transferLeadership(target) ?? null;
  }

  /** See RaftCore.splitOff. */
  splitOff(campaignNotBeforeMs: number): void {
    this.core.splitOff(campaignNotBeforeMs);
  }

  /** A follower campaigns now (the first replica of a range split off on its leader's node). */
  campaignNow(): void {
    if (this.state === 'follower') this.change(this.core.campaignNow());
  }

  remove(): void {
    this.send({ type: 'REMOVE' });
  }

  hasReady(): boolean {
    return this.core.hasReady();
  }

  ready(): Ready {
    return this.core.ready();
  }

  persisted(writeId: number): void {
    this.core.persisted(writeId);
  }

  compact(index: LogIndex): void {
    this.core.compact(index);
  }
}
