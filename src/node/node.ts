// The running node: hosts the range replicas of this process over one LMDB environment
// and one NATS connection, ticks them, moves their output to storage and the network,
// and serves clients.
//
// One turn (runTurn, scheduled once per event-loop turn when anything happened):
//   1. proposals collected since the last turn go to each leader as one batch;
//   2. every replica's Ready: messages into the per-node outbox, writes and applies of
//      all ranges into ONE storage transaction (group commit);
//   3. commit it: apply results answer the clients whose entries they were, reads whose
//      index is applied are served;
//   4. one NATS message per destination node;
//   5. when the transaction is durable, each replica is told (persisted), which
//      releases its acknowledgements and votes in the next turn.

import { webcrypto } from 'node:crypto';
import { connect, type Msg, type NatsConnection, type Subscription } from '@nats-io/transport-node';
import type { Entry, Message, ReplicaId } from '../../ranges/core/types.ts';
import { defaultOptions } from '../../ranges/core/types.ts';
import { RangeReplica } from '../../ranges/replica/replica.ts';
import { Logger } from '../lib/logger.ts';
import { Prng } from '../lib/prng.ts';
import {
  checkOp,
  checkRequest,
  decode,
  encode,
  limits,
  protocolVersion,
  type WireOp,
  type WireResult,
} from '../protocol/wire.ts';
import { type ApplyResult, compareBytes, encodeCommand } from '../storage/commands.ts';
import { type RangeDescriptor, Store, scanEntryBytes } from '../storage/store.ts';
import { decodeEnvelope, encodeEnvelope } from '../transport/raft-codec.ts';
import { kvQueue, subjects } from '../transport/subjects.ts';
import type { NodeConfig } from './config.ts';

type Done = (r: WireResult) => void;

interface RangeHost {
  readonly rangeId: number;
  descriptor: RangeDescriptor;
  readonly replica: RangeReplica;
  /** replica id -> node id, from the descriptor. */
  readonly nodeOf: Map<ReplicaId, string>;
  proposals: { data: Uint8Array; done: Done }[];
  /** Proposed entries by index, answered when that index applies. */
  readonly writes: Map<number, { term: number; done: Done }>;
  /** Reads (get, scan) by read id, served once their read state's index is applied. */
  readonly reads: Map<number, { op: WireOp; done: Done }>;
  readsWaiting: { index: number; id: number }[];
  /** Highest index whose apply is committed in LMDB: reads and compaction go up to here. */
  applied: number;
  /** Client operations answered since `opsSinceMs`, and the last full second's rate. */
  ops: number;
  opsSinceMs: number;
  opsPerS: number;
  leaderSub: Subscription | undefined;
}

/** Bytes of one outgoing raft NATS message before a new one is started. */
const raftPayloadBytesSoftMax = 768 * 1024;
/** Client attempts give up after 1 s; a forwarded request must answer before that. */
const forwardTimeoutMs = 900;
/** Replies stay under nats-server's default max_payload with room for the envelope. */
const replyBytesMax = limits.payloadBytesMax - 4096;

export class Node {
  readonly config: NodeConfig;
  readonly log: Logger;
  private store!: Store;
  private nc!: NatsConnection;
  private clusterId = '';
  private readonly ranges = new Map<number, RangeHost>();
  private readonly subs: Subscription[] = [];
  private ticker: NodeJS.Timeout | undefined;
  private turnScheduled = false;
  private nextReadId = 1;
  private stopping = false;
  private readonly peerStores = new Map<string, string>();
  /** Counters for `rasputin status` and the benchmark. */
  readonly stats = {
    turns: 0,
    raftMessagesIn: 0,
    raftBatchesOut: 0,
    clientRequests: 0,
    dropped: 0,
  };

  constructor(config: NodeConfig) {
    this.config = config;
    this.log = new Logger(`node ${config.nodeId}`, { file: config.logfile });
  }

  // ------------------------------------------------------------------ start and stop

