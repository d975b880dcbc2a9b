// The key-to-subject encoding of watch notifications (docs/streams.md, "Watch").
//
// A key is cut at its '.' bytes into tokens, and every token is written with bytes outside
// a small safe set escaped as %HH (uppercase hex), so any key - with dots, spaces, NATS
// wildcards, '%' or binary bytes - becomes a valid subject, one token per dot-separated
// part of the key. An empty part (a leading, trailing or doubled dot, or the empty key)
// is the token '%' alone, which no escape produces. The mapping is one-to-one, so a
// subscriber can turn a subject back into its key, and a key prefix that ends at a '.'
// is a subject prefix: watching `users.` means subscribing to `<p>.watch.users.>`.

/** Bytes written as themselves: NATS-safe and never special in a subject. */
const safe = new Uint8Array(256);
for (const c of 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_~:/+=@!,;') {
  safe[c.charCodeAt(0)] = 1;
}
const hex = '0123456789ABCDEF';
const dot = 0x2e;

function encodeToken(key: Uint8Array, from: number, to: number): string {
  if (from === to) return '%';
  let out = '';
  for (let i = from; i < to; i++) {
    const b = key[i]!;
    out += safe[b] ? String.fromCharCode(b) : `%${hex[b >> 4]}${hex[b & 15]}`;
  }
  return out;
}

/** The subject tokens of a key, joined with '.'. */
export function keyTokens(key: Uint8Array): string {
  const tokens: string[] = [];
  let from = 0;
  for (let i = 0; i <= key.length; i++) {
    if (i === key.length || key[i] === dot) {
      tokens.push(encodeToken(key, from, i));
      from = i + 1;
    }
  }
  return tokens.join('.');
}

/** The subject a mutation of `key` is published on. */
export function watchSubject(prefix: string, key: Uint8Array): string {
  return `${prefix}.watch.${keyTokens(key)}`;
}

/**
 * The subject to subscribe to for a watch pattern: '' watches every key; a pattern that
 * ends with '.' watches every key that starts with it (at least one more token); any
 * other pattern watches exactly that key.
 */
export function watchPattern(prefix: string, pattern: Uint8Array): string {
  if (pattern.length === 0) return `${prefix}.watch.>`;
  if (pattern[pattern.length - 1] === dot) {
    return `${prefix}.watch.${keyTokens(pattern.subarray(0, pattern.length - 1))}.>`;
  }
  return watchSubject(prefix, pattern);
}

/** The key a watch subject names (the inverse of watchSubject), or undefined. */
export function keyOfSubject(prefix: string, subject: string): Uint8Array | undefined {
  const head = `${prefix}.watch.`;
  if (!subject.startsWith(head)) return undefined;
  const parts = subject.slice(head.length).split('.');
  const out: number[] = [];
  for (let p = 0; p < parts.length; p++) {
    if (p > 0) out.push(dot);
    const t = parts[p]!;
    if (t === '%') continue;
    for (let i = 0; i < t.length; i++) {
      const c = t.charCodeAt(i);
      if (c === 0x25) {
        const v = Number.parseInt(t.slice(i + 1, i + 3), 16);
        if (!/^[0-9A-F]{2}$/.test(t.slice(i + 1, i + 3))) return undefined;
        out.push(v);
        i += 2;
      } else if (safe[c]) {
        out.push(c);
      } else {
        return undefined;
      }
    }
  }
  return Uint8Array.from(out);
}
