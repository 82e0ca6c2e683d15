import { createHash } from 'node:crypto';
import type { TrainConfig } from './config';

/** Ranks of one job must agree on everything that shapes a step; a hash of it names the run. */
export function runIdOf(cfg: TrainConfig): string {
  const { dataset, imageSize, batchSize, accumulate, seed, lr, momentum, weightDecay, lrSchedule, auxWeight, gradCompression } = cfg;
  return 'googlenet-' + createHash('sha256').update(JSON.stringify({ dataset, imageSize, batchSize, accumulate, seed, lr, momentum, weightDecay, lrSchedule, auxWeight, gradCompression })).digest('hex').slice(0, 12);
}
