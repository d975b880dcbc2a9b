// The range machine owns lifecycle and role: legal changes run the core's entry
// functions, illegal ones stop the actor with an invariant violation.

import { describe, expect, it } from 'vitest';
import { createActor, createMachine } from 'xstate';
import { RaftCore } from '../../ranges/core/raft.ts';
import { defaultOptions, type PersistedState } from '../../ranges/core/types.ts';
import { coreContext, replicaMachine } from '../../ranges/replica/machine.ts';
import { RangeReplica } from '../../ranges/replica/replica.ts';
import { Prng } from '../../src/lib/prng.ts';

function state(voters: number[]): PersistedState {
  return {
    hardState: { term: 0, vote: 0, commit: 0 },
    snapshot: { index: 0, term: 0, config: { voters, outgoing: [], learners: [] } },
    entries: [],
    applied: 0,
  };
}

function env(isLive?: (replica: number) => boolean) {
  const prng = new Prng(7);
  return {
    nowMs: () => 0,
    random: () => prng.next(),
    takeSnapshot: () => {
      throw new Error('unused');
    },
    ...(isLive ? { isLive } : {}),
  };
}

/** A single voter elected and caught up: its own write durable, its entries handed over. */
function singleLeader(isLive?: (replica: number) => boolean): RangeReplica {
  const r = new RangeReplica(1, state([1]), defaultOptions, env(isLive));
  for (let t = 0; t < 2 * defaultOptions.electionTicks && r.role() !== 'leader'; t++) r.tick();
  settle(r);
  return r;
}

/** A replica's actor (undefined while it hibernates): private, read for these tests only. */
function actorOf(r: RangeReplica): unknown {
  return (r as unknown as { actor: unknown }).actor;
}

function settle(r: RangeReplica): void {
  for (let i = 0; i < 4 && r.hasReady(); i++) {
    const rd = r.ready();
    if (rd.write) r.persisted(rd.write.id);
  }
}

