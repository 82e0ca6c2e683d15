import { describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { conv2d } from './conv.js';
import { pseudoRandom, relErr, useBackend } from './test-utils.js';

interface Case { k: number; stride: number; pad: number }
// GoogLeNet's paddings: 1x1 p0, 3x3 p1, 5x5 p2, 7x7 p3; each with stride 1 and 2.
const CASES: Case[] = [1, 3, 5, 7].flatMap((k) => [1, 2].map((stride) => ({ k, stride, pad: (k - 1) / 2 })));
const X_SHAPE: [number, number, number, number] = [2, 11, 13, 5]; // odd sizes: stride 2 leaves a remainder
const OUT = 6;

/** [dx, dw, y] of sum(conv(x, w) * r) for a fixed random r, on the active backend. */
function gradients(c: Case, custom: boolean, seed: number): Float32Array[] {
  return tf.tidy(() => {
    const x = tf.tensor4d(pseudoRandom(X_SHAPE.reduce((a, b) => a * b), seed), X_SHAPE);
    const w = tf.tensor4d(pseudoRandom(c.k * c.k * X_SHAPE[3] * OUT, seed + 1), [c.k, c.k, X_SHAPE[3], OUT]);
    const f = (xx: tf.Tensor4D, ww: tf.Tensor4D) => {
      const y = custom ? conv2d(xx, ww, c) : tf.conv2d(xx, ww, c.stride, c.pad);
      const r = tf.tensor(pseudoRandom(y.size, seed + 2), y.shape);
      return tf.sum(tf.mul(y, r));
    };
    const [dx, dw] = tf.grads(f as (...t: tf.Tensor[]) => tf.Tensor)([x, w]);
    const y = custom ? conv2d(x, w, c) : tf.conv2d(x, w, c.stride, c.pad);
    return [dx, dw, y].map((t) => t.dataSync() as Float32Array);
  });
}

describe('conv2d with its own gradient', () => {
  it.each(CASES)('matches the cpu backend\'s gradients on wasm for k=$k stride=$stride pad=$pad', async (c) => {
    await useBackend('cpu');
    const [dxRef, dwRef, yRef] = gradients(c, false, 10 * c.k + c.stride);
    await useBackend('wasm');
    const [dx, dw, y] = gradients(c, true, 10 * c.k + c.stride);
    expect(relErr(y, yRef)).toBeLessThanOrEqual(1e-5);
    expect(relErr(dw, dwRef)).toBeLessThanOrEqual(1e-5);
    expect(relErr(dx, dxRef)).toBeLessThanOrEqual(1e-5);
  });

  it('gives the same gradients on cpu as the stock cpu kernels', async () => {
    await useBackend('cpu');
    for (const c of CASES) {
      const ref = gradients(c, false, c.k);
      const got = gradients(c, true, c.k);
      for (let i = 0; i < 3; i++) expect(relErr(got[i], ref[i])).toBeLessThanOrEqual(1e-5);
    }
  });

  it('computes only the filter gradient for the input image', async () => {
    await useBackend('wasm');
    const c = { k: 7, stride: 2, pad: 3 };
    const [, dwRef] = gradients(c, true, 5);
    const dw = tf.tidy(() => {
      const x = tf.tensor4d(pseudoRandom(X_SHAPE.reduce((a, b) => a * b), 5), X_SHAPE);
      const w = tf.tensor4d(pseudoRandom(49 * X_SHAPE[3] * OUT, 6), [7, 7, X_SHAPE[3], OUT]);
      const g = tf.grad((ww: tf.Tensor) => {
        const y = conv2d(x, ww as tf.Tensor4D, { ...c, inputGrad: false });
        return tf.sum(tf.mul(y, tf.tensor(pseudoRandom(y.size, 7), y.shape)));
      })(w);
      return g.dataSync() as Float32Array;
    });
    expect(relErr(dw, dwRef)).toBe(0);
    expect(tf.memory().numTensors).toBe(0);
  });
});
