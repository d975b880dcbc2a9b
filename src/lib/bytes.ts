// Byte helpers shared by the node, the store and the client.
//
// Copies of bytes that live long (descriptors, log entries, cached keys): Buffer.from(bytes)
// copies a small array into a slice of a shared 8 KiB pool, and the pool stays alive while
// any slice of it does. Bytes kept for as long as a range (its descriptor's keys, the
// entries of an idle range's log) each pinned a pool most of whose other slices were long
// gone: about 3 KiB per range in heap snapshots of a node with 3,000 ranges. ownBytes gives
// the copy an ArrayBuffer of its own instead.

/** A copy of `bytes` in an ArrayBuffer of its own (never a slice of a shared pool). */
export function ownBytes(bytes: Uint8Array): Buffer {
  const out = Buffer.allocUnsafeSlow(bytes.length);
  out.set(bytes);
  return out;
}

/** Whether `bytes` starts with `prefix` (an empty prefix: always). */
export function hasPrefix(bytes: Uint8Array, prefix: Uint8Array): boolean {
  if (bytes.length < prefix.length) return false;
  for (let i = 0; i < prefix.length; i++) if (bytes[i] !== prefix[i]) return false;
  return true;
}
