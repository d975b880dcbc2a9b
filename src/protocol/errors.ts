// Typed errors of the client API and the wire protocol. Each has its own class with a
// stable `code` (what goes on the wire) and a `name`, and carries what the caller needs.

export type ErrorCode =
  | 'NotLeader'
  | 'RangeKeyMismatch'
  | 'Timeout'
  | 'InvalidArgument'
  | 'Unavailable'
  | 'Overloaded'
  | 'BadRequest'
  | 'Internal'
  | 'Compacted';

export class RasputinError extends Error {
  readonly code: ErrorCode;
  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
    this.name = `${code}Error`;
  }
}

/** The replica asked is not the leader; `leaderHint` is the node id it believes leads, or 0. */
export class NotLeaderError extends RasputinError {
  readonly leaderHint: string;
  constructor(leaderHint: string, message = 'not the leader') {
    super('NotLeader', leaderHint ? `${message} (leader: ${leaderHint})` : message);
    this.leaderHint = leaderHint;
  }
}

/** The outcome is unknown: the operation may or may not have been applied. */
export class TimeoutError extends RasputinError {
  constructor(message = 'timed out: the outcome is unknown', options?: { cause?: unknown }) {
    super('Timeout', message, options);
  }
}

/** Bad input from the caller; `limit` names the limit that was exceeded, when one was. */
export class InvalidArgumentError extends RasputinError {
  readonly limit: string | undefined;
  constructor(message: string, limit?: string) {
    super('InvalidArgument', message);
    this.limit = limit;
  }
}

/** No replica could serve the request now (no leader, no responders); safe to retry. */
export class UnavailableError extends RasputinError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('Unavailable', message, options);
  }
}

/** The server refused work it cannot take now (back pressure); safe to retry later. */
export class OverloadedError extends RasputinError {
  constructor(message: string) {
    super('Overloaded', message);
  }
}

/** The server refused a malformed request: a client bug or a protocol version mismatch. */
export class BadRequestError extends RasputinError {
  constructor(message: string) {
    super('BadRequest', message);
  }
}

/** The server failed on its own, or sent a reply the client cannot read. */
export class InternalError extends RasputinError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('Internal', message, options);
  }
}

/** The key is outside the span of the range asked, or the range generation is stale. */
export class RangeKeyMismatchError extends RasputinError {
  constructor(message: string) {
    super('RangeKeyMismatch', message);
  }
}

/**
 * A subscription asked for events its range no longer retains (docs/streams.md): its
 * cursor fell behind the history kept (`--events-retain` revisions per range). Nothing
 * is skipped silently: resubscribe from now (and read the current state, e.g. with
 * scanAll) or from a newer cursor. `oldestRetained` is the oldest revision of range
 * `rangeId` still available (undefined when the server did not say).
 */
export class CompactedError extends RasputinError {
  readonly oldestRetained: number | undefined;
  readonly rangeId: number | undefined;
  constructor(message: string, oldestRetained?: number, rangeId?: number) {
    super('Compacted', message);
    this.oldestRetained = oldestRetained;
    this.rangeId = rangeId;
  }
}

/**
 * The caller's AbortSignal fired. Never on the wire. `outcomeUnknown`: the operation was a
 * write that had been sent, so it may or may not have been applied.
 */
export class AbortedError extends Error {
  readonly outcomeUnknown: boolean;
  constructor(message: string, options: { outcomeUnknown: boolean; cause?: unknown }) {
    super(message, { cause: options.cause });
    this.name = 'AbortError';
    this.outcomeUnknown = options.outcomeUnknown;
  }
}

/** The client was closed (or lost its NATS connection for good). Never on the wire. */
export class ClientClosedError extends Error {
  constructor(message = 'the client is closed', options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'ClientClosedError';
  }
}

/**
 * Wire codes a client retries (with the same request id, so a write applies at most once)
 * until its deadline: another replica, or the same one a little later, may succeed.
 */
export const retryableCodes: ReadonlySet<string> = new Set<ErrorCode>([
  'NotLeader',
  'RangeKeyMismatch',
  'Unavailable',
  'Overloaded',
  'Timeout',
]);

/** A wire error (a failed result, or a refused request) as its typed error. */
export function errorFromWire(e: {
  readonly code: string;
  readonly msg?: string;
  readonly leader?: string;
  readonly limit?: string;
  readonly oldest?: number;
}): RasputinError {
  const msg = typeof e.msg === 'string' && e.msg !== '' ? e.msg : e.code;
  switch (e.code) {
    case 'NotLeader':
      return new NotLeaderError(typeof e.leader === 'string' ? e.leader : '', msg);
    case 'RangeKeyMismatch':
      return new RangeKeyMismatchError(msg);
    case 'Timeout':
      return new TimeoutError(`${msg}: the outcome is unknown`);
    case 'InvalidArgument':
      return new InvalidArgumentError(msg, typeof e.limit === 'string' ? e.limit : undefined);
    case 'Unavailable':
      return new UnavailableError(msg);
    case 'Overloaded':
      return new OverloadedError(msg);
    case 'BadRequest':
      return new BadRequestError(msg);
    case 'Internal':
      return new InternalError(msg);
    case 'Compacted':
      return new CompactedError(msg, typeof e.oldest === 'number' ? e.oldest : undefined);
    default:
      return new InternalError(`unknown error code ${JSON.stringify(e.code)}: ${msg}`);
  }
}