  async start(): Promise<void> {
    const c = this.config;
    this.log.info(
      `starting: node-id=${c.nodeId} nats=${c.natsUrl} storage-dir=${c.storageDir} ` +
        `initial-nodes=${c.initialNodes.join(',')} prefix=${c.prefix} tick-ms=${c.tickMs} ` +
        `log-entries-max=${c.logEntriesMax}`,
    );
    this.store = Store.open(c.storageDir);
    const owner = this.store.getMeta('nodeId');
    if (owner !== undefined && owner !== c.nodeId) {
      throw new Error(
        `storage dir ${c.storageDir} belongs to node ${owner}, not ${c.nodeId}; ` +
          'use that node id or another directory',
      );
    }
    if (owner === undefined) await this.store.setMeta('nodeId', c.nodeId);
    this.nc = await connect({
      servers: c.natsUrl,
      name: `rasputin-${c.nodeId}`,
      maxReconnectAttempts: -1,
      reconnectTimeWait: 250,
      waitOnFirstConnect: true,
    });
    await this.refuseDuplicate();
    await this.bootstrap();
    for (const d of this.store.ranges()) this.openRange(d);
    this.subscribe();
    this.ticker = setInterval(() => this.tick(), c.tickMs);
    void this.watchConnection();
    this.log.info(
      `ready: store ${this.store.storeId}, cluster ${this.clusterId || '(joining)'}, ` +
        `${this.ranges.size} range(s)`,
    );
  }

  /** Another live process answering for this node id with another store is fatal. */
  private async refuseDuplicate(): Promise<void> {
    try {
      const reply = await this.nc.request(
        subjects.adminWhoami(this.config.prefix, this.config.nodeId),
        encode({ v: protocolVersion }),
        { timeout: 500 },
      );
      // Any answer means a live process already serves this node id (with this store or
      // another one): two replicas with one identity would vote twice.
      const other = decode(reply.data) as { store?: unknown };
      throw new Error(
        `another process already serves node id ${this.config.nodeId} ` +
          `(store ${String(other.store)}); refusing to start`,
      );
    } catch (err) {
      if ((err as Error).message.includes('refusing to start')) throw err;
      // no responders or timeout: nobody else is this node
    }
  }

  /** First start: the range covering the whole keyspace, over the initial nodes. */
  private async bootstrap(): Promise<void> {
    this.clusterId = this.store.getMeta('clusterId') ?? '';
    if (this.store.ranges().length > 0) return;
    const nodes = [...this.config.initialNodes].sort();
    if (nodes[0] === this.config.nodeId && this.clusterId === '') {
      this.clusterId = webcrypto.randomUUID();
      await this.store.setMeta('clusterId', this.clusterId);
      this.log.info(`bootstrapped cluster ${this.clusterId}`);
    }
    const descriptor: RangeDescriptor = {
      rangeId: 1,
      start: new Uint8Array(0),
      end: null,
      replicas: nodes.map((nodeId, i) => ({ nodeId, replicaId: i + 1, role: 'voter' as const })),
      generation: 1,
    };
    await this.store.createRange(descriptor, {
      voters: descriptor.replicas.map((r) => r.replicaId),
      outgoing: [],
      learners: [],
    });
  }

  private openRange(descriptor: RangeDescriptor): void {
    const loaded = this.store.loadRange(descriptor.rangeId);
    if (!loaded) throw new Error(`range ${descriptor.rangeId} has no state`);
    const me = descriptor.replicas.find((r) => r.nodeId === this.config.nodeId);
    if (!me) throw new Error(`range ${descriptor.rangeId} has no replica on this node`);
    const seed = webcrypto.getRandomValues(new Uint32Array(1))[0]!;
    const prng = new Prng(seed);
    const rangeId = descriptor.rangeId;
    const replica = new RangeReplica(
      me.replicaId,
      loaded.state,
      { ...defaultOptions, appendBytesMax: 256 * 1024, snapshotChunkBytesMax: 256 * 1024 },
      {
        nowMs: () => performance.now(),
        random: () => prng.next(),
        takeSnapshot: () => this.store.takeSnapshot(rangeId),
      },
    );
    this.ranges.set(rangeId, {
      rangeId,
      descriptor,
      replica,
      nodeOf: new Map(descriptor.replicas.map((r) => [r.replicaId, r.nodeId])),
      proposals: [],
      writes: new Map(),
      reads: new Map(),
      readsWaiting: [],
      applied: loaded.state.applied,
      ops: 0,
      opsSinceMs: performance.now(),
      opsPerS: 0,
      leaderSub: undefined,
    });
  }

