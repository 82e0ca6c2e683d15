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

describe('SGD from a flat gradient buffer', () => {
  it.each([true, false])('updates weights and momentum in place on wasm with the same bits as the tensor path (native kernels: %s)', async (native) => {
    const { selectBackend, setNativeEnabled, nativeActive } = await import('@googlenet/model');
    await selectBackend('wasm');
    setNativeEnabled(native);
    if (native && !nativeActive()) throw new Error('the native kernels are not built: run `npm rebuild @googlenet/model` (needs g++)');
    const shapes = [[3, 4], [5]];
    const init = shapes.map((s, i) => Float32Array.from({ length: s.reduce((a, b) => a * b) }, (_, k) => Math.sin(k + 10 * i)));
    const make = () => init.map((v, i) => tf.tidy(() => tf.variable(tf.tensor(v, shapes[i]!))));
    const a = make();
    const b = make();
    const sa = new Sgd(a, { momentum: 0.9, weightDecay: 1e-4 });
    const sb = new Sgd(b, { momentum: 0.9, weightDecay: 1e-4 });
    const offsets = [0, 12];
    // The in-place path needs weights and buffers that own their memory.
    const { wasmView } = await import('./host');
    expect([...a, ...sa.state().buffers].every((v) => wasmView(v) !== undefined)).toBe(true);
    for (let step = 0; step < 3; step++) {
      const flat = Float32Array.from({ length: 17 }, (_, k) => Math.cos(k * (step + 1)));
      sa.stepFlat(flat, offsets, 0.05);
      const grads = [tf.tensor(flat.slice(0, 12), [3, 4]), tf.tensor(flat.slice(12), [5])];
      sb.step(grads, 0.05);
      tf.dispose(grads);
    }
    a.forEach((v, i) => expect(Buffer.from((v.dataSync() as Float32Array).buffer).equals(Buffer.from((b[i]!.dataSync() as Float32Array).buffer))).toBe(true));
    sa.state().buffers.forEach((v, i) => expect(Array.from(v.dataSync())).toEqual(Array.from(sb.state().buffers[i]!.dataSync())));
    [sa, sb].forEach((s) => s.dispose());
    [...a, ...b].forEach((v) => v.dispose());
    setNativeEnabled(true);
  });
});

// webgpu's SGD runs as in-place kernels; CI has Mesa's lavapipe as its adapter (see .ci/run).
const { selectBackend: probe } = await import('@googlenet/model');
const webgpuWhy = await probe('webgpu').then(() => '', (e: Error) => e.message);
if (webgpuWhy) {
  if (process.env.GOOGLENET_REQUIRE_WEBGPU === '1') throw new Error(`GOOGLENET_REQUIRE_WEBGPU=1 but webgpu is unavailable: ${webgpuWhy}`);
  console.warn(`SKIPPED webgpu SGD test: ${webgpuWhy}`);
}

describe.skipIf(!!webgpuWhy)('SGD from a flat gradient buffer on webgpu', () => {
  it.each([0.9, 0])('updates weights and momentum in place on the GPU as the cpu tensor path does (momentum %s)', async (momentum) => {
    const { selectBackend, countDispatches } = await import('@googlenet/model');
    const shapes = [[3, 4], [5], [2, 2, 3]];
    const sizes = shapes.map((s) => s.reduce((a, b) => a * b));
    const offsets = [0, 12, 17];
    const init = shapes.map((s, i) => Float32Array.from({ length: sizes[i]! }, (_, k) => Math.sin(k + 10 * i)));
    const flats = [0, 1, 2].map((step) => Float32Array.from({ length: 29 }, (_, k) => Math.cos(k * (step + 1))));
    const run = async (backend: 'cpu' | 'webgpu') => {
      await selectBackend(backend);
      const vars = init.map((v, i) => tf.tidy(() => tf.variable(tf.tensor(v, shapes[i]!))));
      const sgd = new Sgd(vars, { momentum, weightDecay: 1e-4 });
      const before = tf.memory().numTensors;
      const dispatched = backend === 'webgpu' ? countDispatches() : () => 0;
      const d0 = dispatched();
      for (const flat of flats) {
        if (backend === 'webgpu') sgd.stepFlat(flat, offsets, 0.05);
        else {
          const grads = vars.map((v, i) => tf.tensor(flat.slice(offsets[i]!, offsets[i]! + v.size), v.shape));
          sgd.step(grads, 0.05);
          tf.dispose(grads);
        }
      }
      const counts = tf.memory().numTensors - before;
      // Our kernels, not the fallback: per parameter one momentum and one weight dispatch (one without momentum).
      if (backend === 'webgpu') expect(dispatched() - d0).toBe(flats.length * shapes.length * (momentum ? 2 : 1));
      const out = await Promise.all([...vars, ...sgd.state().buffers].map(async (v) => Array.from(await v.data())));
      sgd.dispose();
      vars.forEach((v) => v.dispose());
      return { out, counts };
    };
    const ref = await run('cpu');
    const got = await run('webgpu');
    expect(got.counts).toBe(0); // in place: no tensor survives a step
    got.out.forEach((vals, i) => vals.forEach((v, j) => expect(v).toBeCloseTo(ref.out[i]![j]!, 6)));
  });
});
