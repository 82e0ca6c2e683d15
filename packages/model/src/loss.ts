/** The seed's training loss and one micro-batch's gradients. */
import * as tf from '@tensorflow/tfjs';
import type { GoogLeNet, GoogLeNetOutput } from './googlenet.js';
import { withGradTap, type GradTap } from './grad-tap.js';

export const AUX_WEIGHT = 0.3;

/**
 * Mean softmax cross-entropy of logits [N, C] against int32 labels [N]. With `labelSmoothing` = e the target is
 * (1-e) x one-hot + e/C, as nn.CrossEntropyLoss(label_smoothing=e) has it.
 */
export function crossEntropy(logits: tf.Tensor2D, labels: tf.Tensor1D, labelSmoothing = 0): tf.Scalar {
  return tf.tidy(() => {
    const logProbs = tf.logSoftmax(logits);
    const classes = logits.shape[1];
    let target: tf.Tensor = tf.oneHot(tf.cast(labels, 'int32'), classes);
    // e = 0 keeps the plain one-hot product, so runs without smoothing compute what they always did.
    if (labelSmoothing !== 0) target = tf.add(tf.mul(target, 1 - labelSmoothing), labelSmoothing / classes);
    const picked = tf.sum(tf.mul(logProbs, target), 1);
    return tf.neg(tf.mean(picked)) as tf.Scalar;
  });
}

/**
 * CE(main) + auxWeight x (CE(aux1) + CE(aux2)); only CE(main) when the aux outputs are absent. Label smoothing,
 * when given, applies to all three heads.
 */
export function googlenetLoss(out: GoogLeNetOutput, labels: tf.Tensor1D, auxWeight = AUX_WEIGHT, labelSmoothing = 0): tf.Scalar {
  return tf.tidy(() => {
    let loss = crossEntropy(out.main, labels, labelSmoothing);
    if (out.aux1 && out.aux2 && auxWeight !== 0) {
      const aux = tf.add(crossEntropy(out.aux1, labels, labelSmoothing), crossEntropy(out.aux2, labels, labelSmoothing));
      loss = tf.add(loss, tf.mul(aux, auxWeight));
    }
    return loss as tf.Scalar;
  });
}

export interface GradientResult {
  loss: tf.Scalar;
  /** Aligned with model.params (TF layouts). */
  grads: tf.Tensor[];
  /** The main head's logits. */
  logits: tf.Tensor2D;
  /** Aligned with model.buffers; not assigned (see GoogLeNet.assignRunningStats). */
  runningStats: tf.Tensor[];
}

/**
 * One micro-batch: training forward, loss, gradient of every param. Nothing is assigned to the model.
 * All returned tensors belong to the caller's scope (dispose them, or call inside tf.tidy).
 */
export function computeGradients(model: GoogLeNet, x: tf.Tensor4D, labels: tf.Tensor1D,
  opts: { auxWeight: number; dropoutSeed: number; labelSmoothing?: number; lossScale?: number; onGradient?: GradTap }): GradientResult {
  let logits: tf.Tensor2D | undefined;
  // Dynamic loss scaling (f16): gradients of loss x lossScale; the returned loss stays unscaled.
  const scale = opts.lossScale ?? 1;
  let unscaled: tf.Scalar | undefined;
  let stats: tf.Tensor[] = [];
  const vars = model.params.map((p) => p.variable);
  // onGradient sees each parameter's gradient during the backward, in the order the backward computes them.
  const backward = (f: () => tf.Scalar) => (opts.onGradient ? withGradTap(opts.onGradient, () => tf.variableGrads(f, vars)) : tf.variableGrads(f, vars));
  const { value, grads } = backward(() => {
    const out = model.forward(x, { training: true, dropoutSeed: opts.dropoutSeed });
    // variableGrads keeps only the loss of its forward scope; keep these too, and re-home them below.
    logits = tf.keep(out.main);
    stats = out.runningStats!.map((t) => tf.keep(t));
    const loss = googlenetLoss(out, labels, opts.auxWeight, opts.labelSmoothing ?? 0);
    if (scale === 1) return loss;
    unscaled = tf.keep(loss);
    return tf.mul(loss, scale) as tf.Scalar;
  });
  const adopt = <T extends tf.Tensor>(t: T): T => {
    const c = tf.clone(t); // tracked by the caller's scope, unlike the kept original
    t.dispose();
    return c;
  };
  if (unscaled) value.dispose();
  return {
    loss: unscaled ? adopt(unscaled) : value,
    grads: vars.map((v) => grads[v.name] ?? tf.zerosLike(v)),
    logits: adopt(logits!),
    runningStats: stats.map(adopt),
  };
}
