// The output of one turn of a replica, and the order the caller must follow:
//
//   1. send `messages` (none of them depends on `write`);
//   2. make `write` durable (synced), in write-id order, then call persisted(write.id):
//      only then does the core release the acknowledgements and votes that depend on it;
//   3. apply `committed` in order (they are committed and durable locally), after
//      installing `write.snapshot` if there was one;
//   4. serve each read in `readStates` once the applied index reaches its index, and
//      fail the reads in `droppedReads` (leadership was lost; the client retries).

import type { Entry, HardState, Message, ReadState, SnapshotMeta } from './types.ts';

export interface StorageWrite {
  readonly id: number;
  readonly hardState: HardState;
  /** Replace every stored entry from entries[0].index on with these. */
  readonly entries: readonly Entry[];
  /** Replace the state machine and the whole log with this snapshot. */
  readonly snapshot: { readonly meta: SnapshotMeta; readonly data: Uint8Array } | null;
}

export interface Ready {
  readonly messages: readonly Message[];
  readonly write: StorageWrite | null;
  readonly committed: readonly Entry[];
  readonly readStates: readonly ReadState[];
  readonly droppedReads: readonly number[];
}
