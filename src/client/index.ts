// The client library's public surface.

export {
  AbortedError,
  BadRequestError,
  ClientClosedError,
  CompactedError,
  type ErrorCode,
  InternalError,
  InvalidArgumentError,
  NotLeaderError,
  OverloadedError,
  RangeKeyMismatchError,
  RasputinError,
  TimeoutError,
  UnavailableError,
} from '../protocol/errors.ts';
export { limits, scanLimitMin } from '../protocol/wire.ts';
export { keyOfSubject, watchPattern, watchSubject } from '../transport/watch-subject.ts';
export {
  type CallOptions,
  type CasResult,
  Client,
  type ClientOptions,
  type ClientStats,
  type DelResult,
  type GetResult,
  type ScanAllOptions,
  type ScanEntry,
  type ScanOptions,
  type ScanResult,
  scanLimits,
  type Watch,
  type WatchEvent,
} from './client.ts';
export {
  type SubscribeEvent,
  type SubscribeOptions,
  Subscription,
  subscribeDefaults,
} from './subscription.ts';
