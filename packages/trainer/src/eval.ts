/**
 * Evaluation of trained weights on a data set's test split: loss, top-1, top-5 and the confusion matrix,
 * data-parallel over ranks with the training loader's sharding (pad: false, dropLast: false: every test sample
 * lands in exactly one rank's slice once, and last batches may be short), summed as (sum, count) pairs.
 */
import * as tf from '@tensorflow/tfjs';
import { googlenetLoss, type GoogLeNet } from '@googlenet/model';
import { createDataLoader, type DatasetName } from '@googlenet/dataloader';
import { TrainerError } from './errors';
import type { GradientReducer } from './reducer';
import { readFloats } from './host';
import { correctCounts } from './step';

export interface EvalDataOptions {
  dataset: DatasetName;
  dataDir?: string;
  syntheticSize?: { train: number; test: number };
  imageSize: number;
  /** Samples per forward pass, per rank. */
  batchSize: number;
  /** Decoding threads per rank (0: in the calling thread). */
  decodeThreads?: number;
}

export interface ConfusionEval {
  loss: number;
  top1: number;
  top5: number;
  samples: number;
  /** The data set's class names (index = label). */
  classNames: string[];
  /** confusion[true][predicted] counts over the whole split, model.numClasses square. */
  confusion: number[][];
}

/** Runs this rank's slice of the test split; every rank of `reducer` must call it with the same options. */
export async function evaluateSplit(opts: EvalDataOptions, rank: number, model: GoogLeNet, reducer: GradientReducer): Promise<ConfusionEval> {
  const loader = await createDataLoader({
    dataset: opts.dataset, dataDir: opts.dataDir, split: 'test', imageSize: opts.imageSize, batchSize: opts.batchSize,
    rank, worldSize: reducer.worldSize, seed: 0, shuffle: false, pad: false, dropLast: false,
    threads: opts.decodeThreads ?? 0, onBadSample: 'skip', syntheticSize: opts.syntheticSize,
  });
  const c = model.numClasses;
  const sums = new Float64Array(4); // loss sum, top-1 hits, top-5 hits, samples
  const confusion = new Float64Array(c * c);
  const k = Math.min(5, c);
  const px = opts.imageSize * opts.imageSize * 3;
  const classNames = loader.classNames;
  try {
    if (loader.numClasses > c) {
      throw new TrainerError('WEIGHTS_MISMATCH', `the weights classify ${c} classes but ${opts.dataset} has ${loader.numClasses}; use weights trained on ${opts.dataset}`);
    }
    for (;;) {
      const b = await loader.next();
      if (!b || b.size === 0) break;
      const [figures, predicted] = tf.tidy(() => {
        const x = tf.tensor4d(b.images.subarray(0, b.size * px), [b.size, opts.imageSize, opts.imageSize, 3]);
        const y = tf.tensor1d(b.labels.subarray(0, b.size), 'int32');
        const logits = model.forward(x, { training: false }).main;
        const loss = googlenetLoss({ main: logits }, y, 0);
        return [tf.stack([tf.mul(loss, b.size), ...correctCounts(logits, y, k)]), tf.cast(tf.argMax(logits, 1), 'float32')];
      });
      const f = await readFloats(figures).finally(() => figures.dispose());
      const p = await readFloats(predicted).finally(() => predicted.dispose());
      sums[0] += f[0]!;
      sums[1] += f[1]!;
      sums[2] += f[2]!;
      sums[3] += b.size;
      for (let i = 0; i < b.size; i++) confusion[b.labels[i]! * c + p[i]!]! += 1;
    }
  } finally {
    await loader.close();
  }
  await reducer.reduceMetrics(sums);
  await sumCounts(reducer, confusion);
  const n = Math.max(1, sums[3]!);
  return {
    loss: sums[0]! / n, top1: sums[1]! / n, top5: sums[2]! / n, samples: sums[3]!, classNames,
    confusion: Array.from({ length: c }, (_, t) => Array.from(confusion.subarray(t * c, (t + 1) * c))),
  };
}

/**
 * Sums integer counts over ranks in one collective. Metrics rounds carry at most 64 values (MAX_METRICS): a
 * 1000-class confusion matrix would take ~15,600 of them. The gradient path carries any length but averages,
 * so the counts go as float32 (exact below 2^24), come back as fround(sum / R), and R x that is within
 * sum x 2^-24 of the integer sum: rounding recovers it exactly for any count below 2^23. Nothing is compressed
 * (compressibleLength 0), whatever --grad-compression says.
 */
export async function sumCounts(reducer: GradientReducer, counts: Float64Array): Promise<void> {
  if (reducer.worldSize === 1) return;
  const data = Float32Array.from(counts);
  await reducer.allReduce(data, new Float64Array(0), 0);
  for (let i = 0; i < counts.length; i++) counts[i] = Math.round(data[i]! * reducer.worldSize);
}
