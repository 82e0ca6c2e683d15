import { describe, expect, it } from 'vitest';
import { publicConfig, resolveTrainConfig, type TrainConfig } from './config';

const resolve = (argv: string[]) => resolveTrainConfig(argv, { env: {}, gpuCount: 0, now: new Date('2026-11-28T10:20:30Z') }) as TrainConfig;

describe('--augment', () => {
  it('resolves auto to pad-crop for small-image data sets and to the paper\'s crop for photographs', () => {
    expect(resolve([]).augment).toBe('pad-crop'); // synthetic
    expect(resolve(['--dataset=fashion-mnist']).augment).toBe('pad-crop');
    expect(resolve(['--dataset=cifar10', '--data-dir=/d']).augment).toBe('pad-crop');
    expect(resolve(['--dataset=imagefolder', '--data-dir=/d']).augment).toBe('inception');
    expect(resolve(['--dataset=shards', '--data-dir=/d']).augment).toBe('inception');
  });

  it('takes an explicit mode whatever the data set, and keeps the resolved choice in config.json', () => {
    for (const mode of ['inception', 'pad-crop', 'flip', 'none'] as const) {
      const c = resolve(['--dataset=fashion-mnist', `--augment=${mode}`]);
      expect(c.augment).toBe(mode);
      expect(publicConfig(c).augment).toBe(mode);
    }
    expect(publicConfig(resolve(['--dataset=imagefolder', '--data-dir=/d', '--augment=auto'])).augment).toBe('inception');
  });

  it('rejects an unknown mode with BAD_FLAG naming the accepted ones', () => {
    expect(() => resolve(['--augment=crop'])).toThrowError(expect.objectContaining({ code: 'BAD_FLAG', message: expect.stringMatching(/inception.*pad-crop.*flip.*none/) }));
  });
});
