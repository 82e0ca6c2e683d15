import * as tf from '@tensorflow/tfjs';
import { describe, expect, it } from 'vitest';
import type { GoogLeNet } from '@googlenet/model';
import { EagerGradCopy } from './grad-copy';

describe('EagerGradCopy', () => {
  it('ends every step with the returned gradients in the vector: copied by the tap, or again where the tap saw another tensor or none', async () => {
    await tf.setBackend('cpu');
    const vars = [tf.variable(tf.zeros([2])), tf.variable(tf.zeros([3])), tf.variable(tf.zeros([1]))];
    const model = { params: vars.map((variable) => ({ variable })) } as unknown as GoogLeNet;
    const flat = new Float32Array(6).fill(NaN);
    const copy = new EagerGradCopy(model, flat, [0, 2, 5]);
    const g0 = tf.tensor1d([1, 2]);
    const g1seen = tf.tensor1d([3, 4, 5]);
    const g1 = tf.tensor1d([6, 7, 8]); // what tfjs returned after adding to the one the tap saw
    const g2 = tf.tensor1d([9]);
    copy.begin();
    copy.tap(vars[0]!, g0);
    copy.tap(vars[1]!, g1seen);
    copy.tap(tf.scalar(0), g2); // not a parameter of this model: ignored
    expect(Array.from(flat)).toEqual([1, 2, 3, 4, 5, NaN]);
    expect(copy.finish([g0, g1, g2])).toBe(2);
    expect(Array.from(flat)).toEqual([1, 2, 6, 7, 8, 9]);
    // The next step forgets what was seen: the tap copies g2 only, finish copies the other two.
    flat.fill(0);
    copy.begin();
    copy.tap(vars[2]!, g2);
    expect(copy.finish([g0, g1, g2])).toBe(2);
    expect(Array.from(flat)).toEqual([1, 2, 6, 7, 8, 9]);
    tf.dispose([...vars, g0, g1seen, g1, g2]);
  });
});
