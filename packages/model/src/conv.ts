/**
 * The one conv2d every layer uses, on every backend, with its own gradient.
 *
 * Why: tfjs-backend-wasm has no `Conv2DBackpropFilter` kernel (training fails without it), and the cpu
 * backend's kernel is a per-element JS loop. Writing the gradient with ops every backend has (transpose,
 * slice, concat, matMul, conv2d) makes wasm train, makes cpu fast, and gives identical maths everywhere.
 * With the native kernels (src/native.ts, wasm only) forward and backward are im2col/col2im + one 2-thread
 * product each.
 */
import * as tf from '@tensorflow/tfjs';
import { tapGradient } from './grad-tap.js';
import { col2im, im2col, matMul, nativeActive } from './native.js';
import * as gpu from './webgpu-kernels.js';

export interface Conv2dArgs {
  /** Stride in both spatial dimensions (GoogLeNet: 1, or 2 for conv1). */
  stride: number;
  /** Symmetric zero padding in both spatial dimensions, PyTorch's `padding=` (0, 1, 2 or 3 here). */
  pad: number;
  /** Whether to compute the input's gradient; false for the image, whose gradient nobody needs. Default true. */
  inputGrad?: boolean;
}

/**
 * NHWC conv without bias: x [N, H, W, C], w [kh, kw, C, O] (HWIO) -> [N, Ho, Wo, O], Ho = floor((H + 2p - kh)/s) + 1.
 */
export function conv2d(x: tf.Tensor4D, w: tf.Tensor4D, args: Conv2dArgs): tf.Tensor4D {
  const { stride, pad } = args;
  const [kh, kw, c, o] = w.shape;
  tf.util.assert(x.rank === 4 && x.shape[3] === c,
    () => `conv2d: expected x [N, H, W, ${c}], got [${x.shape.join(', ')}]`);
  tf.util.assert(kh === kw, () => `conv2d: only square kernels are supported, got ${kh}x${kw}`);
  tf.util.assert(pad >= 0 && pad < kh, () => `conv2d: padding ${pad} must be in [0, ${kh - 1}] for a ${kh}x${kh} kernel`);
  const op = args.inputGrad === false ? convNoInputGrad(x, stride, pad) : convOp(stride, pad);
  return args.inputGrad === false ? op(w) : op(x, w);
}

type ConvOp = (...t: tf.Tensor[]) => tf.Tensor4D;
const ops = new Map<string, ConvOp>();

/** customGrad wrappers are cached per (stride, pad): they are pure functions of those two numbers. */
function convOp(stride: number, pad: number): ConvOp {
  const key = `${stride}/${pad}`;
  let op = ops.get(key);
  if (!op) {
    op = tf.customGrad(((x: tf.Tensor4D, w: tf.Tensor4D, save: tf.GradSaveFunc) => {
      save([x, w]);
      return {
        value: forward(x, w, stride, pad),
        gradFunc: (dy: tf.Tensor4D, saved: tf.Tensor[]) => {
          const [sx, sw] = saved as [tf.Tensor4D, tf.Tensor4D];
          const dw = filterGradient(sx, dy, sw.shape[0], stride, pad);
          tapGradient(w, dw); // before dx: the exchange of dW can start while dx is computed
          return [inputGradient(dy, sw, sx.shape, stride, pad), dw];
        },
      };
    }) as never) as ConvOp;
    ops.set(key, op);
  }
  return op;
}

/**
 * With the native kernels every conv is im2col + one 2-thread product (a 1x1 needs no im2col), forward and
 * backward: ~3x the single-threaded XNNPACK conv. Else the backend's conv2d.
 */
function forward(x: tf.Tensor4D, w: tf.Tensor4D, stride: number, pad: number): tf.Tensor4D {
  if (!nativeActive()) return tf.conv2d(x, w, stride, pad);
  const [n] = x.shape;
  const [k, , c, o] = w.shape;
  const [ho, wo] = outSize(x.shape, k, stride, pad);
  return matMul(columns(x, k, stride, pad, ho, wo), w.reshape([k * k * c, o]) as tf.Tensor2D).reshape([n, ho, wo, o]);
}

const outSize = (s: number[], k: number, stride: number, pad: number): [number, number] =>
  [Math.floor((s[1] + 2 * pad - k) / stride) + 1, Math.floor((s[2] + 2 * pad - k) / stride) + 1];

