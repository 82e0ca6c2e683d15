import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { GoogLeNet } from './googlenet.js';
import { loadStateDict, stateDict } from './state-dict.js';
import type { StateDictError } from './errors.js';
import { randomInput, useBackend } from './test-utils.js';

describe('state dict', () => {
  let model: GoogLeNet;
  beforeAll(async () => {
    await useBackend('cpu');
    model = new GoogLeNet({ numClasses: 10, seed: 2 });
  });
  afterAll(() => model.dispose());

  it('uses the seed\'s keys, order and PyTorch layouts', async () => {
    const dict = await stateDict(model);
    const keys = [...dict.keys()];
    expect(keys.slice(0, 6)).toEqual(['conv1.conv.0.weight', 'conv1.conv.1.weight', 'conv1.conv.1.bias',
      'conv1.conv.1.running_mean', 'conv1.conv.1.running_var', 'conv1.conv.1.num_batches_tracked']);
    expect(keys).toContain('inception3a.branch2.1.conv.0.weight');
    expect(keys).toContain('inception3a.branch4.1.conv.0.weight');
    expect(keys).toContain('aux1.feature_.1.conv.0.weight');
    expect(keys.indexOf('fc.bias')).toBeLessThan(keys.indexOf('aux1.feature_.1.conv.0.weight'));
    expect(keys.at(-1)).toBe('aux2.clf_.3.bias');
    expect(dict.get('inception3a.branch3.1.conv.0.weight')!.shape).toEqual([32, 16, 5, 5]);
    expect(dict.get('aux1.clf_.0.weight')!.shape).toEqual([1024, 2048]);
    expect(dict.get('fc.weight')!.shape).toEqual([10, 1024]);
    // 6 tensors per BasicConv2d (57 in the backbone, 2 aux) + fc (2) + 4 linear tensors per aux head
    expect(keys).toHaveLength(59 * 6 + 2 + 8);
    // the aux in-index is PyTorch's NCHW flatten order c*16 + h*4 + w
    const tfW = model.params.find((p) => p.name === 'aux1.clf_.0.weight')!.variable.arraySync() as number[][];
    const pt = dict.get('aux1.clf_.0.weight')!.data as Float32Array;
    const [o, c, h, w] = [3, 100, 2, 1];
    expect(pt[o * 2048 + c * 16 + h * 4 + w]).toBe(tfW[h * 512 + w * 128 + c][o]);
  });

  it('names every missing, unexpected, mis-shaped and mis-typed tensor in one STATE_DICT_MISMATCH error', async () => {
    const dict = await stateDict(model);
    dict.delete('inception4b.branch2.0.conv.1.running_var');
    dict.set('fc.extra', { dtype: 'F32', shape: [1], data: new Float32Array(1) });
    dict.set('fc.weight', { dtype: 'F32', shape: [1000, 1024], data: new Float32Array(1000 * 1024) });
    dict.set('conv2.conv.1.num_batches_tracked', { dtype: 'I32', shape: [], data: new Int32Array(1) });
    const before = model.params[0].variable.dataSync().slice();
    let err: StateDictError | undefined;
    try {
      loadStateDict(model, dict);
    } catch (e) {
      err = e as StateDictError;
    }
    expect(err?.code).toBe('STATE_DICT_MISMATCH');
    expect(err!.problems).toHaveLength(4);
    for (const name of ['inception4b.branch2.0.conv.1.running_var: missing', 'fc.extra: unexpected',
      'fc.weight: shape [1000, 1024], expected [10, 1024]', 'conv2.conv.1.num_batches_tracked: dtype I32, expected I64']) {
      expect(err!.message).toContain(name);
    }
    expect(model.params[0].variable.dataSync()).toEqual(before); // nothing assigned
  });

  it('loads a full state dict into an inference model (aux=false ignores aux tensors) with equal logits', async () => {
    const lean = new GoogLeNet({ numClasses: 10, aux: false, seed: 9 });
    const full = await stateDict(model);
    loadStateDict(lean, full);
    const withoutAux = new Map([...full].filter(([k]) => !k.startsWith('aux')));
    loadStateDict(lean, withoutAux);
    expect(() => loadStateDict(model, withoutAux)).toThrow(/aux1\.clf_\.0\.weight: missing/);
    tf.tidy(() => {
      const x = randomInput([1, 40, 40, 3], 1);
      const a = model.forward(x, { training: false }).main.dataSync();
      const b = lean.forward(x, { training: false }).main.dataSync();
      expect(b).toEqual(a);
    });
    lean.dispose();
  });
});
