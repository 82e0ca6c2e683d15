/** The pooling layers of GoogLeNet with PyTorch's exact semantics, in NHWC. */
import * as tf from '@tensorflow/tfjs';
import { AUX, auxUsesSeedPool, maxPoolCeilSize } from './architecture.js';
import { maxPoolGrad, nativeActive } from './native.js';
import { maxPoolGrad as webgpuMaxPoolGrad, webgpuActive } from './webgpu-kernels.js';

/**
 * `pool(x)` with its gradient sent to each window's FIRST maximum (row-major), as PyTorch and tfjs-cpu do:
 * the native MaxPoolGrad on wasm (2 threads, one pass; tfjs-wasm's took ~15% of a 224x224 step), our WGSL
 * kernel on webgpu (whose stock kernel picks the last maximum), plain autodiff elsewhere (cpu: first).
 * padTop/padLeft: the pool's implicit padding before the map (windows are clipped at the far edges, like
 * -Infinity padding).
 */
function withNativeGrad(x: tf.Tensor4D, pool: (x: tf.Tensor4D) => tf.Tensor4D, k: number, stride: number,
  padTop: number, padLeft: number): tf.Tensor4D {
  const grad = nativeActive() ? maxPoolGrad : webgpuActive() ? webgpuMaxPoolGrad : null;
  if (!grad) return pool(x);
  const op = tf.customGrad(((xx: tf.Tensor4D, save: tf.GradSaveFunc) => {
    save([xx]);
    return {
      value: pool(xx),
      gradFunc: (dy: tf.Tensor4D, saved: tf.Tensor[]) => [grad(saved[0] as tf.Tensor4D, dy, k, stride, padTop, padLeft)!],
    };
  }) as never) as (x: tf.Tensor) => tf.Tensor4D;
  return op(x);
}

/**
 * MaxPool2d(3, stride 2, ceil_mode=True): pads the bottom/right with -Infinity so that a 'valid' pool yields
 * PyTorch's ceil-mode size (a -Infinity never wins, and every window starts inside the map).
 */
export function maxPoolCeil(x: tf.Tensor4D, k = 3, stride = 2): tf.Tensor4D {
  return withNativeGrad(x, (xx) => maxPoolCeilForward(xx, k, stride), k, stride, 0, 0);
}

function maxPoolCeilForward(x: tf.Tensor4D, k: number, stride: number): tf.Tensor4D {
  const [, h, w] = x.shape;
  const oh = maxPoolCeilSize(h, k, stride);
  const ow = maxPoolCeilSize(w, k, stride);
  const padH = (oh - 1) * stride + k - h;
  const padW = (ow - 1) * stride + k - w;
  const xp = padH > 0 || padW > 0 ? tf.pad(x, [[0, 0], [0, padH], [0, padW], [0, 0]], -Infinity) : x;
  return tf.maxPool(xp, k, stride, 'valid');
}

/** Inception branch4's MaxPool2d(3, stride 1, padding 1): padding never wins, which is what 'same' does. */
export const maxPoolSame3 = (x: tf.Tensor4D): tf.Tensor4D =>
  withNativeGrad(x, (xx) => tf.maxPool(xx, 3, 1, 'same'), 3, 1, 1, 1);

/**
 * The (out x in) matrix of PyTorch's adaptive average pool along one axis: bin i averages
 * [floor(i*n/out), ceil((i+1)*n/out)).
 */
export function adaptiveMatrix(n: number, out: number): Float32Array {
  const m = new Float32Array(out * n);
  for (let i = 0; i < out; i++) {
    const start = Math.floor((i * n) / out);
    const end = Math.ceil(((i + 1) * n) / out);
    for (let j = start; j < end; j++) m[i * n + j] = 1 / (end - start);
  }
  return m;
}

/**
 * AdaptiveAvgPool2d((oh, ow)) as two small matMuls (bins may overlap, so it is not a strided pool):
 * x [N, H, W, C] -> [N, oh, ow, C].
 */
export function adaptiveAvgPool(x: tf.Tensor4D, oh: number, ow: number): tf.Tensor4D {
  const [, h, w] = x.shape;
  if (h === oh && w === ow) return x;
  return poolByMatrices(x, adaptiveMatrix(h, oh), oh, adaptiveMatrix(w, ow), ow);
}

/** The (out x n) matrix of a k-wide, stride-s average pool without padding along one axis. */
export function windowMatrix(n: number, out: number, k: number, s: number): Float32Array {
  const m = new Float32Array(out * n);
  for (let i = 0; i < out; i++) for (let j = i * s; j < i * s + k; j++) m[i * n + j] = 1 / k;
  return m;
}

/**
 * A separable average pool given its per-axis (out x in) matrices, as two small matMuls: their gradients
 * are matMuls too (tfjs-wasm's AvgPoolGrad is a slow loop).
 */
function poolByMatrices(x: tf.Tensor4D, mh: Float32Array, oh: number, mw: Float32Array, ow: number): tf.Tensor4D {
  const [n, h, w, c] = x.shape;
  return tf.tidy(() => {
    const ah = tf.tensor2d(mh, [oh, h]);
    const aw = tf.tensor2d(mw, [ow, w]);
    // rows: pool H with W, N, C flattened into columns; then pool W the same way.
    const xh = x.transpose([1, 2, 0, 3]).reshape([h, w * n * c]);
    const ph = tf.matMul(ah, xh).reshape([oh, w, n * c]).transpose([1, 0, 2]).reshape([w, oh * n * c]);
    const pw = tf.matMul(aw, ph).reshape([ow, oh, n, c]);
    return pw.transpose([2, 1, 0, 3]) as tf.Tensor4D;
  });
}

/** The aux head's pool to 4x4 (see auxUsesSeedPool for which one). */
export function auxPool(x: tf.Tensor4D): tf.Tensor4D {
  const [, h, w] = x.shape;
  // the seed's AvgPool2d(5, 3): windows [3i, 3i + 5), i < 4, each inside the 14x14 map
  return auxUsesSeedPool(h, w)
    ? poolByMatrices(x, windowMatrix(h, AUX.grid, 5, 3), AUX.grid, windowMatrix(w, AUX.grid, 5, 3), AUX.grid)
    : adaptiveAvgPool(x, AUX.grid, AUX.grid);
}

/** AdaptiveAvgPool2d((1, 1)) + flatten: [N, H, W, C] -> [N, C]. */
export const globalAvgPool = (x: tf.Tensor4D): tf.Tensor2D => tf.mean(x, [1, 2]) as tf.Tensor2D;
