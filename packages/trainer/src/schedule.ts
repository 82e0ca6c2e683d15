/** Learning-rate schedules, as pure functions of (step, epoch progress). */
export type LrScheduleName = 'paper' | 'step' | 'cosine' | 'constant';

export interface LrScheduleOptions {
  /** Base learning rate (after warm-up). */
  lr: number;
  schedule: LrScheduleName;
  /** Linear warm-up length in steps, from lr/ (warmup+1) up to lr. 0 disables it. */
  warmupSteps: number;
  /** Total optimizer steps of the run (cosine decays to 0 at this step). */
  totalSteps: number;
  /** Optimizer steps per epoch (the `paper` and `step` schedules count epochs). */
  stepsPerEpoch: number;
  /** `step`: multiply by gamma every stepEpochs epochs. */
  stepEpochs: number;
  gamma: number;
}

/** Learning rate for optimizer step `step` (0-based). */
export function learningRate(o: LrScheduleOptions, step: number): number {
  if (o.warmupSteps > 0 && step < o.warmupSteps) return (o.lr * (step + 1)) / (o.warmupSteps + 1);
  const epoch = Math.floor(step / Math.max(1, o.stepsPerEpoch));
  switch (o.schedule) {
    case 'constant':
      return o.lr;
    case 'paper':
      // GoogLeNet paper, section 6: "decreasing the learning rate by 4% every 8 epochs".
      return o.lr * Math.pow(0.96, Math.floor(epoch / 8));
    case 'step':
      return o.lr * Math.pow(o.gamma, Math.floor(epoch / Math.max(1, o.stepEpochs)));
    case 'cosine': {
      const span = Math.max(1, o.totalSteps - o.warmupSteps);
      const t = Math.min(1, (step - o.warmupSteps) / span);
      return 0.5 * o.lr * (1 + Math.cos(Math.PI * t));
    }
  }
}
