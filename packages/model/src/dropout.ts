/**
 * Seeded inverted dropout (PyTorch's: kept values scaled by 1/(1-p)). The mask is a pure function of
 * (seed, stream, element index), built on the host, so a micro-batch's masks are the same on every backend and
 * every worker, and are reproducible from the seed the trainer derives from (run seed, step, global slot).
 */
import * as tf from '@tensorflow/tfjs';
import { streamKey, uniformAt } from './prng.js';

/** One stream per dropout layer so that the three masks of a forward pass are independent. */
export const DROPOUT_STREAM = { main: 1, aux1: 2, aux2: 3 } as const;

/** The mask values (0 or 1/(1-p)) for `size` elements, as PyTorch's Bernoulli(1-p) keep/drop. */
export function dropoutMask(seed: number, stream: number, size: number, p: number): Float32Array {
  const key = streamKey(seed, stream);
  const scale = 1 / (1 - p);
  const mask = new Float32Array(size);
  for (let i = 0; i < size; i++) mask[i] = uniformAt(key, i) >= p ? scale : 0;
  return mask;
}

export function dropout(x: tf.Tensor2D, p: number, seed: number, stream: number): tf.Tensor2D {
  if (p === 0) return x;
  return tf.tidy(() => tf.mul(x, tf.tensor2d(dropoutMask(seed, stream, x.size, p), x.shape)));
}
