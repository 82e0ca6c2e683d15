import * as tf from '@tensorflow/tfjs';
import { describe, expect, it } from 'vitest';
import { Sgd } from './optim';

describe('SGD with momentum and weight decay', () => {
  it('follows torch.optim.SGD step for step (buffer = first gradient, then momentum*buf + g + wd*w)', async () => {
    await tf.setBackend('cpu');
    const w = tf.variable(tf.tensor1d([1, -2, 0.5]));
    const sgd = new Sgd([w], { momentum: 0.9, weightDecay: 0.1 });
    const grads = [[0.5, 1, -1], [0.2, -0.4, 0.3], [0, 0, 1]];
    // Reference, written out as PyTorch computes it in float64.
    let ref = [1, -2, 0.5];
    let buf: number[] | undefined;
    for (const g of grads) {
      const d = g.map((x, i) => x + 0.1 * ref[i]!);
      buf = buf ? buf.map((b, i) => 0.9 * b + d[i]!) : d;
      ref = ref.map((x, i) => x - 0.05 * buf![i]!);
      const t = tf.tensor1d(g);
      sgd.step([t], 0.05);
      t.dispose();
    }
    Array.from(w.dataSync()).forEach((v, i) => expect(v).toBeCloseTo(ref[i]!, 6));
    expect(sgd.state().started).toBe(true);
    const before = tf.memory().numTensors;
    const t = tf.tensor1d([1, 1, 1]);
    sgd.step([t], 0.01);
    t.dispose();
    expect(tf.memory().numTensors).toBe(before);
    sgd.dispose();
    w.dispose();
  });
});

/** Two identical sets of weights (sin values) with an SGD each (momentum 0.9, weight decay 1e-4): one path against the other. */
function twins(shapes: number[][], nesterov: boolean): { a: tf.Variable[]; b: tf.Variable[]; sa: Sgd; sb: Sgd } {
  const init = shapes.map((s, i) => Float32Array.from({ length: s.reduce((x, y) => x * y) }, (_, k) => Math.sin(k + 10 * i)));
  const make = () => init.map((v, i) => tf.tidy(() => tf.variable(tf.tensor(v, shapes[i]!))));
  const a = make(), b = make();
  const opts = { momentum: 0.9, weightDecay: 1e-4, nesterov };
  return { a, b, sa: new Sgd(a, opts), sb: new Sgd(b, opts) };
}

describe('SGD from a flat gradient buffer', () => {
  it.each([[true, false], [false, false], [true, true], [false, true]])('updates weights and momentum in place on wasm with the same bits as the tensor path (native kernels: %s, Nesterov: %s)', async (native, nesterov) => {
    const { selectBackend, setNativeEnabled, nativeActive, nativeProfile } = await import('@googlenet/model');
    await selectBackend('wasm');
    setNativeEnabled(native);
    if (native && !nativeActive()) throw new Error('the native kernels are not built: run `npm rebuild @googlenet/model` (needs g++)');
    const { a, b, sa, sb } = twins([[3, 4], [5]], nesterov);
    const offsets = [0, 12];
    // The in-place path needs weights and buffers that own their memory.
    const { wasmView } = await import('./host');
    expect([...a, ...sa.state().buffers].every((v) => wasmView(v) !== undefined)).toBe(true);
    nativeProfile(true);
    for (let step = 0; step < 3; step++) {
      const flat = Float32Array.from({ length: 17 }, (_, k) => Math.cos(k * (step + 1)));
      sa.stepFlat(flat, offsets, 0.05);
      const grads = [tf.tensor(flat.slice(0, 12), [3, 4]), tf.tensor(flat.slice(12), [5])];
      sb.step(grads, 0.05);
      tf.dispose(grads);
    }
    // The native kernel did the steps when enabled (Nesterov included), and never when disabled.
    expect(nativeProfile(true).find((r) => r.name === 'native sgd')?.calls ?? 0).toBe(native ? 3 : 0);
    a.forEach((v, i) => expect(Buffer.from((v.dataSync() as Float32Array).buffer).equals(Buffer.from((b[i]!.dataSync() as Float32Array).buffer))).toBe(true));
    sa.state().buffers.forEach((v, i) => expect(Array.from(v.dataSync())).toEqual(Array.from(sb.state().buffers[i]!.dataSync())));
    [sa, sb].forEach((s) => s.dispose());
    [...a, ...b].forEach((v) => v.dispose());
    setNativeEnabled(true);
  });
});

