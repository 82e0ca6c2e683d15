/**
 * The host arrays a training step uploads that change from step to step, besides the batch: GoogLeNet's
 * dropout masks (dropout.ts builds them on the host from the step's seed). A replayed webgpu step
 * (webgpu-replay.ts) needs them by name, as the same arrays the model would build.
 */
import { AUX, FEATURES, MAIN_DROPOUT } from './architecture.js';
import { dropoutMask, DROPOUT_STREAM } from './dropout.js';
import type { GoogLeNet } from './googlenet.js';

/** The dropout masks of a training forward pass of `model` on `batchSize` images with `dropoutSeed`, by stream name. */
export function dropoutInputs(model: GoogLeNet, batchSize: number, dropoutSeed: number): Record<string, Float32Array> {
  const masks: Record<string, Float32Array> = {
    dropoutMain: dropoutMask(dropoutSeed, DROPOUT_STREAM.main, batchSize * FEATURES, MAIN_DROPOUT),
  };
  if (model.aux) {
    masks.dropoutAux1 = dropoutMask(dropoutSeed, DROPOUT_STREAM.aux1, batchSize * AUX.hidden, AUX.dropout);
    masks.dropoutAux2 = dropoutMask(dropoutSeed, DROPOUT_STREAM.aux2, batchSize * AUX.hidden, AUX.dropout);
  }
  return masks;
}
