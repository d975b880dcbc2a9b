// The client's request/reply (src/client/requests.ts) against a real nats-server on
// 127.0.0.1: replies reach their own request, no responders, timeouts, a payload over
// max_payload, and close.

import { connect, type NatsConnection } from '@nats-io/transport-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { NoRespondersError, Requests, RequestTimeoutError } from '../../src/client/requests.ts';
import { type NatsServer, startNatsServer } from '../integration/harness.ts';

let nats: NatsServer;
let server: NatsConnection;
let client: NatsConnection;

beforeAll(async () => {
  nats = await startNatsServer();
  server = await connect({ servers: nats.url });
  client = await connect({ servers: nats.url });
});

afterAll(async () => {
  await client?.close();
  await server?.close();
  await nats?.stop();
});

/** One request, as a promise of its reply's bytes. */
function ask(r: Requests, subject: string, payload: Uint8Array, timeoutMs = 2000) {
  return new Promise<Uint8Array>((resolve, reject) =>
    r.request(subject, payload, timeoutMs, resolve, reject),
  );
}

describe('Requests', () => {
  it('hands each reply to its own request, however the replies are ordered', async () => {
    // Answers in reverse order of arrival, once eight requests are in.
    const held: { respond(data: Uint8Array): boolean; data: Uint8Array }[] = [];
    const sub = server.subscribe('req.echo', {
      callback: (_err, msg) => {
        held.push(msg);
        if (held.length === 8) for (const m of held.reverse()) m.respond(m.data);
      },
    });
    await server.flush();
    const r = new Requests(client);
    const replies = await Promise.all(
      Array.from({ length: 8 }, (_, i) => ask(r, 'req.echo', Uint8Array.of(i, 7))),
    );
    expect(replies.map((b) => [...b])).toEqual(Array.from({ length: 8 }, (_, i) => [i, 7]));
    r.close(new Error('done'));
    sub.unsubscribe();
  });

  it('reports no responders, and a timeout when a subscriber does not answer', async () => {
    const r = new Requests(client);
    const none = await ask(r, 'req.nobody', Uint8Array.of(1)).catch((e: unknown) => e);
    expect(none).toBeInstanceOf(NoRespondersError);
    expect((none as Error).message).toBe('no responders on req.nobody');

    const sub = server.subscribe('req.silent', { callback: () => {} });
    await server.flush();
    const started = performance.now();
    const late = await ask(r, 'req.silent', Uint8Array.of(1), 150).catch((e: unknown) => e);
    expect(late).toBeInstanceOf(RequestTimeoutError);
    expect(performance.now() - started).toBeGreaterThanOrEqual(140);
    r.close(new Error('done'));
    sub.unsubscribe();
  });

  it('fails a payload over the server max_payload at once, without a timeout', async () => {
    const r = new Requests(client);
    const max = client.info!.max_payload;
    const started = performance.now();
    const err = await ask(r, 'req.echo', new Uint8Array(max + 1), 5000).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(Error);
    expect(String(err)).toContain('max_payload');
    expect(performance.now() - started).toBeLessThan(1000);
    r.close(new Error('done'));
  });

  it('fails the requests in flight on close, and stops listening for replies', async () => {
    const sub = server.subscribe('req.slow', {
      callback: (_err, msg) => {
        setTimeout(() => msg.respond(Uint8Array.of(9)), 100);
      },
    });
    await server.flush();
    const r = new Requests(client);
    const pending = ask(r, 'req.slow', Uint8Array.of(1)).catch((e: unknown) => e);
    r.close(new Error('closed here'));
    expect(String(await pending)).toContain('closed here');
    // The late reply finds no request (and no subscription): nothing else is called.
    await new Promise((res) => setTimeout(res, 200));
    sub.unsubscribe();
  });
});
