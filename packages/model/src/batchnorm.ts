/**
 * BatchNorm2d with PyTorch's defaults (eps 1e-5, momentum 0.1), NHWC.
 * Training normalises with the batch's biased variance and reports (does not assign) the running statistics
 * PyTorch would hold afterwards, whose variance is the unbiased one: callers average them over micro-batches
 * and workers before assigning.
 */
import * as tf from '@tensorflow/tfjs';
import { ModelError } from './errors.js';

export const BN_EPS = 1e-5;
export const BN_MOMENTUM = 0.1;

export interface BatchNormParams {
  gamma: tf.Variable; beta: tf.Variable; runningMean: tf.Variable; runningVar: tf.Variable;
}

export interface BatchNormResult {
  y: tf.Tensor4D;
  /** Training only: [new running mean, new running var]. */
  running?: [tf.Tensor1D, tf.Tensor1D];
}

export function batchNorm(x: tf.Tensor4D, p: BatchNormParams, training: boolean): BatchNormResult {
  if (!training) {
    return { y: tf.batchNorm4d(x, p.runningMean as tf.Tensor1D, p.runningVar as tf.Tensor1D, p.beta as tf.Tensor1D,
      p.gamma as tf.Tensor1D, BN_EPS) };
  }
  const [n, h, w] = x.shape;
  const count = n * h * w;
  if (count < 2) {
    throw new ModelError('INVALID_INPUT', `BatchNorm in training needs more than one value per channel, got input ` +
      `[${x.shape.join(', ')}] (as PyTorch); use a batch of 2 or more`);
  }
  const mean = tf.mean(x, [0, 1, 2]) as tf.Tensor1D;
  const variance = tf.mean(tf.square(tf.sub(x, mean)), [0, 1, 2]) as tf.Tensor1D; // biased
  const y = tf.batchNorm4d(x, mean, variance, p.beta as tf.Tensor1D, p.gamma as tf.Tensor1D, BN_EPS);
  // Not part of the loss, so backprop prunes these ops from the tape.
  const keep = 1 - BN_MOMENTUM;
  const running: [tf.Tensor1D, tf.Tensor1D] = [
    tf.add(tf.mul(p.runningMean, keep), tf.mul(mean, BN_MOMENTUM)),
    tf.add(tf.mul(p.runningVar, keep), tf.mul(variance, (BN_MOMENTUM * count) / (count - 1))),
  ];
  return { y, running };
}
