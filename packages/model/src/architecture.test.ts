import { describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { formatSummary, summaryRows } from './summary.js';
import { GoogLeNet } from './googlenet.js';
import { maxPoolCeilSize } from './architecture.js';
import { useBackend } from './test-utils.js';

// The seed's torchinfo table (and anchors/torch_googlenet_bench.py --params), 1000 classes.
const SEED_BLOCKS: Record<string, number> = {
  conv1: 9536, conv2: 4224, conv3: 110976, inception3a: 164064, inception3b: 389376, inception4a: 376800,
  aux1: 3188968, inception4b: 449808, inception4c: 510768, inception4d: 606080, aux2: 3191016,
  inception4e: 869376, inception5a: 1044480, inception5b: 1445344, fc: 1025000,
};

describe('architecture', () => {
  it('counts the seed\'s parameters per block in the summary table', () => {
    const rows = summaryRows({ numClasses: 1000 });
    const withParams = Object.fromEntries(rows.filter((r) => r.params > 0).map((r) => [r.name, r.params]));
    expect(withParams).toEqual(SEED_BLOCKS);
    expect(rows.reduce((a, r) => a + r.params, 0)).toBe(13_385_816);
    expect(summaryRows({ aux: false }).reduce((a, r) => a + r.params, 0)).toBe(7_005_832);
  });

  it('builds a model whose variables have the seed\'s counts, with and without aux heads', async () => {
    await useBackend('cpu');
    const count = (m: GoogLeNet) => m.params.reduce((a, p) => a + p.variable.size, 0);
    const full = new GoogLeNet({ numClasses: 1000 });
    const blockOf = (name: string) => name.split('.')[0];
    const perBlock: Record<string, number> = {};
    for (const p of full.params) perBlock[blockOf(p.name)] = (perBlock[blockOf(p.name)] ?? 0) + p.variable.size;
    expect(perBlock).toEqual(SEED_BLOCKS);
    expect(count(full)).toBe(13_385_816);
    full.dispose();
    const lean = new GoogLeNet({ numClasses: 1000, aux: false });
    expect(count(lean)).toBe(7_005_832);
    lean.dispose();
    expect(tf.memory().numTensors).toBe(0);
  });

  it('prints a torchinfo-style summary with NCHW shapes and totals', () => {
    const text = formatSummary({ numClasses: 1000, imageSize: 224, batchSize: 10 });
    expect(text).toMatch(/├─BasicConv2d: 1-1\s+\[10, 64, 112, 112\]\s+9,536/);
    expect(text).toMatch(/├─MaxPool2d: 1-2\s+\[10, 64, 56, 56\]\s+--/);
    expect(text).toMatch(/├─Inception: 1-9\s+\[10, 512, 14, 14\]\s+376,800/);
    expect(text).toMatch(/├─AuxClf: 1-10\s+\[10, 1000\]\s+3,188,968/);
    expect(text).toMatch(/├─Inception: 1-18\s+\[10, 1024, 7, 7\]\s+1,445,344/);
    expect(text).toMatch(/├─Linear: 1-21\s+\[10, 1000\]\s+1,025,000/);
    expect(text).toContain('Total params: 13,385,816\nTrainable params: 13,385,816\nNon-trainable params: 0');
  });

  it('sizes ceil-mode max-pools as PyTorch does', () => {
    // torch.nn.MaxPool2d(3, 2, ceil_mode=True) output sizes for inputs 3..12, 112, 56, 28, 14
    const torch: Record<number, number> = { 3: 1, 4: 2, 5: 2, 6: 3, 7: 3, 8: 4, 9: 4, 10: 5, 11: 5, 12: 6, 112: 56, 56: 28, 28: 14, 14: 7 };
    for (const [n, out] of Object.entries(torch)) expect(maxPoolCeilSize(Number(n))).toBe(out);
    expect(maxPoolCeilSize(1)).toBe(1); // PyTorch raises "output size too small"; we pool the whole map
  });
});
