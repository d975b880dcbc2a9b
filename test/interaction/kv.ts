// The interaction tests' replicated state machine: a normal entry `key=value` sets key
// to value. Its snapshot is its JSON encoding, small enough to cut into a few chunks.

import type { Entry } from '../../ranges/core/types.ts';

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** The replicated state machine: a normal entry `key=value` sets key to value. */
export class Kv {
  applied = 0;
  readonly data = new Map<string, string>();

  apply(e: Entry): void {
    if (e.kind === 'normal') {
      const s = decoder.decode(e.data);
      const eq = s.indexOf('=');
      this.data.set(eq < 0 ? s : s.slice(0, eq), eq < 0 ? '' : s.slice(eq + 1));
    }
    this.applied = e.index;
  }

  encode(): Uint8Array {
    return encoder.encode(JSON.stringify([this.applied, [...this.data]]));
  }

  static decode(bytes: Uint8Array): Kv {
    const [applied, data] = JSON.parse(decoder.decode(bytes)) as [number, [string, string][]];
    const kv = new Kv();
    kv.applied = applied;
    for (const [k, v] of data) kv.data.set(k, v);
    return kv;
  }

  render(): string {
    const pairs = [...this.data]
      .sort((a, b) => (a[0] < b[0] ? -1 : 1))
      .map(([k, v]) => `${k}=${v}`);
    return `@${this.applied} {${pairs.join(' ')}}`;
  }
}
