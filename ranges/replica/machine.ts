// The range replica machine: an xstate v5 statechart that owns the lifecycle
// (initializing, active, removed) and, inside active, the role (follower, preCandidate,
// candidate, leader). Each role's handlers are the plain functions of RaftCore; a handler
// returns the role change it wants and the machine makes it, so an illegal change
// (say follower -> leader) cannot happen silently: it throws.
//
// Cost: one event per tick, per batch of messages of one turn, per batch of proposals and
// per read; role changes add one raised event each. Context holds the core by reference
// and is never reassigned (assign would copy it).

import { assertEvent, enqueueActions, setup } from 'xstate';
import { InvariantViolation } from '../core/assert.ts';
import type { RaftCore, RoleChange, StepResult } from '../core/raft.ts';
import type { LogIndex, Message, ProposeError, ReadError, ReplicaId, Term } from '../core/types.ts';

/** A mutable box an event handler writes its synchronous result into. */
export interface ResultBox<T> {
  value: T | undefined;
}

export type ProposeResult = { index: LogIndex; term: Term } | ProposeError;

export type ReplicaEvent =
  | { type: 'START' }
  | { type: 'TICK' }
  | { type: 'MESSAGES'; messages: readonly Message[] }
  | { type: 'PROPOSE'; datas: readonly Uint8Array[]; result: ResultBox<ProposeResult> }
  | { type: 'READ'; id: number; result: ResultBox<ReadError | null> }
  | {
      type: 'TRANSFER';
      target: ReplicaId;
      result: ResultBox<{ code: 'invalidTarget' | 'notLeader' } | null>;
    }
  | { type: 'REMOVE' }
  | RoleChange;

type Raise = (event: ReplicaEvent) => void;

/** Raises a handler's role change, then the messages it left for the new role. */
function raiseStep(raise: Raise, r: StepResult | undefined): void {
  if (r === undefined) return;
  raise(r.change);
  if (r.rest.length > 0) raise({ type: 'MESSAGES', messages: r.rest });
}

function raiseChange(raise: Raise, change: RoleChange | undefined): void {
  if (change) raise(change);
}

const notLeader = (core: RaftCore): ProposeError & ReadError => ({
  code: 'notLeader',
  leaderHint: core.leader,
});

