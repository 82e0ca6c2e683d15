/**
 * Label smoothing against PyTorch's nn.CrossEntropyLoss(label_smoothing=...): loss and gradient with respect to
 * the logits, computed in the same test by /usr/bin/python3 with torch, and the GoogLeNet loss smoothing all
 * three heads.
 */
import { spawnSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { crossEntropy, googlenetLoss } from './loss.js';
import { hasSystemPrerequisite } from './test-prereqs.js';
import { pseudoRandom, useBackend } from './test-utils.js';

const PYTHON = '/usr/bin/python3';
const TORCH_CE = `
import json, sys, torch
a = json.load(sys.stdin)
x = torch.tensor(a['logits'], dtype=torch.float64).reshape(a['n'], a['c']).requires_grad_()
y = torch.tensor(a['labels'], dtype=torch.long)
loss = torch.nn.CrossEntropyLoss(label_smoothing=a['eps'])(x, y)
loss.backward()
print(json.dumps({'loss': loss.item(), 'grad': x.grad.reshape(-1).tolist()}))
`;

function torchMissing(): string | undefined {
  const r = spawnSync(PYTHON, ['-c', 'import torch.nn'], { encoding: 'utf8' });
  if (r.status === 0) return undefined;
  return `${PYTHON} cannot import torch (${(r.stderr || r.error?.message || '').trim().split('\n').at(-1)})`;
}

const haveTorch = hasSystemPrerequisite({ test: 'label smoothing vs PyTorch', pkg: 'python3-torch', require: 'GOOGLENET_REQUIRE_TORCH', missing: torchMissing() });

const [N, C] = [6, 10];
const logitsData = Array.from(pseudoRandom(N * C, 31), (v) => 3 * v);
const labelsData = [0, 3, 9, 3, 7, 1];

describe.skipIf(!haveTorch)('label smoothing vs PyTorch', () => {
  it.each([0, 0.1, 0.3])('cross-entropy with label_smoothing=%s has the loss and logit gradient of nn.CrossEntropyLoss', async (eps) => {
    await useBackend('cpu');
    const r = spawnSync(PYTHON, ['-c', TORCH_CE], { input: JSON.stringify({ logits: logitsData, labels: labelsData, n: N, c: C, eps }), encoding: 'utf8' });
    expect(r.status, r.stderr).toBe(0);
    const ref = JSON.parse(r.stdout) as { loss: number; grad: number[] };
    const x = tf.tensor2d(logitsData, [N, C]);
    const y = tf.tensor1d(labelsData, 'int32');
    const { value, grad } = tf.valueAndGrad((z: tf.Tensor) => crossEntropy(z as tf.Tensor2D, y, eps))(x);
    expect((await value.data())[0]).toBeCloseTo(ref.loss, 5);
    const ours = await grad.data();
    ref.grad.forEach((want, i) => expect(ours[i]).toBeCloseTo(want, 6));
    tf.dispose([x, y, value, grad]);
  });
});

describe('label smoothing in the GoogLeNet loss', () => {
  it('smooths the main and both auxiliary heads: loss = CE_e(main) + w x (CE_e(aux1) + CE_e(aux2))', async () => {
    await useBackend('cpu');
    const y = tf.tensor1d(labelsData, 'int32');
    const head = (seed: number) => tf.tensor2d(Array.from(pseudoRandom(N * C, seed)), [N, C]) as tf.Tensor2D;
    const out = { main: head(1), aux1: head(2), aux2: head(3) };
    const eps = 0.1;
    const total = (await googlenetLoss(out, y, 0.3, eps).data())[0]!;
    const parts = await Promise.all([out.main, out.aux1, out.aux2].map(async (h) => (await crossEntropy(h, y, eps).data())[0]!));
    expect(total).toBeCloseTo(parts[0]! + 0.3 * (parts[1]! + parts[2]!), 5);
    // Smoothing changes every head's term: without it the total differs.
    expect(Math.abs(total - (await googlenetLoss(out, y, 0.3).data())[0]!)).toBeGreaterThan(1e-3);
    tf.dispose([y, out.main, out.aux1, out.aux2]);
  });
});
