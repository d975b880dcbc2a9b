// Tunables of the placement driver. Names carry their units last.

export interface PlacementConfig {
  /** A range whose leader reports at least this many bytes is split at its median key. */
  readonly splitBytesThreshold: number;
  /** Reports (and directory reads) older than this are ignored, and dropped from the view. */
  readonly reportStaleMs: number;
  /** An issued operation with no answer after this long is forgotten (and may be reissued). */
  readonly opTimeoutMs: number;
  /** After taking over, the driver collects reports this long before it issues anything. */
  readonly warmupMs: number;
  /** Splits in flight at once, cluster-wide. */
  readonly splitsInFlightMax: number;
  /**
   * Leadership transfers in flight at once, cluster-wide (balanceLeaders); 0 turns leader
   * balancing off.
   */
  readonly leaderTransfersInFlightMax: number;
  /** Operations of every kind in flight at once, cluster-wide. */
  readonly operationsInFlightMax: number;
  /** Decisions kept for the admin API, newest last. */
  readonly decisionsMax: number;
  /**
   * The reserved prefix of system keys. The meta range (the first) must keep all of it, so
   * no split key lies in it or before it.
   */
  readonly systemPrefix: Uint8Array;
}

/** The defaults, sized for production. Tests and small clusters override splitBytesThreshold. */
export const defaultPlacementConfig: PlacementConfig = Object.freeze({
  splitBytesThreshold: 64 * 1024 * 1024,
  reportStaleMs: 10_000,
  opTimeoutMs: 10_000,
  warmupMs: 2_000,
  splitsInFlightMax: 4,
  leaderTransfersInFlightMax: 32,
  operationsInFlightMax: 64,
  decisionsMax: 200,
  // 0x00 "sys/", as src/storage/descriptor.ts.
  systemPrefix: Uint8Array.of(0x00, 0x73, 0x79, 0x73, 0x2f),
});

/** The defaults with some values replaced; throws a RangeError for a value out of range. */
export function placementConfig(overrides: Partial<PlacementConfig> = {}): PlacementConfig {
  const config: PlacementConfig = { ...defaultPlacementConfig, ...overrides };
  const positive = ['splitBytesThreshold', 'decisionsMax'] as const;
  const nonNegative = ['reportStaleMs', 'opTimeoutMs', 'warmupMs'] as const;
  const counts = [
    'splitsInFlightMax',
    'leaderTransfersInFlightMax',
    'operationsInFlightMax',
    'decisionsMax',
  ] as const;
  for (const name of positive) {
    if (!(config[name] > 0)) throw new RangeError(`placement: ${name} must be > 0`);
  }
  for (const name of nonNegative) {
    if (!(config[name] >= 0) || !Number.isFinite(config[name])) {
      throw new RangeError(`placement: ${name} must be a finite number >= 0`);
    }
  }
  for (const name of counts) {
    if (!Number.isSafeInteger(config[name]) || config[name] < 0) {
      throw new RangeError(`placement: ${name} must be an integer >= 0`);
    }
  }
  if (!(config.systemPrefix instanceof Uint8Array) || config.systemPrefix.length === 0) {
    throw new RangeError('placement: systemPrefix must be non-empty bytes');
  }
  return config;
}
