/**
 * Gradient checks of the custom-gradient layers (BatchNorm+ReLU, linear, max-pools) against the cpu backend's
 * stock autodiff of the plain formulation: relative error <= 1e-5, on wasm with the native kernels (where
 * built) and with the tfjs fallbacks.
 */
import { existsSync } from 'node:fs';
import { afterAll, describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { BN_EPS, batchNormRelu } from './batchnorm.js';
import { conv2d } from './conv.js';
import { linear } from './linear.js';
import { concatChannels, nativeActive, setNativeEnabled } from './native.js';
import { auxPool, maxPoolCeil, maxPoolSame3 } from './pool.js';
import { pseudoRandom, relErr, useBackend } from './test-utils.js';

const TOL = 1e-5;
type Fn = (...t: tf.Tensor[]) => tf.Tensor;

/** [value, ...grads of sum(f(...) * r)] for a fixed random r, on the active backend. */
function valueAndGrads(f: Fn, shapes: number[][], seed: number, shift = 0): Float32Array[] {
  return tf.tidy(() => {
    const xs = shapes.map((s, i) => tf.tensor(pseudoRandom(s.reduce((a, b) => a * b, 1), seed + i).map((v) => v + shift), s));
    const y = f(...xs);
    const r = tf.tensor(pseudoRandom(y.size, seed + 99), y.shape);
    const grads = tf.grads((...t: tf.Tensor[]) => tf.sum(tf.mul(f(...t), r)))(xs);
    return [y, ...grads].map((t) => t.dataSync() as Float32Array);
  });
}

async function compare(ours: Fn, plain: Fn, shapes: number[][], seed: number, shift = 0): Promise<number[]> {
  await useBackend('cpu');
  const ref = valueAndGrads(plain, shapes, seed, shift);
  await useBackend('wasm');
  const got = valueAndGrads(ours, shapes, seed, shift);
  return got.map((g, i) => relErr(g, ref[i]));
}

const bnParams = (gamma: tf.Tensor, beta: tf.Tensor) => ({
  gamma: gamma as tf.Variable, beta: beta as tf.Variable,
  runningMean: tf.zeros([gamma.size]) as tf.Variable, runningVar: tf.ones([gamma.size]) as tf.Variable,
});
const bnOurs: Fn = (x, g, b) => batchNormRelu(x as tf.Tensor4D, bnParams(g, b), true).y;
const bnPlain: Fn = (x, g, b) => {
  const { mean, variance } = tf.moments(x, [0, 1, 2]);
  return tf.relu(tf.batchNorm4d(x as tf.Tensor4D, mean as tf.Tensor1D, variance as tf.Tensor1D, b as tf.Tensor1D, g as tf.Tensor1D, BN_EPS));
};

describe.each([true, false])('custom gradients on wasm (native kernels: %s) match cpu autodiff', (native) => {
  afterAll(() => setNativeEnabled(true));
  const use = async () => { setNativeEnabled(native); };

  it('BatchNorm + ReLU in training: output, dx, dgamma, dbeta', async () => {
    await use();
    // an offset mean (0.5) and odd sizes; 2 x 7 x 5 values per channel
    for (const errs of [await compare(bnOurs, bnPlain, [[2, 7, 5, 6], [6], [6]], 3, 0.5)]) {
      errs.forEach((e) => expect(e).toBeLessThanOrEqual(TOL));
    }
  });

  it('linear: output, dx, dW, db', async () => {
    await use();
    const errs = await compare((x, w, b) => linear(x as tf.Tensor2D, w as tf.Tensor2D, b as tf.Tensor1D),
      (x, w, b) => tf.add(tf.matMul(x, w), b), [[3, 70], [70, 40], [40]], 11);
    errs.forEach((e) => expect(e).toBeLessThanOrEqual(TOL));
  });

  it.each([[9, 'ceil'], [10, 'ceil'], [7, 'same']])('max-pool %i x %i (%s): output and dx', async (size, kind) => {
    await use();
    const plain: Fn = kind === 'same' ? (x) => tf.maxPool(x as tf.Tensor4D, 3, 1, 'same') : (x) => {
      const pad = size === 9 ? 0 : 1; // ceil mode: 9 -> 4 windows fit exactly; 10 -> the last hangs over by 1
      return tf.maxPool(tf.pad(x, [[0, 0], [0, pad], [0, pad], [0, 0]], -Infinity) as tf.Tensor4D, 3, 2, 'valid');
    };
    const ours: Fn = kind === 'same' ? (x) => maxPoolSame3(x as tf.Tensor4D) : (x) => maxPoolCeil(x as tf.Tensor4D);
    const errs = await compare((x) => ours(tf.relu(x)), (x) => plain(tf.relu(x)), [[2, size, size, 5]], 21); // relu: ties
    errs.forEach((e) => expect(e).toBeLessThanOrEqual(TOL));
  });

  it.each([[1, 1, 0], [3, 1, 1], [5, 1, 2], [7, 2, 3]])('conv %ix%i stride %i: output, dx, dw', async (k, stride, pad) => {
    await use();
    const errs = await compare((x, w) => conv2d(x as tf.Tensor4D, w as tf.Tensor4D, { stride, pad }),
      (x, w) => tf.conv2d(x as tf.Tensor4D, w as tf.Tensor4D, stride, pad), [[2, 11, 9, 5], [k, k, 5, 6]], 31 + k);
    errs.forEach((e) => expect(e).toBeLessThanOrEqual(TOL));
  });

  it('the aux heads\' AvgPool2d(5, 3) on a 14x14 map (as two matMuls): output and dx', async () => {
    await use();
    const errs = await compare((x) => auxPool(x as tf.Tensor4D), (x) => tf.avgPool(x as tf.Tensor4D, 5, 3, 'valid'),
      [[2, 14, 14, 3]], 51);
    errs.forEach((e) => expect(e).toBeLessThanOrEqual(TOL));
  });

  it('channel concat: output and each part\'s gradient', async () => {
    await use();
    const errs = await compare((...t) => concatChannels(t as tf.Tensor4D[]), (...t) => tf.concat(t as tf.Tensor4D[], 3),
      [[2, 3, 4, 5], [2, 3, 4, 1], [2, 3, 4, 7]], 41);
    errs.forEach((e) => expect(e).toBe(0));
  });

  it('uses the native kernels exactly when they are built and enabled', async () => {
    await use();
    await useBackend('wasm');
    const built = existsSync(new URL('../native/build/googlenet_native.node', import.meta.url));
    if (process.env.GOOGLENET_REQUIRE_NATIVE === '1') expect(built, 'GOOGLENET_REQUIRE_NATIVE=1 but native/build is missing').toBe(true);
    expect(nativeActive()).toBe(native && built); // not built (no compiler at install): the fallbacks above

  });
});
