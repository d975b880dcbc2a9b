// Interaction tests of the Harpoon core in the style of etcd-io/raft's datadriven testdata:
// a script of commands, each followed by `----` and the trace it must print. The harness
// is the host of N RangeReplicas: a manual network (one queue per replica, delivered on
// command), manual clocks (one per replica), storage that becomes durable only on
// `persist`, and a tiny KV state machine (`key=value` entries set a key).
//
// Commands (IDS is one or more replica ids or `all`; `k=v` tokens are options):
//   add-nodes N [mode= electionTicks= heartbeatTicks= leaseMs= drift= inflight= chunk=
//               appendBytes= seed= quiesce=]        start a new cluster of voters 1..N
//                                 (quiesce=T: node liveness on, quiesce after T idle ticks)
//   tick IDS [n=1] | tick-all [n=1]                  tick replicas (does not touch clocks)
//   advance-clock IDS ms=M                           move replica clocks forward
//   campaign ID                                      tick until it leaves the follower role
//   ready IDS           one Ready each: queue messages, keep the write pending, apply
//   take-messages IDS   queue only the messages ready to send (takeMessages), no Ready
//   persist IDS         make pending writes durable, then call persisted(lastWriteId)
//   process IDS         ready, persist at once, ready again... until the replica is quiet
//   deliver IDS [from=A] [type=T] [n=K] [drop]      step (or drop) queued messages
//   stabilize [quiet]   ready+persist every replica and deliver every message until quiet
//   propose ID DATA...  one batch of entries | read ID id=N | transfer-leadership from= to=
//   compact ID index=N | partition A.. | B.. [| C..] | heal | crash ID | restart ID
//   liveness IDS of=X live|dead    what IDS's nodes see of X's node (all live at first)
//   leader-lapsed IDS | wake IDS   the host's calls to quiescent replicas
//   split-off IDS [after=MS] | campaign-now IDS     the host's calls to a range a split made
//   notice-commit IDS   the host asks a leader to send its commit index now (lazy=1)
//   status | log IDS [from=I] | progress ID (the leader's view of each follower)
//
// Messages to a replica across a partition or to a crashed replica are dropped when sent
// and when delivered. Applied entries become durable with the next persist, like writes.

import type { Progress } from '../../ranges/core/progress.ts';
import {
  type ConsensusMode,
  type ConsensusOptions,
  defaultOptions,
  type Entry,
  type Message,
} from '../../ranges/core/types.ts';
import { RangeReplica } from '../../ranges/replica/replica.ts';
import { Prng } from '../../src/lib/prng.ts';
import {
  type Durable as DurableOf,
  makeDurable,
  type StateMachineOps,
  type StorageOp,
} from '../sim/durable.ts';
import { fmtEntries, fmtEntry, fmtHardState, fmtMessage, fmtMs } from './format.ts';
import { Kv } from './kv.ts';

const encoder = new TextEncoder();

/** Bounds of the loops the harness runs on its own. */
const stabilizeRoundsMax = 100;
const turnsPerRoundMax = 10;
const campaignTicksMax = 100;

type Durable = DurableOf<Kv>;

/** The harness's state machine as durable storage restores and advances it. */
const kvOps: StateMachineOps<Kv> = {
  decode: (bytes) => Kv.decode(bytes),
  apply: (kv, e) => kv.apply(e),
};

interface Node {
  readonly id: number;
  up: boolean;
  clockMs: number;
  replica: RangeReplica;
  /** The live state machine; `durable.kv` is what survives a crash. */
  kv: Kv;
  readonly durable: Durable;
  /** Storage operations issued but not yet durable, in order. */
  pending: StorageOp[];
  inbox: Message[];
  /** Last role and term printed, to print changes. */
  role: string;
  term: number;
}

