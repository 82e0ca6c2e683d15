/**
 * Gradient checks of our layers against the cpu backend's stock autodiff of their plain formulations, on any
 * backend: used by the tests (grad.test.ts on wasm, webgpu.test.ts) and by `nx run model:check-gradients`,
 * which runs the same cases where there are no tests (the GPU machine).
 */
import * as tf from '@tensorflow/tfjs';
import { selectBackend } from './backend.js';
import { BN_EPS, batchNormRelu } from './batchnorm.js';
import { conv2d } from './conv.js';
import { GoogLeNet } from './googlenet.js';
import { computeGradients } from './loss.js';
import { linear } from './linear.js';
import { concatChannels } from './native.js';
import { auxPool, maxPoolCeil, maxPoolSame3 } from './pool.js';

export type Fn = (...t: tf.Tensor[]) => tf.Tensor;

/** Deterministic test data in [-1, 1) (the library's own PRNG would make the checks circular). */
export function pseudoRandom(size: number, seed: number): Float32Array {
  const out = new Float32Array(size);
  let s = seed >>> 0 || 1;
  for (let i = 0; i < size; i++) {
    s ^= s << 13; s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5; s >>>= 0;
    out[i] = (s / 0x1_0000_0000) * 2 - 1;
  }
  return out;
}

/** max |a - b| / max |b|: a relative error that is not blown up by entries near zero. */
export function relErr(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) throw new Error(`relErr: lengths ${a.length} and ${b.length} differ`);
  let diff = 0;
  let scale = 0;
  for (let i = 0; i < a.length; i++) {
    diff = Math.max(diff, Math.abs(a[i]! - b[i]!));
    scale = Math.max(scale, Math.abs(b[i]!));
  }
  return scale === 0 ? diff : diff / scale;
}

/** [value, ...grads of sum(f(...) * r)] for a fixed random r, on the active backend (read asynchronously: webgpu). */
export async function valueAndGrads(f: Fn, shapes: number[][], seed: number, shift = 0): Promise<Float32Array[]> {
  const out = tf.tidy(() => {
    const xs = shapes.map((s, i) => tf.tensor(pseudoRandom(s.reduce((a, b) => a * b, 1), seed + i).map((v) => v + shift), s));
    const y = f(...xs);
    const r = tf.tensor(pseudoRandom(y.size, seed + 99), y.shape);
    const grads = tf.grads((...t: tf.Tensor[]) => tf.sum(tf.mul(f(...t), r)))(xs);
    return [y, ...grads];
  });
  try {
    return await Promise.all(out.map(async (t) => Float32Array.from((await t.data()) as Float32Array)));
  } finally {
    tf.dispose(out);
  }
}

/** Relative errors of `ours` on `backend` against the cpu backend's stock autodiff of `plain`: value, then grads. */
export async function compareWithCpu(backend: 'wasm' | 'webgpu' | 'cpu', ours: Fn, plain: Fn, shapes: number[][], seed: number, shift = 0): Promise<number[]> {
  await selectBackend('cpu');
  const ref = await valueAndGrads(plain, shapes, seed, shift);
  await selectBackend(backend);
  const got = await valueAndGrads(ours, shapes, seed, shift);
  return got.map((g, i) => relErr(g, ref[i]!));
}

export interface GradientCase {
  name: string;
  ours: Fn;
  plain: Fn;
  shapes: number[][];
  seed: number;
  /** Added to the random inputs (BatchNorm: an offset mean). */
  shift?: number;
  /** Copies only: the result must be bit-exact. */
  exact?: boolean;
}

const bnParams = (gamma: tf.Tensor, beta: tf.Tensor) => ({
  gamma: gamma as tf.Variable, beta: beta as tf.Variable,
  runningMean: tf.zeros([gamma.size]) as tf.Variable, runningVar: tf.ones([gamma.size]) as tf.Variable,
});

