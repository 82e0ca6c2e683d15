/** Helpers shared by the tests (not exported from the package). */
import * as tf from '@tensorflow/tfjs';
import { selectBackend } from './backend.js';

/** Makes `name` the active backend for the tests of one file. */
export async function useBackend(name: 'wasm' | 'cpu'): Promise<void> {
  await selectBackend(name);
}

/** max |a - b| / max |b|: a relative error that is not blown up by entries near zero. */
export function relErr(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) throw new Error(`relErr: lengths ${a.length} and ${b.length} differ`);
  let diff = 0;
  let scale = 0;
  for (let i = 0; i < a.length; i++) {
    diff = Math.max(diff, Math.abs(a[i] - b[i]));
    scale = Math.max(scale, Math.abs(b[i]));
  }
  return scale === 0 ? diff : diff / scale;
}

/** Deterministic test data in [-1, 1) (the library's own PRNG would make the tests circular). */
export function pseudoRandom(size: number, seed: number): Float32Array {
  const out = new Float32Array(size);
  let s = seed >>> 0 || 1;
  for (let i = 0; i < size; i++) {
    s ^= s << 13; s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5; s >>>= 0;
    out[i] = (s / 0x1_0000_0000) * 2 - 1;
  }
  return out;
}

export const randomInput = (shape: [number, number, number, number], seed: number): tf.Tensor4D =>
  tf.tensor4d(pseudoRandom(shape.reduce((a, b) => a * b, 1), seed), shape);
