import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { GoogLeNet } from './googlenet.js';
import { computeGradients } from './loss.js';
import { randomInput, useBackend } from './test-utils.js';

describe('GoogLeNet', () => {
  let model: GoogLeNet;
  beforeAll(async () => {
    await useBackend('wasm');
    model = new GoogLeNet({ numClasses: 10, seed: 1 });
  });
  afterAll(() => model.dispose());

  it.each([[224, 1], [32, 2], [28, 2]])('maps a %i-pixel input (batch %i) to logits, and aux logits in training',
    (size, batch) => {
      tf.tidy(() => {
        const x = randomInput([batch, size, size, 3], size);
        const inf = model.forward(x, { training: false });
        expect(inf.main.shape).toEqual([batch, 10]);
        expect(inf.aux1).toBeUndefined();
        expect(inf.runningStats).toBeUndefined();
        const tr = model.forward(x, { training: true, dropoutSeed: 3 });
        expect([tr.main.shape, tr.aux2?.shape, tr.aux1?.shape]).toEqual([[batch, 10], [batch, 10], [batch, 10]]);
        expect(tr.runningStats!.map((t) => t.shape)).toEqual(model.buffers.map((b) => b.variable.shape));
        expect(Number.isFinite(tf.sum(inf.main).dataSync()[0])).toBe(true);
      });
    });

  it('rejects images smaller than 28 or in NCHW layout with INVALID_INPUT', () => {
    for (const shape of [[1, 27, 27, 3], [1, 3, 32, 32]] as [number, number, number, number][]) {
      const x = tf.zeros(shape) as tf.Tensor4D;
      expect(() => model.forward(x, { training: false })).toThrow(expect.objectContaining({ code: 'INVALID_INPUT' }));
      x.dispose();
    }
  });

  it('sends a nonzero gradient to every trainable weight', () => {
    tf.tidy(() => {
      const x = randomInput([2, 32, 32, 3], 7);
      const r = computeGradients(model, x, tf.tensor1d([1, 4], 'int32'), { auxWeight: 0.3, dropoutSeed: 9 });
      expect(r.grads).toHaveLength(model.params.length);
      const dead = model.params.filter((p, i) => {
        expect(r.grads[i].shape).toEqual(p.variable.shape);
        return tf.max(tf.abs(r.grads[i])).dataSync()[0] === 0;
      }).map((p) => p.name);
      expect(dead).toEqual([]);
      expect(r.logits.shape).toEqual([2, 10]);
      expect(r.runningStats).toHaveLength(model.buffers.length);
    });
  });

  it('makes dropout a function of dropoutSeed alone', () => {
    tf.tidy(() => {
      const x = randomInput([2, 32, 32, 3], 3);
      const a = model.forward(x, { training: true, dropoutSeed: 5 });
      const b = model.forward(x, { training: true, dropoutSeed: 5 });
      const c = model.forward(x, { training: true, dropoutSeed: 6 });
      expect(b.main.arraySync()).toEqual(a.main.arraySync());
      expect(b.aux1!.arraySync()).toEqual(a.aux1!.arraySync());
      expect(c.main.arraySync()).not.toEqual(a.main.arraySync());
    });
  });

  it('initialises identically for the same seed, differently for another, with torchvision\'s distribution', () => {
    const [a, b, c] = [1, 1, 2].map((seed) => new GoogLeNet({ numClasses: 10, seed, aux: false }));
    const w = (m: GoogLeNet, name: string) => m.params.find((p) => p.name === name)!.variable.dataSync() as Float32Array;
    const name = 'inception4e.branch3.1.conv.0.weight';
    const same = (u: Float32Array, v: Float32Array) => Buffer.from(u.buffer).equals(Buffer.from(v.buffer));
    expect(same(w(b, name), w(a, name))).toBe(true);
    expect(same(w(c, name), w(a, name))).toBe(false);
    // the aux=true model shares the backbone's initial weights
    expect(same(w(model, 'conv1.conv.0.weight'), w(a, 'conv1.conv.0.weight'))).toBe(true);
    const v = w(a, name);
    const mean = v.reduce((s, x) => s + x, 0) / v.length;
    const std = Math.sqrt(v.reduce((s, x) => s + (x - mean) ** 2, 0) / v.length);
    expect(Math.abs(mean)).toBeLessThan(1e-4);
    expect(std).toBeGreaterThan(0.0085); // a normal truncated at 2 std keeps 88% of its std
    expect(std).toBeLessThan(0.0092);
    expect(Math.max(...v.map(Math.abs))).toBeLessThanOrEqual(0.02);
    expect(w(a, 'fc.bias').every((x) => x === 0)).toBe(true);
    expect(w(a, 'conv1.conv.1.weight').every((x) => x === 1)).toBe(true);
    [a, b, c].forEach((m) => m.dispose());
  });

  it('reports running statistics as PyTorch would update them, and assigns them on request', () => {
    const m = new GoogLeNet({ numClasses: 10, aux: false });
    tf.tidy(() => {
      const x = randomInput([2, 32, 32, 3], 11);
      const out = m.forward(x, { training: true, dropoutSeed: 1 });
      // conv1: batch mean/var of conv(x) (weights std 0.01), momentum 0.1, unbiased var over 2*16*16 values
      const y = tf.conv2d(x, m.params[0].variable as tf.Tensor4D, 2, 3);
      const { mean, variance } = tf.moments(y, [0, 1, 2]);
      const n = 2 * 16 * 16;
      const expMean = tf.mul(mean, 0.1).dataSync();
      const expVar = tf.add(0.9, tf.mul(variance, (0.1 * n) / (n - 1))).dataSync();
      const gotMean = out.runningStats![0].dataSync();
      const gotVar = out.runningStats![1].dataSync();
      for (let i = 0; i < expMean.length; i++) {
        expect(gotMean[i]).toBeCloseTo(expMean[i], 6);
        expect(gotVar[i]).toBeCloseTo(expVar[i], 6);
      }
      expect(m.buffers[1].variable.dataSync()[0]).toBe(1); // not assigned by forward
      m.assignRunningStats(out.runningStats!);
      expect(m.buffers[1].variable.dataSync()[0]).toBeCloseTo(expVar[0], 6);
    });
    expect(m.numBatchesTracked).toBe(1);
    m.dispose();
  });
});
