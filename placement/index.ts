// The placement driver's public API (DESIGN.md, "Placement driver").

export {
  balanceLeaders,
  type Checker,
  checkers,
  operationId,
  operationTarget,
  repairDirectory,
  splitBySize,
  splittableKey,
} from './checkers.ts';
export { defaultPlacementConfig, type PlacementConfig, placementConfig } from './config.ts';
export {
  decisions,
  operationsInFlight,
  type PlacementContext,
  type PlacementEvent,
  type PlacementInput,
  type PlacementSnapshotSource,
  placementMachine,
} from './driver.ts';
export { compareKeys, formatBytes, formatKey } from './keys.ts';
export type { DriverState, InFlightOperation, LeaderState } from './state.ts';
export type {
  ClusterView,
  Decision,
  Operation,
  OperationKind,
  Outcome,
  RangeDesc,
  RangeReport,
  RangeStatsReport,
  ReplicaDesc,
} from './types.ts';
