/**
 * Optional native kernels (native/kernels.cc, built at install by tools/build-native.mjs) for the wasm backend.
 * They read and write tensors in place in the wasm heap, and use both cores: a blocked SGEMM (AVX2/AVX-512
 * via -march=native, any transposition for free) and MaxPoolGrad. tfjs-wasm is single-threaded in Node, its
 * matMul runs at ~11-14 GMAC/s and its transposed products and MaxPoolGrad are slow loops; this SGEMM runs
 * at 25-44 GMAC/s on 2 cores. Absent addon, another backend, or GOOGLENET_NATIVE=0: every caller falls back
 * to plain tfjs ops with the same maths.
 */
import { createRequire } from 'node:module';
import * as tf from '@tensorflow/tfjs';

interface Addon {
  sgemm(heap: ArrayBuffer, a: number, b: number, c: number, m: number, n: number, k: number, ta: number, tb: number): void;
  maxPoolGrad(heap: ArrayBuffer, x: number, dy: number, dx: number, n: number, h: number, w: number, c: number,
    ho: number, wo: number, k: number, stride: number, padTop: number, padLeft: number): void;
  im2col(heap: ArrayBuffer, x: number, cols: number, n: number, h: number, w: number, c: number, ho: number, wo: number,
    k: number, stride: number, pad: number): void;
  col2im(heap: ArrayBuffer, cols: number, dx: number, n: number, h: number, w: number, c: number, ho: number, wo: number,
    k: number, stride: number, pad: number): void;
  bnStats(heap: ArrayBuffer, x: number, mean: number, variance: number, m: number, c: number): void;
  bnReluForward(heap: ArrayBuffer, x: number, mean: number, variance: number, gamma: number, beta: number, y: number,
    m: number, c: number, eps: number): void;
  bnReluBackward(heap: ArrayBuffer, x: number, y: number, dy: number, mean: number, variance: number, gamma: number,
    dx: number, dgamma: number, dbeta: number, m: number, c: number, eps: number): void;
  copyCols(heap: ArrayBuffer, src: number, dst: number, m: number, srcStride: number, dstStride: number, width: number,
    srcCol: number, dstCol: number): void;
  sgd?(heap: ArrayBuffer, wOffsets: Float64Array, bOffsets: Float64Array, sizes: Float64Array, grads: Float32Array,
    gOffsets: Float64Array, momentum: number, weightDecay: number, lr: number, started: number, nesterov?: number): void;
  sgdMean?(heap: ArrayBuffer, wOffsets: Float64Array, bOffsets: Float64Array, sizes: Float64Array, slots: Float32Array[],
    gOffsets: Float64Array, momentum: number, weightDecay: number, lr: number, started: number, nesterov: number): void;
  ema?(heap: ArrayBuffer, tOffsets: Float64Array, sOffsets: Float64Array, sizes: Float64Array, keep: number, take: number): void;
}

interface WasmBackend {
  dataIdMap: { get(id: unknown): { memoryOffset: number; refCount?: number } | undefined };
  wasm: { HEAPU8: Uint8Array };
  makeOutput(shape: number[], dtype: 'float32'): tf.TensorInfo;
}

let addon: Addon | null | undefined;

/** Milliseconds and calls per native kernel since the last reset (tf.profile cannot see them): for bench/. */
const times = new Map<string, { ms: number; calls: number }>();
export function nativeProfile(reset = false): { name: string; ms: number; calls: number }[] {
  const rows = [...times].map(([name, v]) => ({ name: `native ${name}`, ...v }));
  if (reset) times.clear();
  return rows;
}
function timed(name: string, f: () => void): void {
  const t = performance.now();
  f();
  const e = times.get(name) ?? { ms: 0, calls: 0 };
  e.ms += performance.now() - t;
  e.calls++;
  times.set(name, e);
}