const maxPoolCase = (size: number, kind: 'ceil' | 'same'): GradientCase => {
  const plain: Fn = kind === 'same' ? (x) => tf.maxPool(x as tf.Tensor4D, 3, 1, 'same') : (x) => {
    const pad = size % 2 === 1 ? 0 : 1; // ceil mode: 9 -> 4 windows fit exactly; 10 -> the last hangs over by 1
    return tf.maxPool(tf.pad(x, [[0, 0], [0, pad], [0, pad], [0, 0]], -Infinity) as tf.Tensor4D, 3, 2, 'valid');
  };
  const ours: Fn = kind === 'same' ? (x) => maxPoolSame3(x as tf.Tensor4D) : (x) => maxPoolCeil(x as tf.Tensor4D);
  // relu first: ties between zeros, where the max's gradient must go to the same element as on cpu
  return { name: `max-pool ${size} x ${size} (${kind}): output and dx`, ours: (x) => ours(tf.relu(x)), plain: (x) => plain(tf.relu(x)), shapes: [[2, size, size, 5]], seed: 21 };
};

const convCase = (k: number, stride: number, pad: number, shape: number[] = [2, 11, 9, 5], o = 6): GradientCase => ({
  name: `conv ${k}x${k} stride ${stride} on [${shape.join(', ')}] -> ${o}: output, dx, dw`,
  ours: (x, w) => conv2d(x as tf.Tensor4D, w as tf.Tensor4D, { stride, pad }),
  plain: (x, w) => tf.conv2d(x as tf.Tensor4D, w as tf.Tensor4D, stride, pad),
  shapes: [shape, [k, k, shape[3]!, o]], seed: 31 + k,
});

/** Every custom-gradient layer of the model, on small odd shapes. */
export const GRADIENT_CASES: GradientCase[] = [
  {
    name: 'BatchNorm + ReLU in training: output, dx, dgamma, dbeta',
    ours: (x, g, b) => batchNormRelu(x as tf.Tensor4D, bnParams(g, b), true).y,
    plain: (x, g, b) => {
      const { mean, variance } = tf.moments(x, [0, 1, 2]);
      return tf.relu(tf.batchNorm4d(x as tf.Tensor4D, mean as tf.Tensor1D, variance as tf.Tensor1D, b as tf.Tensor1D, g as tf.Tensor1D, BN_EPS));
    },
    // an offset mean (0.5) and odd sizes; 2 x 7 x 5 values per channel
    shapes: [[2, 7, 5, 6], [6], [6]], seed: 3, shift: 0.5,
  },
  {
    name: 'linear: output, dx, dW, db',
    ours: (x, w, b) => linear(x as tf.Tensor2D, w as tf.Tensor2D, b as tf.Tensor1D),
    plain: (x, w, b) => tf.add(tf.matMul(x, w), b), shapes: [[3, 70], [70, 40], [40]], seed: 11,
  },
  maxPoolCase(9, 'ceil'), maxPoolCase(10, 'ceil'), maxPoolCase(7, 'same'),
  convCase(1, 1, 0), convCase(3, 1, 1), convCase(5, 1, 2), convCase(7, 2, 3),
  {
    name: 'the aux heads\' AvgPool2d(5, 3) on a 14x14 map (as two matMuls): output and dx',
    ours: (x) => auxPool(x as tf.Tensor4D), plain: (x) => tf.avgPool(x as tf.Tensor4D, 5, 3, 'valid'), shapes: [[2, 14, 14, 3]], seed: 51,
  },
  {
    name: 'channel concat: output and each part\'s gradient', exact: true,
    ours: (...t) => concatChannels(t as tf.Tensor4D[]), plain: (...t) => tf.concat(t as tf.Tensor4D[], 3),
    shapes: [[2, 3, 4, 5], [2, 3, 4, 1], [2, 3, 4, 7]], seed: 41,
  },
];

