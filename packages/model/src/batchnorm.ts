/**
 * BatchNorm2d with PyTorch's defaults (eps 1e-5, momentum 0.1), NHWC, fused with the ReLU that always follows
 * it in GoogLeNet's BasicConv2d.
 * Training normalises with the batch's biased variance and reports (does not assign) the running statistics
 * PyTorch would hold afterwards, whose variance is the unbiased one: callers average them over micro-batches
 * and workers before assigning.
 *
 * Why a custom gradient: autodiff through mean/sub/square/mean/batchNorm4d/relu records ~20 kernels per layer
 * and broadcasts per-channel gradients with Tile (on wasm a third of a 224x224 step). The closed form needs
 * two reductions and three full-size passes:
 *   g = dy * (y > 0);  dbeta = sum(g);  dgamma = sum(g * xhat);
 *   dx = gamma / std * (g - dbeta / m - xhat * dgamma / m)
 *      = g * (gamma / std) + batchNorm(x; scale = -gamma / std * dgamma / m, offset = -gamma / std * dbeta / m)
 */
import * as tf from '@tensorflow/tfjs';
import { ModelError } from './errors.js';
import { tapGradient } from './grad-tap.js';
import * as native from './native.js';
import * as gpu from './webgpu-kernels.js';

export const BN_EPS = 1e-5;
export const BN_MOMENTUM = 0.1;

export interface BatchNormParams {
  gamma: tf.Variable; beta: tf.Variable; runningMean: tf.Variable; runningVar: tf.Variable;
}

export interface BatchNormResult {
  /** relu(batchNorm(x)). */
  y: tf.Tensor4D;
  /** Training only: [new running mean, new running var]. */
  running?: [tf.Tensor1D, tf.Tensor1D];
}

/** Per-channel sum over N, H, W as a 2-D reduction (wasm transposes the input first for non-trailing axes). */
const channelSum = (t: tf.Tensor, c: number): tf.Tensor1D => tf.sum(t.reshape([t.size / c, c]), 0) as tf.Tensor1D;

export function batchNormRelu(x: tf.Tensor4D, p: BatchNormParams, training: boolean): BatchNormResult {
  if (!training) {
    const [rm, rv, g, b] = [p.runningMean, p.runningVar, p.gamma, p.beta] as tf.Tensor1D[];
    return { y: gpu.bnReluForward(x, rm!, rv!, g!, b!, BN_EPS) ?? tf.relu(tf.batchNorm4d(x, rm!, rv!, b!, g!, BN_EPS)) };
  }
  const [n, h, w, c] = x.shape;
  const count = n * h * w;
  if (count < 2) {
    throw new ModelError('INVALID_INPUT', `BatchNorm in training needs more than one value per channel, got input ` +
      `[${x.shape.join(', ')}] (as PyTorch); use a batch of 2 or more`);
  }
  // Captured, not inputs of the custom op: their ops are on the tape but lead nowhere, so backprop prunes them.
  // Native (where active): each of statistics, forward and backward is one or two threaded passes over x.
  let [mean, variance] = native.bnStats(x) ?? gpu.bnStats(x) ?? [];
  if (!mean || !variance) {
    const x2 = x.reshape([count, c]);
    mean = tf.mean(x2, 0) as tf.Tensor1D;
    variance = tf.mean(tf.squaredDifference(x2, mean), 0) as tf.Tensor1D; // biased
  }
  const [m, v] = [mean, variance];
  const op = tf.customGrad(((xx: tf.Tensor4D, gamma: tf.Tensor1D, beta: tf.Tensor1D, save: tf.GradSaveFunc) => {
    const y = native.bnReluForward(xx, m, v, gamma, beta, BN_EPS) ?? gpu.bnReluForward(xx, m, v, gamma, beta, BN_EPS) ?? tf.relu(tf.batchNorm4d(xx, m, v, beta, gamma, BN_EPS));
    save([xx, gamma, m, v, y]);
    return {
      value: y,
      gradFunc: (dy: tf.Tensor4D, saved: tf.Tensor[]) => {
        const [sx, sg, sm, sv, sy] = saved as [tf.Tensor4D, tf.Tensor1D, tf.Tensor1D, tf.Tensor1D, tf.Tensor4D];
        const fast = native.bnReluBackward(sx, sy, dy, sm, sv, sg, BN_EPS) ?? gpu.bnReluBackward(sx, sy, dy, sm, sv, sg, BN_EPS);
        if (fast) {
          tapGradient(gamma, fast[1]);
          tapGradient(beta, fast[2]);
          return fast;
        }
        const g = tf.mul(dy, tf.step(sy));                       // through the ReLU
        const xhat = tf.batchNorm4d(sx, sm, sv, undefined, undefined, BN_EPS);
        const dbeta = channelSum(g, c);
        const dgamma = channelSum(tf.mul(g, xhat), c);
        const a = tf.mul(sg, tf.rsqrt(tf.add(sv, BN_EPS)));       // gamma / std
        const am = tf.div(a, -count) as tf.Tensor1D;
        tapGradient(gamma, dgamma);
        tapGradient(beta, dbeta);
        const dx = tf.add(tf.mul(g, a), tf.batchNorm4d(sx, sm, sv, tf.mul(am, dbeta) as tf.Tensor1D, tf.mul(am, dgamma) as tf.Tensor1D, BN_EPS));
        return [dx, dgamma, dbeta];
      },
    };
  }) as never) as (a: tf.Tensor, b: tf.Tensor, c: tf.Tensor) => tf.Tensor4D;
  const y = op(x, p.gamma, p.beta);
  // Not part of the loss, so backprop prunes these ops from the tape.
  const keep = 1 - BN_MOMENTUM;
  const unbias = (BN_MOMENTUM * count) / (count - 1);
  const running = gpu.bnRunning(p.runningMean as tf.Tensor1D, p.runningVar as tf.Tensor1D, mean, variance, keep, BN_MOMENTUM, unbias) ?? [
    tf.add(tf.mul(p.runningMean, keep), tf.mul(mean, BN_MOMENTUM)),
    tf.add(tf.mul(p.runningVar, keep), tf.mul(variance, unbias)),
  ] as [tf.Tensor1D, tf.Tensor1D];
  return { y, running };
}