function load(): Addon | null {
  if (addon !== undefined) return addon;
  addon = null;
  if (process.env.GOOGLENET_NATIVE === '0') return addon;
  try {
    addon = createRequire(import.meta.url)('../native/build/googlenet_native.node') as Addon;
  } catch {
    addon = null; // not built (no compiler at install): tfjs paths
  }
  return addon;
}

let enabled = true;
/** Tests: run the tfjs fallbacks on wasm too (false), or the native kernels where built (true, the default). */
export function setNativeEnabled(on: boolean): void {
  enabled = on;
}

/** The addon and the wasm backend when both are in use, else null. */
function active(): { k: Addon; be: WasmBackend } | null {
  if (!enabled || tf.getBackend() !== 'wasm') return null;
  const k = load();
  return k ? { k, be: tf.backend() as unknown as WasmBackend } : null;
}

/** Whether the native kernels run here (wasm backend, addon built, not disabled). */
export const nativeActive = (): boolean => active() !== null;

const offset = (be: WasmBackend, t: tf.Tensor): number => {
  const e = be.dataIdMap.get(t.dataId);
  if (!e) throw new Error('native: tensor is not on the wasm backend');
  return e.memoryOffset;
};

function output<R extends tf.Rank>(be: WasmBackend, shape: number[]): tf.Tensor<R> {
  return tf.engine().makeTensorFromTensorInfo(be.makeOutput(shape, 'float32')) as tf.Tensor<R>;
}

/**
 * op(a) op(b) for 2-D float32 tensors, op = transpose where asked. Native when active; else tfjs with the
 * transposition done first (wasm's transposed matMul is ~5x slower than a transpose plus a plain one).
 * Not differentiable: for gradient functions and custom-op forwards.
 */
export function matMul(a: tf.Tensor2D, b: tf.Tensor2D, transposeA = false, transposeB = false): tf.Tensor2D {
  const n = active();
  if (!n || a.dtype !== 'float32' || b.dtype !== 'float32') {
    return tf.matMul(transposeA ? a.transpose() : a, transposeB ? b.transpose() : b);
  }
  const [m, k] = transposeA ? [a.shape[1], a.shape[0]] : a.shape;
  const cols = transposeB ? b.shape[0] : b.shape[1];
  tf.util.assert(k === (transposeB ? b.shape[1] : b.shape[0]), () => `matMul: inner sizes differ: [${a.shape}] and [${b.shape}]`);
  const out = output<tf.Rank.R2>(n.be, [m, cols]);
  timed('sgemm', () => n.k.sgemm(n.be.wasm.HEAPU8.buffer as ArrayBuffer, offset(n.be, a), offset(n.be, b), offset(n.be, out),
    m, cols, k, transposeA ? 1 : 0, transposeB ? 1 : 0));
  return out;
}

/**
 * Gradient of a k x k max-pool (stride s, `padTop`/`padLeft` rows/cols of virtual -Infinity before the map,
 * windows clipped at the bottom/right edge) with respect to its input x, given dy. Each window sends its
 * gradient to its first maximum in row-major order, as tfjs and PyTorch do. Native only: returns null when
 * the addon is not active.
 */
export function maxPoolGrad(x: tf.Tensor4D, dy: tf.Tensor4D, k: number, stride: number, padTop: number,
  padLeft: number): tf.Tensor4D | null {
  const n = active();
  if (!n) return null;
  const [b, h, w, c] = x.shape;
  const [, ho, wo] = dy.shape;
  const dx = output<tf.Rank.R4>(n.be, [b, h, w, c]);
  timed('maxPoolGrad', () => n.k.maxPoolGrad(n.be.wasm.HEAPU8.buffer as ArrayBuffer, offset(n.be, x), offset(n.be, dy),
    offset(n.be, dx), b, h, w, c, ho, wo, k, stride, padTop, padLeft));
  return dx;
}

/**
 * NHWC im2col: x [N, H, W, C] -> [N*Ho*Wo, k*k*C], columns in (kh, kw, C) order, so that cols x w.reshape
 * ([k*k*C, O]) is the conv. Native only (null when not active).
 */