/** Private bookkeeping of the core, read for `status` and `progress` only. */
interface CoreView {
  readonly grantedUntilMs: number;
  readonly grantedTo: number;
  readonly voteBlackoutUntilMs: number;
  readonly progress: ReadonlyMap<number, Progress>;
}

interface Args {
  readonly cmd: string;
  /** Tokens after the command without `=`. */
  readonly pos: string[];
  /** Every token after the command, as written. */
  readonly raw: string[];
  readonly opts: Map<string, string>;
}

function parseArgs(line: string): Args {
  const [cmd = '', ...raw] = line.trim().split(/\s+/);
  const pos: string[] = [];
  const opts = new Map<string, string>();
  for (const t of raw) {
    const eq = t.indexOf('=');
    if (eq < 0) pos.push(t);
    else opts.set(t.slice(0, eq), t.slice(eq + 1));
  }
  return { cmd, pos, raw, opts };
}

function num(a: Args, key: string, dflt?: number): number {
  const v = a.opts.get(key);
  if (v === undefined) {
    if (dflt === undefined) throw new Error(`missing ${key}=`);
    return dflt;
  }
  const n = Number(v);
  if (!Number.isFinite(n)) throw new Error(`${key}=${v} is not a number`);
  return n;
}

export class Harness {
  private options: ConsensusOptions = defaultOptions;
  private seed = 0;
  private readonly nodes = new Map<number, Node>();
  /** `a>b`: messages from a to b are dropped. */
  private readonly blocked = new Set<string>();
  /** `a>b`: replica a's node sees b's node as not live. */
  private readonly notLive = new Set<string>();
  private liveness = false;
  private out: string[] = [];
  private indent = '';
  private quiet = false;

  /** Runs one command line; returns its output lines (never empty, never blank). */
  run(line: string): string[] {
    this.out = [];
    this.indent = '';
    this.quiet = false;
    try {
      this.dispatch(parseArgs(line));
    } catch (e) {
      this.emit(`error: ${e instanceof Error ? e.message : String(e)}`);
    }
    const lines = this.out.length === 0 ? ['ok'] : this.out;
    return lines.map((l) => (l.trim() === '' ? '(blank)' : l.trimEnd()));
  }

  private emit(line: string): void {
    this.out.push(line);
  }

  /** A line under the current header; suppressed by `stabilize quiet`. */
  private detail(line: string): void {
    if (!this.quiet) this.out.push(`${this.indent}${line}`);
  }

  private header(line: string): void {
    if (this.quiet) return;
    this.out.push(`> ${line}`);
    this.indent = '  ';
  }

  private node(id: number | string | undefined): Node {
    const n = this.nodes.get(Number(id));
    if (n === undefined) throw new Error(`no replica ${id}`);
    return n;
  }

  private ids(tokens: readonly string[]): Node[] {
    if (tokens.length === 0) throw new Error('which replicas?');
    if (tokens.includes('all')) return [...this.nodes.values()];
    return tokens.map((t) => this.node(t));
  }

  private upNode(id: number | string | undefined): Node {
    const n = this.node(id);
    if (!n.up) throw new Error(`replica ${n.id} is down`);
    return n;
  }

  /** Runs `f` on each replica named by the positional arguments (`all` for every one). */
  private each(a: Args, f: (n: Node) => void): void {
    for (const n of this.ids(a.pos.filter((t) => t !== 'drop' && t !== 'quiet'))) f(n);
  }