/** im2col [N*Ho*Wo, k*k*C] (native); x itself for a 1x1 stride-1 conv. */
function columns(x: tf.Tensor4D, k: number, stride: number, pad: number, ho: number, wo: number): tf.Tensor2D {
  const [n, h, w, c] = x.shape;
  if (k === 1 && stride === 1 && pad === 0) return x.reshape([n * h * w, c]);
  return im2col(x, k, stride, pad, ho, wo)!;
}

/** The input image is not an argument of the custom op, so backprop never asks for (and never computes) dx. */
function convNoInputGrad(x: tf.Tensor4D, stride: number, pad: number): ConvOp {
  return tf.customGrad(((w: tf.Tensor4D, save: tf.GradSaveFunc) => {
    save([x]); // kept by the tape until backprop: x may belong to a scope that ends before then
    return {
      value: forward(x, w, stride, pad),
      gradFunc: (dy: tf.Tensor4D, saved: tf.Tensor[]) => {
        const dw = filterGradient(saved[0] as tf.Tensor4D, dy, w.shape[0], stride, pad);
        tapGradient(w, dw);
        return [dw];
      },
    };
  }) as never) as ConvOp;
}

/**
 * dL/dw [k, k, C, O]. Native: im2col^T dy, one product. Else two formulations, both plain XNNPACK products on wasm:
 * - im2col: ONE matMul of the transposed im2col matrix Pt [k*k*C, N*Ho*Wo] with dy [N*Ho*Wo, O]. Pt is built
 *   directly in its transposed form (x moved to [C, N, H, W], then k*k shifted slices stacked on the outer
 *   axis), because wasm's matMul with transposeA is ~5x slower than a plain one.
 * - as a conv (correlation of x with dy): with the batch as the channel axis, dW^T [C, k, k, O] =
 *   conv2d(x [C, H, W, N], dy [Ho, Wo, N, O], dilation = stride). No slices: wasm's Slice is a JS loop over
 *   rows, hopeless for conv1 (stride 2, 49 slices of 3 channels: 1.1 s of a 224 step) and the 5x5s.
 * im2col is ~10% faster for the 3x3 stride-1 convs on maps of 14 and more; the conv form elsewhere.
 */
export function filterGradient(x: tf.Tensor4D, dy: tf.Tensor4D, k: number, stride: number, pad: number): tf.Tensor4D {
  return tf.tidy(() => {
    const [n, h, w, c] = x.shape;
    const [, ho, wo, o] = dy.shape;
    const rows = n * ho * wo;
    if (nativeActive()) {
      return matMul(columns(x, k, stride, pad, ho, wo), dy.reshape([rows, o]) as tf.Tensor2D, true).reshape([k, k, c, o]);
    }
    if (gpu.webgpuActive()) {
      // One im2col dispatch (none for 1x1) and one matMul that transposes A inside the kernel; in batch chunks
      // when the columns would exceed the device's largest binding.
      if (k === 1 && stride === 1 && pad === 0) {
        return tf.matMul(x.reshape([rows, c]) as tf.Tensor2D, dy.reshape([rows, o]) as tf.Tensor2D, true, false).reshape([k, k, c, o]);
      }
      const per = gpu.imagesPerChunk(ho * wo * k * k * c * 4);
      let sum: tf.Tensor | undefined;
      for (let b0 = 0; b0 < n; b0 += per) {
        const nb = Math.min(per, n - b0);
        const xs = nb === n ? x : x.slice([b0, 0, 0, 0], [nb, h, w, c]);
        const dys = nb === n ? dy : dy.slice([b0, 0, 0, 0], [nb, ho, wo, o]);
        const part = tf.matMul(gpu.im2col(xs, k, stride, pad, ho, wo)!, dys.reshape([nb * ho * wo, o]) as tf.Tensor2D, true, false);
        sum = sum ? tf.add(sum, part) : part;
      }
      return sum!.reshape([k, k, c, o]);
    }
    if (k === 1 && stride === 1 && pad === 0) {
      // im2col is x itself; transpose whichever operand is smaller (reduce 1x1s have C >> O).
      const x2 = x.reshape([n * h * w, c]) as tf.Tensor2D;
      const dy2 = dy.reshape([rows, o]) as tf.Tensor2D;
      return (c <= o
        ? tf.matMul(x2.transpose(), dy2)
        : tf.matMul(dy2.transpose(), x2).transpose()).reshape([1, 1, c, o]);
    }
    if (k === 3 && stride === 1 && wo >= 14) {
      let xt: tf.Tensor4D = x.transpose([3, 0, 1, 2]); // C x N x H x W
      if (pad > 0) xt = tf.pad(xt, [[0, 0], [0, 0], [pad, pad], [pad, pad]]);
      const cols: tf.Tensor4D[] = [];
      for (let i = 0; i < k; i++) {
        for (let j = 0; j < k; j++) cols.push(tf.slice(xt, [0, 0, i, j], [c, n, ho, wo]));
      }
      const pt = tf.concat(cols, 0).reshape([k * k * c, rows]) as tf.Tensor2D; // (kh, kw, C) x (N, Ho, Wo)
      return matMul(pt, dy.reshape([rows, o]) as tf.Tensor2D).reshape([k, k, c, o]);
    }
    // Pad bottom/right so that the output is exactly k x k (stride 2 may leave input rows no window reads).
    const padB = k - 1 + stride * (ho - 1) - (h + pad - 1);
    const padR = k - 1 + stride * (wo - 1) - (w + pad - 1);
    const dwt = tf.conv2d(x.transpose([3, 1, 2, 0]) as tf.Tensor4D, dy.transpose([1, 2, 0, 3]) as tf.Tensor4D, 1,
      [[0, 0], [pad, padB], [pad, padR], [0, 0]], 'NHWC', stride);  // C x k x k x O
    return dwt.transpose([1, 2, 0, 3]);
  });
}

