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
  | 'Internal';

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
