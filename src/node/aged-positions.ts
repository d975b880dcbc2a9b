// The log positions a range applied a while ago, by this node's clock: what a range's
// leader needs to propose the time-bounded history commands (compactEvents for
// --events-retain-s, forgetRequests for --dedup-window-s). The clock only picks the
// position; the command carries it, so every replica acts at the same one
// (DESIGN.md, "Client semantics": request records expire by log position).

import type { LogIndex } from '../../ranges/core/types.ts';

/** Samples per window: the position found is at most an eighth of the window younger. */
const samplesPerWindow = 8;

/**
 * (time, applied) samples of one range, at most one per ageMs / 8, and none older than the
 * newest one that is at least ageMs old: at most about ten numbers pairs per range.
 */
export class AgedPositions {
  private readonly atMs: number[] = [];
  private readonly applied: LogIndex[] = [];

  constructor(readonly ageMs: number) {}

  /** Notes that the range had applied `applied` by `nowMs` (kept when a sample is due). */
  note(nowMs: number, applied: LogIndex): void {
    const n = this.atMs.length;
    if (n > 0 && nowMs - this.atMs[n - 1]! < this.ageMs / samplesPerWindow) return;
    this.atMs.push(nowMs);
    this.applied.push(applied);
  }

  /**
   * The highest position the range had applied at least ageMs before `nowMs`, by the
   * samples; undefined when no sample is that old yet. Older samples are dropped.
   */
  aged(nowMs: number): LogIndex | undefined {
    let i = -1;
    while (i + 1 < this.atMs.length && nowMs - this.atMs[i + 1]! >= this.ageMs) i++;
    if (i < 0) return undefined;
    this.atMs.splice(0, i);
    this.applied.splice(0, i);
    return this.applied[0];
  }
}
