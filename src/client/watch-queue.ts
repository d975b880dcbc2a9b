// The queue behind one client.watch() loop: notifications pushed by the client's shared
// NATS subscription of the watch subject, taken by the loop (an async iterator). A
// notification goes straight to a loop that waits for one (one promise per notification);
// otherwise it waits in the queue, at most `max` of them: past that the newest are lost
// and counted, as at-most-once delivery allows (docs/streams.md). A loop ends quietly
// (end: the signal fired, the client closed) or with an error (fail: the subscription
// failed), which its next next() call throws once; later calls are done.

export class WatchQueue<T> implements AsyncIterableIterator<T, void, undefined> {
  /** Notifications lost because the queue was full. */
  dropped = 0;
  private queue: (T | undefined)[] = [];
  private head = 0;
  private ended = false;
  /** Why the loop ended, until a next() call has thrown it. */
  private error: Error | undefined;
  /** next() calls waiting for a notification, oldest first. */
  private waiting: {
    resolve: (r: IteratorResult<T, void>) => void;
    reject: (err: Error) => void;
  }[] = [];

  constructor(
    private readonly max: number,
    /** Called once, when the loop ends (end() or return()). */
    private readonly onEnd: () => void,
  ) {}

  push(e: T): void {
    if (this.ended) return;
    if (this.waiting.length > 0) {
      this.waiting.shift()!.resolve({ value: e, done: false });
      return;
    }
    if (this.queue.length - this.head >= this.max) {
      this.dropped++;
      return;
    }
    this.queue.push(e);
  }

  /** Ends the loop: waiting and later next() calls are done; queued notifications are dropped. */
  end(): void {
    this.finish(undefined);
  }

  /**
   * Ends the loop with an error: the first waiting (or the next) next() call throws it,
   * the others are done; queued notifications are dropped.
   */
  fail(err: Error): void {
    this.finish(err);
  }

  private finish(err: Error | undefined): void {
    if (this.ended) return;
    this.ended = true;
    this.queue = [];
    this.head = 0;
    const waiting = this.waiting;
    this.waiting = [];
    if (err !== undefined) {
      const first = waiting.shift();
      if (first === undefined) this.error = err;
      else first.reject(err);
    }
    for (const w of waiting) w.resolve({ value: undefined, done: true });
    this.onEnd();
  }

  next(): Promise<IteratorResult<T, void>> {
    if (this.head < this.queue.length) {
      const e = this.queue[this.head]!;
      this.queue[this.head++] = undefined;
      if (this.head === this.queue.length) {
        this.queue.length = 0;
        this.head = 0;
      }
      return Promise.resolve({ value: e, done: false });
    }
    if (this.ended) {
      const err = this.error;
      this.error = undefined;
      return err === undefined
        ? Promise.resolve({ value: undefined, done: true })
        : Promise.reject(err);
    }
    return new Promise((resolve, reject) => this.waiting.push({ resolve, reject }));
  }

  return(): Promise<IteratorResult<T, void>> {
    this.end();
    return Promise.resolve({ value: undefined, done: true });
  }

  [Symbol.asyncIterator](): this {
    return this;
  }
}
