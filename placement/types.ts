// Types of the placement driver. Pure data, structurally compatible with the descriptors
// the node stores (src/storage/descriptor.ts) without importing them: placement/ never
// imports src/ (DESIGN.md, Layout).

export interface ReplicaDesc {
  readonly nodeId: string;
  readonly replicaId: number;
  readonly role: 'voter' | 'learner';
}

export interface RangeDesc {
  readonly rangeId: number;
  /** Inclusive; the empty key is the start of the keyspace. */
  readonly start: Uint8Array;
  /** Exclusive; null = no end. */
  readonly end: Uint8Array | null;
  readonly replicas: readonly ReplicaDesc[];
  /** Grows by one at every split of the range; a command expecting another one is refused. */
  readonly generation: number;
}

/** What a range's leader reports about it (the leader's descriptor is the authority). */
export interface RangeReport {
  readonly descriptor: RangeDesc;
  readonly leaderNode: string;
  readonly keys: number;
  readonly bytes: number;
  readonly opsPerS: number;
  /** The median key of the span, when it has at least 2 keys. */
  readonly splitKey?: Uint8Array;
  /**
   * When the report was taken, on the driver's clock. Clocks of different nodes are not
   * comparable, so the driver stamps every report with the `nowMs` of the REPORT event
   * that delivered it and ignores the value the sender put here.
   */
  readonly atMs: number;
}

/**
 * A report by numbers alone: the range's leader says the descriptor of its last full
 * report (at `generation`) still holds, with these numbers now. Without a kept report of
 * the range at that generation it says nothing (a full one follows when the leader's view
 * changes, and at least every minute).
 */
export interface RangeStatsReport {
  readonly rangeId: number;
  readonly generation: number;
  readonly keys: number;
  readonly bytes: number;
  readonly opsPerS: number;
}

/**
 * A command the driver asks the node to carry out. Every one names the descriptor
 * generation it expects and is applied as a compare-and-set on it, so a stale operation
 * (from an old driver, or derived from an old report) is refused, never misapplied.
 */
export type Operation =
  | {
      readonly kind: 'split';
      /** Stable identity: kind, range and generation (see operationId). */
      readonly id: string;
      readonly rangeId: number;
      readonly generation: number;
      readonly key: Uint8Array;
      readonly reason: string;
    }
  | {
      readonly kind: 'transferLeader';
      /** Stable identity: kind, range and generation (see operationId). */
      readonly id: string;
      readonly rangeId: number;
      readonly generation: number;
      /** A key of the range (its start): the op is routed to the range by it. */
      readonly key: Uint8Array;
      /** The node leading the range when the operation was decided. */
      readonly from: string;
      /** The node to lead it; it holds one of the range's voters. */
      readonly to: string;
      readonly reason: string;
    }
  | {
      readonly kind: 'updateDirectory';
      /** Stable identity: kind, range and generation (see operationId). */
      readonly id: string;
      /** Written to the directory if its entry for the range has a lower generation. */
      readonly descriptor: RangeDesc;
      readonly reason: string;
    };

export type OperationKind = Operation['kind'];

/** What the checkers see: the driver's latest knowledge of the cluster. */
export interface ClusterView {
  readonly nowMs: number;
  /** The latest report of each range, by rangeId. */
  readonly reports: ReadonlyMap<number, RangeReport>;
  /** The meta directory as last read, by rangeId. May lag behind the reports. */
  readonly directory: ReadonlyMap<number, RangeDesc>;
  /** When the directory was read. */
  readonly directoryAtMs: number;
  /** Operations issued and not finished yet (including those issued earlier in this round). */
  readonly inFlight: readonly Operation[];
  /**
   * Leadership transfers answered as done whose range no report has shown since: the
   * reports may still name the old leader.
   */
  readonly settling: readonly Operation[];
  /**
   * The nodes the meta range's leader hears from (node liveness, DESIGN.md), itself
   * included; null until the node has told the driver.
   */
  readonly liveNodes: ReadonlySet<string> | null;
}

/** How an issued operation ended, as the admin API shows it. */
export interface Outcome {
  /**
   * done: the node says it was applied; failed: the node refused it or could not apply it;
   * timedOut: no answer within opTimeoutMs; observed: reports or the directory show the
   * range has moved past the operation's generation; abandoned: this node stopped leading
   * the meta range first.
   */
  readonly status: 'done' | 'failed' | 'timedOut' | 'observed' | 'abandoned';
  readonly atMs: number;
  readonly detail: string;
}

/** One operation the driver issued, with why, and how it ended once it has. */
export interface Decision {
  readonly atMs: number;
  readonly op: Operation;
  readonly reason: string;
  readonly outcome?: Outcome;
}