  private subscribe(): void {
    const p = this.config.prefix;
    this.subs.push(
      this.nc.subscribe(subjects.raft(p, this.config.nodeId), {
        callback: this.guarded((msg) => this.onRaft(msg)),
      }),
      this.nc.subscribe(subjects.kv(p), {
        queue: kvQueue,
        callback: this.guarded((msg) => this.onKv(msg)),
      }),
      this.nc.subscribe(subjects.adminStatus(p), {
        callback: this.guarded((msg) => this.reply(msg, this.status())),
      }),
      this.nc.subscribe(subjects.adminWhoami(p, this.config.nodeId), {
        callback: this.guarded((msg) =>
          this.reply(msg, { v: protocolVersion, store: this.store.storeId }),
        ),
      }),
    );
  }

  /**
   * A subscription callback that never lets an exception escape into nats.js (which
   * would stop reading the socket for good, leaving a live but deaf node). Every handler
   * validates its input, so an exception here is a broken invariant: exit, and let the
   * supervisor restart the node from its durable state.
   */
  private guarded(handle: (msg: Msg) => void): (err: Error | null, msg: Msg) => void {
    return (err, msg) => {
      if (err) return;
      try {
        handle(msg);
      } catch (e) {
        this.fatal(`handling a message on ${msg.subject}: ${(e as Error).stack ?? String(e)}`);
      }
    };
  }

  private async watchConnection(): Promise<void> {
    void this.nc.closed().then((err) => {
      if (!this.stopping) this.fatal(`the NATS connection closed: ${err?.message ?? 'closed'}`);
    });
    for await (const s of this.nc.status()) {
      if (s.type === 'disconnect' || s.type === 'reconnect') {
        this.log.warn(`nats ${s.type}`);
      }
    }
  }

  async stop(): Promise<void> {
    if (this.stopping) return;
    this.stopping = true;
    if (this.ticker) clearInterval(this.ticker);
    // Drain what is in flight, but never hang on a connection that went bad.
    const drained = this.nc?.drain().catch(() => {});
    const timer = new Promise((done) => setTimeout(done, 2000).unref());
    await Promise.race([drained, timer]);
    if (this.nc && !this.nc.isClosed()) await this.nc.close().catch(() => {});
    await this.store?.close();
    this.log.info('stopped');
  }

  // ------------------------------------------------------------------ events

  private tick(): void {
    const now = performance.now();
    for (const h of this.ranges.values()) {
      h.replica.tick();
      if (now - h.opsSinceMs >= 1000) {
        h.opsPerS = Math.round((h.ops * 1000) / (now - h.opsSinceMs));
        h.ops = 0;
        h.opsSinceMs = now;
      }
    }
    this.scheduleTurn();
  }

  private scheduleTurn(): void {
    if (this.turnScheduled || this.stopping) return;
    this.turnScheduled = true;
    setImmediate(() => this.runTurn());
  }

  private onRaft(msg: Msg): void {
    const d = decodeEnvelope(msg.data);
    if (!d.ok) {
      this.stats.dropped++;
      this.log.limited('warn', 'raft-garbage', `dropped a raft message: ${d.why}`);
      return;
    }
    const e = d.env;
    if (e.from === this.config.nodeId) {
      this.stats.dropped++;
      this.log.limited(
        'warn',
        'raft-from-self',
        'dropped raft messages claiming to come from this node',
      );
      return;
    }
    if (!this.config.initialNodes.includes(e.from) && !this.knownNode(e.from)) {
      this.stats.dropped++;
      this.log.limited(
        'warn',
        `raft-from-${e.from}`,
        `dropped raft messages from unknown node ${e.from}`,
      );
      return;
    }
    if (!this.checkIdentity(e.from, e.store, e.cid)) return;
    this.stats.raftMessagesIn += e.msgs.length;
    const byRange = new Map<number, Message[]>();
    for (const [rangeId, m] of e.msgs) {
      const h = this.ranges.get(rangeId);
      if (!h || h.nodeOf.get(m.from) !== e.from || m.to !== h.replica.core.id) {
        this.stats.dropped++;
        this.log.limited(
          'warn',
          `raft-range-${rangeId}`,
          `dropped a message for range ${rangeId} from ${e.from}`,
        );
        continue;
      }
      let list = byRange.get(rangeId);
      if (!list) byRange.set(rangeId, (list = []));
      list.push(m);
    }
    for (const [rangeId, ms] of byRange) this.ranges.get(rangeId)!.replica.step(ms);
    this.scheduleTurn();
  }

