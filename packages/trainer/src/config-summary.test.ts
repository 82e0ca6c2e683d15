import { describe, expect, it } from 'vitest';
import { resolveTrainConfig, type TrainConfig } from './config';
import { configSummary } from './config-summary';

const resolve = (...argv: string[]) => resolveTrainConfig(argv, { env: {}, gpuCount: 0 }) as TrainConfig;

describe('configSummary', () => {
  it('shows the key settings of the default run in five aligned lines and points at config.json for the rest', () => {
    const text = configSummary(resolve('--out=runs/demo', '--workers=2'), 2);
    expect(text.split('\n')).toEqual([
      'config (every setting: runs/demo/config.json)',
      '  data       synthetic (3,000 train / 1,000 test) at 32 px, augment pad-crop, seed 0',
      '  length     2 epochs, batch 32 x 2 workers = 64 images per step',
      '  optimizer  SGD lr 0.004 (paper), momentum 0.9, weight decay 0.0001, aux heads x 0.3',
      '  output     runs/demo: evaluate at epoch ends, checkpoint at epoch ends (keep 3)',
    ]);
  });

  it('names what a user changed: data folder, steps, accumulation, warm-up, fp16, evaluation and checkpoints', () => {
    const text = configSummary(resolve('--dataset=cifar10', '--data-dir=/data/c10', '--num-classes=10', '--steps=1500',
      '--batch-size=16', '--accumulate=4', '--lr=0.05', '--lr-schedule=cosine', '--warmup=100', '--grad-compression=fp16',
      '--no-eval', '--checkpoint-every=500', '--keep=2', '--out=/abs/run'), 8);
    expect(text).toContain('cifar10 from /data/c10, 10 classes at 32 px');
    expect(text).toContain('1,500 steps, batch 16 x 8 workers x 4 micro-batches = 512 images per step');
    expect(text).toContain('SGD lr 0.05 (cosine, 100 warm-up steps)');
    expect(text).toContain(', fp16 gradients');
    expect(text).toContain('/abs/run: no evaluation, checkpoint every 500 steps (keep 2)');
    expect(text.split('\n')).toHaveLength(5);
  });

  it('names the optimizer features that change the maths: Nesterov, label smoothing, clipping, EMA', () => {
    const text = configSummary(resolve('--nesterov', '--label-smoothing=0.1', '--clip-grad-norm=2', '--ema-decay=0.999', '--out=r'), 1);
    expect(text).toContain('SGD (Nesterov) lr 0.004');
    expect(text).toContain(', label smoothing 0.1, clip grad norm 2, EMA 0.999');
    expect(configSummary(resolve('--out=r'), 1)).not.toMatch(/Nesterov|smoothing|clip|EMA/);
  });
});
