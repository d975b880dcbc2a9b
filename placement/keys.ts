// Byte-string keys: order, prefixes, and formatting for human-readable reasons.

/** Lexicographic order of unsigned bytes: negative, zero or positive, as a.compare(b). */
export function compareKeys(a: Uint8Array, b: Uint8Array): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) {
    const d = a[i]! - b[i]!;
    if (d !== 0) return d;
  }
  return a.length - b.length;
}

export function hasPrefix(key: Uint8Array, prefix: Uint8Array): boolean {
  if (key.length < prefix.length) return false;
  for (let i = 0; i < prefix.length; i++) if (key[i] !== prefix[i]) return false;
  return true;
}

/** The first key after every key with this prefix, or null when there is none (all 0xff). */
export function prefixEnd(prefix: Uint8Array): Uint8Array | null {
  for (let i = prefix.length - 1; i >= 0; i--) {
    if (prefix[i]! < 0xff) {
      const end = prefix.slice(0, i + 1);
      end[i] = end[i]! + 1;
      return end;
    }
  }
  return null;
}

/** Whether start < key < end (end null = no end): a split there leaves both sides non-empty. */
export function strictlyInside(
  key: Uint8Array,
  start: Uint8Array,
  end: Uint8Array | null,
): boolean {
  return compareKeys(start, key) < 0 && (end === null || compareKeys(key, end) < 0);
}

/** Bytes of a key shown in a reason; longer keys are cut and marked with an ellipsis. */
export const formatKeyBytesMax = 64;

/** A key for logs and reasons: printable ASCII as a quoted string, anything else as hex. */
export function formatKey(key: Uint8Array): string {
  const shown = key.subarray(0, formatKeyBytesMax);
  const cut = key.length > shown.length ? '…' : '';
  if (shown.every((c) => c >= 0x20 && c < 0x7f)) {
    return JSON.stringify(String.fromCharCode(...shown)) + cut;
  }
  let hex = '0x';
  for (const c of shown) hex += c.toString(16).padStart(2, '0');
  return hex + cut;
}

const byteUnits = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];

/** Bytes in binary units with one decimal at most: 73_505_587 -> "70.1 MiB". */
export function formatBytes(bytes: number): string {
  let value = bytes;
  let unit = 0;
  while (Math.abs(value) >= 1024 && unit < byteUnits.length - 1) {
    value /= 1024;
    unit++;
  }
  const rounded = Math.round(value * 10) / 10;
  return `${Number.isInteger(rounded) ? rounded.toFixed(0) : rounded.toFixed(1)} ${byteUnits[unit]}`;
}
