// One range replica as its host sees it: the core plus the xstate machine that owns its
// role. The host (the node in src/, or the simulator) drives it:
//
//   replica.tick() every tick; replica.step(messages) for the messages of one turn;
//   replica.propose(datas) and replica.read(id) for clients; then, once per turn,
//   const rd = replica.ready() and follow the order documented in ranges/core/ready.ts.

import { type Actor, createActor } from 'xstate';
import { RaftCore } from '../core/raft.ts';
import type { Ready } from '../core/ready.ts';
import type {
  ConsensusOptions,
  CoreEnvironment,
  LogIndex,
  Message,
  PersistedState,
  ReadError,
  ReplicaId,
  Role,
} from '../core/types.ts';
import {
  type ProposeResult,
  type ReplicaEvent,
  type ResultBox,
  replicaMachine,
} from './machine.ts';

export class RangeReplica {
  readonly core: RaftCore;
  private readonly actor: Actor<typeof replicaMachine>;
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
  }

  /** The role the machine is in (the core mirrors it). */
  role(): Role | 'initializing' | 'removed' {
    const v = this.actor.getSnapshot().value;
    if (typeof v === 'string') return v as 'initializing' | 'removed';
    return (v as { active: Role }).active;
  }

  tick(): void {
    this.send({ type: 'TICK' });
  }

  step(messages: readonly Message[]): void {
    if (messages.length > 0) this.send({ type: 'MESSAGES', messages });
  }

  propose(datas: readonly Uint8Array[]): ProposeResult {
    const result: ResultBox<ProposeResult> = { value: undefined };
    this.send({ type: 'PROPOSE', datas, result });
    return result.value!;
  }

  /** Starts a linearizable read; its ReadState comes out of ready(). */
  read(id: number): ReadError | null {
    const result: ResultBox<ReadError | null> = { value: undefined };
    this.send({ type: 'READ', id, result });
    return result.value!;
  }

  transferLeadership(target: ReplicaId): { code: 'invalidTarget' | 'notLeader' } | null {
    const result: ResultBox<{ code: 'invalidTarget' | 'notLeader' } | null> = { value: undefined };
    this.send({ type: 'TRANSFER', target, result });
    return result.value!;
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