describe('SGD on the mean of gathered gradients (stepMeanOf: the shared-memory plane\'s views)', () => {
  it.each([[1, false], [2, false], [3, false], [2, true]])('%s rank(s), Nesterov %s: the same bits as the exact mean (referenceMean) through stepFlat, step after step', async (ranks, nesterov) => {
    const { selectBackend, setNativeEnabled, nativeActive, nativeProfile } = await import('@googlenet/model');
    const { referenceMean } = await import('@googlenet/coordinator');
    await selectBackend('wasm');
    setNativeEnabled(true);
    if (!nativeActive()) throw new Error('the native kernels are not built: run `npm rebuild @googlenet/model` (needs g++)');
    const { a, b, sa, sb } = twins([[3, 4], [5], [2, 700]], nesterov);
    // Offsets as in the trainer's vector, with room after the parameters (the running statistics live there).
    const offsets = [0, 12, 17];
    nativeProfile(true);
    for (let step = 0; step < 3; step++) {
      // Values whose float64 sum needs the one final rounding (an fp32 running sum would differ in the last bit).
      const slots = Array.from({ length: ranks }, (_, r) => Float32Array.from({ length: 1430 }, (_, k) => Math.cos(k * (step + 1) + r) * (1 + r * 1e-3)));
      expect(sa.stepMeanOf(slots, offsets, 0.05)).toBe(true);
      const mean = new Float32Array(1430);
      referenceMean(slots, mean);
      sb.stepFlat(mean, offsets, 0.05);
    }
    expect(nativeProfile(true).find((r) => r.name === 'native sgdMean')?.calls ?? 0).toBe(3);
    a.forEach((v, i) => expect(Buffer.from((v.dataSync() as Float32Array).buffer).equals(Buffer.from((b[i]!.dataSync() as Float32Array).buffer)), `weight ${i}`).toBe(true));
    sa.state().buffers.forEach((v, i) => expect(Buffer.from((v.dataSync() as Float32Array).buffer).equals(Buffer.from((sb.state().buffers[i]!.dataSync() as Float32Array).buffer))).toBe(true));
    [sa, sb].forEach((s) => s.dispose());
    [...a, ...b].forEach((v) => v.dispose());
  });

  it('declines (false, nothing changed) where the native kernels do not run', async () => {
    const { selectBackend, setNativeEnabled } = await import('@googlenet/model');
    await selectBackend('wasm');
    setNativeEnabled(false);
    try {
      const w = tf.variable(tf.tensor1d([1, 2]));
      const sgd = new Sgd([w], { momentum: 0.9, weightDecay: 0 });
      expect(sgd.stepMeanOf([Float32Array.of(1, 1)], [0], 0.1)).toBe(false);
      expect(Array.from(w.dataSync())).toEqual([1, 2]);
      expect(sgd.state().started).toBe(false);
      sgd.dispose();
      w.dispose();
    } finally {
      setNativeEnabled(true);
    }
  });
});

// webgpu's SGD runs as in-place kernels; CI has Mesa's lavapipe as its adapter (see .ci/run).
const { selectBackend: probe } = await import('@googlenet/model');
const webgpuWhy = await probe('webgpu').then(() => '', (e: Error) => e.message);
if (webgpuWhy) {
  if (process.env.GOOGLENET_REQUIRE_WEBGPU === '1') throw new Error(`GOOGLENET_REQUIRE_WEBGPU=1 but webgpu is unavailable: ${webgpuWhy}`);
  console.warn(`SKIPPED webgpu SGD test: ${webgpuWhy}`);
}

describe.skipIf(!!webgpuWhy)('SGD on webgpu', () => {
  // 7 parameters of mixed sizes: several grouped dispatches, a partial last group, sizes not multiples of 256.
  const shapes = [[3, 4], [5], [2, 2, 3], [300], [17, 19], [1], [64, 5]];
  const sizes = shapes.map((s) => s.reduce((a, b) => a * b));
  const offsets = sizes.map((_, i) => sizes.slice(0, i).reduce((a, b) => a + b, 0));
  const total = sizes.reduce((a, b) => a + b);
  const init = shapes.map((s, i) => Float32Array.from({ length: sizes[i]! }, (_, k) => Math.sin(k + 10 * i)));
  const flats = [0, 1, 2].map((step) => Float32Array.from({ length: total }, (_, k) => Math.cos(k * (step + 1))));

  const run = async (backend: 'cpu' | 'webgpu', momentum: number, input: 'flat' | 'tensors') => {
    const { selectBackend, countDispatches } = await import('@googlenet/model');
    await selectBackend(backend);
    const vars = init.map((v, i) => tf.tidy(() => tf.variable(tf.tensor(v, shapes[i]!))));
    const sgd = new Sgd(vars, { momentum, weightDecay: 1e-4 });
    const before = tf.memory().numTensors;
    const dispatched = backend === 'webgpu' ? countDispatches() : () => 0;
    const d0 = dispatched();
    for (const flat of flats) {
      if (backend === 'webgpu' && input === 'flat') sgd.stepFlat(flat, offsets, 0.05);
      else {
        const grads = vars.map((v, i) => tf.tensor(flat.slice(offsets[i]!, offsets[i]! + v.size), v.shape));
        if (backend === 'webgpu') sgd.stepDevice(grads, 0.05);
        else sgd.step(grads, 0.05);
        tf.dispose(grads);
      }
    }
    const counts = tf.memory().numTensors - before;
    const calls = dispatched() - d0;
    const out = await Promise.all([...vars, ...sgd.state().buffers].map(async (v) => Array.from(await v.data())));
    sgd.dispose();
    vars.forEach((v) => v.dispose());
    return { out, counts, calls };
  };

  it.each([[0.9, 'flat'], [0, 'flat'], [0.9, 'tensors'], [0, 'tensors']] as const)(
    'updates weights and momentum in place as the cpu tensor path does (momentum %s, gradients as %s)', async (momentum, input) => {
      const ref = await run('cpu', momentum, input);
      const got = await run('webgpu', momentum, input);
      expect(got.counts).toBe(0); // in place: no tensor survives a step
      // Our grouped kernels, not the fallback: 3 parameters per dispatch from a flat upload, 2 from tensors.
      expect(got.calls).toBe(flats.length * Math.ceil(shapes.length / (input === 'flat' ? 3 : 2)));
      got.out.forEach((vals, i) => vals.forEach((v, j) => expect(v).toBeCloseTo(ref.out[i]![j]!, 6)));
    });
});
