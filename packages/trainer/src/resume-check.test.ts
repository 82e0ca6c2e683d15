import { describe, expect, it } from 'vitest';
import { CHECKPOINT_FORMAT, CHECKPOINT_VERSION, type CheckpointMeta } from './checkpoint';
import { publicConfig, resolveTrainConfig, type TrainConfig } from './config';
import { checkResumeConfig, parseResumeOverride } from './resume-check';

const config = (...argv: string[]) => publicConfig(resolveTrainConfig(['--out=/tmp/r', ...argv], { env: {} }) as TrainConfig);

/** The metadata of a checkpoint written at step 6 (epoch 1, 2 batches into it) by a run with these flags on 2 workers. */
function written(...argv: string[]): CheckpointMeta {
  const cfg = config(...argv);
  return {
    format: CHECKPOINT_FORMAT, version: CHECKPOINT_VERSION, step: 6, epoch: 1,
    sampler: { version: 1, seed: Number(cfg.seed), epoch: 1, position: 2, worldSize: 2, accumulate: Number(cfg.accumulate), dataset: String(cfg.dataset) },
    optimizer: { type: 'sgd', started: true, momentum: 0.9, weightDecay: 1e-4, layout: 'tfjs' },
    config: cfg, seeds: { seed: Number(cfg.seed) }, createdAt: 'then',
  };
}

const refusal = (f: () => unknown) => {
  try {
    f();
  } catch (e) {
    return e as Error & { code: string };
  }
  throw new Error('expected a refusal');
};

describe('resume checks', () => {
  it('accepts the same settings, a longer run, another backend and another wire format, keeping the sampler position', () => {
    const meta = written('--steps=10', '--backend=wasm');
    const check = checkResumeConfig(meta, config('--steps=20', '--backend=cpu', '--grad-compression=fp16', '--keep=9'), 2, [], 'c.ckpt');
    expect(check.overridden).toEqual([]);
    expect(check.sampler).toBe(meta.sampler);
  });

  it('refuses changed batch size, lr schedule, data set, world size and seed in one error naming each old -> new', () => {
    const meta = written('--batch-size=4', '--lr-schedule=paper', '--seed=3');
    const e = refusal(() => checkResumeConfig(meta, config('--batch-size=8', '--lr-schedule=step', '--dataset=fashion-mnist', '--seed=4'), 3, [], '/r/step-00000006.ckpt'));
    expect(e.code).toBe('RESUME_CONFIG_CHANGED');
    expect(e.message).toContain('/r/step-00000006.ckpt');
    for (const s of ['dataset synthetic -> fashion-mnist', 'batch-size 4 -> 8', 'world-size 2 -> 3', 'seed 3 -> 4', 'lr-schedule paper -> step']) expect(e.message).toContain(s);
    expect(e.message).toContain('--resume-override=dataset,batch-size,world-size,seed');
  });

  it.each([
    ['--lr=0.01', 'lr 0.004 -> 0.01'],
    ['--momentum=0.5', 'momentum 0.9 -> 0.5'],
    ['--weight-decay=0', 'weight-decay 0.0001 -> 0'],
    ['--warmup=5', 'warmup 0 -> 5'],
    ['--image-size=64', 'image-size 32 -> 64'],
    ['--accumulate=2', 'accumulate 1 -> 2'],
    ['--synthetic-size=100,10', 'synthetic-size 3000,1000 -> 100,10'],
    ['--augment=none', 'augment pad-crop -> none'],
    ['--aux-weight=0', 'aux-weight 0.3 -> 0'],
  ])('refuses %s', (flag, line) => {
    expect(refusal(() => checkResumeConfig(written(), config(flag), 2, [], 'c.ckpt')).message).toContain(line);
  });

  it('allows what --resume-override names, reports it, and restarts the data order when the sample layout changed', () => {
    const meta = written('--batch-size=4', '--lr=0.004');
    const named = checkResumeConfig(meta, config('--batch-size=8', '--lr=0.01'), 2, ['batch-size', 'lr'], 'c.ckpt');
    expect(named.overridden).toEqual(['batch-size 4 -> 8', 'lr 0.004 -> 0.01']);
    expect(named.sampler).toEqual({ ...meta.sampler, position: 0 });
    expect(named.notes.join()).toMatch(/data order restarts at the beginning of epoch 2/);
    expect(checkResumeConfig(meta, config('--batch-size=8', '--lr=0.01'), 2, ['all'], 'c.ckpt').overridden).toHaveLength(2);
    // Only the lr: the same samples, so the sampler continues where it was.
    expect(checkResumeConfig(meta, config('--batch-size=4', '--lr=0.01'), 2, ['lr'], 'c.ckpt').sampler).toBe(meta.sampler);
    expect(refusal(() => checkResumeConfig(meta, config('--batch-size=8', '--lr=0.01'), 2, ['lr'], 'c.ckpt')).message).toMatch(/batch-size 4 -> 8\. .*--resume-override=batch-size /);
  });

  it('lets 2 workers x 1 become 1 worker x accumulate 2 (the same samples per step) without an override', () => {
    const check = checkResumeConfig(written(), config('--accumulate=2'), 1, [], 'c.ckpt');
    expect(check.overridden).toEqual([]);
    expect(check.notes.join()).toMatch(/2 worker\(s\) x accumulate 1 -> 1 x 2/);
  });

  it('under the cosine schedule the run length is part of the schedule', () => {
    expect(checkResumeConfig(written('--steps=10'), config('--steps=20'), 2, [], 'c.ckpt').overridden).toEqual([]);
    const e = refusal(() => checkResumeConfig(written('--steps=10', '--lr-schedule=cosine'), config('--steps=20', '--lr-schedule=cosine'), 2, [], 'c.ckpt'));
    expect(e.message).toContain('steps 10 -> 20');
  });

  it('parses --resume-override and rejects names it does not know', () => {
    expect(parseResumeOverride('batchSize,lr')).toEqual(['batch-size', 'lr']);
    expect(parseResumeOverride('all')).toEqual(['all']);
    expect(parseResumeOverride(undefined)).toEqual([]);
    expect(() => parseResumeOverride('lr,colour')).toThrow(expect.objectContaining({ code: 'BAD_FLAG', message: expect.stringMatching(/unknown setting\(s\) colour: expected all or .*batch-size/) }));
    expect((resolveTrainConfig(['--resume-override=lr,seed'], { env: {} }) as TrainConfig).resumeOverride).toEqual(['lr', 'seed']);
  });
});
