// `rasputin start` flags that take a number of milliseconds: where 0 has a meaning of its own,
// and the tick, whose bound comes from the lease; and --balance-leaders, off by default.

import { describe, expect, it } from 'vitest';
import {
  ConfigError,
  defaultFollowerApplyMs,
  defaultLeaderApplyMs,
  parseNodeConfig,
  tickMsMax,
} from '../../src/node/config.ts';

const base = ['--node-id', 'a', '--storage-dir', '/tmp/rasputin-config-test'];

describe.each([
  ['--follower-apply-ms', 'followerApplyMs', defaultFollowerApplyMs],
  ['--leader-apply-ms', 'leaderApplyMs', defaultLeaderApplyMs],
] as const)('%s', (flag, field, fallback) => {
  it('has its default; 0 means apply at once', () => {
    expect(parseNodeConfig(base)[field]).toBe(fallback);
    expect(parseNodeConfig([...base, flag, '0'])[field]).toBe(0);
    expect(parseNodeConfig([...base, flag, '250'])[field]).toBe(250);
  });

  it('rejects what is not a whole number of ms in [0, 60000], naming the flag', () => {
    for (const bad of ['-1', '1.5', 'soon', '60001', '']) {
      const args = [...base, `${flag}=${bad}`];
      expect(() => parseNodeConfig(args)).toThrow(ConfigError);
      expect(() => parseNodeConfig(args)).toThrow(
        new RegExp(`${flag} must be an integer in \\[0, 60000\\]`),
      );
    }
  });
});

describe('--tick-ms', () => {
  it('defaults to 100 and takes whole numbers up to tickMsMax (200)', () => {
    expect(tickMsMax).toBe(200);
    expect(parseNodeConfig(base).tickMs).toBe(100);
    expect(parseNodeConfig([...base, '--tick-ms', '200']).tickMs).toBe(200);
    expect(parseNodeConfig([...base, '--tick-ms', '20']).tickMs).toBe(20);
  });

  it('refuses a tick whose idle lease rounds would not fit in the 900 ms lease, saying so', () => {
    for (const bad of ['201', '300', '500', '10000']) {
      const args = [...base, `--tick-ms=${bad}`];
      expect(() => parseNodeConfig(args)).toThrow(ConfigError);
      expect(() => parseNodeConfig(args)).toThrow(
        /--tick-ms must be at most 200: .* 3 ticks old, .* 900 ms lease/,
      );
    }
  });

  it('refuses what is not a whole number of ms', () => {
    for (const bad of ['0', '-5', '1.5', 'fast', '']) {
      expect(() => parseNodeConfig([...base, `--tick-ms=${bad}`])).toThrow(
        /--tick-ms must be an integer in \[1, 200\]/,
      );
    }
  });
});

describe('--balance-leaders', () => {
  it('is off unless turned on, and takes only on or off', () => {
    expect(parseNodeConfig(base).balanceLeaders).toBe(false);
    expect(parseNodeConfig([...base, '--balance-leaders', 'on']).balanceLeaders).toBe(true);
    expect(parseNodeConfig([...base, '--balance-leaders', 'off']).balanceLeaders).toBe(false);
    expect(() => parseNodeConfig([...base, '--balance-leaders', 'yes'])).toThrow(
      /--balance-leaders must be on or off, got "yes"/,
    );
  });
});
