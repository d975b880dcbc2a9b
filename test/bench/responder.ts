// The echo responder of the ceiling measurement: answers every request on BENCH_SUBJECT
// at once with a small reply, so the closed loop measures only NATS request/reply and the
// client library. Forked by run.ts, stopped by PID.

import { connect } from '@nats-io/transport-node';

const servers = (process.env.BENCH_NATS ?? '').split(',');
const subject = process.env.BENCH_SUBJECT ?? 'bench.echo';
const reply = Buffer.alloc(16, 0x61);

const nc = await connect({ servers, name: 'bench-responder' });
nc.subscribe(subject, {
  callback: (err, msg) => {
    if (!err) msg.respond(reply);
  },
});
await nc.flush();
process.send?.({ type: 'ready' });
process.on('disconnect', () => process.exit(0));
process.on('SIGTERM', () => {
  void nc.close().finally(() => process.exit(0));
});
