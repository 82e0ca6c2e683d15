import * as tf from '@tensorflow/tfjs';

/**
 * Gradient clipping as torch.nn.utils.clip_grad_norm_ (L2, error_if_nonfinite off): the total norm is taken over
 * every parameter's gradient together, and all of them are scaled by min(1, maxNorm / (total + 1e-6)). It runs
 * on the averaged gradient after the exchange, which every rank holds bit for bit, so every rank clips alike.
 */
const EPS = 1e-6;

/** The scale clip_grad_norm_ applies for a total norm, rounded to float32 as torch's clip_coef tensor is. */
export function clipCoefficient(total: number, maxNorm: number): number {
  return Math.fround(Math.min(1, maxNorm / (total + EPS)));
}

/**
 * Clips `flat[0 .. length)` (the gradients of all parameters, end to end) in place; returns the total norm
 * before clipping. The sum of squares is taken in float64, so the norm does not depend on the bucket layout.
 */
export function clipFlatGradients(flat: Float32Array, length: number, maxNorm: number): number {
  let sq = 0;
  for (let i = 0; i < length; i++) sq += flat[i]! * flat[i]!;
  const total = Math.sqrt(sq);
  const coef = clipCoefficient(total, maxNorm);
  if (coef < 1) {
    for (let i = 0; i < length; i++) flat[i] = Math.fround(flat[i]! * coef);
  }
  return total;
}

/**
 * The same on gradients that stay on the device (one webgpu worker): new tensors, the caller disposes them.
 * Nothing is read back, so the GPU is not made to wait.
 */
export function clipGradientTensors(grads: readonly tf.Tensor[], maxNorm: number): tf.Tensor[] {
  return tf.tidy(() => {
    // Summed one by one: addN of ~120 inputs exceeds what one webgpu shader binds.
    const total = tf.sqrt(grads.map((g) => tf.sum(tf.square(g))).reduce((a, b) => tf.add(a, b)));
    const coef = tf.minimum(tf.scalar(1), tf.div(tf.scalar(maxNorm), tf.add(total, EPS)));
    return grads.map((g) => tf.mul(g, coef));
  });
}
