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
