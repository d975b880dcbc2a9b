// `rasputin start` flags that take a number of milliseconds where 0 has a meaning of its own.

import { describe, expect, it } from 'vitest';
import { ConfigError, defaultFollowerApplyMs, parseNodeConfig } from '../../src/node/config.ts';

const base = ['--node-id', 'a', '--storage-dir', '/tmp/rasputin-config-test'];

describe('--follower-apply-ms', () => {
  it('defaults to defaultFollowerApplyMs; 0 means apply at once', () => {
    expect(parseNodeConfig(base).followerApplyMs).toBe(defaultFollowerApplyMs);
    expect(parseNodeConfig([...base, '--follower-apply-ms', '0']).followerApplyMs).toBe(0);
    expect(parseNodeConfig([...base, '--follower-apply-ms', '250']).followerApplyMs).toBe(250);
  });

  it('rejects what is not a whole number of ms in [0, 60000], naming the flag', () => {
    for (const bad of ['-1', '1.5', 'soon', '60001', '']) {
      const args = [...base, `--follower-apply-ms=${bad}`];
      expect(() => parseNodeConfig(args)).toThrow(ConfigError);
      expect(() => parseNodeConfig(args)).toThrow(
        /--follower-apply-ms must be an integer in \[0, 60000\]/,
      );
    }
  });
});
