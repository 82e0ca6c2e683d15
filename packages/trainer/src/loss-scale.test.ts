import * as tf from '@tensorflow/tfjs';
import { describe, expect, it } from 'vitest';
import { GoogLeNet, selectBackend } from '@googlenet/model';
import type { Batch } from '@googlenet/dataloader';
import { LocalReducer } from './reducer';
import { Sgd } from './optim';
import { TrainStep } from './step';
import { allFinite, LOSS_SCALE_DEFAULTS, LossScaler, unscaleFlat } from './loss-scale';

const [SIZE, BATCH, CLASSES] = [32, 4, 10];

function batch(step: number): Batch {
  const images = Float32Array.from({ length: BATCH * SIZE * SIZE * 3 }, (_, i) => Math.sin(i * 0.37 + step * 1.3));
  const labels = Int32Array.from({ length: BATCH }, (_, i) => (i * 3 + step) % CLASSES);
  return { images, labels, size: BATCH, epoch: 0, indexInEpoch: step, slot: 0, step, indices: new Int32Array(BATCH) } as Batch;
}

/** Every weight, momentum buffer and BN statistic, copied to the host. */
const snapshot = (model: GoogLeNet, sgd: Sgd): Promise<Float32Array[]> =>
  Promise.all([...model.params.map((p) => p.variable), ...sgd.state().buffers, ...model.buffers.map((b) => b.variable)]
    .map(async (v) => Float32Array.from(await v.data())));

function maxDiff(a: Float32Array[], b: Float32Array[]): number {
  let m = 0;
  a.forEach((x, i) => x.forEach((v, j) => (m = Math.max(m, Math.abs(v - b[i]![j]!)))));
  return m;
}

/** Two steps (the first starts the momentum buffers) then one with `scaler`; the state before and after the third. */
async function thirdStep(scaler: LossScaler | undefined) {
  const model = new GoogLeNet({ numClasses: CLASSES, seed: 11 });
  const sgd = new Sgd(model.params.map((p) => p.variable), { momentum: 0.9, weightDecay: 5e-4 });
  const plain = new TrainStep(model, sgd, new LocalReducer(), { auxWeight: 0.3, accumulate: 1, batchSize: BATCH, imageSize: SIZE, seed: 5, rank: 0, replay: false });
  for (const s of [0, 1]) await plain.run(s, async () => batch(s), 0.1);
  const scaled = new TrainStep(model, sgd, new LocalReducer(), {
    auxWeight: 0.3, accumulate: 1, batchSize: BATCH, imageSize: SIZE, seed: 5, rank: 0, replay: false, ...(scaler ? { lossScaler: scaler } : {}),
  });
  const before = await snapshot(model, sgd);
  const tracked = model.numBatchesTracked;
  const tensors = tf.memory().numTensors;
  const r = await scaled.run(2, async () => batch(2), 0.1);
  const after = { state: await snapshot(model, sgd), tracked: model.numBatchesTracked, tensors: tf.memory().numTensors };
  plain.dispose();
  scaled.dispose();
  sgd.dispose();
  model.dispose();
  return { r, before, after, tracked, tensors };
}

describe('LossScaler (GradScaler\'s rule)', () => {
  it('starts at 65536, doubles after growthInterval good steps in a row, halves and restarts the count on an overflow', () => {
    expect(new LossScaler().scale).toBe(65536);
    expect(LOSS_SCALE_DEFAULTS).toEqual({ init: 65536, growthFactor: 2, backoffFactor: 0.5, growthInterval: 2000 });
    const s = new LossScaler({ growthInterval: 3 });
    expect([s.update(true), s.update(true)]).toEqual([true, true]);
    expect(s.scale).toBe(65536);
    expect(s.update(false)).toBe(false);
    expect(s.state()).toEqual({ scale: 32768, goodSteps: 0, skippedSteps: 1 });
    for (let i = 0; i < 3; i++) s.update(true);
    expect(s.state()).toEqual({ scale: 65536, goodSteps: 0, skippedSteps: 1 });
  });

  it('resumes from a saved state exactly', () => {
    const a = new LossScaler({ growthInterval: 4 });
    [true, false, true, true].forEach((f) => a.update(f));
    const b = new LossScaler({ growthInterval: 4 }, a.state());
    for (const f of [true, true, false, true]) expect(b.update(f)).toBe(a.update(f));
    expect(b.state()).toEqual(a.state());
  });

  it('unscales a flat gradient in place and finds an inf or NaN anywhere in it', () => {
    const g = Float32Array.from([65536, -131072, 0.5, 7]);
    unscaleFlat(g, 3, 65536);
    expect([...g]).toEqual([1, -2, 0.5 / 65536, 7]);
    expect(allFinite(g, 4)).toBe(true);
    expect(allFinite(Float32Array.from([1, Infinity]), 2)).toBe(false);
    expect(allFinite(Float32Array.from([NaN, 1]), 2)).toBe(false);
    expect(allFinite(Float32Array.from([1, NaN]), 1)).toBe(true);
  });
});

const webgpuWhy = await selectBackend('webgpu').then(() => '', (e: Error) => e.message);
if (webgpuWhy) {
  if (process.env.GOOGLENET_REQUIRE_WEBGPU === '1') throw new Error(`GOOGLENET_REQUIRE_WEBGPU=1 but webgpu is unavailable: ${webgpuWhy}`);
  console.warn(`SKIPPED loss scaling on webgpu (the device-resident path): ${webgpuWhy}`);
}

describe.each([
  ['wasm', 'the host path: unscaled before the exchange, checked after it', ''],
  ['webgpu', 'the device-resident path: one read of an overflow check', webgpuWhy],
])('TrainStep with dynamic loss scaling on %s (%s)', (backend, _path, why) => {
  it.skipIf(why !== '')('a forced overflow skips the step: weights, momentum and BN statistics unchanged, the scale halves', async () => {
    await selectBackend(backend as 'wasm');
    // loss x 3e38 overflows float32 (max 3.4e38): every gradient is inf or NaN.
    const scaler = new LossScaler({ init: 3e38 });
    const { r, before, after, tracked, tensors } = await thirdStep(scaler);
    expect(r.skipped).toBe(true);
    expect(r.lossScale).toBe(3e38);
    expect(Number.isFinite(r.loss)).toBe(true);
    expect(maxDiff(before, after.state)).toBe(0);
    expect(after.tracked).toBe(tracked);
    expect(scaler.state()).toEqual({ scale: 1.5e38, goodSteps: 0, skippedSteps: 1 });
    expect(after.tensors).toBe(tensors);
  }, 120_000);

  it.skipIf(why !== '')('a scale that does not overflow applies the same step as no scaling (a power of two is exact)', async () => {
    await selectBackend(backend as 'wasm');
    const scaler = new LossScaler();
    const scaled = await thirdStep(scaler);
    const plain = await thirdStep(undefined);
    expect(scaled.r.skipped).toBeUndefined();
    expect(scaled.r.loss).toBeCloseTo(plain.r.loss, 5);
    expect(maxDiff(scaled.before, scaled.after.state)).toBeGreaterThan(1e-4);
    expect(maxDiff(scaled.after.state, plain.after.state)).toBeLessThan(1e-5);
    expect(scaler.state()).toEqual({ scale: 65536, goodSteps: 1, skippedSteps: 0 });
    expect(scaled.after.tensors).toBe(scaled.tensors);
  }, 120_000);
});
