// AgedPositions: the position a range had applied at least a window ago, by samples (what
// a leader proposes the time-bounded history commands with, node.ts compactHistory).

import { describe, expect, it } from 'vitest';
import { AgedPositions } from '../../src/node/aged-positions.ts';

describe('aged positions', () => {
  it('answers the newest sample at least the window old, never a younger one', () => {
    const a = new AgedPositions(8000); // samples at most every 1,000 ms
    expect(a.aged(0)).toBeUndefined();
    for (let t = 0; t <= 20_000; t += 250) {
      a.note(t, t / 10); // applied grows by 1 per 10 ms
      const got = a.aged(t);
      if (t < 8000) {
        expect(got).toBeUndefined();
        continue;
      }
      // Applied by t - 8000 at the latest, and at most one sample spacing older.
      expect(got).toBeLessThanOrEqual((t - 8000) / 10);
      expect(got).toBeGreaterThanOrEqual((t - 9000) / 10);
    }
  });

  it('keeps about ten samples however long the range runs', () => {
    const a = new AgedPositions(8000);
    for (let t = 0; t <= 1_000_000; t += 100) {
      a.note(t, t);
      a.aged(t);
    }
    const held = (a as unknown as { atMs: number[] }).atMs.length;
    expect(held).toBeLessThanOrEqual(10);
  });

  it('a range that stops applying keeps its last position, which ages', () => {
    const a = new AgedPositions(1000);
    a.note(0, 5);
    a.note(200, 7);
    expect(a.aged(900)).toBeUndefined();
    expect(a.aged(1000)).toBe(5);
    expect(a.aged(1200)).toBe(7);
    expect(a.aged(100_000)).toBe(7);
  });
});