  private knownNode(nodeId: string): boolean {
    for (const h of this.ranges.values())
      for (const n of h.nodeOf.values()) if (n === nodeId) return true;
    return false;
  }

  /** Cluster and store fencing (DESIGN.md, Identity). */
  private checkIdentity(from: string, store: string, cid: string): boolean {
    if (this.clusterId === '' && cid !== '') {
      this.clusterId = cid;
      void this.store.setMeta('clusterId', cid);
      this.log.info(`joined cluster ${cid} (learned from ${from})`);
    } else if (cid !== this.clusterId) {
      this.stats.dropped++;
      this.log.limited(
        'warn',
        `cid-${from}`,
        `refused messages from ${from}: cluster ${cid || '(none)'} is not ours (${this.clusterId})`,
      );
      return false;
    }
    const known = this.peerStores.get(from) ?? this.store.getMeta(`peer.${from}`);
    if (known === undefined) {
      this.peerStores.set(from, store);
      void this.store.setMeta(`peer.${from}`, store);
    } else if (known !== store) {
      this.stats.dropped++;
      this.log.limited(
        'error',
        `store-${from}`,
        `refused messages from ${from}: store ${store} is not the store ${known} this node ` +
          'knew (a wiped store rejoining, or two processes with one node id)',
      );
      return false;
    }
    return true;
  }

  // ------------------------------------------------------------------ clients

  private reply(msg: Msg, body: unknown): void {
    if (!msg.reply) return;
    try {
      msg.respond(encode(body));
    } catch (err) {
      this.log.limited('warn', 'respond', `could not respond: ${(err as Error).message}`);
    }
  }

  /**
   * Sends one reply with every result. A reply over the NATS payload limit (say, many
   * large values) would be lost: results are replaced from the end by a retryable
   * Overloaded until it fits. A write replaced so is applied; its retry (same request
   * id) returns the recorded result.
   */
  private replyResults(msg: Msg, res: WireResult[]): void {
    const tooLarge: WireResult = {
      ok: false,
      code: 'Overloaded',
      msg: 'reply too large for one message; retry this op',
    };
    // Estimate first (values and scanned entries dominate), then confirm on the encoded bytes.
    const sizeOf = (r: WireResult) => {
      if (!r.ok) return 64;
      let n = 64 + (r.value ? r.value.length : 0) + (r.next ? r.next.length : 0);
      if (r.entries) for (const [k, v] of r.entries) n += scanEntryBytes(k, v);
      return n;
    };
    let estimate = 64;
    for (const r of res) estimate += sizeOf(r);
    for (let i = res.length - 1; i > 0 && estimate > replyBytesMax; i--) {
      estimate -= sizeOf(res[i]!) - sizeOf(tooLarge);
      res[i] = tooLarge;
    }
    let body = encode({ v: protocolVersion, cid: this.clusterId, res });
    for (let i = res.length - 1; i >= 0 && body.length > replyBytesMax; i--) {
      if (res[i] === tooLarge) continue;
      res[i] = tooLarge;
      body = encode({ v: protocolVersion, cid: this.clusterId, res });
    }
    if (!msg.reply) return;
    try {
      msg.respond(body);
    } catch (err) {
      this.log.limited('warn', 'respond', `could not respond: ${(err as Error).message}`);
    }
  }

  private fail(msg: Msg, code: string, text: string, limit?: string): void {
    this.reply(msg, {
      v: protocolVersion,
      cid: this.clusterId,
      code,
      msg: text,
      ...(limit ? { limit } : {}),
    });
  }

  /** Requests on `<p>.kv`: served here when this node leads, else forwarded. */
  private onKv(msg: Msg): void {
    const h = this.ranges.get(1);
    if (h && h.replica.role() === 'leader') {
      this.onClient(msg, h);
      return;
    }
    if (!msg.reply) return;
    this.nc
      .request(subjects.range(this.config.prefix, 1), msg.data, { timeout: forwardTimeoutMs })
      .then((r) => msg.respond(r.data))
      .catch((err: Error) => this.fail(msg, 'Unavailable', `no leader reachable: ${err.message}`));
  }

