import * as tf from '@tensorflow/tfjs';
import { googlenetLoss, type GoogLeNet } from '@googlenet/model';
import { createDataLoader, type DataLoader } from '@googlenet/dataloader';
import type { TrainConfig } from './config';
import type { WorkerIdentity } from './identity';
import type { GradientReducer } from './reducer';
import { correctCounts } from './step';
import { readFloats } from './host';

export interface EvalResult {
  loss: number;
  top1: number;
  top5: number;
  samples: number;
}

/** Top-1/top-5 and loss over this rank's slice of the test split, summed over ranks as (sum, count) pairs. */
export async function evaluate(cfg: TrainConfig, id: WorkerIdentity, model: GoogLeNet, reducer: GradientReducer): Promise<EvalResult> {
  const loader: DataLoader = await createDataLoader({
    dataset: cfg.dataset, dataDir: cfg.dataDir, split: 'test', imageSize: cfg.imageSize, batchSize: cfg.batchSize,
    rank: id.rank, worldSize: id.worldSize, seed: cfg.seed, shuffle: false, augment: 'none', pad: false, dropLast: false,
    threads: cfg.decodeThreads, onBadSample: 'skip', syntheticSize: cfg.syntheticSize,
  });
  const m = new Float64Array(4);
  const k = Math.min(5, model.numClasses);
  const px = cfg.imageSize * cfg.imageSize * 3;
  try {
    for (;;) {
      const b = (await loader.next()) as Awaited<ReturnType<DataLoader['next']>> | null;
      if (!b || b.size === 0) break;
      const figures = tf.tidy(() => {
        const x = tf.tensor4d(b.images.subarray(0, b.size * px), [b.size, cfg.imageSize, cfg.imageSize, 3]);
        const y = tf.tensor1d(b.labels.subarray(0, b.size), 'int32');
        const out = model.forward(x, { training: false });
        const loss = googlenetLoss({ main: out.main }, y, 0);
        return tf.stack([tf.mul(loss, b.size), ...correctCounts(out.main, y, k)]);
      });
      const f = await readFloats(figures).finally(() => figures.dispose());
      m[0] += f[0]!;
      m[1] += f[1]!;
      m[2] += f[2]!;
      m[3] += b.size;
    }
  } finally {
    await loader.close();
  }
  await reducer.reduceMetrics(m);
  const n = Math.max(1, m[3]!);
  return { loss: m[0]! / n, top1: m[1]! / n, top5: m[2]! / n, samples: m[3]! };
}
