/** Stable error codes; tests and callers branch on `code`, never on the message. */
export type CoordinatorErrorCode =
  | 'RENDEZVOUS_TIMEOUT'
  | 'SIGNATURE_MISMATCH'
  | 'WORLD_SIZE_MISMATCH'
  | 'RUN_ID_MISMATCH'
  | 'INVALID_RANK'
  | 'DUPLICATE_RANK'
  | 'AUTH_FAILED'
  | 'TOKEN_REQUIRED'
  | 'ROUND_ABORTED'
  | 'ROUND_TIMEOUT'
  | 'SIZE_MISMATCH'
  | 'CONNECTION_LOST'
  | 'PROTOCOL_ERROR'
  | 'INVALID_OPTIONS'
  | 'CLOSED'
  | 'BUSY'
  | 'THREAD_FAILED';

export class CoordinatorError extends Error {
  readonly code: CoordinatorErrorCode;
  /** The rank whose failure ended the round, when one is known. */
  readonly failedRank?: number;

  constructor(code: CoordinatorErrorCode, message: string, failedRank?: number) {
    super(message);
    this.name = 'CoordinatorError';
    this.code = code;
    if (failedRank !== undefined) this.failedRank = failedRank;
  }
}

/** Cheap invariant check; the message is built only when the check fails. */
export function check(cond: unknown, code: CoordinatorErrorCode, message: () => string): asserts cond {
  if (!cond) throw new CoordinatorError(code, message());
}
