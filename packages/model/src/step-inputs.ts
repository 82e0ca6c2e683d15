/**
 * The host arrays a training step uploads that change from step to step, besides the batch: GoogLeNet's
 * dropout masks (dropout.ts builds them on the host from the step's seed). A replayed webgpu step
 * (webgpu-replay.ts) names them at capture, and builds them on the GPU from their stream keys at replay (the
 * host loop costs ~18 ms at batch 64 on a CI core: more than the whole replayed step).
 */
import { AUX, FEATURES, MAIN_DROPOUT } from './architecture.js';
import { dropoutMask, DROPOUT_STREAM } from './dropout.js';
import type { GoogLeNet } from './googlenet.js';
import { streamKey } from './prng.js';

/** One dropout mask of a training step: `size` values of stream `key` (prng.ts), dropped with probability `p`. */
export interface DropoutStream {
  key: number;
  p: number;
  size: number;
  seed: number;
  stream: number;
}

/** The dropout streams of a training forward pass of `model` on `batchSize` images with `dropoutSeed`, by name. */
export function dropoutStreams(model: GoogLeNet, batchSize: number, dropoutSeed: number): Record<string, DropoutStream> {
  const s = (stream: number, p: number, size: number): DropoutStream => ({ key: streamKey(dropoutSeed, stream), p, size, seed: dropoutSeed, stream });
  const out: Record<string, DropoutStream> = { dropoutMain: s(DROPOUT_STREAM.main, MAIN_DROPOUT, batchSize * FEATURES) };
  if (model.aux) {
    out.dropoutAux1 = s(DROPOUT_STREAM.aux1, AUX.dropout, batchSize * AUX.hidden);
    out.dropoutAux2 = s(DROPOUT_STREAM.aux2, AUX.dropout, batchSize * AUX.hidden);
  }
  return out;
}

/** The same masks as host arrays (what dropout.ts uploads), by name. */
export function dropoutInputs(model: GoogLeNet, batchSize: number, dropoutSeed: number): Record<string, Float32Array> {
  return Object.fromEntries(Object.entries(dropoutStreams(model, batchSize, dropoutSeed))
    .map(([name, d]) => [name, dropoutMask(d.seed, d.stream, d.size, d.p)]));
}
