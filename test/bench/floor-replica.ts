// One process of the durable floor (run.ts, section `floor`): the least work any store that
// keeps its log and data in LMDB and fsyncs before it answers must do on this machine, with
// no consensus logic at all. Three such processes: the leader answers requests on
// BENCH_SUBJECT; per event-loop turn it writes the turn's requests to its log and each
// one's value under a random key of the data tree, in ONE asynchronous lmdb-js transaction
// (as the store opens it: overlappingSync, fsync before `flushed`), and sends the batch to
// both followers in one message each; a follower does the same transaction and acks once
// it is on disk. The leader answers the batch's requests once its own transaction and one
// follower's are durable. A real store applies after the commit, in a later transaction,
// and does much more per write; this is the floor it cannot go under here.
//
// Env: BENCH_NATS, BENCH_SUBJECT, FLOOR_ROLE (leader | follower), FLOOR_ID, FLOOR_DIR,
// FLOOR_KEYS (data keys, pre-filled at start; writes go to random ones of them; 0: no data
// writes, the log alone).
// Forked by run.ts, stopped by PID; reports `ready` over IPC.

import { connect, type Msg } from '@nats-io/transport-node';
import { open } from 'lmdb';

const servers = (process.env.BENCH_NATS ?? '').split(',');
const subject = process.env.BENCH_SUBJECT ?? 'bench.floor';
const role = process.env.FLOOR_ROLE === 'leader' ? 'leader' : 'follower';
const id = process.env.FLOOR_ID ?? role;
const dir = process.env.FLOOR_DIR ?? '';
const keys = Number(process.env.FLOOR_KEYS ?? '100000');
if (dir === '' || !Number.isInteger(keys) || keys < 0) throw new Error('FLOOR_DIR, FLOOR_KEYS');

const root = open(dir, { maxDbs: 4, mapSize: 2 ** 38 });
const logDb = root.openDB<Buffer, number>('log', { encoding: 'binary', keyEncoding: 'uint32' });
const dataDb = root.openDB<Buffer, Buffer>('data', { encoding: 'binary', keyEncoding: 'binary' });
const dataKey = (i: number) => Buffer.from(`p_${String(i).padStart(6, '0')}`);

// The steady state of the store's bench: every key present before the load starts.
const fill = Buffer.alloc(150, 0x66);
for (let i = 0; i < keys; i += 10_000) {
  await root.childTransaction(() => {
    for (let j = i; j < Math.min(keys, i + 10_000); j++) dataDb.put(dataKey(j), fill);
  });
}
await root.flushed;

let nextIndex = 1;
/** Writes `values` (log + a random data key each) in one transaction; resolves when durable. */
function persist(values: readonly Uint8Array[]): Promise<void> {
  const committed = root.childTransaction(() => {
    for (const v of values) {
      logDb.put(nextIndex++, v as Buffer);
      if (keys > 0) dataDb.put(dataKey(Math.floor(Math.random() * keys)), v as Buffer);
    }
  });
  return Promise.resolve(committed).then(async () => {
    await root.flushed;
  });
}

// A batch on the wire: u32 seq, then per value u32 length and the bytes.
function encodeBatch(seq: number, values: readonly Uint8Array[]): Uint8Array {
  let size = 4;
  for (const v of values) size += 4 + v.length;
  const b = Buffer.allocUnsafe(size);
  b.writeUInt32BE(seq, 0);
  let at = 4;
  for (const v of values) {
    b.writeUInt32BE(v.length, at);
    b.set(v, at + 4);
    at += 4 + v.length;
  }
  return b;
}
function decodeBatch(data: Uint8Array): { seq: number; values: Uint8Array[] } {
  const b = Buffer.from(data.buffer, data.byteOffset, data.length);
  const values: Uint8Array[] = [];
  let at = 4;
  while (at < b.length) {
    const n = b.readUInt32BE(at);
    values.push(b.subarray(at + 4, at + 4 + n));
    at += 4 + n;
  }
  return { seq: b.readUInt32BE(0), values };
}

const nc = await connect({ servers, name: `bench-floor-${id}` });
const reply = Buffer.alloc(16, 0x61);
const ackSubject = `${subject}.ack`;

/** Collects messages of one event-loop turn, then hands them to `flush`. */
function perTurn<T>(flush: (batch: T[]) => void): (item: T) => void {
  let batch: T[] = [];
  return (item) => {
    if (batch.length === 0) {
      setImmediate(() => {
        const b = batch;
        batch = [];
        flush(b);
      });
    }
    batch.push(item);
  };
}

if (role === 'leader') {
  interface Pending {
    msgs: Msg[];
    local: boolean;
    acks: number;
  }
  const pending = new Map<number, Pending>();
  let seq = 0;
  const settle = (s: number, p: Pending) => {
    if (!p.local || p.acks < 1) return;
    pending.delete(s);
    for (const m of p.msgs) m.respond(reply);
  };
  nc.subscribe(ackSubject, {
    callback: (err, m) => {
      if (err) return;
      const s = new DataView(m.data.buffer, m.data.byteOffset, 4).getUint32(0);
      const p = pending.get(s);
      if (!p) return;
      p.acks++;
      settle(s, p);
    },
  });
  const propose = perTurn<Msg>((msgs) => {
    const s = ++seq;
    const p: Pending = { msgs, local: false, acks: 0 };
    pending.set(s, p);
    const values = msgs.map((m) => m.data);
    const batch = encodeBatch(s, values);
    nc.publish(`${subject}.rep.f1`, batch);
    nc.publish(`${subject}.rep.f2`, batch);
    void persist(values).then(() => {
      p.local = true;
      settle(s, p);
    });
  });
  nc.subscribe(subject, { callback: (err, m) => (err ? undefined : propose(m)) });
} else {
  const append = perTurn<{ seq: number; values: Uint8Array[] }>((batches) => {
    const values = batches.flatMap((b) => b.values);
    void persist(values).then(() => {
      for (const b of batches) {
        const ack = Buffer.allocUnsafe(4);
        ack.writeUInt32BE(b.seq, 0);
        nc.publish(ackSubject, ack);
      }
    });
  });
  nc.subscribe(`${subject}.rep.${id}`, {
    callback: (err, m) => (err ? undefined : append(decodeBatch(m.data))),
  });
}
await nc.flush();
process.send?.({ type: 'ready' });
const stop = () => {
  void nc
    .close()
    .then(() => root.close())
    .finally(() => process.exit(0));
};
process.on('disconnect', stop);
process.on('SIGTERM', stop);
