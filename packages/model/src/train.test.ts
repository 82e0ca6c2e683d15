import { describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { GoogLeNet } from './googlenet.js';
import { randomInput, sgdOnFixedBatch, useBackend } from './test-utils.js';

describe('training on wasm', () => {
  it('lowers the loss on a fixed batch with plain SGD and keeps tf.memory().numTensors flat', async () => {
    await useBackend('wasm');
    const model = new GoogLeNet({ numClasses: 4, seed: 3 });
    const x = randomInput([8, 32, 32, 3], 21);
    const labels = tf.tensor1d([0, 1, 2, 3, 0, 1, 2, 3], 'int32');
    const { losses, counts } = await sgdOnFixedBatch(model, x, labels, 6);
    expect(new Set(counts).size).toBe(1);
    expect(losses[losses.length - 1]!).toBeLessThan(losses[0]! * 0.6);
    expect(losses[0]!).toBeCloseTo(Math.log(4) * 1.6, 1); // CE of ~uniform logits, main + 0.3 x 2 aux
    expect(model.numBatchesTracked).toBe(6);
    tf.dispose([x, labels]);
    model.dispose();
    expect(tf.memory().numTensors).toBe(0);
  });
});
