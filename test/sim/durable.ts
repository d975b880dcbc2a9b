// Simulated stable storage for a replica host (the simulator and the interaction
// harness): what survives a crash is only what a sync made durable. Writes, applies and
// log truncations are queued as StorageOps and made durable in order by makeDurable.

import type { StorageWrite } from '../../ranges/core/ready.ts';
import type { Entry, HardState, SnapshotMeta } from '../../ranges/core/types.ts';

/** The durable state of one replica over a state machine S. */
export interface Durable<S> {
  hardState: HardState;
  snapshot: SnapshotMeta;
  /** Log entries after snapshot.index, contiguous. */
  entries: Entry[];
  kv: S;
}

export type StorageOp =
  | { readonly kind: 'write'; readonly write: StorageWrite }
  | { readonly kind: 'apply'; readonly entries: readonly Entry[] }
  | { readonly kind: 'compact'; readonly meta: SnapshotMeta };

/** How a host's state machine is restored from a snapshot and advanced by an entry. */
export interface StateMachineOps<S> {
  decode(bytes: Uint8Array): S;
  apply(kv: S, entry: Entry): void;
}

export function makeDurable<S>(d: Durable<S>, op: StorageOp, sm: StateMachineOps<S>): void {
  switch (op.kind) {
    case 'write': {
      const w = op.write;
      d.hardState = w.hardState;
      if (w.snapshot) {
        d.snapshot = w.snapshot.meta;
        d.entries = [];
        d.kv = sm.decode(w.snapshot.data);
      }
      if (w.entries.length > 0) {
        // The write replaces every stored entry from its first index on.
        d.entries.length = Math.max(0, w.entries[0]!.index - d.snapshot.index - 1);
        d.entries.push(...w.entries);
      }
      return;
    }
    case 'apply':
      for (const e of op.entries) sm.apply(d.kv, e);
      return;
    case 'compact': {
      const drop = op.meta.index - d.snapshot.index;
      if (drop > 0) {
        d.entries = d.entries.slice(drop);
        d.snapshot = op.meta;
      }
      return;
    }
  }
}
