// Request/reply over one inbox subscription of the client's, as nats.js's request() does,
// with less work per request. nats.js's RequestOne builds a RequestError on its way out
// (cancel(), called after every reply, rejects its already resolved promise with one,
// stack trace and all), races a timer promise against the reply's, and resolves a Msg:
// about 0.5 us per get at 64 gets a request, a fifteenth of the client's busy time, profiled
// under the get bench (docs/architecture.md, "The client's requests"). Here a request is a
// token in a map, a timer and two callbacks.

import {
  createInbox,
  type Msg,
  type NatsConnection,
  type Subscription,
} from '@nats-io/transport-node';

/** No subscriber on the request's subject (the server's 503 status reply). */
export class NoRespondersError extends Error {
  constructor(subject: string) {
    super(`no responders on ${subject}`);
    this.name = 'NoRespondersError';
  }
}

/** No reply within the request's timeout. */
export class RequestTimeoutError extends Error {
  constructor(subject: string, timeoutMs: number) {
    super(`no reply on ${subject} within ${timeoutMs} ms`);
    this.name = 'RequestTimeoutError';
  }
}

interface Pending {
  readonly subject: string;
  readonly onReply: (data: Uint8Array) => void;
  readonly onError: (err: Error) => void;
  readonly timer: NodeJS.Timeout;
}

export class Requests {
  /** `<inbox>.`: a request's reply subject is this and its token. */
  private readonly inbox = `${createInbox()}.`;
  private nextToken = 1;
  private readonly pending = new Map<number, Pending>();
  private readonly sub: Subscription;

  constructor(private readonly nc: NatsConnection) {
    this.sub = nc.subscribe(`${this.inbox}*`, {
      callback: (err, msg) => this.onMessage(err, msg),
    });
  }

  /**
   * Publishes `payload` on `subject` and hands its reply's data to onReply, or an error to
   * onError: NoRespondersError, RequestTimeoutError after timeoutMs, or what publish threw
   * (nats.js's InvalidArgumentError for a payload over the server's max_payload, say).
   * Exactly one of the two is called, never from within this call (close() calls
   * onError of the requests in flight).
   */
  request(
    subject: string,
    payload: Uint8Array,
    timeoutMs: number,
    onReply: (data: Uint8Array) => void,
    onError: (err: Error) => void,
  ): void {
    const token = this.nextToken++;
    const timer = setTimeout(() => {
      if (this.pending.delete(token)) onError(new RequestTimeoutError(subject, timeoutMs));
    }, timeoutMs);
    this.pending.set(token, { subject, onReply, onError, timer });
    try {
      this.nc.publish(subject, payload, { reply: this.inbox + token });
    } catch (err) {
      this.pending.delete(token);
      clearTimeout(timer);
      const e = err instanceof Error ? err : new Error(String(err));
      queueMicrotask(() => onError(e));
    }
  }

  /** Fails every request in flight with `err` and stops listening for replies. */
  close(err: Error): void {
    this.failAll(err);
    this.sub.unsubscribe();
  }

  private onMessage(err: Error | null, msg: Msg): void {
    if (err !== null) {
      // The inbox subscription itself failed (a permissions error, say): no reply can come.
      this.failAll(err);
      return;
    }
    const token = Number(msg.subject.slice(this.inbox.length));
    const p = this.pending.get(token);
    if (p === undefined) return; // timed out before, or a duplicate
    this.pending.delete(token);
    clearTimeout(p.timer);
    if (msg.data.length === 0 && msg.headers?.code === 503) {
      p.onError(new NoRespondersError(p.subject));
    } else {
      p.onReply(msg.data);
    }
  }

  private failAll(err: Error): void {
    const pending = [...this.pending.values()];
    this.pending.clear();
    for (const p of pending) {
      clearTimeout(p.timer);
      p.onError(err);
    }
  }
}
