// A small line logger: `2026-11-29T22:07:23.123Z INFO  node n1: message`, to a file or
// stdout. Logging must never take a node down: write errors are swallowed.

import { appendFileSync } from 'node:fs';

export type Level = 'debug' | 'info' | 'warn' | 'error';
const order: Record<Level, number> = { debug: 0, info: 1, warn: 2, error: 3 };

export class Logger {
  private readonly file: string | undefined;
  private readonly min: number;
  private readonly name: string;
  /** Dropped-message lines are rate limited per key: at most one per window. */
  private readonly lastByKey = new Map<string, number>();

  constructor(name: string, opts: { file?: string; level?: Level } = {}) {
    this.name = name;
    this.file = opts.file;
    this.min = order[opts.level ?? 'info'];
  }

  log(level: Level, msg: string): void {
    if (order[level] < this.min) return;
    const line = `${new Date().toISOString()} ${level.toUpperCase().padEnd(5)} ${this.name}: ${msg}\n`;
    try {
      if (this.file) appendFileSync(this.file, line);
      else process.stdout.write(line);
    } catch {
      // nowhere left to report it
    }
  }

  debug(msg: string): void {
    this.log('debug', msg);
  }
  info(msg: string): void {
    this.log('info', msg);
  }
  warn(msg: string): void {
    this.log('warn', msg);
  }
  error(msg: string): void {
    this.log('error', msg);
  }

  /** Logs at most once per `windowMs` for the same key (e.g. one bad peer flooding us). */
  limited(level: Level, key: string, msg: string, windowMs = 5000): void {
    const now = Date.now();
    const last = this.lastByKey.get(key) ?? 0;
    if (now - last < windowMs) return;
    this.lastByKey.set(key, now);
    if (this.lastByKey.size > 1000) this.lastByKey.clear();
    this.log(level, msg);
  }
}