describe('range machine', () => {
  it('starts in initializing and enters follower on START', () => {
    const core = new RaftCore(1, state([1, 2, 3]), defaultOptions, env());
    const actor = createActor(replicaMachine, { input: { core } });
    actor.start();
    expect(actor.getSnapshot().value).toBe('initializing');
    actor.send({ type: 'START' });
    expect(actor.getSnapshot().value).toEqual({ active: 'follower' });
  });

  it('refuses an illegal role change: follower straight to leader', () => {
    const core = new RaftCore(1, state([1, 2, 3]), defaultOptions, env());
    const actor = createActor(replicaMachine, { input: { core } });
    const errors: unknown[] = [];
    actor.subscribe({ error: (e) => errors.push(e) });
    actor.start();
    actor.send({ type: 'START' });
    actor.send({ type: 'BECOME_LEADER' });
    expect(actor.getSnapshot().status).toBe('error');
    expect(String(errors[0])).toContain('illegal role change: BECOME_LEADER');
    expect(core.role).toBe('follower');
  });

  it('walks a single voter through preCandidate and candidate to leader on one tick', () => {
    const r = new RangeReplica(1, state([1]), defaultOptions, env());
    const seen = new Set<string>();
    for (let t = 0; t < 2 * defaultOptions.electionTicks && r.role() !== 'leader'; t++) {
      r.tick();
      seen.add(r.role());
    }
    expect(r.role()).toBe('leader');
    expect(r.core.role).toBe('leader');
    expect(r.core.term).toBe(1);
    // START and BECOME_PRECANDIDATE are sent; candidate and leader follow inside the
    // machine, raised by the entry functions of a single voter that wins at once.
    expect(r.eventsSent).toBe(2);
  });

  it('sends no machine event on the hot path', () => {
    const r = new RangeReplica(1, state([1]), defaultOptions, env());
    for (let t = 0; t < 2 * defaultOptions.electionTicks && r.role() !== 'leader'; t++) r.tick();
    const before = r.eventsSent;
    for (let i = 0; i < 100; i++) {
      const res = r.propose([new Uint8Array([i])]);
      expect('index' in res).toBe(true);
      const rd = r.ready();
      if (rd.write) r.persisted(rd.write.id);
    }
    expect(r.eventsSent).toBe(before);
    expect(r.core.log.committed).toBe(101); // the leader's noop and 100 proposals
  });

  it('quiesces an idle leader and wakes it with one event each; ticks are ignored meanwhile', () => {
    const r = singleLeader(() => true);
    const before = r.eventsSent;
    for (let t = 0; t < defaultOptions.quiesceAfterTicks && !r.quiescent(); t++) r.tick();
    expect(r.quiescent()).toBe(true);
    expect(r.core.quiescent).toBe(true);
    expect(r.role()).toBe('leader'); // a quiescent leader keeps leadership...
    expect(r.core.hasValidLease()).toBe(false); // ...but not its lease
    expect(r.eventsSent).toBe(before + 1);
    for (let t = 0; t < 100; t++) r.tick();
    expect(r.quiescent()).toBe(true);
    expect(r.hasReady()).toBe(false); // a single voter has no follower to tell
    const res = r.propose([new Uint8Array([1])]);
    expect(res).toEqual({ index: 2, term: 1 });
    expect(r.quiescent()).toBe(false);
    expect(r.eventsSent).toBe(before + 2);
    settle(r);
    expect(r.core.log.committed).toBe(2);
  });

  it('leaseReadIndex: the committed index under a lease, nothing otherwise, and it keeps the range awake', () => {
    const r = singleLeader(() => true);
    expect(r.leaseReadIndex()).toBe(r.core.log.committed);
    // Reads keep it from going quiescent (quiescence would drop the lease).
    for (let t = 0; t < 3 * defaultOptions.quiesceAfterTicks; t++) {
      r.tick();
      expect(r.leaseReadIndex()).toBe(r.core.log.committed);
    }
    expect(r.quiescent()).toBe(false);
    for (let t = 0; t < defaultOptions.quiesceAfterTicks && !r.quiescent(); t++) r.tick();
    expect(r.quiescent()).toBe(true);
    expect(r.leaseReadIndex()).toBeUndefined(); // quiescent: no lease
    const follower = new RangeReplica(2, state([1, 2, 3]), defaultOptions, env());
    expect(follower.leaseReadIndex()).toBeUndefined();
    // raft mode has no leases at all.
    const raft = new RangeReplica(1, state([1]), { ...defaultOptions, mode: 'raft' }, env());
    for (let t = 0; t < 2 * defaultOptions.electionTicks && raft.role() !== 'leader'; t++) {
      raft.tick();
    }
    settle(raft);
    expect(raft.role()).toBe('leader');
    expect(raft.leaseReadIndex()).toBeUndefined();
  });

  it('leaseReadIndex(nowMs) checks the lease at the clock reading the host took', () => {
    // The environment's clock stays at 0: the lease runs from 0 for about leaseDurationMs.
    const r = singleLeader(() => true);
    const d = defaultOptions.leaseDurationMs;
    expect(r.leaseReadIndex(0)).toBe(r.core.log.committed);
    expect(r.leaseReadIndex(d / 2)).toBe(r.core.log.committed);
    expect(r.leaseReadIndex(d)).toBeUndefined(); // past the lease at that reading
    expect(r.leaseReadIndex()).toBe(r.core.log.committed); // the environment's clock: 0
  });

  it('leaseReadIndex(nowMs) answers from its gate only what the core would', () => {
    const r = singleLeader(() => true);
    // The host's object, which it reads without the replica (node.ts: its range record).
    const gate = { leaseGateMs: 123, leaseGateIndex: 0 };
    r.attachGate(gate);
    expect(gate.leaseGateMs).toBe(0); // attached closed
    const first = r.core.log.committed;
    expect(r.leaseReadIndex(1)).toBe(first); // the core's answer opens the gate
    expect(gate).toEqual({ leaseGateMs: r.core.leaseProvenUntilMs(), leaseGateIndex: first });
    expect(gate.leaseGateMs).toBeGreaterThan(2);
    expect(r.leaseReadIndex(2)).toBe(first); // the gate's
    // A write that commits closes it: the next lease read is at the new commit index.
    expect(r.propose([new Uint8Array([1])])).toEqual({ index: first + 1, term: r.core.term });
    expect(gate.leaseGateMs).toBe(0);
    expect(r.leaseReadIndex(2)).toBe(first); // not committed yet; the gate opens again
    settle(r);
    expect(gate.leaseGateMs).toBe(0);
    expect(r.core.log.committed).toBe(first + 1);
    expect(r.leaseReadIndex(2)).toBe(first + 1);
    // Reads served by the gate still keep the range awake: ticks close the gate, so the
    // first read after each tick is the core's.
    for (let t = 0; t < 3 * defaultOptions.quiesceAfterTicks; t++) {
      r.tick();
      for (let k = 0; k < 5; k++) expect(r.leaseReadIndex(2)).toBe(first + 1);
    }
    expect(r.quiescent()).toBe(false);
    // Without reads it goes quiescent, and holds no lease then, gate or not.
    for (let t = 0; t < 2 * defaultOptions.quiesceAfterTicks && !r.quiescent(); t++) r.tick();
    expect(r.quiescent()).toBe(true);
    expect(r.leaseReadIndex(2)).toBeUndefined();
  });

  it('never quiesces without node liveness from the host', () => {
    const r = singleLeader();
    for (let t = 0; t < 10 * defaultOptions.quiesceAfterTicks; t++) r.tick();
    expect(r.quiescent()).toBe(false);
  });

  it('refuses a role change while quiescent, and a wake while active', () => {
    const core = new RaftCore(
      1,
      state([1, 2, 3]),
      defaultOptions,
      env(() => true),
    );
    const actor = createActor(replicaMachine, { input: { core } });
    const errors: unknown[] = [];
    actor.subscribe({ error: (e) => errors.push(e) });
    actor.start();
    actor.send({ type: 'START' });
    actor.send({ type: 'QUIESCE' });
    expect(actor.getSnapshot().value).toEqual({ quiescent: 'follower' });
    actor.send({ type: 'WAKE', leaderLapsed: false });
    expect(actor.getSnapshot().value).toEqual({ active: 'follower' });
    expect(core.quiescent).toBe(false);
    actor.send({ type: 'QUIESCE' });
    actor.send({ type: 'BECOME_PRECANDIDATE' });
    expect(actor.getSnapshot().status).toBe('error');
    expect(String(errors[0])).toContain('illegal role change: BECOME_PRECANDIDATE');

    const other = new RaftCore(
      2,
      state([1, 2, 3]),
      defaultOptions,
      env(() => true),
    );
    const awake = createActor(replicaMachine, { input: { core: other } });
    const wakeErrors: unknown[] = [];
    awake.subscribe({ error: (e) => wakeErrors.push(e) });
    awake.start();
    awake.send({ type: 'START' });
    awake.send({ type: 'WAKE', leaderLapsed: false });
    expect(String(wakeErrors[0])).toContain('illegal lifecycle change: WAKE');
  });

  it('hibernates a quiescent replica: its actor goes and a new one resumes where it slept', () => {
    const r = singleLeader(() => true);
    expect(actorOf(r)).toBeDefined();
    for (let t = 0; t < defaultOptions.quiesceAfterTicks && !r.quiescent(); t++) r.tick();
    expect(r.quiescent()).toBe(true);
    expect(actorOf(r)).toBeUndefined();
    expect(r.role()).toBe('leader');
    // Woken by a proposal: a resumed actor takes WAKE (the core wakes, as without hibernation).
    expect(r.propose([new Uint8Array([1])])).toEqual({ index: 2, term: 1 });
    expect(r.quiescent()).toBe(false);
    expect(r.core.quiescent).toBe(false);
    expect(actorOf(r)).toBeDefined();
    settle(r);
    expect(r.core.log.committed).toBe(2);
    // Asleep again, then removed: REMOVE resumes an actor that ends in removed.
    for (let t = 0; t < defaultOptions.quiesceAfterTicks && !r.quiescent(); t++) r.tick();
    expect(r.quiescent()).toBe(true);
    r.remove();
    expect(r.role()).toBe('removed');
    expect(actorOf(r)).toBeUndefined();
    r.remove(); // a second remove changes nothing
    expect(r.role()).toBe('removed');

    // A quiescent follower whose leader's node lapsed: a resumed actor wakes it to campaign.
    const f = new RangeReplica(
      2,
      state([1, 2, 3]),
      defaultOptions,
      env(() => true),
    );
    f.step([{ type: 'heartbeat', from: 1, to: 2, term: 1, commit: 0, seq: 1, quiesce: true }]);
    expect(f.quiescent()).toBe(true);
    expect(actorOf(f)).toBeUndefined();
    f.leaderLapsed();
    expect(f.quiescent()).toBe(false);
    expect(f.core.quiescent).toBe(false);
    expect(f.role()).toBe('follower');
    expect(actorOf(f)).toBeDefined();
  });

  it('hibernation takes the actor out of a shared actor system (a node joins its replicas to one)', () => {
    const parent = createActor(createMachine({ id: 'replicas' })).start();
    const system = parent.system as unknown as { _unregister(a: unknown): void };
    const unregistered: unknown[] = [];
    const original = system._unregister.bind(system);
    system._unregister = (a) => {
      unregistered.push(a);
      original(a);
    };
    const r = new RangeReplica(
      1,
      state([1]),
      defaultOptions,
      env(() => true),
      parent,
    );
    for (let t = 0; t < 2 * defaultOptions.electionTicks && r.role() !== 'leader'; t++) r.tick();
    settle(r);
    expect(r.role()).toBe('leader');
    for (let round = 1; round <= 3; round++) {
      const actor = actorOf(r);
      expect(actor).toBeDefined();
      for (let t = 0; t < defaultOptions.quiesceAfterTicks && !r.quiescent(); t++) r.tick();
      expect(r.quiescent()).toBe(true);
      expect(unregistered).toHaveLength(round);
      expect(unregistered[round - 1]).toBe(actor);
      r.wake();
      settle(r);
      expect(r.quiescent()).toBe(false);
      expect(r.role()).toBe('leader');
    }
  });

  it('resumes from a context the snapshot restore does not walk into', () => {
    const core = new RaftCore(1, state([1]), defaultOptions, env());
    const ctx = coreContext(core);
    expect(ctx.core).toBe(core);
    expect(Object.keys(ctx)).toEqual([]);
    const actor = createActor(replicaMachine, {
      input: { core },
      snapshot: replicaMachine.resolveState({ value: { quiescent: 'follower' }, context: ctx }),
    });
    actor.start();
    expect(actor.getSnapshot().value).toEqual({ quiescent: 'follower' });
    expect(actor.getSnapshot().context.core).toBe(core);
    // The resumed actor keeps the quiescent state's rules: a role change is illegal there.
    const errors: unknown[] = [];
    actor.subscribe({ error: (e) => errors.push(e) });
    actor.send({ type: 'BECOME_CANDIDATE', transfer: false });
    expect(actor.getSnapshot().status).toBe('error');
    expect(String(errors[0])).toContain('illegal role change: BECOME_CANDIDATE');
  });

  it('ignores ticks and messages once removed, and refuses proposals', () => {
    const r = new RangeReplica(1, state([1, 2, 3]), defaultOptions, env());
    r.remove();
    expect(r.role()).toBe('removed');
    r.tick();
    expect(r.propose([new Uint8Array(1)])).toEqual({ code: 'notLeader', leaderHint: 0 });
  });
});