/**
 * dL/dx. Native: col2im(dy W^T). Else, stride 1: a conv of dy with the spatially flipped, in/out-swapped
 * filter and padding k-1-p (fast XNNPACK conv on wasm). Flipping both spatial axes reverses the flattened tap
 * index, so the flip is one small matMul by the k*k anti-identity: wasm's Reverse and Gather are per-element
 * loops, ~10x slower. Stride 2: the backend's Conv2DBackpropInput (conv2dTranspose); only conv1 has stride 2,
 * and it takes no dx.
 */
export function inputGradient(dy: tf.Tensor4D, w: tf.Tensor4D, xShape: [number, number, number, number],
  stride: number, pad: number): tf.Tensor4D {
  return tf.tidy(() => {
    const [k, , c, o] = w.shape;
    if (nativeActive()) {
      const [n, ho, wo] = dy.shape;
      const dcols = matMul(dy.reshape([n * ho * wo, o]) as tf.Tensor2D, w.reshape([k * k * c, o]) as tf.Tensor2D,
        false, true); // [N*Ho*Wo, k*k*C]
      return k === 1 && stride === 1 && pad === 0 ? dcols.reshape(xShape) : col2im(dcols, xShape, k, stride, pad, ho, wo)!;
    }
    if (gpu.webgpuActive()) {
      // dy W^T (transposed B inside the matMul kernel), then one gathering col2im: two dispatches, per batch
      // chunk when the columns would exceed the device's largest binding.
      const [n, ho, wo] = dy.shape;
      const w2 = w.reshape([k * k * c, o]) as tf.Tensor2D;
      if (k === 1 && stride === 1 && pad === 0) return tf.matMul(dy.reshape([n * ho * wo, o]) as tf.Tensor2D, w2, false, true).reshape(xShape);
      const per = gpu.imagesPerChunk(ho * wo * k * k * c * 4);
      const parts: tf.Tensor4D[] = [];
      for (let b0 = 0; b0 < n; b0 += per) {
        const nb = Math.min(per, n - b0);
        const dys = nb === n ? dy : dy.slice([b0, 0, 0, 0], [nb, ho, wo, o]);
        const dcols = tf.matMul(dys.reshape([nb * ho * wo, o]) as tf.Tensor2D, w2, false, true) as tf.Tensor2D;
        parts.push(gpu.col2im(dcols, [nb, xShape[1], xShape[2], xShape[3]], k, stride, pad, ho, wo)!);
      }
      return parts.length === 1 ? parts[0]! : tf.concat(parts, 0);
    }
    if (stride === 1) {
      const wFlip = k === 1 ? w : tf.matMul(flipMatrix(k), w.reshape([k * k, c * o])).reshape([k, k, c, o]);
      return tf.conv2d(dy, wFlip.transpose([0, 1, 3, 2]) as tf.Tensor4D, 1, k - 1 - pad);
    }
    return tf.conv2dTranspose(dy, w, xShape, stride, pad);
  });
}

/** The k*k anti-identity: row i picks tap k*k-1-i (exact: one product by 1, the rest add zeros). */
function flipMatrix(k: number): tf.Tensor2D {
  const kk = k * k;
  const m = new Float32Array(kk * kk);
  for (let i = 0; i < kk; i++) m[i * kk + kk - 1 - i] = 1;
  return tf.tensor2d(m, [kk, kk]);
}
