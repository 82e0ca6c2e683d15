import * as tf from '@tensorflow/tfjs';
import { describe, expect, it } from 'vitest';
import { pseudoRandom } from '../../model/src/gradient-check';
import { clipFlatGradients, clipGradientTensors } from './grad-clip';
import { haveTorch, runTorch } from '../test/torch-ref';

const TORCH_CLIP = `
import json, sys, torch
a = json.load(sys.stdin)
ps = []
for shape, vals in zip(a['shapes'], a['grads']):
    p = torch.nn.Parameter(torch.zeros(shape))
    p.grad = torch.tensor(vals, dtype=torch.float32).reshape(shape)
    ps.append(p)
total = torch.nn.utils.clip_grad_norm_(ps, a['max'])
print(json.dumps({'total': total.item(), 'grads': [p.grad.reshape(-1).tolist() for p in ps]}))
`;

const shapes = [[3, 4], [5], [2, 2, 3]];
const grads = shapes.map((s, i) => Array.from(pseudoRandom(s.reduce((a, b) => a * b, 1), 70 + i)));
const flatOf = () => Float32Array.from(grads.flat());

describe.skipIf(!haveTorch('gradient clipping vs PyTorch'))('gradient clipping vs PyTorch', () => {
  it.each([0.5, 2, 100])('clips the global norm over all parameters as torch.nn.utils.clip_grad_norm_(max_norm=%s)', async (max) => {
    const ref = runTorch<{ total: number; grads: number[][] }>(TORCH_CLIP, { shapes, grads, max });
    const want = ref.grads.flat();
    // The flat host buffer (after the exchange), with running statistics after the gradients left alone.
    const flat = Float32Array.from([...flatOf(), 7, 8]);
    const total = clipFlatGradients(flat, flat.length - 2, max);
    expect(total).toBeCloseTo(ref.total, 5);
    want.forEach((v, i) => expect(flat[i]).toBeCloseTo(v, 6));
    expect([flat.at(-2), flat.at(-1)]).toEqual([7, 8]);

    // The device-resident path.
    await tf.setBackend('cpu');
    const ts = shapes.map((s, i) => tf.tensor(grads[i]!, s));
    const before = tf.memory().numTensors;
    const clipped = clipGradientTensors(ts, max);
    expect(tf.memory().numTensors).toBe(before + ts.length);
    const got = (await Promise.all(clipped.map((t) => t.data()))).flatMap((d) => Array.from(d));
    want.forEach((v, i) => expect(got[i]).toBeCloseTo(v, 6));
    tf.dispose([...ts, ...clipped]);
  });
});
