import * as tf from '@tensorflow/tfjs';
import { describe, expect, it } from 'vitest';
import { selectBackend, setNativeEnabled } from '@googlenet/model';
import { Sgd } from './optim';
import { haveTorch, runTorch } from '../test/torch-ref';

const TORCH_SGD = `
import json, sys, torch
a = json.load(sys.stdin)
w = torch.nn.Parameter(torch.tensor(a['w0'], dtype=torch.float32))
opt = torch.optim.SGD([w], lr=a['lrs'][0], momentum=a['momentum'], weight_decay=a['wd'], nesterov=a['nesterov'])
out = []
for g, lr in zip(a['grads'], a['lrs']):
    for group in opt.param_groups:
        group['lr'] = lr
    w.grad = torch.tensor(g, dtype=torch.float32)
    opt.step()
    out.append(w.detach().tolist())
print(json.dumps(out))
`;

const w0 = [1, -2, 0.5, 3, -0.25];
const grads = [[0.5, 1, -1, 0.2, 0], [0.2, -0.4, 0.3, -1, 0.7], [0, 0, 1, 0.5, -0.5], [-0.3, 0.6, 0.1, 0.1, 0.9]];
const lrs = [0.05, 0.05, 0.02, 0.01];
const [momentum, weightDecay] = [0.9, 0.1];

describe.skipIf(!haveTorch('Nesterov SGD vs PyTorch'))('Nesterov SGD vs PyTorch', () => {
  const ref = () => runTorch<number[][]>(TORCH_SGD, { w0, grads, lrs, momentum, wd: weightDecay, nesterov: true });

  it('follows torch.optim.SGD(nesterov=True) step for step through the tensor path, and keeps numTensors flat', async () => {
    const want = ref();
    await tf.setBackend('cpu');
    const w = tf.variable(tf.tensor1d(w0));
    const sgd = new Sgd([w], { momentum, weightDecay, nesterov: true });
    for (const [k, g] of grads.entries()) {
      const before = tf.memory().numTensors;
      const t = tf.tensor1d(g);
      sgd.step([t], lrs[k]!);
      t.dispose();
      expect(tf.memory().numTensors).toBe(before);
      Array.from(w.dataSync()).forEach((v, i) => expect(v).toBeCloseTo(want[k]![i]!, 6));
    }
    sgd.dispose();
    w.dispose();
  });

  it('follows torch.optim.SGD(nesterov=True) through the flat in-place path on wasm, native kernels on or off', async () => {
    const want = ref();
    await selectBackend('wasm');
    for (const native of [true, false]) {
      setNativeEnabled(native);
      const w = tf.variable(tf.tensor1d(w0));
      const sgd = new Sgd([w], { momentum, weightDecay, nesterov: true });
      for (const [k, g] of grads.entries()) {
        sgd.stepFlat(Float32Array.from(g), [0], lrs[k]!);
        Array.from(w.dataSync()).forEach((v, i) => expect(v).toBeCloseTo(want[k]![i]!, 6));
      }
      sgd.dispose();
      w.dispose();
    }
    setNativeEnabled(true);
  });

  it('differs from plain momentum (the reference is not the non-Nesterov step)', () => {
    const plain = runTorch<number[][]>(TORCH_SGD, { w0, grads, lrs, momentum, wd: weightDecay, nesterov: false });
    expect(Math.abs(plain[1]![0]! - ref()[1]![0]!)).toBeGreaterThan(1e-3);
  });
});
