// The key-to-subject encoding of watch notifications: valid NATS subjects for any key,
// one-to-one, and prefixes that end at a '.' become subject wildcards.

import { describe, expect, it } from 'vitest';
import { keyOfSubject, watchPattern, watchSubject } from '../../src/transport/watch-subject.ts';

const b = (s: string) => Buffer.from(s, 'latin1');

/** NATS subject matching: tokens, '*' one token, '>' one or more trailing tokens. */
function matches(pattern: string, subject: string): boolean {
  const p = pattern.split('.');
  const s = subject.split('.');
  for (let i = 0; i < p.length; i++) {
    if (p[i] === '>') return s.length > i;
    if (i >= s.length) return false;
    if (p[i] !== '*' && p[i] !== s[i]) return false;
  }
  return p.length === s.length;
}

/** What nats-server accepts as a publish subject. */
function validSubject(subject: string): boolean {
  return subject.split('.').every((t) => t.length > 0 && t !== '*' && t !== '>' && !/[\s]/.test(t));
}

function randomKey(seed: number): Uint8Array {
  let x = seed * 2654435761;
  const next = () => {
    x = (x ^ (x << 13)) >>> 0;
    x = (x ^ (x >>> 17)) >>> 0;
    x = (x ^ (x << 5)) >>> 0;
    return x;
  };
  const n = 1 + (next() % 12);
  const alphabet = b('ab.* >%\u0000\u00ff Z9');
  return Uint8Array.from({ length: n }, () =>
    next() % 3 === 0 ? next() % 256 : alphabet[next() % alphabet.length]!,
  );
}

describe('watch subjects', () => {
  it('encodes dots as token boundaries and escapes everything else that is special', () => {
    expect(watchSubject('rasputin', b('users.42'))).toBe('rasputin.watch.users.42');
    expect(watchSubject('p', b('a b'))).toBe('p.watch.a%20b');
    expect(watchSubject('p', b('*.>'))).toBe('p.watch.%2A.%3E');
    expect(watchSubject('p', b('100%'))).toBe('p.watch.100%25');
    expect(watchSubject('p', b('.a..'))).toBe('p.watch.%.a.%.%');
    expect(watchSubject('p', Uint8Array.of(0, 0xff))).toBe('p.watch.%00%FF');
    // Keys that are their own tokens, and near misses (the empty token, one escape).
    expect(watchSubject('p', b('k_000042'))).toBe('p.watch.k_000042');
    expect(watchSubject('p', b('a.b.c'))).toBe('p.watch.a.b.c');
    expect(watchSubject('p', b('a..b'))).toBe('p.watch.a.%.b');
    expect(watchSubject('p', b('a.b.'))).toBe('p.watch.a.b.%');
    expect(watchSubject('p', b('ab\x80'))).toBe('p.watch.ab%80');
    expect(watchSubject('p', b(''))).toBe('p.watch.%');
    // A key that is a view into a larger buffer.
    expect(watchSubject('p', Buffer.from('xxkeyyy').subarray(2, 5))).toBe('p.watch.key');
  });

  it('gives every key a valid subject and reads the key back from it (2,000 random keys)', () => {
    for (let seed = 1; seed <= 2000; seed++) {
      const key = randomKey(seed);
      const subject = watchSubject('p.q', key);
      expect(validSubject(subject), subject).toBe(true);
      expect(Buffer.from(keyOfSubject('p.q', subject)!)).toEqual(Buffer.from(key));
    }
  });

  it('a pattern ending with "." matches exactly the keys under it, at token boundaries', () => {
    const pattern = watchPattern('p', b('users.'));
    expect(pattern).toBe('p.watch.users.>');
    expect(matches(pattern, watchSubject('p', b('users.1')))).toBe(true);
    expect(matches(pattern, watchSubject('p', b('users.a.b')))).toBe(true);
    expect(matches(pattern, watchSubject('p', b('users.')))).toBe(true); // empty last part
    expect(matches(pattern, watchSubject('p', b('users')))).toBe(false);
    expect(matches(pattern, watchSubject('p', b('usersX.1')))).toBe(false);
    for (let seed = 1; seed <= 500; seed++) {
      const key = randomKey(seed);
      const dot = key.indexOf(0x2e);
      if (dot < 0) continue;
      const prefix = key.subarray(0, dot + 1);
      expect(matches(watchPattern('p', prefix), watchSubject('p', key))).toBe(true);
    }
  });

  it('"" watches every key; any other pattern exactly its key', () => {
    expect(matches(watchPattern('p', b('')), watchSubject('p', b('x.y')))).toBe(true);
    const exact = watchPattern('p', b('a.b'));
    expect(matches(exact, watchSubject('p', b('a.b')))).toBe(true);
    expect(matches(exact, watchSubject('p', b('a.b.c')))).toBe(false);
    expect(matches(exact, watchSubject('p', b('a.bc')))).toBe(false);
  });

  it('refuses subjects that are not watch subjects or not encoded by it', () => {
    expect(keyOfSubject('p', 'p.range.1')).toBeUndefined();
    expect(keyOfSubject('p', 'p.watch.a%2')).toBeUndefined();
    expect(keyOfSubject('p', 'p.watch.a b')).toBeUndefined();
  });
});