  private onClient(msg: Msg, h: RangeHost): void {
    this.stats.clientRequests++;
    let raw: unknown;
    try {
      raw = decode(msg.data);
    } catch {
      this.fail(msg, 'BadRequest', 'request is not msgpack');
      return;
    }
    const req = checkRequest(raw);
    if (!req.ok) {
      this.fail(msg, req.code, req.msg, req.limit);
      return;
    }
    if (req.value.cid && this.clusterId && req.value.cid !== this.clusterId) {
      // A client of another cluster that shares the prefix: apply nothing.
      this.fail(
        msg,
        'BadRequest',
        `request for cluster ${req.value.cid}, this is ${this.clusterId}`,
      );
      return;
    }
    const ops = req.value.ops;
    const res: WireResult[] = new Array(ops.length);
    let left = ops.length;
    const doneAt = (i: number) => (r: WireResult) => {
      if (res[i] !== undefined) return;
      res[i] = r;
      if (--left === 0) this.replyResults(msg, res);
    };
    for (let i = 0; i < ops.length; i++) {
      const checked = checkOp(ops[i]);
      const done = doneAt(i);
      if (!checked.ok) {
        done({
          ok: false,
          code: checked.code,
          msg: checked.msg,
          ...(checked.limit ? { limit: checked.limit } : {}),
        });
        continue;
      }
      this.submit(h, checked.value, done);
    }
    this.scheduleTurn();
  }

  private notLeader(h: RangeHost): WireResult {
    const leader = h.nodeOf.get(h.replica.core.leader) ?? '';
    return { ok: false, code: 'NotLeader', msg: 'not the leader', leader };
  }

  private submit(h: RangeHost, op: WireOp, done: Done): void {
    if (h.replica.role() !== 'leader') {
      done(this.notLeader(h));
      return;
    }
    h.ops++;
    if (op.op === 'get' || op.op === 'scan') {
      const id = this.nextReadId++;
      if (h.replica.read(id)) {
        done(this.notLeader(h));
        return;
      }
      h.reads.set(id, { op, done });
      return;
    }
    const data =
      op.op === 'set'
        ? encodeCommand({ op: 'set', key: op.key, value: op.value!, id: op.id! })
        : op.op === 'cas'
          ? encodeCommand({
              op: 'cas',
              key: op.key,
              expect: op.expect ?? null,
              value: op.value!,
              id: op.id!,
            })
          : encodeCommand({ op: 'del', key: op.key, id: op.id! });
    h.proposals.push({ data, done });
  }

  // ------------------------------------------------------------------ the turn

  private runTurn(): void {
    this.turnScheduled = false;
    if (this.stopping) return;
    this.stats.turns++;
    const turn = this.store.beginTurn();
    const persistedIds: [RangeHost, number][] = [];
    const applied = new Map<RangeHost, Entry[]>();
    /** Ranges that install a snapshot this turn: their applied index jumps to it. */
    const installed = new Map<RangeHost, number>();
    const outbox = new Map<string, [number, Message][]>();
    for (const h of this.ranges.values()) {
      this.proposeBatch(h);
      for (let round = 0; round < 4 && h.replica.hasReady(); round++) {
        const rd = h.replica.ready();
        for (const m of rd.messages) {
          const to = h.nodeOf.get(m.to);
          if (to === undefined) continue;
          let list = outbox.get(to);
          if (!list) outbox.set(to, (list = []));
          list.push([h.rangeId, m]);
        }
        if (rd.write) {
          turn.write(h.rangeId, rd.write);
          persistedIds.push([h, rd.write.id]);
          if (rd.write.snapshot) installed.set(h, rd.write.snapshot.meta.index);
        }
        if (rd.committed.length > 0) {
          turn.apply(h.rangeId, rd.committed);
          const list = applied.get(h) ?? [];
          for (const e of rd.committed) list.push(e);
          applied.set(h, list);
        }
        for (const rs of rd.readStates) h.readsWaiting.push({ index: rs.index, id: rs.id });
        for (const id of rd.droppedReads) {
          const r = h.reads.get(id);
          h.reads.delete(id);
          r?.done(this.notLeader(h));
        }
      }
      this.maybeCompact(h, turn);
    }
    // Messages first: a leader's appends need not wait for its own write (the leader
    // counts itself toward a commit only once durable), and followers' acknowledgements
    // in the outbox were released by persisted() already.
    this.flushOutbox(outbox);
    if (!turn.isEmpty()) {
      const { results, durable } = turn.commit();
      results.then(
        (byRange) => {
          // Committed entries: the clients can have their answers now; a read at this
          // leader still waits until the apply is visible (durable, below).
          for (const [h, entries] of applied) {
            this.answerApplied(h, entries, byRange.get(h.rangeId) ?? []);
          }
        },
        (err: Error) => this.fatal(`storage failed: ${err.stack ?? err.message}`),
      );
      durable.then(
        () => {
          for (const [h, index] of installed) h.applied = index;
          for (const [h, entries] of applied) h.applied = entries[entries.length - 1]!.index;
          for (const [h, id] of persistedIds) h.replica.persisted(id);
          for (const h of applied.keys()) if (h.readsWaiting.length > 0) this.serveReads(h);
          this.scheduleTurn();
        },
        (err: Error) => this.fatal(`storage failed: ${err.stack ?? err.message}`),
      );
    }
    for (const h of this.ranges.values()) {
      if (h.readsWaiting.length > 0) this.serveReads(h);
      this.followLeadership(h);
    }
  }

