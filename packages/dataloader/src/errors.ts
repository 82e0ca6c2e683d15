/**
 * Every failure the loader reports on purpose is a DataError with a stable upper-snake `code` (tests and the
 * trainer branch on the code, never on the message) and a message that says how to fix the problem.
 */
export type DataErrorCode =
  | 'BAD_OPTION' // an option or flag is out of range or inconsistent
  | 'BAD_STATE' // a resume state does not fit these options
  | 'DATASET_NOT_FOUND' // the data folder or its files are missing
  | 'DATASET_LAYOUT' // the folder exists but is not laid out as the format expects
  | 'BAD_SAMPLE' // one image could not be read or decoded (the message names its path)
  | 'LOADER_CLOSED' // next() after close()
  | 'WORKER_FAILED' // a decode worker thread died
  | 'DEPENDENCY_MISSING'; // a package a data set needs is not installed (sharp, for encoded images)

export class DataError extends Error {
  readonly code: DataErrorCode;
  /** The file that failed, when there is one (BAD_SAMPLE, DATASET_*). */
  readonly path?: string;

  constructor(code: DataErrorCode, message: string, opts: { path?: string; cause?: unknown } = {}) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = 'DataError';
    this.code = code;
    if (opts.path !== undefined) this.path = opts.path;
  }
}

/** Cheap invariant check; the message is built only on failure (as tfjs's assert). */
export function check(cond: unknown, code: DataErrorCode, message: () => string): asserts cond {
  if (!cond) throw new DataError(code, message());
}