  private readonly commands: Record<string, (a: Args) => void> = {
    'add-nodes': (a) => this.addNodes(a),
    tick: (a) => this.each(a, (n) => this.tick(n, num(a, 'n', 1))),
    'tick-all': (a) => {
      for (let i = num(a, 'n', 1); i > 0; i--) for (const n of this.nodes.values()) this.tick(n, 1);
    },
    'advance-clock': (a) => {
      const ms = num(a, 'ms');
      this.each(a, (n) => {
        n.clockMs += ms;
      });
      this.emit(
        `clock ${this.ids(a.pos)
          .map((n) => `${n.id}=${fmtMs(n.clockMs)}`)
          .join(' ')}`,
      );
    },
    campaign: (a) => this.campaign(this.upNode(a.pos[0])),
    ready: (a) => this.each(a, (n) => this.handleReady(n)),
    'take-messages': (a) => this.each(a, (n) => this.takeMessages(n)),
    persist: (a) => this.each(a, (n) => this.persist(n, true)),
    process: (a) => this.each(a, (n) => this.process(n)),
    deliver: (a) => this.each(a, (n) => this.deliver(n, a)),
    stabilize: (a) => {
      this.quiet = a.pos.includes('quiet');
      this.stabilize();
    },
    propose: (a) => this.propose(a),
    read: (a) => {
      const n = this.upNode(a.pos[0]);
      const err = n.replica.read(num(a, 'id'));
      this.emit(err ? `${err.code} hint=${err.leaderHint}` : 'ok');
      this.observe(n);
    },
    'transfer-leadership': (a) => {
      const n = this.upNode(num(a, 'from'));
      this.emit(n.replica.transferLeadership(num(a, 'to'))?.code ?? 'ok');
      this.observe(n);
    },
    compact: (a) => this.compact(this.upNode(a.pos[0]), num(a, 'index')),
    partition: (a) => this.partition(a.pos),
    heal: () => {
      this.blocked.clear();
      this.emit('healed');
    },
    crash: (a) => this.crash(this.upNode(a.pos[0])),
    restart: (a) => this.restart(this.node(a.pos[0])),
    liveness: (a) => {
      const of = this.node(num(a, 'of')).id;
      const live = a.pos.includes('live');
      if (!live && !a.pos.includes('dead')) throw new Error('liveness IDS of=X live|dead');
      const who = this.ids(a.pos.filter((t) => t !== 'live' && t !== 'dead'));
      for (const n of who) {
        if (live) this.notLive.delete(`${n.id}>${of}`);
        else this.notLive.add(`${n.id}>${of}`);
      }
      this.emit(`${who.map((n) => n.id).join(' ')} see ${of} ${live ? 'live' : 'dead'}`);
    },
    'split-off': (a) =>
      this.each(a, (n) => {
        // A replica of a range just created by a split (DESIGN.md, "Safety rules for
        // splits"): campaign not before clock + after (ms), or any time without it.
        const after = a.opts.has('after') ? num(a, 'after') : Number.NEGATIVE_INFINITY;
        n.replica.splitOff(n.clockMs + after);
        this.emit(
          `${n.id} split off: campaigns ${after === Number.NEGATIVE_INFINITY ? 'any time' : `not before ${fmtMs(n.clockMs + after)}`}`,
        );
      }),
    'notice-commit': (a) =>
      this.each(a, (n) => {
        n.replica.noticeCommit();
        this.observe(n);
      }),
    'campaign-now': (a) =>
      this.each(a, (n) => {
        n.replica.campaignNow();
        this.observe(n);
      }),
    'leader-lapsed': (a) =>
      this.each(a, (n) => {
        n.replica.leaderLapsed();
        this.observe(n);
      }),
    wake: (a) =>
      this.each(a, (n) => {
        n.replica.wake();
        this.observe(n);
      }),
    status: () => {
      for (const n of this.nodes.values()) this.emit(this.statusLine(n));
    },
    log: (a) => this.each(a, (n) => this.showLog(n, num(a, 'from', 0))),
    progress: (a) => this.showProgress(this.upNode(a.pos[0])),
  };

  private dispatch(a: Args): void {
    const command = this.commands[a.cmd];
    if (command === undefined) throw new Error(`unknown command ${a.cmd}`);
    command(a);
  }

  // ------------------------------------------------------------------ cluster