/** Shapes GoogLeNet itself has (channel counts, reduce -> expand pairs, conv1 on RGB): GPU kernels tile by them. */
export const MODEL_SHAPE_CASES: GradientCase[] = [
  convCase(1, 1, 0, [2, 2, 2, 832], 128),
  convCase(3, 1, 1, [2, 4, 4, 96], 208),
  convCase(5, 1, 2, [2, 4, 4, 16], 48),
  convCase(7, 2, 3, [2, 16, 16, 3], 64),
  { ...GRADIENT_CASES[0]!, name: 'BatchNorm + ReLU on [4, 7, 7, 64]', shapes: [[4, 7, 7, 64], [64], [64]] },
  { ...maxPoolCase(14, 'ceil'), shapes: [[2, 14, 14, 64]] },
];

/** One row per case: the worst relative error over the value and every gradient. */
export async function runGradientChecks(backend: 'wasm' | 'webgpu' | 'cpu', cases: GradientCase[]): Promise<{ name: string; worst: number; exact: boolean }[]> {
  const rows = [];
  for (const c of cases) {
    const errs = await compareWithCpu(backend, c.ours, c.plain, c.shapes, c.seed, c.shift);
    rows.push({ name: c.name, worst: Math.max(...errs), exact: c.exact === true });
  }
  return rows;
}

/**
 * The whole model's loss and gradients on `backend` against cpu, same weights and batch: the loss's relative
 * difference and one relative error over all gradients together (||g - g_cpu|| / ||g_cpu||). Per-layer checks
 * are the strict test; this one is ill-conditioned: deep maps are a few pixels wide at these image sizes and
 * BatchNorm runs on near-constant channels, so 1/sqrt(var + eps) (up to ~300) amplifies summation-order
 * differences. Measured against cpu (2026-11-28): 64 px wasm 1.0e-4, webgpu 5.6e-3; 128 px wasm 1.1e-2,
 * webgpu 3.6e-3; the loss agrees to ~1e-6 in every case.
 */
export async function modelGradientAgreement(backend: 'wasm' | 'webgpu', opts: { batchSize: number; imageSize: number }): Promise<{ lossRel: number; gradRel: number; statsRel: number }> {
  const run = async (name: 'cpu' | 'wasm' | 'webgpu') => {
    await selectBackend(name);
    const model = new GoogLeNet({ numClasses: 10, seed: 3 });
    const { batchSize: b, imageSize: s } = opts;
    const x = tf.tensor4d(pseudoRandom(b * s * s * 3, 21), [b, s, s, 3]);
    const y = tf.tensor1d(Array.from({ length: b }, (_, i) => i % 10), 'int32');
    const r = computeGradients(model, x, y, { auxWeight: 0.3, dropoutSeed: 0 });
    const grads = await Promise.all(r.grads.map(async (g) => Float32Array.from((await g.data()) as Float32Array)));
    const stats = await Promise.all(r.runningStats.map(async (g) => Float32Array.from((await g.data()) as Float32Array)));
    const loss = (await r.loss.data())[0]!;
    tf.dispose([x, y, r.loss, r.logits, ...r.grads, ...r.runningStats]);
    model.dispose();
    return { grads, loss, stats };
  };
  const ref = await run('cpu');
  const got = await run(backend);
  let num = 0;
  let den = 0;
  ref.grads.forEach((g, i) => {
    const h = got.grads[i]!;
    for (let j = 0; j < g.length; j++) {
      num += (h[j]! - g[j]!) ** 2;
      den += g[j]! ** 2;
    }
  });
  // The BatchNorm running statistics the step would assign: a forward quantity, well conditioned.
  const statsRel = Math.max(...ref.stats.map((s, i) => relErr(got.stats[i]!, s)));
  return { lossRel: Math.abs(got.loss - ref.loss) / Math.abs(ref.loss), gradRel: Math.sqrt(num / den), statsRel };
}
