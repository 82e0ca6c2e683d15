/** Helpers shared by the tests (not exported from the package). */
import * as tf from '@tensorflow/tfjs';
import { selectBackend } from './backend.js';
import { pseudoRandom } from './gradient-check.js';
import type { GoogLeNet } from './googlenet.js';
import { computeGradients } from './loss.js';

export { pseudoRandom, relErr } from './gradient-check.js';

/** Makes `name` the active backend for the tests of one file. */
export async function useBackend(name: 'wasm' | 'cpu' | 'webgpu'): Promise<void> {
  await selectBackend(name);
}

export const randomInput = (shape: [number, number, number, number], seed: number): tf.Tensor4D =>
  tf.tensor4d(pseudoRandom(shape.reduce((a, b) => a * b, 1), seed), shape);

/**
 * `steps` plain SGD steps (lr 0.05, aux weight 0.3) on one fixed batch with one dropout seed (the same masks
 * every step make the descent smooth enough to assert on): each step's loss and tf.memory().numTensors after it.
 * Losses are read asynchronously, so this runs on webgpu too.
 */
export async function sgdOnFixedBatch(model: GoogLeNet, x: tf.Tensor4D, labels: tf.Tensor1D, steps: number): Promise<{ losses: number[]; counts: number[] }> {
  const losses: number[] = [];
  const counts: number[] = [];
  for (let step = 0; step < steps; step++) {
    const loss = tf.tidy(() => {
      const r = computeGradients(model, x, labels, { auxWeight: 0.3, dropoutSeed: 0 });
      model.params.forEach((p, i) => p.variable.assign(tf.sub(p.variable, tf.mul(r.grads[i]!, 0.05))));
      model.assignRunningStats(r.runningStats);
      return tf.keep(r.loss);
    });
    losses.push((await loss.data())[0]!);
    loss.dispose();
    counts.push(tf.memory().numTensors);
  }
  return { losses, counts };
}
