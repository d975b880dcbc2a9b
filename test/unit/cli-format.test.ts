// How the CLI shows keys and sizes in `rasputin ranges`.

import { describe, expect, it } from 'vitest';
import { showBytes, showKey } from '../../src/cli/status.ts';

describe('cli formatting', () => {
  it('shows printable keys as text, others as hex, and the ends of the keyspace', () => {
    expect(showKey(Buffer.from('users/42'), '?')).toBe('users/42');
    expect(showKey(Uint8Array.from([0x00, 0xff]), '?')).toBe('0x00ff');
    expect(showKey(Buffer.from('tab\there'), '?')).toBe('0x7461620968657265');
    expect(showKey(Buffer.from('é'), '?')).toBe('0xc3a9');
    expect(showKey(new Uint8Array(0), '?')).toBe('""');
    expect(showKey(null, '(end)')).toBe('(end)');
    expect(showKey(undefined, '?')).toBe('?');
  });

  it('shows sizes in binary units', () => {
    expect(showBytes(512)).toBe('512 B');
    expect(showBytes(4096)).toBe('4.0 KiB');
    expect(showBytes(3 * 1024 * 1024)).toBe('3.0 MiB');
    expect(showBytes(5 * 1024 ** 3)).toBe('5.0 GiB');
    expect(showBytes(undefined)).toBe('?');
  });
});