export const replicaMachine = setup({
  types: {
    context: {} as { core: RaftCore },
    input: {} as { core: RaftCore },
    events: {} as ReplicaEvent,
  },
  actions: {
    enterFollower: enqueueActions(({ context, event, enqueue }) => {
      assertEvent(event, 'BECOME_FOLLOWER');
      raiseChange(enqueue.raise, context.core.becomeFollower(event.term, event.leader));
    }),
    enterPreCandidate: enqueueActions(({ context, enqueue }) => {
      raiseChange(enqueue.raise, context.core.becomePreCandidate());
    }),
    enterCandidate: enqueueActions(({ context, event, enqueue }) => {
      assertEvent(event, 'BECOME_CANDIDATE');
      raiseChange(enqueue.raise, context.core.becomeCandidate(event.transfer));
    }),
    enterLeader: enqueueActions(({ context, enqueue }) => {
      raiseChange(enqueue.raise, context.core.becomeLeader());
    }),
    tickFollower: enqueueActions(({ context, enqueue }) =>
      raiseChange(enqueue.raise, context.core.tickFollower()),
    ),
    tickCampaign: enqueueActions(({ context, enqueue }) =>
      raiseChange(enqueue.raise, context.core.tickCampaign()),
    ),
    tickLeader: enqueueActions(({ context, enqueue }) =>
      raiseChange(enqueue.raise, context.core.tickLeader()),
    ),
    stepFollower: enqueueActions(({ context, event, enqueue }) => {
      assertEvent(event, 'MESSAGES');
      raiseStep(enqueue.raise, context.core.stepFollower(event.messages));
    }),
    stepPreCandidate: enqueueActions(({ context, event, enqueue }) => {
      assertEvent(event, 'MESSAGES');
      raiseStep(enqueue.raise, context.core.stepPreCandidate(event.messages));
    }),
    stepCandidate: enqueueActions(({ context, event, enqueue }) => {
      assertEvent(event, 'MESSAGES');
      raiseStep(enqueue.raise, context.core.stepCandidate(event.messages));
    }),
    stepLeader: enqueueActions(({ context, event, enqueue }) => {
      assertEvent(event, 'MESSAGES');
      raiseStep(enqueue.raise, context.core.stepLeader(event.messages));
    }),
    propose: ({ context, event }) => {
      assertEvent(event, 'PROPOSE');
      event.result.value = context.core.propose(event.datas);
    },
    read: ({ context, event }) => {
      assertEvent(event, 'READ');
      context.core.read(event.id);
      event.result.value = null;
    },
    transfer: ({ context, event }) => {
      assertEvent(event, 'TRANSFER');
      event.result.value = context.core.transferLeadership(event.target) ?? null;
    },
    refuseNotLeader: ({ context, event }) => {
      if (event.type === 'PROPOSE') event.result.value = notLeader(context.core);
      else if (event.type === 'READ') event.result.value = notLeader(context.core);
      else if (event.type === 'TRANSFER') event.result.value = { code: 'notLeader' };
    },
    illegalChange: ({ event }) => {
      if (event.type.startsWith('BECOME_')) {
        throw new InvariantViolation(`illegal role change: ${event.type}`);
      }
    },
  },
}).createMachine({
  id: 'replica',
  context: ({ input }) => ({ core: input.core }),
  initial: 'initializing',
  states: {
    initializing: {
      on: { START: 'active' },
    },
    active: {
      initial: 'follower',
      on: {
        REMOVE: 'removed',
        PROPOSE: { actions: 'refuseNotLeader' },
        READ: { actions: 'refuseNotLeader' },
        TRANSFER: { actions: 'refuseNotLeader' },
        '*': { actions: 'illegalChange' },
      },
      states: {
        follower: {
          on: {
            TICK: { actions: 'tickFollower' },
            MESSAGES: { actions: 'stepFollower' },
            BECOME_FOLLOWER: { target: 'follower', reenter: true, actions: 'enterFollower' },
            BECOME_PRECANDIDATE: { target: 'preCandidate', actions: 'enterPreCandidate' },
            BECOME_CANDIDATE: { target: 'candidate', actions: 'enterCandidate' },
          },
        },
        preCandidate: {
          on: {
            TICK: { actions: 'tickCampaign' },
            MESSAGES: { actions: 'stepPreCandidate' },
            BECOME_FOLLOWER: { target: 'follower', actions: 'enterFollower' },
            BECOME_PRECANDIDATE: {
              target: 'preCandidate',
              reenter: true,
              actions: 'enterPreCandidate',
            },
            BECOME_CANDIDATE: { target: 'candidate', actions: 'enterCandidate' },
          },
        },
        candidate: {
          on: {
            TICK: { actions: 'tickCampaign' },
            MESSAGES: { actions: 'stepCandidate' },
            BECOME_FOLLOWER: { target: 'follower', actions: 'enterFollower' },
            BECOME_PRECANDIDATE: { target: 'preCandidate', actions: 'enterPreCandidate' },
            BECOME_CANDIDATE: { target: 'candidate', reenter: true, actions: 'enterCandidate' },
            BECOME_LEADER: { target: 'leader', actions: 'enterLeader' },
          },
        },
        leader: {
          on: {
            TICK: { actions: 'tickLeader' },
            MESSAGES: { actions: 'stepLeader' },
            PROPOSE: { actions: 'propose' },
            READ: { actions: 'read' },
            TRANSFER: { actions: 'transfer' },
            BECOME_FOLLOWER: { target: 'follower', actions: 'enterFollower' },
          },
        },
      },
    },
    removed: { type: 'final' },
  },
});