  private addNodes(a: Args): void {
    const count = Number(a.pos[0]);
    if (!(count >= 1 && count <= 9)) throw new Error('add-nodes takes 1..9 replicas');
    const d = defaultOptions;
    this.options = {
      ...d,
      mode: (a.opts.get('mode') ?? d.mode) as ConsensusMode,
      electionTicks: num(a, 'electionTicks', d.electionTicks),
      heartbeatTicks: num(a, 'heartbeatTicks', d.heartbeatTicks),
      leaseDurationMs: num(a, 'leaseMs', d.leaseDurationMs),
      maxDriftRate: num(a, 'drift', d.maxDriftRate),
      inflightAppendsMax: num(a, 'inflight', d.inflightAppendsMax),
      snapshotChunkBytesMax: num(a, 'chunk', d.snapshotChunkBytesMax),
      appendBytesMax: num(a, 'appendBytes', d.appendBytesMax),
      quiesceAfterTicks: num(a, 'quiesce', d.quiesceAfterTicks),
      // The scripts show eager commit notices unless lazy=1 (lazy-commit.txt).
      lazyCommit: num(a, 'lazy', 0) === 1,
    };
    // Without node liveness the core never quiesces: the other scripts stay as they were.
    this.liveness = a.opts.has('quiesce');
    this.seed = num(a, 'seed', 0);
    this.nodes.clear();
    this.blocked.clear();
    this.notLive.clear();
    const voters = Array.from({ length: count }, (_, i) => i + 1);
    for (const id of voters) {
      const durable: Durable = {
        hardState: { term: 0, vote: 0, commit: 0 },
        snapshot: { index: 0, term: 0, config: { voters, outgoing: [], learners: [] } },
        entries: [],
        kv: new Kv(),
      };
      this.nodes.set(id, this.boot(id, durable, 0));
    }
    const o = this.options;
    this.emit(
      `voters=[${voters.join(' ')}] mode=${o.mode} electionTicks=${o.electionTicks}` +
        ` heartbeatTicks=${o.heartbeatTicks} leaseMs=${o.leaseDurationMs} drift=${o.maxDriftRate}` +
        (this.liveness ? ` quiesce=${o.quiesceAfterTicks}` : '') +
        (o.lazyCommit ? ' lazyCommit' : ''),
    );
  }

  /** A replica process over its durable state; the clock is the node's monotonic clock. */
  private boot(id: number, durable: Durable, clockMs: number): Node {
    const random = new Prng(this.seed * 1000 + id);
    const kv = Kv.decode(durable.kv.encode());
    const node: Node = {
      id,
      up: true,
      clockMs,
      replica: undefined as unknown as RangeReplica,
      kv,
      durable,
      pending: [],
      inbox: [],
      role: 'follower',
      term: durable.hardState.term,
    };
    const state = {
      hardState: durable.hardState,
      snapshot: durable.snapshot,
      entries: [...durable.entries],
      applied: kv.applied,
    };
    node.replica = new RangeReplica(id, state, this.options, {
      nowMs: () => node.clockMs,
      random: () => random.next(),
      takeSnapshot: () => {
        const core = node.replica.core;
        const index = node.kv.applied;
        const term = core.log.term(index);
        if (term === undefined) throw new Error(`no term at applied index ${index}`);
        return { meta: { index, term, config: core.config }, data: node.kv.encode() };
      },
      ...(this.liveness
        ? { isLive: (replica: number) => !this.notLive.has(`${id}>${replica}`) }
        : {}),
    });
    return node;
  }

  /** Prints a role, lifecycle or term change of a replica; checks the machine and core agree. */
  private observe(n: Node): void {
    const quiescent = n.replica.quiescent();
    const role = `${quiescent ? 'quiescent-' : ''}${n.replica.role()}`;
    const core = n.replica.core;
    const coreRole = `${core.quiescent ? 'quiescent-' : ''}${core.role}`;
    if (role !== coreRole) this.emit(`${this.indent}BUG: machine ${role}, core ${coreRole}`);
    if (role !== n.role || core.term !== n.term) {
      this.emit(`${this.indent}${n.id} ${n.role}@${n.term} -> ${role}@${core.term}`);
      n.role = role;
      n.term = core.term;
    }
  }

