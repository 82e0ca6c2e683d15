/**
 * The one conv2d every layer uses, on every backend, with its own gradient.
 *
 * Why: tfjs-backend-wasm has no `Conv2DBackpropFilter` kernel (training fails without it), and the cpu
 * backend's kernel is a per-element JS loop. Writing the gradient with ops every backend has (transpose,
 * slice, concat, one matMul) makes wasm train, makes cpu fast, and gives identical maths everywhere.
 */
import * as tf from '@tensorflow/tfjs';

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
        value: tf.conv2d(x, w, stride, pad),
        gradFunc: (dy: tf.Tensor4D, saved: tf.Tensor[]) => {
          const [sx, sw] = saved as [tf.Tensor4D, tf.Tensor4D];
          return [inputGradient(dy, sw, sx.shape, stride, pad), filterGradient(sx, dy, sw.shape[0], stride, pad)];
        },
      };
    }) as never) as ConvOp;
    ops.set(key, op);
  }
  return op;
}

/** The input image is not an argument of the custom op, so backprop never asks for (and never computes) dx. */
function convNoInputGrad(x: tf.Tensor4D, stride: number, pad: number): ConvOp {
  return tf.customGrad(((w: tf.Tensor4D, save: tf.GradSaveFunc) => {
    save([x]); // kept by the tape until backprop: x may belong to a scope that ends before then
    return {
      value: tf.conv2d(x, w, stride, pad),
      gradFunc: (dy: tf.Tensor4D, saved: tf.Tensor[]) =>
        [filterGradient(saved[0] as tf.Tensor4D, dy, w.shape[0], stride, pad)],
    };
  }) as never) as ConvOp;
}

/**
 * dL/dw [k, k, C, O] as ONE matMul of the transposed im2col matrix Pt [k*k*C, N*Ho*Wo] with dy [N*Ho*Wo, O].
 * Pt is built directly in its transposed form (x moved to [C, N, H, W], then k*k shifted slices stacked on the
 * outer axis: contiguous copies), because wasm's matMul with transposeA is ~5x slower than a plain one.
 */
export function filterGradient(x: tf.Tensor4D, dy: tf.Tensor4D, k: number, stride: number, pad: number): tf.Tensor4D {
  return tf.tidy(() => {
    const [n, h, w, c] = x.shape;
    const [, ho, wo, o] = dy.shape;
    const rows = n * ho * wo;
    const dy2 = dy.reshape([rows, o]);
    if (k === 1 && stride === 1 && pad === 0) {
      // im2col is x itself; transpose whichever operand is smaller (reduce 1x1s have C >> O).
      const x2 = x.reshape([n * h * w, c]);
      return (c <= o
        ? tf.matMul(x2.transpose(), dy2)
        : tf.matMul(dy2.transpose(), x2).transpose()).reshape([1, 1, c, o]);
    }
    let xt: tf.Tensor4D = x.transpose([3, 0, 1, 2]); // C x N x H x W
    if (pad > 0) xt = tf.pad(xt, [[0, 0], [0, 0], [pad, pad], [pad, pad]]);
    const cols: tf.Tensor4D[] = [];
    for (let i = 0; i < k; i++) {
      for (let j = 0; j < k; j++) {
        cols.push(stride === 1
          ? tf.slice(xt, [0, 0, i, j], [c, n, ho, wo])
          : tf.stridedSlice(xt, [0, 0, i, j], [c, n, i + (ho - 1) * stride + 1, j + (wo - 1) * stride + 1],
            [1, 1, stride, stride]) as tf.Tensor4D);
      }
    }
    const pt = (cols.length === 1 ? cols[0] : tf.concat(cols, 0)).reshape([k * k * c, rows]); // (kh, kw, C) x (N, Ho, Wo)
    return tf.matMul(pt, dy2).reshape([k, k, c, o]);
  });
}

/**
 * dL/dx. Stride 1: a conv of dy with the spatially flipped, in/out-swapped filter and padding k-1-p
 * (fast XNNPACK conv on wasm). Stride 2: the backend's Conv2DBackpropInput (conv2dTranspose).
 */
export function inputGradient(dy: tf.Tensor4D, w: tf.Tensor4D, xShape: [number, number, number, number],
  stride: number, pad: number): tf.Tensor4D {
  return tf.tidy(() => {
    const k = w.shape[0];
    if (stride === 1) {
      const wFlip = k === 1 ? w.transpose([0, 1, 3, 2]) : tf.reverse(w, [0, 1]).transpose([0, 1, 3, 2]);
      return tf.conv2d(dy, wFlip as tf.Tensor4D, 1, k - 1 - pad);
    }
    return tf.conv2dTranspose(dy, w, xShape, stride, pad);
  });
}
