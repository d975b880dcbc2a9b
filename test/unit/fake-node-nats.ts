// A real nats-server for tests that play a fake node against the client: started once per
// file, with one connection for the fake nodes; clients and subscriptions a test makes
// are closed after it.

import { connect, type NatsConnection } from '@nats-io/transport-node';
import { afterAll, afterEach, beforeAll } from 'vitest';
import type { Client } from '../../src/client/index.ts';
import { type NatsServer, startNatsServer } from '../integration/harness.ts';

export interface FakeNodeNats {
  /** The server; valid inside tests. */
  readonly nats: NatsServer;
  /** The fake nodes' connection (reconnects forever); valid inside tests. */
  readonly server: NatsConnection;
  /** Closes the client after the test. */
  track(c: Client): Client;
  /** Unsubscribes after the test. */
  trackSubscription(s: { unsubscribe(): void }): void;
  /** A fresh subject prefix, so tests never see each other's traffic. */
  nextPrefix(tag: string): string;
}

export function useFakeNodeNats(): FakeNodeNats {
  let nats: NatsServer | undefined;
  let server: NatsConnection | undefined;
  const clients: Client[] = [];
  const subscriptions: { unsubscribe(): void }[] = [];
  let prefixCounter = 0;

  beforeAll(async () => {
    nats = await startNatsServer();
    server = await connect({ servers: nats.url, maxReconnectAttempts: -1, reconnectTimeWait: 50 });
  });

  afterEach(async () => {
    for (const c of clients.splice(0)) await c.close();
    for (const s of subscriptions.splice(0)) s.unsubscribe();
  });

  afterAll(async () => {
    await server?.close();
    await nats?.stop();
  });

  return {
    get nats() {
      return nats!;
    },
    get server() {
      return server!;
    },
    track: (c) => {
      clients.push(c);
      return c;
    },
    trackSubscription: (s) => {
      subscriptions.push(s);
    },
    nextPrefix: (tag) => `${tag}${++prefixCounter}`,
  };
}