  private tick(n: Node, times: number): void {
    if (!n.up) {
      this.emit(`${n.id} is down`);
      return;
    }
    for (let i = 0; i < times; i++) {
      n.replica.tick();
      this.observe(n);
    }
  }

  private campaign(n: Node): void {
    if (n.replica.role() !== 'follower' || n.replica.quiescent()) {
      throw new Error(`${n.id} is ${n.replica.quiescent() ? 'quiescent' : n.replica.role()}`);
    }
    for (let i = 1; i <= campaignTicksMax; i++) {
      n.replica.tick();
      this.observe(n);
      if (n.replica.role() !== 'follower') {
        this.emit(`${n.id} campaigns after ${i} ticks`);
        return;
      }
    }
    this.emit(`${n.id} did not campaign in ${campaignTicksMax} ticks`);
  }

  // ------------------------------------------------------------------ host turn

  private handleReady(n: Node): void {
    if (!n.up) {
      this.header(`${n.id} is down`);
      return;
    }
    this.header(`${n.id} ready`);
    if (!n.replica.hasReady()) {
      this.detail('(nothing)');
      return;
    }
    const rd = n.replica.ready();
    for (const m of rd.messages) this.detail(this.send(m));
    if (rd.write) {
      const w = rd.write;
      const snap = w.snapshot
        ? ` snapshot=${w.snapshot.meta.index}/${w.snapshot.meta.term} bytes=${w.snapshot.data.length}`
        : '';
      const ents = w.entries.length > 0 ? ` entries=${fmtEntries(w.entries)}` : '';
      this.detail(`write#${w.id} ${fmtHardState(w.hardState)}${ents}${snap}`);
      if (w.snapshot) n.kv = Kv.decode(w.snapshot.data);
      n.pending.push({ kind: 'write', write: w });
    }
    if (rd.committed.length > 0) {
      for (const e of rd.committed) n.kv.apply(e);
      this.detail(`apply ${rd.committed.map(fmtEntry).join(', ')}`);
      n.pending.push({ kind: 'apply', entries: rd.committed });
    }
    for (const rs of rd.readStates) {
      const waits = n.kv.applied < rs.index ? ` (waits: applied=${n.kv.applied})` : '';
      this.detail(`read-state id=${rs.id} index=${rs.index} via=${rs.via}${waits}`);
    }
    for (const id of rd.droppedReads) this.detail(`dropped-read id=${id}`);
    this.observe(n);
  }

  /** The host's takeMessages: sends the messages alone, leaving the rest of a Ready. */
  private takeMessages(n: Node): void {
    if (!n.up) return;
    this.header(`${n.id} take-messages`);
    const ms = n.replica.takeMessages();
    if (ms.length === 0) this.detail('(none)');
    for (const m of ms) this.detail(this.send(m));
    this.detail(n.replica.hasReady() ? '(more is ready)' : '(nothing else is ready)');
  }

  /** Queues a message for its target; returns its trace line. */
  private send(m: Message): string {
    const line = fmtMessage(m);
    const to = this.nodes.get(m.to);
    if (to === undefined || !to.up) return `${line} [dropped: ${m.to} down]`;
    if (this.blocked.has(`${m.from}>${m.to}`)) return `${line} [dropped: partition]`;
    to.inbox.push(m);
    return line;
  }

