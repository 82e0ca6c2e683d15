/**
 * y = x W + b with its own gradient. Why: the stock matMul gradient multiplies with transposeA / transposeB,
 * which wasm runs ~20-50x slower than a plain product (the aux heads' 2048x1024 layers took 40% of a 32x32
 * step). Here every product is plain and only the small [N, *] operands are transposed.
 */
import * as tf from '@tensorflow/tfjs';
import { tapGradient } from './grad-tap.js';
import { matMul } from './native.js';

const op = tf.customGrad(((x: tf.Tensor2D, w: tf.Tensor2D, b: tf.Tensor1D, save: tf.GradSaveFunc) => {
  save([x, w]);
  return {
    value: tf.add(matMul(x, w), b),
    gradFunc: (dy: tf.Tensor2D, saved: tf.Tensor[]) => {
      const [sx, sw] = saved as [tf.Tensor2D, tf.Tensor2D];
      const dw = matMul(sx, dy, true);  // dW = x^T dy   [in, out]
      const db = tf.sum(dy, 0);
      tapGradient(w, dw);
      tapGradient(b, db);
      return [matMul(dy, sw, false, true), dw, db];  // dx = dy W^T   [N, in]
    },
  };
}) as never) as (x: tf.Tensor, w: tf.Tensor, b: tf.Tensor) => tf.Tensor2D;

/** x [N, in], w [in, out], b [out] -> [N, out]. */
export const linear = (x: tf.Tensor2D, w: tf.Tensor2D, b: tf.Tensor1D): tf.Tensor2D => op(x, w, b);
