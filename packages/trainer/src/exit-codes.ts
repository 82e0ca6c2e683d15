/**
 * How a worker tells its launcher that a restart cannot help: the same flags and files would fail the same
 * way (a resume whose settings changed, a checkpoint the ranks cannot agree on, a bad flag), so the launcher
 * stops at once instead of spending --max-restarts on it.
 */
export const EXIT_NO_RESTART = 3;

/** Error codes that a restart cannot fix. */
export const NO_RESTART_CODES: ReadonlySet<string> = new Set([
  'RESUME_CONFIG_CHANGED', 'RESUME_DISAGREE', 'RESUME_NOT_FOUND', 'CHECKPOINT_VERSION', 'BAD_FLAG',
  // The machine's GPUs do not change between attempts.
  'GPU_NOT_FOUND', 'GPU_NOT_ISOLATED',
]);
