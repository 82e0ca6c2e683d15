/**
 * A replayed webgpu step (@googlenet/model's webgpu-replay: the step captured once at the WebGPU API level and
 * re-issued without tfjs) must train exactly as the normal path. CI runs this on Mesa's lavapipe (.ci/run);
 * without any adapter it says that it skipped, and fails where GOOGLENET_REQUIRE_WEBGPU=1.
 */
import * as tf from '@tensorflow/tfjs';
import { describe, expect, it } from 'vitest';
import { GoogLeNet, selectBackend } from '@googlenet/model';
import type { Batch } from '@googlenet/dataloader';
import { Sgd } from './optim';
import { LocalReducer } from './reducer';
import { TrainStep, type StepResult } from './step';

const webgpuWhy = await selectBackend('webgpu').then(() => '', (e: Error) => e.message);
if (webgpuWhy) {
  if (process.env.GOOGLENET_REQUIRE_WEBGPU === '1') throw new Error(`GOOGLENET_REQUIRE_WEBGPU=1 but webgpu is unavailable: ${webgpuWhy}`);
  console.warn(`SKIPPED webgpu step replay test: ${webgpuWhy}`);
}

const TOL = 1e-4; // the bound of the other webgpu tests (webgpu.test.ts)
const SIZE = 32;
const BATCH = 4;
const CLASSES = 10;

/** A different deterministic batch per step, as the loader would hand them (one reused buffer). */
function batches(): () => Promise<Batch> {
  const images = new Float32Array(BATCH * SIZE * SIZE * 3);
  const labels = new Int32Array(BATCH);
  let step = 0;
  return async () => {
    for (let i = 0; i < images.length; i++) images[i] = Math.sin(i * 0.37 + step * 1.3);
    for (let i = 0; i < BATCH; i++) labels[i] = (i * 3 + step) % CLASSES;
    const b = { images, labels, size: BATCH, epoch: 0, indexInEpoch: step, slot: 0, step, indices: new Int32Array(BATCH) };
    step++;
    return b;
  };
}

/** `between(step)` runs after each step (both runs do the same): e.g. reassign a variable, as loading a checkpoint does. */
async function train(replay: boolean, steps: number, between?: (s: number, model: GoogLeNet) => void): Promise<{ results: StepResult[]; state: Float32Array[]; tensors: number[] }> {
  const model = new GoogLeNet({ numClasses: CLASSES, seed: 11 });
  const sgd = new Sgd(model.params.map((p) => p.variable), { momentum: 0.9, weightDecay: 1e-4 });
  const step = new TrainStep(model, sgd, new LocalReducer(), { auxWeight: 0.3, accumulate: 1, batchSize: BATCH, imageSize: SIZE, seed: 5, rank: 0, replay });
  const next = batches();
  const results: StepResult[] = [];
  const tensors: number[] = [];
  // A changing learning rate: a replay must take each step's, not the captured one.
  for (let s = 0; s < steps; s++) {
    results.push(await step.run(s, next, 0.05 / (1 + s)));
    between?.(s, model);
    tensors.push(tf.memory().numTensors);
  }
  const vars = [...model.params, ...model.buffers].map((p) => p.variable).concat(sgd.state().buffers);
  const state = await Promise.all(vars.map(async (v) => Float32Array.from((await v.data()) as Float32Array)));
  step.dispose();
  sgd.dispose();
  model.dispose();
  return { results, state, tensors };
}

describe.skipIf(!!webgpuWhy)('webgpu step replay', () => {
  it('5 steps with replay give the weights, BN statistics, momentum and losses of 5 normal steps; numTensors flat', async () => {
    await selectBackend('webgpu');
    const normal = await train(false, 5);
    const replayed = await train(true, 5);
    // Steps 0-2 run through tfjs (warm-up, two captures), 3 and 4 are replays.
    expect(replayed.results.map((r) => !!r.replayed)).toEqual([false, false, false, true, true]);
    expect(normal.results.some((r) => r.replayed)).toBe(false);
    expect(replayed.results[3]!.dispatches).toBe(normal.results[3]!.dispatches);
    let worst = 0;
    replayed.state.forEach((v, i) => {
      const ref = normal.state[i]!;
      for (let k = 0; k < v.length; k++) worst = Math.max(worst, Math.abs(v[k]! - ref[k]!) / Math.max(1, Math.abs(ref[k]!)));
    });
    expect(worst).toBeLessThanOrEqual(TOL);
    replayed.results.forEach((r, i) => {
      expect(Math.abs(r.loss - normal.results[i]!.loss)).toBeLessThanOrEqual(TOL * Math.max(1, normal.results[i]!.loss));
      expect(r.top1).toBe(normal.results[i]!.top1);
    });
    expect(new Set(replayed.tensors).size).toBe(1);
    console.log(`replay vs normal after 5 steps: largest relative difference ${worst}`);
  }, 300_000);

  it('a variable reassigned between steps (a checkpoint load) stops the replay, the step runs through tfjs, and replay resumes later with the same weights', async () => {
    await selectBackend('webgpu');
    // After step 3 (a replay) the first conv's weights are reassigned to their own values times 0.5.
    const halve = (s: number, model: GoogLeNet) => {
      if (s === 3) tf.tidy(() => model.params[0]!.variable.assign(tf.mul(model.params[0]!.variable, 0.5)));
    };
    const normal = await train(false, 10, halve);
    const replayed = await train(true, 10, halve);
    // 4: refused, run through tfjs; 5: warm-up; 6, 7: captures; 8, 9: replays.
    expect(replayed.results.map((r) => !!r.replayed)).toEqual([false, false, false, true, false, false, false, false, true, true]);
    expect(replayed.results[4]!.note).toMatch(/captured again later \(a tensor the step reads was reassigned/);
    let worst = 0;
    replayed.state.forEach((v, i) => {
      const ref = normal.state[i]!;
      for (let k = 0; k < v.length; k++) worst = Math.max(worst, Math.abs(v[k]! - ref[k]!) / Math.max(1, Math.abs(ref[k]!)));
    });
    expect(worst).toBeLessThanOrEqual(TOL);
    expect(new Set(replayed.tensors).size).toBe(1);
  }, 600_000);
});
