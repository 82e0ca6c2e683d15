/** Helpers shared by the tests (not exported from the package). */
import * as tf from '@tensorflow/tfjs';
import { selectBackend } from './backend.js';
import { pseudoRandom } from './gradient-check.js';

export { pseudoRandom, relErr } from './gradient-check.js';

/** Makes `name` the active backend for the tests of one file. */
export async function useBackend(name: 'wasm' | 'cpu' | 'webgpu'): Promise<void> {
  await selectBackend(name);
}

export const randomInput = (shape: [number, number, number, number], seed: number): tf.Tensor4D =>
  tf.tensor4d(pseudoRandom(shape.reduce((a, b) => a * b, 1), seed), shape);