export function im2col(x: tf.Tensor4D, k: number, stride: number, pad: number, ho: number, wo: number): tf.Tensor2D | null {
  const n = active();
  if (!n) return null;
  const [b, h, w, c] = x.shape;
  const cols = output<tf.Rank.R2>(n.be, [b * ho * wo, k * k * c]);
  timed('im2col', () => n.k.im2col(n.be.wasm.HEAPU8.buffer as ArrayBuffer, offset(n.be, x), offset(n.be, cols), b, h, w, c,
    ho, wo, k, stride, pad));
  return cols;
}

/** The adjoint of im2col: sums cols [N*Ho*Wo, k*k*C] back into an image of `shape`. Native only. */
export function col2im(cols: tf.Tensor2D, shape: [number, number, number, number], k: number, stride: number, pad: number,
  ho: number, wo: number): tf.Tensor4D | null {
  const n = active();
  if (!n) return null;
  const [b, h, w, c] = shape;
  const dx = output<tf.Rank.R4>(n.be, shape);
  timed('col2im', () => n.k.col2im(n.be.wasm.HEAPU8.buffer as ArrayBuffer, offset(n.be, cols), offset(n.be, dx), b, h, w, c,
    ho, wo, k, stride, pad));
  return dx;
}

/** Per-channel mean and biased variance of x [..., C] (two passes, double accumulators). Native only. */
export function bnStats(x: tf.Tensor): [tf.Tensor1D, tf.Tensor1D] | null {
  const n = active();
  if (!n) return null;
  const c = x.shape[x.rank - 1];
  const mean = output<tf.Rank.R1>(n.be, [c]);
  const variance = output<tf.Rank.R1>(n.be, [c]);
  timed('bnStats', () => n.k.bnStats(n.be.wasm.HEAPU8.buffer as ArrayBuffer, offset(n.be, x), offset(n.be, mean),
    offset(n.be, variance), x.size / c, c));
  return [mean, variance];
}

/** relu((x - mean) / sqrt(var + eps) * gamma + beta) over x [..., C] in one pass. Native only. */
export function bnReluForward(x: tf.Tensor4D, mean: tf.Tensor1D, variance: tf.Tensor1D, gamma: tf.Tensor1D,
  beta: tf.Tensor1D, eps: number): tf.Tensor4D | null {
  const n = active();
  if (!n) return null;
  const c = x.shape[3];
  const y = output<tf.Rank.R4>(n.be, x.shape);
  timed('bnReluForward', () => n.k.bnReluForward(n.be.wasm.HEAPU8.buffer as ArrayBuffer, offset(n.be, x), offset(n.be, mean),
    offset(n.be, variance), offset(n.be, gamma), offset(n.be, beta), offset(n.be, y), x.size / c, c, eps));
  return y;
}

/** [dx, dgamma, dbeta] of bnReluForward given its output y and dy, in two passes. Native only. */
export function bnReluBackward(x: tf.Tensor4D, y: tf.Tensor4D, dy: tf.Tensor4D, mean: tf.Tensor1D, variance: tf.Tensor1D,
  gamma: tf.Tensor1D, eps: number): [tf.Tensor4D, tf.Tensor1D, tf.Tensor1D] | null {
  const n = active();
  if (!n) return null;
  const c = x.shape[3];
  const dx = output<tf.Rank.R4>(n.be, x.shape);
  const dgamma = output<tf.Rank.R1>(n.be, [c]);
  const dbeta = output<tf.Rank.R1>(n.be, [c]);
  timed('bnReluBackward', () => n.k.bnReluBackward(n.be.wasm.HEAPU8.buffer as ArrayBuffer, offset(n.be, x), offset(n.be, y),
    offset(n.be, dy), offset(n.be, mean), offset(n.be, variance), offset(n.be, gamma), offset(n.be, dx), offset(n.be, dgamma),
    offset(n.be, dbeta), x.size / c, c, eps));
  return [dx, dgamma, dbeta];
}

