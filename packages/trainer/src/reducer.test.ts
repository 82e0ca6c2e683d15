import * as tf from '@tensorflow/tfjs';
import { startCoordinator, CoordinatorClient } from '@googlenet/coordinator';
import { GoogLeNet } from '@googlenet/model';
import type { Batch } from '@googlenet/dataloader';
import { describe, expect, it } from 'vitest';
import { Sgd } from './optim';
import { CoordinatorReducer, type GradientReducer } from './reducer';
import { TrainStep } from './step';

describe('gradient reducers with --grad-compression=fp16', () => {
  it('round only the compressible gradients: a running stat of 70000 and a 1e-6 update come back exact', async () => {
    const coord = await startCoordinator({ worldSize: 1 });
    const client = await CoordinatorClient.connect({ url: coord.url, rank: 0, worldSize: 1, signature: [], gradCompression: 'fp16' });
    const reducer = new CoordinatorReducer(client, 1);
    try {
      const data = Float32Array.of(0.1, 1e-3, 70000, 0.5 + 1e-6);
      await reducer.allReduce(data, new Float64Array(1), 2);
      expect(data[0]).not.toBe(Math.fround(0.1)); // the gradient was rounded to binary16
      expect(Array.from(data.subarray(2))).toEqual([70000, Math.fround(0.5 + 1e-6)]);
    } finally {
      await reducer.close();
      await coord.close();
    }
  });

  it('TrainStep marks its parameters as compressible and its BatchNorm running statistics as not', async () => {
    await tf.setBackend('cpu');
    const model = new GoogLeNet({ numClasses: 10, seed: 1 });
    const calls: { length: number; compressible?: number }[] = [];
    const recorder: GradientReducer = {
      worldSize: 2,
      allReduce: async (data, _m, compressibleLength) => void calls.push({ length: data.length, compressible: compressibleLength }),
      reduceMetrics: async () => {},
      broadcast: async () => {},
      close: async () => {},
    };
    const sgd = new Sgd(model.params.map((p) => p.variable), { momentum: 0.9, weightDecay: 1e-4 });
    const step = new TrainStep(model, sgd, recorder, { auxWeight: 0.3, accumulate: 1, batchSize: 2, imageSize: 32, seed: 0, rank: 0 });
    const batch: Batch = { images: new Float32Array(2 * 32 * 32 * 3).fill(0.1), labels: Int32Array.of(1, 2), size: 2, epoch: 0, indexInEpoch: 0, slot: 0, step: 0, indices: Int32Array.of(0, 1) };
    await step.run(0, async () => batch, 0.01);
    const params = model.params.reduce((n, p) => n + p.variable.size, 0);
    const buffers = model.buffers.reduce((n, b) => n + b.variable.size, 0);
    expect(buffers).toBeGreaterThan(0);
    expect(calls).toEqual([{ length: params + buffers, compressible: params }]);
    model.dispose();
  }, 60_000);
});
