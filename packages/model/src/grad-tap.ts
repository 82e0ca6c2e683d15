/**
 * A hook into the backward pass: the model's gradient functions (conv.ts, batchnorm.ts, linear.ts) hand each
 * parameter's gradient to the active tap the moment they compute it. The backward walks the layers in reverse, so
 * a caller sees the last layers' gradients while the first layers' are still to come (the trainer copies them
 * out and exchanges them meanwhile: --overlap).
 *
 * A gradient seen here is final only when nothing is added to it later: tfjs sums the gradients of a tensor used
 * by several ops, and each parameter of this model is the input of exactly one op. A caller that relies on it
 * checks it afterwards (the tensor it saw is the one variableGrads returned; the trainer's overlap does).
 *
 * Scoped like tf.tidy: active only inside withGradTap, and gradient functions run synchronously inside it.
 */
import type * as tf from '@tensorflow/tfjs';

/** Receives a parameter (the variable itself, as passed to the op) and its gradient; must not keep `grad`. */
export type GradTap = (param: tf.Tensor, grad: tf.Tensor) => void;

let active: GradTap | null = null;

/** Runs f with `tap` receiving every parameter gradient computed meanwhile. */
export function withGradTap<T>(tap: GradTap, f: () => T): T {
  const outer = active;
  active = tap;
  try {
    return f();
  } finally {
    active = outer;
  }
}

/** Called by a gradient function with one of its op's parameters and that parameter's gradient. */
export function tapGradient(param: tf.Tensor, grad: tf.Tensor): void {
  active?.(param, grad);
}