  private persist(n: Node, verbose: boolean): void {
    if (!n.up) return;
    const ops = n.pending;
    n.pending = [];
    const writes: number[] = [];
    for (const op of ops) {
      makeDurable(n.durable, op, kvOps);
      if (op.kind === 'write') writes.push(op.write.id);
    }
    const last = writes[writes.length - 1];
    if (last !== undefined) {
      this.header(`${n.id} persist ${writes.map((w) => `write#${w}`).join(' ')}`);
      n.replica.persisted(last);
      this.observe(n);
    } else if (verbose) {
      this.header(`${n.id} persist (no writes)`);
    }
  }

  private deliver(n: Node, a: Args): void {
    const from = a.opts.get('from');
    const type = a.opts.get('type');
    const drop = a.pos.includes('drop');
    let left = num(a, 'n', Number.POSITIVE_INFINITY);
    const msgs: Message[] = [];
    const keep: Message[] = [];
    for (const m of n.inbox) {
      const match = (from === undefined || String(m.from) === from) && (type ?? m.type) === m.type;
      if (match && left-- > 0) msgs.push(m);
      else keep.push(m);
    }
    n.inbox = keep;
    this.stepMessages(n, msgs, drop);
  }

  private stepMessages(n: Node, msgs: Message[], drop: boolean): void {
    this.header(`${n.id} ${drop ? 'drop' : 'receive'}`);
    if (msgs.length === 0) this.detail('(no messages)');
    const live: Message[] = [];
    for (const m of msgs) {
      if (!drop && this.blocked.has(`${m.from}>${m.to}`)) {
        this.detail(`${fmtMessage(m)} [dropped: partition]`);
      } else {
        this.detail(fmtMessage(m));
        if (!drop) live.push(m);
      }
    }
    if (n.up && live.length > 0) {
      n.replica.step(live);
      this.observe(n);
    }
  }

  /** Host turns until the replica has no output: ready, persist at once, repeat. */
  private process(n: Node): boolean {
    let busy = false;
    for (let turn = 0; turn < turnsPerRoundMax && n.up && n.replica.hasReady(); turn++) {
      this.handleReady(n);
      this.persist(n, false);
      busy = true;
    }
    return busy;
  }

  private stabilize(): void {
    for (let round = 0; round < stabilizeRoundsMax; round++) {
      let busy = false;
      for (const n of this.nodes.values()) busy = this.process(n) || busy;
      for (const n of this.nodes.values()) {
        if (n.inbox.length === 0) continue;
        const msgs = n.inbox;
        n.inbox = [];
        this.stepMessages(n, msgs, false);
        busy = true;
      }
      if (!busy) return;
    }
    this.emit(`error: not quiet after ${stabilizeRoundsMax} rounds`);
  }

  // ------------------------------------------------------------------ clients and faults

  private propose(a: Args): void {
    const n = this.upNode(a.pos[0]);
    const datas = a.raw.slice(1).map((s) => encoder.encode(s));
    if (datas.length === 0) throw new Error('propose what?');
    const r = n.replica.propose(datas);
    if ('code' in r) {
      const hint = r.code === 'notLeader' ? ` hint=${r.leaderHint}` : '';
      this.emit(`${r.code}${hint}`);
    } else {
      this.emit(`index=${r.index} term=${r.term}`);
    }
    this.observe(n);
  }

  private compact(n: Node, index: number): void {
    n.replica.compact(index);
    const meta = n.replica.core.log.snapshot;
    n.pending.push({ kind: 'compact', meta });
    this.emit(`${n.id} log starts after ${meta.index}/${meta.term}`);
  }

  private partition(tokens: readonly string[]): void {
    const groups: number[][] = [[]];
    for (const t of tokens) {
      if (t === '|') groups.push([]);
      else groups[groups.length - 1]!.push(this.node(t).id);
    }
    if (groups.length < 2) throw new Error('partition A.. | B..');
    for (const [i, g] of groups.entries()) {
      for (const [j, h] of groups.entries()) {
        if (i === j) continue;
        for (const x of g) for (const y of h) this.blocked.add(`${x}>${y}`);
      }
    }
    this.emit(`partition ${groups.map((g) => g.join(' ')).join(' | ')}`);
  }

  private crash(n: Node): void {
    n.up = false;
    const lost = n.pending.flatMap((op) => (op.kind === 'write' ? [`write#${op.write.id}`] : []));
    n.pending = [];
    const dropped = n.inbox.length;
    n.inbox = [];
    this.emit(
      `${n.id} crashed: lost ${lost.length > 0 ? lost.join(' ') : 'no writes'},` +
        ` dropped ${dropped} queued messages`,
    );
  }

  private restart(old: Node): void {
    if (old.up) this.crash(old);
    const n = this.boot(old.id, old.durable, old.clockMs);
    this.nodes.set(n.id, n);
    const core = n.replica.core;
    this.emit(
      `${n.id} restarted: term=${core.term} vote=${core.vote} commit=${core.log.committed}` +
        ` last=${core.log.lastIndex()} applied=${n.kv.applied}`,
    );
  }

  // ------------------------------------------------------------------ inspection

  private statusLine(n: Node): string {
    if (!n.up) return `${n.id}: down`;
    const core = n.replica.core;
    const s = core.status();
    const role = `${s.quiescent ? 'quiescent-' : ''}${s.role}`;
    let lease = '';
    if (s.role === 'leader' && this.options.mode === 'harpoon') {
      const expiry = core.leaseExpiryMs();
      lease = ` lease=${s.lease ? 'valid' : 'none'} expiry=${fmtMs(expiry)}`;
    } else if (this.options.mode === 'harpoon') {
      const g = core as unknown as CoreView;
      if (n.clockMs < g.grantedUntilMs) {
        lease = ` granted=${g.grantedTo} until=${fmtMs(g.grantedUntilMs)}`;
      }
      if (n.clockMs < g.voteBlackoutUntilMs) {
        lease += ` blackout until=${fmtMs(g.voteBlackoutUntilMs)}`;
      }
    }
    return (
      `${n.id}: ${role} term=${s.term} leader=${s.leader} commit=${s.commit}` +
      ` applied=${s.applied} last=${s.lastIndex} clock=${fmtMs(n.clockMs)}${lease}`
    );
  }

  private showProgress(n: Node): void {
    const progress = (n.replica.core as unknown as CoreView).progress;
    if (progress.size === 0) this.emit(`${n.id} tracks no progress (${n.replica.role()})`);
    for (const [id, pr] of progress) {
      const extra =
        pr.state === 'replicate'
          ? ` inflight=[${pr.inflight.join(' ')}]`
          : pr.state === 'probe'
            ? ` probeSent=${pr.probeSent}`
            : ` offset=${pr.sending?.offset}`;
      this.emit(
        `${id}: ${pr.state} match=${pr.match} next=${pr.next}${extra} ackedSeq=${pr.ackedSeq}`,
      );
    }
  }

  /** The live log and state machine, then the durable ones; entries from `from` on. */
  private showLog(n: Node, from: number): void {
    const log = n.replica.core.log;
    const d = n.durable;
    const entries: Entry[] = [];
    for (let i = Math.max(from, log.firstIndex()); i <= log.lastIndex(); i++) {
      entries.push(log.entry(i)!);
    }
    const some = (es: readonly Entry[]) =>
      `${from > 0 ? '..' : ''}${fmtEntries(es.filter((e) => e.index >= from))}`;
    this.emit(
      `${n.id}${n.up ? '' : ' (down)'}: snap=${log.snapshot.index}/${log.snapshot.term}` +
        ` entries=${some(entries)} commit=${log.committed} stable=${log.stable}`,
    );
    this.emit(`  kv ${n.kv.render()}`);
    this.emit(
      `  durable: ${fmtHardState(d.hardState)} snap=${d.snapshot.index}/${d.snapshot.term}` +
        ` entries=${some(d.entries)} kv ${d.kv.render()}`,
    );
  }
}
