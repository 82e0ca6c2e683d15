import { describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { GoogLeNet } from './googlenet.js';
import { computeGradients } from './loss.js';
import { randomInput, useBackend } from './test-utils.js';

describe('training on wasm', () => {
  it('lowers the loss on a fixed batch with plain SGD and keeps tf.memory().numTensors flat', async () => {
    await useBackend('wasm');
    const model = new GoogLeNet({ numClasses: 4, seed: 3 });
    const x = randomInput([8, 32, 32, 3], 21);
    const labels = tf.tensor1d([0, 1, 2, 3, 0, 1, 2, 3], 'int32');
    const losses: number[] = [];
    const counts: number[] = [];
    // One dropout seed: the same masks every step make the descent smooth enough to assert on.
    for (let step = 0; step < 6; step++) {
      tf.tidy(() => {
        const r = computeGradients(model, x, labels, { auxWeight: 0.3, dropoutSeed: 0 });
        model.params.forEach((p, i) => p.variable.assign(tf.sub(p.variable, tf.mul(r.grads[i], 0.05))));
        model.assignRunningStats(r.runningStats);
        losses.push(r.loss.dataSync()[0]);
      });
      counts.push(tf.memory().numTensors);
    }
    expect(new Set(counts).size).toBe(1);
    expect(losses[losses.length - 1]).toBeLessThan(losses[0] * 0.6);
    expect(losses[0]).toBeCloseTo(Math.log(4) * 1.6, 1); // CE of ~uniform logits, main + 0.3 x 2 aux
    expect(model.numBatchesTracked).toBe(6);
    tf.dispose([x, labels]);
    model.dispose();
    expect(tf.memory().numTensors).toBe(0);
  });
});
