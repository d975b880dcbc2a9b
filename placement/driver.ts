// The placement driver: one actor per node, active only while the node leads the meta
// range, so it fails over with it (DESIGN.md, "Placement driver").
//
// The node sends it:
//   LEAD / UNLEAD      when this node gains or loses leadership of the meta range;
//   REPORT             each batch of leader reports it receives (RangeReport), and of
//                      ranges whose last report still holds (fresh);
//   DIRECTORY          a read of the whole meta directory, regularly (every tick or so),
//                      or null when it is unchanged since the last read;
//   TICK               regularly, e.g. once a second, with the nodes it hears from: time
//                      out operations, run the checkers;
//   OP_DONE/OP_FAILED  when an issued operation is applied or refused.
// and carries out what the driver passes to the `issue` port. Time comes only in events.
//
// Standby ignores everything but LEAD. A LEAD starts from an empty view and issues nothing
// until it has a directory read and warmupMs of reports; a LEAD while active starts over
// the same way. The memory and its rules are plain functions in state.ts; decisions stay
// readable (decisions()) after UNLEAD, with open ones marked abandoned.

import { assertEvent, assign, enqueueActions, setup } from 'xstate';
import { type PlacementConfig, placementConfig } from './config.ts';
import {
  type DriverState,
  endOperation,
  type InFlightOperation,
  initialState,
  lead,
  observeDirectory,
  observeReports,
  tick,
  unlead,
} from './state.ts';
import type { Decision, Operation, RangeDesc, RangeReport, RangeStatsReport } from './types.ts';

export type PlacementEvent =
  | { readonly type: 'LEAD'; readonly nowMs: number }
  | { readonly type: 'UNLEAD' }
  | {
      readonly type: 'REPORT';
      readonly reports: readonly RangeReport[];
      /** Ranges (id, generation) whose last full report still holds (observeReports). */
      readonly fresh?: readonly (readonly [number, number])[];
      /** Ranges whose last full report's descriptor holds, with new numbers (observeReports). */
      readonly stats?: readonly RangeStatsReport[];
      readonly nowMs: number;
    }
  | {
      readonly type: 'DIRECTORY';
      /** null: unchanged since the last read (the meta range applied nothing since). */
      readonly descriptors: readonly RangeDesc[] | null;
      readonly nowMs: number;
    }
  | {
      readonly type: 'TICK';
      readonly nowMs: number;
      /** The nodes this node hears from (node liveness), itself included. */
      readonly liveNodes?: readonly string[];
    }
  | { readonly type: 'OP_DONE'; readonly id: string }
  | { readonly type: 'OP_FAILED'; readonly id: string; readonly why: string };

export interface PlacementInput {
  /** Carries out an operation (asynchronously); its answer comes back as OP_DONE or OP_FAILED. */
  readonly issue: (op: Operation) => void;
  readonly config?: Partial<PlacementConfig>;
}

export interface PlacementContext {
  readonly issue: (op: Operation) => void;
  readonly state: DriverState;
}

export const placementMachine = setup({
  types: {
    context: {} as PlacementContext,
    input: {} as PlacementInput,
    events: {} as PlacementEvent,
  },
  actions: {
    lead: assign({
      state: ({ context, event }) => {
        assertEvent(event, 'LEAD');
        return lead(context.state, event.nowMs);
      },
    }),
    unlead: assign({ state: ({ context }) => unlead(context.state) }),
    observe: assign({
      state: ({ context, event }) => {
        assertEvent(event, ['REPORT', 'DIRECTORY']);
        return event.type === 'REPORT'
          ? observeReports(context.state, event.reports, event.nowMs, event.fresh, event.stats)
          : observeDirectory(context.state, event.descriptors, event.nowMs);
      },
    }),
    answer: assign({
      state: ({ context, event }) => {
        assertEvent(event, ['OP_DONE', 'OP_FAILED']);
        return event.type === 'OP_DONE'
          ? endOperation(context.state, event.id, 'done', 'applied')
          : endOperation(context.state, event.id, 'failed', event.why);
      },
    }),
    tick: enqueueActions(({ context, event, enqueue }) => {
      assertEvent(event, 'TICK');
      const { state, issue } = tick(context.state, event.nowMs, event.liveNodes);
      enqueue.assign({ state });
      // After the assign: an answer the port sends back synchronously finds the op in flight.
      for (const op of issue) enqueue(() => context.issue(op));
    }),
  },
}).createMachine({
  id: 'placement',
  context: ({ input }) => ({
    issue: input.issue,
    state: initialState(placementConfig(input.config)),
  }),
  initial: 'standby',
  states: {
    standby: {
      on: { LEAD: { target: 'active', actions: 'lead' } },
    },
    active: {
      on: {
        LEAD: { actions: 'lead' },
        UNLEAD: { target: 'standby', actions: 'unlead' },
        REPORT: { actions: 'observe' },
        DIRECTORY: { actions: 'observe' },
        TICK: { actions: 'tick' },
        OP_DONE: { actions: 'answer' },
        OP_FAILED: { actions: 'answer' },
      },
    },
  },
});

/** Anything with the placement actor's snapshot: the actor itself, or a snapshot holder. */
export interface PlacementSnapshotSource {
  getSnapshot(): { readonly context: PlacementContext };
}

/** The decisions kept for the admin API, oldest first (at most config.decisionsMax). */
export function decisions(actor: PlacementSnapshotSource): readonly Decision[] {
  return actor.getSnapshot().context.state.decisions;
}

/** The operations issued and not answered yet, oldest first; empty in standby. */
export function operationsInFlight(actor: PlacementSnapshotSource): readonly InFlightOperation[] {
  return [...(actor.getSnapshot().context.state.leader?.inFlight.values() ?? [])];
}