  private proposeBatch(h: RangeHost): void {
    if (h.proposals.length === 0) return;
    const batch = h.proposals;
    h.proposals = [];
    const r = h.replica.propose(batch.map((p) => p.data));
    if ('code' in r) {
      const res: WireResult =
        r.code === 'notLeader'
          ? this.notLeader(h)
          : r.code === 'overloaded'
            ? { ok: false, code: 'Overloaded', msg: `${r.uncommittedBytes} bytes uncommitted` }
            : { ok: false, code: 'NotLeader', msg: 'leadership transfer in progress', leader: '' };
      for (const p of batch) p.done(res);
      return;
    }
    for (let i = 0; i < batch.length; i++)
      h.writes.set(r.index + i, { term: r.term, done: batch[i]!.done });
  }

  private answerApplied(h: RangeHost, entries: Entry[], results: ApplyResult[]): void {
    for (let i = 0; i < entries.length; i++) {
      const e = entries[i]!;
      const w = h.writes.get(e.index);
      if (!w) continue;
      h.writes.delete(e.index);
      const r = results[i];
      if (w.term !== e.term || r === undefined) {
        // Our entry was replaced by another leader's: it did not apply; retry is safe.
        w.done({
          ok: false,
          code: 'NotLeader',
          msg: 'leadership changed before the write committed',
        });
      } else if (r.ok) {
        w.done({
          ok: true,
          ...(r.value !== undefined ? { value: r.value } : {}),
          ...(r.success !== undefined ? { success: r.success } : {}),
        });
      } else {
        w.done({ ok: false, code: r.code, msg: r.msg });
      }
    }
  }

  private serveReads(h: RangeHost): void {
    const keep: { index: number; id: number }[] = [];
    for (const w of h.readsWaiting) {
      if (h.applied < w.index) {
        keep.push(w);
        continue;
      }
      const r = h.reads.get(w.id);
      if (!r) continue;
      h.reads.delete(w.id);
      if (r.op.op === 'scan') {
        r.done(this.scan(h, r.op));
        continue;
      }
      const rec = this.store.get(r.op.key);
      r.done({ ok: true, value: rec?.value ?? null });
    }
    h.readsWaiting = keep;
  }

  /**
   * A scan of [op.key, op.end) served from one LMDB read transaction, for the part of the
   * span that this range covers (checked against the descriptor now, at serve time): when
   * the range ends before the span does, the result stops at the range's end and says so
   * with `next` = that end, where the client continues (with the next range).
   */
  private scan(h: RangeHost, op: WireOp): WireResult {
    const d = h.descriptor;
    const start = op.key;
    const end = op.end ?? null;
    const inRange =
      compareBytes(start, d.start) >= 0 && (d.end === null || compareBytes(start, d.end) < 0);
    if (!inRange) {
      return {
        ok: false,
        code: 'RangeKeyMismatch',
        msg: `scan start outside range ${d.rangeId} (generation ${d.generation})`,
      };
    }
    const clamped = d.end !== null && (end === null || compareBytes(d.end, end) < 0);
    const r = this.store.scan(start, clamped ? d.end : end, op.limit ?? 1, limits.scanBytesMax);
    const next = r.next ?? (clamped ? (d.end ?? undefined) : undefined);
    return { ok: true, entries: r.entries, ...(next !== undefined ? { next } : {}) };
  }

