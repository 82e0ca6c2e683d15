/** Every failure the trainer reports to a user carries a stable code and says how to fix it. */
export class TrainerError extends Error {
  readonly code: string;
  constructor(code: string, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'TrainerError';
    this.code = code;
  }
}
