import * as tf from '@tensorflow/tfjs';
import { describe, expect, it } from 'vitest';
import { GoogLeNet, selectBackend } from '@googlenet/model';
import type { Batch } from '@googlenet/dataloader';
import { LocalReducer } from './reducer';
import { Sgd } from './optim';
import { TrainStep, type TrainStepOptions } from './step';

const [SIZE, BATCH, CLASSES] = [32, 4, 10];

function batch(step: number): Batch {
  const images = Float32Array.from({ length: BATCH * SIZE * SIZE * 3 }, (_, i) => Math.sin(i * 0.37 + step * 1.3));
  const labels = Int32Array.from({ length: BATCH }, (_, i) => (i * 3 + step) % CLASSES);
  return { images, labels, size: BATCH, epoch: 0, indexInEpoch: step, slot: 0, step, indices: new Int32Array(BATCH) } as Batch;
}

/** Plain SGD (no momentum, no decay) so that a step moves the weights by exactly lr x the applied gradient. */
async function oneStep(opts: Partial<TrainStepOptions>, lr = 0.1): Promise<{ loss: number; moved: number; tensors: number[] }> {
  const model = new GoogLeNet({ numClasses: CLASSES, seed: 11 });
  const vars = model.params.map((p) => p.variable);
  const before = vars.map((v) => Float32Array.from(v.dataSync()));
  const sgd = new Sgd(vars, { momentum: 0, weightDecay: 0 });
  const step = new TrainStep(model, sgd, new LocalReducer(), { auxWeight: 0.3, accumulate: 1, batchSize: BATCH, imageSize: SIZE, seed: 5, rank: 0, ...opts });
  const r = await step.run(0, async () => batch(0), lr);
  const tensors = [tf.memory().numTensors];
  let sq = 0;
  vars.forEach((v, i) => v.dataSync().forEach((x, j) => (sq += (x - before[i]![j]!) ** 2)));
  await step.run(1, async () => batch(1), lr);
  tensors.push(tf.memory().numTensors);
  step.dispose();
  sgd.dispose();
  model.dispose();
  return { loss: r.loss, moved: Math.sqrt(sq), tensors };
}

describe('TrainStep with the training features', () => {
  it('--clip-grad-norm: the step moves the weights by lr x the clipped norm, and numTensors stays flat', async () => {
    await selectBackend('wasm');
    const free = await oneStep({});
    const clipped = await oneStep({ clipGradNorm: 1e-3 });
    // The whole gradient's norm is far above 1e-3 here, so it is clipped to exactly 1e-3.
    expect(free.moved).toBeGreaterThan(100 * 0.1 * 1e-3);
    expect(clipped.moved / (0.1 * 1e-3)).toBeCloseTo(1, 3);
    expect(clipped.tensors[1]).toBe(clipped.tensors[0]);
  }, 120_000);

  it('--label-smoothing reaches the loss of the step', async () => {
    await selectBackend('wasm');
    const plain = await oneStep({});
    const smoothed = await oneStep({ labelSmoothing: 0.1 });
    // Freshly initialised logits are nearly uniform, where smoothing changes CE least: ~2e-4 here, 500x float32's step at 3.7.
    expect(Math.abs(smoothed.loss - plain.loss)).toBeGreaterThan(1e-5);
  }, 120_000);
});
