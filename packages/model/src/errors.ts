/**
 * Error classes of @googlenet/model. Each carries a stable upper-snake `code` (tests and callers branch on it)
 * and a message that says how to fix the problem.
 */

/** GPU_NOT_ISOLATED: a process pinned to one GPU (DRI_PRIME=pci-...) could not be given that GPU alone (device-select.ts). */
export type BackendErrorCode = 'BACKEND_UNAVAILABLE' | 'BACKEND_UNKNOWN' | 'GPU_NOT_ISOLATED';

/** A backend that was asked for cannot be loaded, or its name is not one we know. */
export class BackendError extends Error {
  readonly code: BackendErrorCode;
  constructor(code: BackendErrorCode, message: string) {
    super(message);
    this.name = 'BackendError';
    this.code = code;
  }
}

/** A state dict does not fit the model: lists every missing, unexpected, mis-shaped or mis-typed tensor. */
export class StateDictError extends Error {
  readonly code = 'STATE_DICT_MISMATCH' as const;
  /** One entry per offending tensor, e.g. `fc.weight: shape [10, 1024], expected [1000, 1024]`. */
  readonly problems: readonly string[];
  constructor(message: string, problems: readonly string[]) {
    super(message);
    this.name = 'StateDictError';
    this.problems = problems;
  }
}

/** A byte buffer is not a valid safetensors file (or uses a dtype we do not read). */
export class SafetensorsError extends Error {
  readonly code = 'SAFETENSORS_INVALID' as const;
  constructor(message: string) {
    super(message);
    this.name = 'SafetensorsError';
  }
}

/** A model option or input is out of range (too small an image, wrong rank, bad class count). */
export class ModelError extends Error {
  readonly code: 'INVALID_OPTION' | 'INVALID_INPUT';
  constructor(code: 'INVALID_OPTION' | 'INVALID_INPUT', message: string) {
    super(message);
    this.name = 'ModelError';
    this.code = code;
  }
}

/** A command-line flag is unknown, missing or malformed. */
export class CliError extends Error {
  readonly code = 'BAD_FLAG' as const;
  constructor(message: string) {
    super(message);
    this.name = 'CliError';
  }
}
