/**
 * The f16 GEMM (webgpu-f16-kernels.ts) against tfjs's fp32 kernels on this machine's adapter (Mesa's lavapipe in
 * CI, which has shader-f16). Bound: f16 operands carry a relative rounding of at most 2^-11 each, so an element
 * of C may differ from the fp32 product by about 2^-10 x sum_k |a_ik||b_kj|; the tests allow 1e-3 of that sum
 * (f32 accumulation adds ~K x 2^-24 more), and require SOME difference, so an fp32 kernel in disguise fails.
 */
import { describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { selectBackend, type BackendInfo } from './backend.js';
import { fp32Scope, setComputePrecision, computePrecision } from './precision.js';
import { conv2dF16, matMulF16 } from './webgpu-f16-kernels.js';
import { GoogLeNet } from './googlenet.js';
import { computeGradients } from './loss.js';
import { bnStats } from './webgpu-kernels.js';
import { conv2d } from './conv.js';

let info: BackendInfo | undefined;
let why = '';
try {
  info = await selectBackend('webgpu', { precision: 'f16' });
} catch (e) {
  why = (e as Error).message;
}
if (!info) {
  if (process.env.GOOGLENET_REQUIRE_WEBGPU === '1') throw new Error(`GOOGLENET_REQUIRE_WEBGPU=1 but webgpu f16 is unavailable: ${why}`);
  console.warn(`SKIPPED webgpu f16 kernel tests: ${why}`);
}

const rand = (shape: number[], seed: number) => tf.randomUniform(shape, -2, 2, 'float32', seed);
/** The fp32 result (tfjs's kernels: f16 off) and the f16 one of the same function. */
async function both(f: () => tf.Tensor): Promise<[Float32Array, Float32Array]> {
  const ref = fp32Scope(() => tf.tidy(f));
  const half = tf.tidy(f);
  const out = [await ref.data(), await half.data()] as [Float32Array, Float32Array];
  tf.dispose([ref, half]);
  return out;
}
/** max |x - y| / scale, elementwise scales. */
const worst = (x: Float32Array, y: Float32Array, scale: Float32Array | number) =>
  x.reduce((m, v, i) => Math.max(m, Math.abs(v - y[i]!) / (typeof scale === 'number' ? scale : scale[i]!)), 0);

describe.skipIf(!info)('f16 GEMM on webgpu', () => {
  it('is chosen with f16 (and the backend line says so)', () => {
    expect(computePrecision().precision).toBe('f16');
    expect(info!.line).toMatch(/^backend: webgpu f16/);
  });

  it.each([[false, false], [true, false], [false, true], [true, true]])(
    'matMul(transposeA=%s, transposeB=%s) at odd sizes is within 1e-3 of sum|a||b| of fp32, and not equal to it',
    async (ta, tb) => {
      const [m, k, n] = [37, 70, 45];
      const a = rand(ta ? [k, m] : [m, k], 1);
      const b = rand(tb ? [n, k] : [k, n], 2);
      const [ref, half] = await both(() => tf.matMul(a, b, ta, tb));
      const scale = await fp32Scope(() => tf.tidy(() => tf.matMul(tf.abs(a), tf.abs(b), ta, tb))).data() as Float32Array;
      expect(worst(ref, half, scale)).toBeLessThan(1e-3);
      expect(worst(ref, half, scale)).toBeGreaterThan(0);
      tf.dispose([a, b]);
    });

  it('matMulF16 broadcasts a batch of 1 against a batch of 3, as tfjs\'s BatchMatMul', async () => {
    const a = rand([3, 33, 17], 3);
    const b = rand([1, 17, 40], 4);
    const out = tf.engine().makeTensorFromTensorInfo(matMulF16(a, b, false, false));
    const ref = fp32Scope(() => tf.matMul(a, b));
    expect(out.shape).toEqual([3, 33, 40]);
    expect(worst(await ref.data() as Float32Array, await out.data() as Float32Array, 17 * 4)).toBeLessThan(1e-3);
    tf.dispose([a, b, out, ref]);
  });

  it.each([[3, 1, 1, 8], [7, 2, 3, 9], [1, 1, 0, 6], [3, 2, 1, 5]])(
    'conv2dF16 k=%i stride %i pad %i on %i px (im2col + f16 GEMM) matches tfjs\'s fp32 conv within 1e-3 of sum|x||w|, chunked or not',
    async (k, stride, pad, h) => {
      const x = rand([3, h, h, 5], 5);
      const w = rand([k, k, 5, 7], 6);
      const scaleT = fp32Scope(() => tf.conv2d(tf.abs(x) as tf.Tensor4D, tf.abs(w) as tf.Tensor4D, stride, pad));
      const scale = await scaleT.data() as Float32Array;
      const [ref, half] = await both(() => conv2dF16(x as tf.Tensor4D, w as tf.Tensor4D, stride, pad));
      expect(worst(ref, half, scale)).toBeLessThan(1e-3);
      // One image per im2col chunk: the batch-chunked path gives the same values.
      process.env.GOOGLENET_WEBGPU_MAX_BINDING = String(h * h * k * k * 5 * 4);
      const [, chunked] = await both(() => conv2dF16(x as tf.Tensor4D, w as tf.Tensor4D, stride, pad));
      delete process.env.GOOGLENET_WEBGPU_MAX_BINDING;
      expect(worst(half, chunked, 1)).toBe(0);
      tf.dispose([x, w, scaleT]);
    });

  it('conv gradients (im2col/col2im matMuls) under f16 are within 1e-2 of fp32 in relative norm, numTensors flat', async () => {
    const x = rand([2, 9, 9, 6], 7) as tf.Tensor4D;
    const w = rand([3, 3, 6, 4], 8) as tf.Tensor4D;
    const grads = () => tf.grads((a: tf.Tensor, b: tf.Tensor) => tf.sum(tf.square(conv2d(a as tf.Tensor4D, b as tf.Tensor4D, { stride: 1, pad: 1 }))))([x, w]);
    const before = tf.memory().numTensors;
    const ref = fp32Scope(grads);
    const half = grads();
    for (let i = 0; i < 2; i++) {
      const rel = tf.tidy(() => tf.norm(tf.sub(ref[i]!, half[i]!)).div(tf.norm(ref[i]!)));
      const r = (await rel.data())[0]!;
      expect(r).toBeLessThan(1e-2);
      expect(r).toBeGreaterThan(0);
      rel.dispose();
    }
    tf.dispose([...ref, ...half]);
    expect(tf.memory().numTensors).toBe(before);
    tf.dispose([x, w]);
  });

  it('is timed in a profiled step (tf.time) like tfjs\'s own kernels, under its own name', async () => {
    const a = rand([64, 64], 12);
    const b = rand([64, 64], 13);
    let c: tf.Tensor | undefined;
    const t = await tf.time(() => { c = tf.matMul(a, b); }) as tf.TimingInfo & { getExtraProfileInfo?: () => string };
    expect(t.getExtraProfileInfo?.()).toMatch(/gnMatMulF16: [\d.]+/);
    tf.dispose([a, b, c!]);
  });

  it('GoogLeNet\'s logits and gradients under f16 stay within 1e-3 (logits) and 5e-3 (median per parameter) of fp32', async () => {
    // What the kernels do inside the whole model (the conv-forward override passed alone yet gave 4 % off logits
    // here, so it is off: GOOGLENET_F16_CONV=1 makes this test fail).
    const m = new GoogLeNet({ numClasses: 10, seed: 3 });
    const x = rand([8, 32, 32, 3], 5) as tf.Tensor4D;
    const y = tf.tensor1d([0, 1, 2, 3, 4, 5, 6, 7], 'int32');
    const run = () => tf.tidy(() => {
      const r = computeGradients(m, x, y, { auxWeight: 0.3, dropoutSeed: 1, lossScale: 1024 });
      return [r.logits, ...r.grads.map((g) => g.div(1024))];
    });
    const ref = fp32Scope(run);
    const half = run();
    const errs: number[] = [];
    for (let i = 0; i < ref.length; i++) {
      const e = tf.tidy(() => tf.norm(tf.sub(ref[i]!, half[i]!)).div(tf.norm(ref[i]!).add(1e-30)));
      errs.push((await e.data())[0]!);
      e.dispose();
    }
    const grads = errs.slice(1).sort((a, b) => a - b);
    expect(errs[0]).toBeLessThan(1e-3);
    expect(errs[0]).toBeGreaterThan(0);
    expect(grads[grads.length >> 1]).toBeLessThan(5e-3);
    tf.dispose([...ref, ...half, x, y]);
    m.dispose();
  }, 120_000);

  it('BatchNorm statistics stay f32 under f16: bit-identical to an fp32 run', async () => {
    const x = rand([4, 6, 6, 8], 9);
    const [ref, half] = await both(() => tf.concat(bnStats(x)!));
    expect(worst(ref, half, 1)).toBe(0);
    x.dispose();
  });

  it('fp32 precision leaves tfjs\'s own kernels in charge: matMul is exact again', async () => {
    const saved = computePrecision();
    setComputePrecision({ precision: 'fp32', note: '' });
    try {
      const a = rand([20, 30], 10);
      const b = rand([30, 10], 11);
      const [ref, plain] = await both(() => tf.matMul(a, b));
      expect(worst(ref, plain, 1)).toBe(0);
      tf.dispose([a, b]);
    } finally {
      setComputePrecision(saved);
    }
  });
});