  private maybeCompact(h: RangeHost, turn: ReturnType<Store['beginTurn']>): void {
    const core = h.replica.core;
    const index = Math.min(h.applied, core.log.stable, core.log.applying);
    if (index - core.log.snapshot.index <= this.config.logEntriesMax) return;
    core.compact(index);
    turn.compact(h.rangeId, core.log.snapshot);
  }

  /** Only the leader listens on `<p>.range.<id>`; a replica that stops leading fails its waiters. */
  private followLeadership(h: RangeHost): void {
    const leading = h.replica.role() === 'leader';
    if (leading && !h.leaderSub) {
      h.leaderSub = this.nc.subscribe(subjects.range(this.config.prefix, h.rangeId), {
        callback: this.guarded((msg) => this.onClient(msg, h)),
      });
      this.log.info(`range ${h.rangeId}: leader at term ${h.replica.core.term}`);
    } else if (!leading && h.leaderSub) {
      h.leaderSub.unsubscribe();
      h.leaderSub = undefined;
      this.log.info(`range ${h.rangeId}: no longer leader (term ${h.replica.core.term})`);
      const res = this.notLeader(h);
      for (const w of h.writes.values()) w.done(res);
      h.writes.clear();
      for (const r of h.reads.values()) r.done(res);
      h.reads.clear();
      h.readsWaiting = [];
    }
  }

  private flushOutbox(outbox: Map<string, [number, Message][]>): void {
    const p = this.config.prefix;
    for (const [to, msgs] of outbox) {
      let batch: [number, Message][] = [];
      let bytes = 0;
      const send = () => {
        if (batch.length === 0) return;
        this.stats.raftBatchesOut++;
        this.nc.publish(
          subjects.raft(p, to),
          encodeEnvelope({
            v: protocolVersion,
            cid: this.clusterId,
            from: this.config.nodeId,
            store: this.store.storeId,
            msgs: batch,
          }),
        );
        batch = [];
        bytes = 0;
      };
      for (const item of msgs) {
        const size = messageBytes(item[1]);
        if (bytes + size > raftPayloadBytesSoftMax) send();
        batch.push(item);
        bytes += size;
      }
      send();
    }
  }

  private fatal(why: string): void {
    this.log.error(`fatal: ${why}`);
    process.exit(1);
  }

  // ------------------------------------------------------------------ admin

  status() {
    return {
      v: protocolVersion,
      cid: this.clusterId,
      node: this.config.nodeId,
      store: this.store.storeId,
      stats: {
        ...this.stats,
        storeCommits: this.store.stats.commits,
        storeFlushes: this.store.stats.flushes,
        xstateEvents: [...this.ranges.values()].reduce((n, h) => n + h.replica.eventsSent, 0),
      },
      ranges: [...this.ranges.values()].map((h) => {
        const s = h.replica.core.status();
        return {
          rangeId: h.rangeId,
          role: h.replica.role(),
          term: s.term,
          leader: h.nodeOf.get(s.leader) ?? '',
          commit: s.commit,
          applied: h.applied,
          lastIndex: s.lastIndex,
          lease: s.lease,
          replicas: h.descriptor.replicas.map((r) => r.nodeId),
          start: h.descriptor.start,
          end: h.descriptor.end,
          generation: h.descriptor.generation,
          ...this.store.spanStats(h.rangeId),
          opsPerS: h.opsPerS,
        };
      }),
    };
  }
}

/** Approximate encoded size of a message, to keep NATS payloads under the limit. */
function messageBytes(m: Message): number {
  if (m.type === 'append') {
    let n = 96;
    for (const e of m.entries) n += e.data.length + 24;
    return n;
  }
  if (m.type === 'snapshot') return m.data.length + 256;
  return 96;
}