/**
 * Concatenation on the last (channel) axis with a gradient that splits dy back: tfjs-wasm's Concat and
 * SplitV copy row by row in JS. Native where active, else tf.concat (autodiff).
 */
export function concatChannels(parts: tf.Tensor4D[]): tf.Tensor4D {
  if (!active()) return tf.concat(parts, 3);
  const widths = parts.map((p) => p.shape[3]);
  const total = widths.reduce((a, b) => a + b, 0);
  const [b, h, w] = parts[0].shape;
  const rows = b * h * w;
  const copy = (src: tf.Tensor, dst: tf.Tensor, srcStride: number, dstStride: number, width: number, srcCol: number, dstCol: number) => {
    const n = active()!;
    timed('copyCols', () => n.k.copyCols(n.be.wasm.HEAPU8.buffer as ArrayBuffer, offset(n.be, src), offset(n.be, dst), rows,
      srcStride, dstStride, width, srcCol, dstCol));
  };
  const op = tf.customGrad(((...args: unknown[]) => {
    const xs = args.slice(0, parts.length) as tf.Tensor4D[];
    const out = output<tf.Rank.R4>(active()!.be, [b, h, w, total]);
    let col = 0;
    xs.forEach((x, i) => { copy(x, out, widths[i], total, widths[i], 0, col); col += widths[i]; });
    return {
      value: out,
      gradFunc: (dy: tf.Tensor4D) => {
        let at = 0;
        return widths.map((width) => {
          const g = output<tf.Rank.R4>(active()!.be, [b, h, w, width]);
          copy(dy, g, total, width, width, at, 0);
          at += width;
          return g;
        });
      },
    };
  }) as never) as (...t: tf.Tensor[]) => tf.Tensor4D;
  return op(...parts);
}

/**
 * One SGD step of torch.optim.SGD (d = g + wd*w; buf = d first, else momentum*buf + d; w -= lr*buf) in place
 * on the wasm heap, for every param at once, from a flat gradient buffer (param i's gradient starts at
 * gradOffsets[i]). Same float32 rounding as the tensor path. Returns false (nothing done) when the native
 * kernels are not active or a tensor shares its memory with another, so the caller can use tfjs instead.
 */
export function nativeSgd(params: readonly tf.Variable[], buffers: readonly tf.Variable[] | null, grads: Float32Array,
  gradOffsets: readonly number[], o: { momentum: number; weightDecay: number; lr: number; started: boolean; nesterov?: boolean }): boolean {
  const n = active();
  if (!n?.k.sgd) return false;
  const ops = sgdOperands(n.be, params, buffers);
  if (!ops) return false;
  const { w, b, sizes, heap } = ops;
  if (o.nesterov && !knowsNesterov(n.k, heap)) return false;
  const go = Float64Array.from(gradOffsets);
  // The eleventh argument only when set: the plain step keeps the call an older addon knows.
  timed('sgd', () => o.nesterov
    ? n.k.sgd!(heap, w, b, sizes, grads, go, o.momentum, o.weightDecay, o.lr, o.started ? 1 : 0, 1)
    : n.k.sgd!(heap, w, b, sizes, grads, go, o.momentum, o.weightDecay, o.lr, o.started ? 1 : 0));
  return true;
}

/** Heap offsets of the weights and momentum buffers (-1: none) and sizes; null when one shares its memory. */
function sgdOperands(be: WasmBackend, params: readonly tf.Variable[], buffers: readonly tf.Variable[] | null):
  { w: Float64Array; b: Float64Array; sizes: Float64Array; heap: ArrayBuffer } | null {
  const own = ownedOffset(be);
  const w = Float64Array.from(params, own);
  const b = buffers ? Float64Array.from(buffers, own) : new Float64Array(params.length).fill(-1);
  if (w.some((x) => x < 0) || (buffers && b.some((x) => x < 0))) return null;
  return { w, b, sizes: Float64Array.from(params, (p) => p.size), heap: be.wasm.HEAPU8.buffer as ArrayBuffer };
}

