/** The config tests' view of resolveTrainConfig: no environment, no GPUs, a fixed clock (stable run folders). */
import { resolveTrainConfig, type TrainConfig } from '../src/config';
import type { TrainerError } from '../src/errors';

export const resolve = (argv: string[]) =>
  resolveTrainConfig(argv, { env: {}, gpuCount: 0, now: new Date('2026-11-28T10:20:30Z') }) as TrainConfig;

/** [code, message] of the error a flag list is refused with, or undefined when it resolves. */
export const refusal = (argv: string[]): [string, string] | undefined => {
  try {
    resolve(argv);
  } catch (e) {
    return [(e as TrainerError).code, (e as Error).message];
  }
  return undefined;
};
