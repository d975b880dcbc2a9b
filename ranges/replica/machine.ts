// The range replica machine: an xstate v5 statechart that owns the lifecycle
// (initializing, active, quiescent, removed) and, inside active, which role is live
// (follower, preCandidate, candidate, leader); inside quiescent, which role sleeps (leader
// or follower: an idle range stops ticking and heartbeating). It is the role switch of etcd-io/raft's
// `r.step = stepLeader`: the host dispatches ticks, messages, proposals and reads to the
// handlers of the role the machine is in, and a handler's requested role change is sent
// to the machine, which checks that the change is legal (an illegal one, say follower ->
// leader, throws) and runs the core's become* entry function.
//
// Cost: the hot path (appends, acknowledgements, proposals, reads) sends no event at
// all; one event per role change, per quiesce and per wake. Context holds the core by reference and is never
// reassigned (assign would copy it).

import { assertEvent, enqueueActions, setup } from 'xstate';
import { InvariantViolation } from '../core/assert.ts';
import type { LifecycleChange, RaftCore, RoleChange } from '../core/raft.ts';

export type ReplicaEvent = { type: 'START' } | { type: 'REMOVE' } | RoleChange | LifecycleChange;

type Raise = (event: ReplicaEvent) => void;

/** A become* function may itself ask for the next change (a single voter wins at once). */
function raiseChange(raise: Raise, change: RoleChange | undefined): void {
  if (change) raise(change);
}

/**
 * The context of a snapshot to resume an actor from (RangeReplica's hibernation): the core,
 * in a property that is not enumerable. Restoring a snapshot walks the context's enumerable
 * properties for actor references, and that walk must not descend into the core's log.
 * (The initial context, made by an assign, is a plain object: an assign copies only
 * enumerable properties.)
 */
export function coreContext(core: RaftCore): { core: RaftCore } {
  return Object.defineProperty({} as { core: RaftCore }, 'core', {
    value: core,
    enumerable: false,
  });
}

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
    enterQuiescent: ({ context }) => {
      context.core.quiesce();
    },
    wake: ({ context, event }) => {
      assertEvent(event, 'WAKE');
      context.core.wake(event.leaderLapsed);
    },
    illegalChange: ({ event }) => {
      throw new InvariantViolation(`illegal role change: ${event.type}`);
    },
    illegalLifecycleChange: ({ event }) => {
      throw new InvariantViolation(`illegal lifecycle change: ${event.type}`);
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
        // Reached only when the current role has no transition for the change.
        BECOME_FOLLOWER: { actions: 'illegalChange' },
        BECOME_PRECANDIDATE: { actions: 'illegalChange' },
        BECOME_CANDIDATE: { actions: 'illegalChange' },
        BECOME_LEADER: { actions: 'illegalChange' },
        QUIESCE: { actions: 'illegalLifecycleChange' },
        WAKE: { actions: 'illegalLifecycleChange' },
      },
      states: {
        follower: {
          on: {
            BECOME_FOLLOWER: { target: 'follower', reenter: true, actions: 'enterFollower' },
            BECOME_PRECANDIDATE: { target: 'preCandidate', actions: 'enterPreCandidate' },
            BECOME_CANDIDATE: { target: 'candidate', actions: 'enterCandidate' },
            QUIESCE: { target: '#replica.quiescent.follower', actions: 'enterQuiescent' },
          },
        },
        preCandidate: {
          on: {
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
            BECOME_FOLLOWER: { target: 'follower', actions: 'enterFollower' },
            BECOME_PRECANDIDATE: { target: 'preCandidate', actions: 'enterPreCandidate' },
            BECOME_CANDIDATE: { target: 'candidate', reenter: true, actions: 'enterCandidate' },
            BECOME_LEADER: { target: 'leader', actions: 'enterLeader' },
          },
        },
        leader: {
          on: {
            BECOME_FOLLOWER: { target: 'follower', actions: 'enterFollower' },
            QUIESCE: { target: '#replica.quiescent.leader', actions: 'enterQuiescent' },
          },
        },
      },
    },
    // No ticks and no heartbeats; the role is kept. A role change needs a WAKE first.
    quiescent: {
      initial: 'follower',
      on: {
        REMOVE: 'removed',
        BECOME_FOLLOWER: { actions: 'illegalChange' },
        BECOME_PRECANDIDATE: { actions: 'illegalChange' },
        BECOME_CANDIDATE: { actions: 'illegalChange' },
        BECOME_LEADER: { actions: 'illegalChange' },
        QUIESCE: { actions: 'illegalLifecycleChange' },
      },
      states: {
        follower: {
          on: { WAKE: { target: '#replica.active.follower', actions: 'wake' } },
        },
        leader: {
          on: { WAKE: { target: '#replica.active.leader', actions: 'wake' } },
        },
      },
    },
    removed: { type: 'final' },
  },
});
