/**
 * fp32 against f16 on the same batches, in one process: the learning test (precision-learning.test.ts) and the
 * diagnosis bench (bench/f16-diagnose.ts). Each run builds GoogLeNet from the same seed, takes the same
 * pre-rendered synthetic batches in the same order (pad-crop augmentation keyed by the seed, rendered once), the
 * same dropout masks (TrainStep derives them from seed and step), and is scored on the same held-out images.
 * What differs is only what a variant asks for: the f16 kernels, the loss scaler, forced skips, noise.
 */
import * as tf from '@tensorflow/tfjs';
import { GoogLeNet, googlenetLoss, loadStateDict, type HostTensor } from '@googlenet/model';
import { createDataLoader, type Batch } from '@googlenet/dataloader';
import { LocalReducer } from './reducer';
import { Sgd } from './optim';
import { TrainStep, correctCounts } from './step';
import { LossScaler, type LossScaleOptions } from './loss-scale';

export interface CompareData {
  imageSize: number;
  batchSize: number;
  seed: number;
  /** One training batch per step, copied out of the loader. */
  train: Batch[];
  /** The whole test split, in batches of 50. */
  test: Batch[];
}

/** Renders `steps` training batches and the test split of the synthetic data set (train/test sample counts). */
export async function syntheticData(o: { steps: number; batchSize: number; imageSize: number; seed: number; trainSamples: number; testSamples: number }): Promise<CompareData> {
  const take = async (split: 'train' | 'test', count: number, batchSize: number) => {
    const loader = await createDataLoader({
      dataset: 'synthetic', split, imageSize: o.imageSize, batchSize, rank: 0, worldSize: 1, seed: o.seed,
      shuffle: split === 'train', augment: split === 'train' ? 'pad-crop' : 'none', pad: split === 'train', dropLast: false,
      threads: 0, onBadSample: 'skip', syntheticSize: { train: o.trainSamples, test: o.testSamples },
    });
    const out: Batch[] = [];
    try {
      for (let i = 0; i < count; i++) {
        const b = await loader.next();
        if (!b || b.size === 0) break;
        out.push({ ...b, images: b.images.slice(), labels: b.labels.slice() }); // the loader reuses its buffers
      }
    } finally {
      await loader.close();
    }
    return out;
  };
  return { imageSize: o.imageSize, batchSize: o.batchSize, seed: o.seed, train: await take('train', o.steps, o.batchSize), test: await take('test', Infinity, 50) };
}

export interface RunOptions {
  lr: number;
  momentum: number;
  weightDecay?: number;
  /** Dynamic loss scaling with these options (GradScaler's defaults for {}); absent: none. */
  lossScale?: Partial<LossScaleOptions>;
  /** The first `skipFirst` steps are computed and then undone, as an overflow skip would (a control for f16's skips). */
  skipFirst?: number;
  /** Progress every 20 steps. */
  log?: (line: string) => void;
  /** Start from these weights and BN statistics (a stateDict) instead of the seed's initialisation. */
  init?: Map<string, HostTensor>;
  /** Called with the trained model before it is disposed (e.g. to copy its weights). */
  inspect?: (model: GoogLeNet) => Promise<void>;
}

export interface RunResult {
  top1: number;
  evalLoss: number;
  /** Steps skipped by the scaler or by skipFirst. */
  skipped: number;
  /** Training loss of each step. */
  losses: number[];
  /** The loss scale of each step (0: none). */
  scales: number[];
  msPerStep: number;
}

/** One training run over data.train, one step per batch, then top-1 on data.test. Kernels: whatever computePrecision() says now. */
export async function trainAndEvaluate(data: CompareData, o: RunOptions): Promise<RunResult> {
  const { imageSize, batchSize, seed } = data;
  const scaler = o.lossScale ? new LossScaler(o.lossScale) : undefined;
  const model = new GoogLeNet({ numClasses: 10, seed });
  if (o.init) loadStateDict(model, o.init);
  const sgd = new Sgd(model.params.map((p) => p.variable), { momentum: o.momentum, weightDecay: o.weightDecay ?? 1e-4 });
  const step = new TrainStep(model, sgd, new LocalReducer(), {
    auxWeight: 0.3, accumulate: 1, batchSize, imageSize, seed, rank: 0, replay: false, ...(scaler ? { lossScaler: scaler } : {}),
  });
  const state = () => [...model.params.map((p) => p.variable), ...sgd.state().buffers, ...model.buffers.map((b) => b.variable)];
  const losses: number[] = [];
  const scales: number[] = [];
  let skipped = 0;
  const t0 = performance.now();
  try {
    for (let s = 0; s < data.train.length; s++) {
      const undo = s < (o.skipFirst ?? 0) ? state().map((v) => tf.clone(v)) : undefined;
      const r = await step.run(s, async () => data.train[s]!, o.lr);
      if (undo) {
        state().forEach((v, i) => v.assign(undo[i]!));
        tf.dispose(undo);
      }
      if (undo || r.skipped) skipped++;
      losses.push(r.loss);
      scales.push(r.lossScale ?? 0);
      if ((s + 1) % 20 === 0) o.log?.(`step ${s + 1}: loss (last 20) ${mean(losses.slice(-20)).toFixed(3)}, skipped ${skipped}, scale ${r.lossScale ?? '-'}`);
    }
    const msPerStep = (performance.now() - t0) / data.train.length;
    await o.inspect?.(model);
    return { ...(await evaluate(model, data)), skipped, losses, scales, msPerStep };
  } finally {
    step.dispose();
    sgd.dispose();
    model.dispose();
  }
}

const mean = (a: number[]) => a.reduce((p, v) => p + v, 0) / Math.max(1, a.length);

/** Top-1 and mean loss of the main head on data.test (inference mode). */
export async function evaluate(model: GoogLeNet, data: CompareData): Promise<{ top1: number; evalLoss: number }> {
  const px = data.imageSize * data.imageSize * 3;
  let [correct, loss, n] = [0, 0, 0];
  for (const b of data.test) {
    const f = tf.tidy(() => {
      const x = tf.tensor4d(b.images.subarray(0, b.size * px), [b.size, data.imageSize, data.imageSize, 3]);
      const y = tf.tensor1d(b.labels.subarray(0, b.size), 'int32');
      const out = model.forward(x, { training: false });
      return tf.stack([tf.mul(googlenetLoss({ main: out.main }, y, 0), b.size), correctCounts(out.main, y, 5)[0]]);
    });
    const v = await f.data();
    f.dispose();
    loss += v[0]!;
    correct += v[1]!;
    n += b.size;
  }
  return { top1: correct / n, evalLoss: loss / n };
}
