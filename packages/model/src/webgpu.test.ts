/**
 * The webgpu backend (Dawn's Node binding) on whatever adapter this machine has. CI has no GPU but installs
 * Mesa's lavapipe, a Vulkan driver on the CPU (.ci/run), so these run there on a software adapter; without
 * any adapter they say loudly that they skipped, and fail where GOOGLENET_REQUIRE_WEBGPU=1.
 */
import { describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { selectBackend, type BackendInfo } from './backend.js';
import { GRADIENT_CASES, MODEL_SHAPE_CASES, modelGradientAgreement, runGradientChecks } from './gradient-check.js';
import { GoogLeNet } from './googlenet.js';
import { maxPoolCeil, maxPoolSame3 } from './pool.js';
import { randomInput, relErr, sgdOnFixedBatch } from './test-utils.js';

let info: BackendInfo | undefined;
let why = '';
try {
  info = await selectBackend('webgpu');
} catch (e) {
  why = (e as Error).message;
}
if (!info) {
  if (process.env.GOOGLENET_REQUIRE_WEBGPU === '1') throw new Error(`GOOGLENET_REQUIRE_WEBGPU=1 but webgpu is unavailable: ${why}`);
  console.warn(`SKIPPED webgpu tests: ${why}`);
}

const TOL = 1e-4; // the bound; measured errors are ~1e-7 to 1e-6

describe.skipIf(!info)('webgpu backend', () => {
  it('names the adapter (vendor, description) in the backend line', () => {
    expect(info!.name).toBe('webgpu');
    expect(info!.adapter).toBeDefined();
    expect(info!.line).toContain(info!.adapter!.vendor);
    expect(info!.line).toMatch(/^backend: webgpu on /);
  });

  it(`every layer's value and gradients match cpu autodiff within ${TOL} (small and GoogLeNet shapes)`, async () => {
    const rows = await runGradientChecks('webgpu', [...GRADIENT_CASES, ...MODEL_SHAPE_CASES]);
    for (const r of rows) expect(r.worst, r.name).toBeLessThanOrEqual(r.exact ? 0 : TOL);
    expect(rows.length).toBe(GRADIENT_CASES.length + MODEL_SHAPE_CASES.length);
  }, 120_000);

  it('conv gradients split the batch into chunks when im2col would exceed the binding limit, with the same result', async () => {
    const cases = MODEL_SHAPE_CASES.filter((c) => c.name.startsWith('conv') && !c.name.startsWith('conv 1x1'));
    process.env.GOOGLENET_WEBGPU_MAX_BINDING = '4096'; // one image per chunk for every case
    try {
      const rows = await runGradientChecks('webgpu', cases);
      for (const r of rows) expect(r.worst, r.name).toBeLessThanOrEqual(TOL);
    } finally {
      delete process.env.GOOGLENET_WEBGPU_MAX_BINDING;
    }
  }, 120_000);

  it('max-pool ties send the gradient to the first maximum, as cpu and PyTorch (the stock kernel picks the last)', async () => {
    const grads: Record<string, number[]> = {};
    for (const backend of ['cpu', 'webgpu'] as const) {
      await selectBackend(backend);
      for (const [name, pool] of [['ceil', maxPoolCeil], ['same', maxPoolSame3]] as const) {
        const g = tf.tidy(() => tf.grad((t: tf.Tensor) => tf.sum(pool(t as tf.Tensor4D)))(tf.ones([2, 5, 5, 3])));
        grads[`${backend} ${name}`] = Array.from(await g.data());
        g.dispose();
      }
    }
    expect(grads['webgpu ceil']).toEqual(grads['cpu ceil']);
    expect(grads['webgpu same']).toEqual(grads['cpu same']);
    expect(grads['cpu same']!.slice(0, 3)).toEqual([4, 4, 4]); // the top-left element wins every window it is in
  });

  it('the whole model: loss and running statistics as cpu, all gradients within the conditioning of small images (see gradient-check.ts)', async () => {
    const r = await modelGradientAgreement('webgpu', { batchSize: 4, imageSize: 64 });
    expect(r.lossRel).toBeLessThan(1e-5);
    expect(r.gradRel).toBeLessThan(2e-2);
    expect(r.statsRel).toBeLessThan(1e-4); // running mean/var (our one-dispatch update)
  }, 120_000);

  it('inference (BatchNorm with running statistics in one kernel) gives cpu\'s logits', async () => {
    const logits: Float32Array[] = [];
    for (const backend of ['cpu', 'webgpu'] as const) {
      await selectBackend(backend);
      const model = new GoogLeNet({ numClasses: 10, seed: 5, aux: false });
      // Non-trivial running statistics, as after training.
      model.buffers.forEach((b, i) => b.variable.assign(tf.add(tf.onesLike(b.variable), (i % 2 === 0 ? -0.5 : 0.5) * Math.sin(i))));
      const x = randomInput([2, 64, 64, 3], 9);
      const out = model.forward(x, { training: false }).main;
      logits.push(Float32Array.from(await out.data()));
      tf.dispose([x, out]);
      model.dispose();
    }
    expect(relErr(logits[1]!, logits[0]!)).toBeLessThan(1e-4);
  });

  it('trains: SGD steps lower the loss on a fixed batch and tf.memory().numTensors stays flat', async () => {
    await selectBackend('webgpu');
    const model = new GoogLeNet({ numClasses: 4, seed: 3 });
    const x = randomInput([8, 32, 32, 3], 21);
    const labels = tf.tensor1d([0, 1, 2, 3, 0, 1, 2, 3], 'int32');
    const { losses, counts } = await sgdOnFixedBatch(model, x, labels, 5);
    expect(new Set(counts).size).toBe(1);
    expect(losses[losses.length - 1]!).toBeLessThan(losses[0]! * 0.7);
    tf.dispose([x, labels]);
    model.dispose();
  }, 120_000);
});
