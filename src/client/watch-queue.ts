// The queue behind one client.watch() loop: notifications pushed by the client's shared
// NATS subscription of the watch subject, taken by the loop (an async iterator). A
// notification goes straight to a loop that waits for one (one promise per notification);
// otherwise it waits in the queue, at most `max` of them: past that the newest are lost
// and counted, as at-most-once delivery allows (docs/streams.md).

export class WatchQueue<T> implements AsyncIterableIterator<T, void, undefined> {
  /** Notifications lost because the queue was full. */
  dropped = 0;
  private queue: (T | undefined)[] = [];
  private head = 0;
  private ended = false;
  /** next() calls waiting for a notification, oldest first. */
  private waiting: ((r: IteratorResult<T, void>) => void)[] = [];

  constructor(
    private readonly max: number,
    /** Called once, when the loop ends (end() or return()). */
    private readonly onEnd: () => void,
  ) {}

  push(e: T): void {
    if (this.ended) return;
    if (this.waiting.length > 0) {
      this.waiting.shift()!({ value: e, done: false });
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
    if (this.ended) return;
    this.ended = true;
    this.queue = [];
    this.head = 0;
    const waiting = this.waiting;
    this.waiting = [];
    for (const w of waiting) w({ value: undefined, done: true });
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
    if (this.ended) return Promise.resolve({ value: undefined, done: true });
    return new Promise((resolve) => this.waiting.push(resolve));
  }

  return(): Promise<IteratorResult<T, void>> {
    this.end();
    return Promise.resolve({ value: undefined, done: true });
  }

  [Symbol.asyncIterator](): this {
    return this;
  }
}
