// Bytes a node keeps as long as a range (descriptor keys, log entries) must not pin
// memory they do not use: a shared 8 KiB Buffer pool, the whole message they came in, or
// a DataView msgpackr caches on the buffer it reads (src/lib/bytes.ts). Heap snapshots of
// a node with 3,000 idle ranges found about 3 KiB per range pinned that way.

import { describe, expect, it } from 'vitest';
import type { Entry } from '../../ranges/core/types.ts';
import { ownBytes } from '../../src/lib/bytes.ts';
import { decodeCommand, encodeCommand } from '../../src/storage/commands.ts';
import { decodeDescriptor, encodeDescriptor } from '../../src/storage/descriptor.ts';
import { decodeEnvelope, encodeEnvelope } from '../../src/transport/raft-codec.ts';

/** Bytes that are the whole of their ArrayBuffer: they keep nothing else alive. */
function ownsItsBuffer(b: Uint8Array): boolean {
  return b.byteOffset === 0 && b.buffer.byteLength === b.length;
}

describe('long-lived bytes', () => {
  it('ownBytes copies into an ArrayBuffer of its own, unlike Buffer.from', () => {
    const src = Buffer.from('a small key');
    expect(ownsItsBuffer(Buffer.from(src))).toBe(false); // a slice of the shared pool
    const own = ownBytes(src);
    expect(ownsItsBuffer(own)).toBe(true);
    expect(own.equals(src)).toBe(true);
    src[0] = 0x41;
    expect(own.toString()).toBe('a small key');
  });

  it('a decoded descriptor owns its keys', () => {
    const bytes = encodeDescriptor({
      rangeId: 7,
      start: Buffer.from('m'),
      end: Buffer.from('t'),
      replicas: [{ nodeId: 'n1', replicaId: 1, role: 'voter' }],
      generation: 3,
    });
    const d = decodeDescriptor(bytes)!;
    expect([String(d.start), String(d.end)]).toEqual(['m', 't']);
    expect(ownsItsBuffer(d.start)).toBe(true);
    expect(ownsItsBuffer(d.end!)).toBe(true);
  });

  it('descriptors with the same replicas share one frozen replica list', () => {
    const replicas = [
      { nodeId: 'n1', replicaId: 1, role: 'voter' as const },
      { nodeId: 'n2', replicaId: 2, role: 'voter' as const },
    ];
    const a = decodeDescriptor(
      encodeDescriptor({ rangeId: 2, start: Buffer.from('a'), end: null, replicas, generation: 1 }),
    )!;
    const b = decodeDescriptor(
      encodeDescriptor({ rangeId: 3, start: Buffer.from('b'), end: null, replicas, generation: 4 }),
    )!;
    expect(b.replicas).toBe(a.replicas);
    expect(a.replicas).toEqual(replicas);
    expect(Object.isFrozen(a.replicas) && Object.isFrozen(a.replicas[0])).toBe(true);
    const other = decodeDescriptor(
      encodeDescriptor({
        rangeId: 4,
        start: Buffer.from('c'),
        end: null,
        replicas: [replicas[0]!, { nodeId: 'n2', replicaId: 2, role: 'learner' }],
        generation: 1,
      }),
    )!;
    expect(other.replicas).not.toBe(a.replicas);
    expect(other.replicas[1]!.role).toBe('learner');
  });

  it('log entries own their data, and decoding a command leaves nothing on it', () => {
    const data = encodeCommand({
      op: 'set',
      key: Buffer.from('k'),
      value: Buffer.from('v'),
      id: Buffer.from('r'),
    });
    expect(ownsItsBuffer(data)).toBe(true);
    const entries: Entry[] = [{ index: 5, term: 2, kind: 'normal', data }];
    const wire = encodeEnvelope({
      v: 1,
      cid: 'c',
      from: 'n1',
      store: 's',
      msgs: [
        [
          1,
          {
            type: 'append',
            from: 1,
            to: 2,
            term: 2,
            prevIndex: 4,
            prevTerm: 2,
            entries,
            commit: 4,
            seq: 1,
          },
        ],
      ],
    });
    const decoded = decodeEnvelope(wire);
    expect(decoded.ok).toBe(true);
    const m = decoded.ok ? decoded.env.msgs[0]![1] : undefined;
    const entry = m?.type === 'append' ? m.entries[0] : undefined;
    expect(entry?.data).toEqual(Buffer.from(data));
    expect(ownsItsBuffer(entry!.data)).toBe(true);
    // msgpackr caches a DataView as a property of the buffer it reads: not of this one.
    expect(decodeCommand(entry!.data)?.op).toBe('set');
    expect(Object.getOwnPropertyNames(entry!.data)).not.toContain('dataView');
    expect('dataView' in entry!.data).toBe(false);
  });
});