/** Whether nativeSgdMean runs here (wasm, an addon that has it); otherwise the caller averages first. */
export const nativeSgdMeanActive = (): boolean => !!active()?.k.sgdMean;

/**
 * nativeSgd on the exact mean of R ranks' gradients, read from where they lie (`slots`: rank order, one length; the
 * shared-memory plane's views): g = fround(float64 sum in rank order / R), the coordinator's mean bit for bit, fused
 * into the update (the mean is never stored). Returns false (nothing done) where nativeSgd would.
 */
export function nativeSgdMean(params: readonly tf.Variable[], buffers: readonly tf.Variable[] | null, slots: Float32Array[],
  gradOffsets: readonly number[], o: { momentum: number; weightDecay: number; lr: number; started: boolean; nesterov?: boolean }): boolean {
  const n = active();
  if (!n?.k.sgdMean) return false;
  const ops = sgdOperands(n.be, params, buffers);
  if (!ops) return false;
  const { w, b, sizes, heap } = ops;
  const go = Float64Array.from(gradOffsets);
  timed('sgdMean', () => n.k.sgdMean!(heap, w, b, sizes, slots, go, o.momentum, o.weightDecay, o.lr, o.started ? 1 : 0, o.nesterov ? 1 : 0));
  return true;
}

let nesterovKnown: boolean | undefined;
/**
 * Whether the loaded addon takes the Nesterov argument: one empty call (no tensors, nothing touched) the first time
 * asks; an addon built before it rejects 11 arguments with a TypeError, and the caller then takes its JS loop.
 */
function knowsNesterov(k: Addon, heap: ArrayBuffer): boolean {
  if (nesterovKnown === undefined) {
    const none = new Float64Array(0);
    try {
      k.sgd!(heap, none, none, none, new Float32Array(0), none, 0, 0, 0, 0, 1);
      nesterovKnown = true;
    } catch (e) {
      if (!(e instanceof TypeError)) throw e;
      nesterovKnown = false;
    }
  }
  return nesterovKnown;
}

/**
 * `t = decay*t + (1-decay)*s` in place for each pair (the weights' EMA), one pass per tensor on the wasm heap,
 * rounded as tf.add(tf.mul(t, decay), tf.mul(s, 1 - decay)) rounds in float32. Returns false (nothing done) when
 * the native kernels are not active, the addon predates the kernel, or a target shares its memory.
 */
export function nativeEma(targets: readonly tf.Variable[], sources: readonly tf.Variable[], decay: number): boolean {
  const n = active();
  if (!n?.k.ema || targets.length !== sources.length) return false;
  const own = ownedOffset(n.be);
  const t = Float64Array.from(targets, own);
  const s = Float64Array.from(sources, (v) => (v.dtype === 'float32' ? n.be.dataIdMap.get(v.dataId)?.memoryOffset ?? -1 : -1));
  if (t.some((x) => x < 0) || s.some((x) => x < 0) || targets.some((v, i) => v.size !== sources[i]!.size)) return false;
  const sizes = Float64Array.from(targets, (v) => v.size);
  timed('ema', () => n.k.ema!(n.be.wasm.HEAPU8.buffer as ArrayBuffer, t, s, sizes, decay, 1 - decay));
  return true;
}

/** A tensor's heap offset when it is float32 and owns its memory alone (safe to write in place), else -1. */
function ownedOffset(be: WasmBackend): (t: tf.Tensor) => number {
  return (t) => {
    const e = be.dataIdMap.get(t.dataId);
    return e && t.dtype === 'float32' && (e.refCount ?? 1) === 1 ? e.memoryOffset : -1;
  };
}
