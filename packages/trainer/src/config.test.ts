import os from 'node:os';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { resolveTrainConfig, trainHelp, runFolderOf, type TrainConfig } from './config';
import { TrainerError } from './errors';

// gpuCount: 0 unless a test says otherwise, so that no test depends on the GPUs of the machine it runs on.
const resolve = (argv: string[], env: NodeJS.ProcessEnv = {}, gpuCount = 0) => resolveTrainConfig(argv, { env, gpuCount, now: new Date('2026-11-28T10:20:30Z') }) as TrainConfig;
afterEach(() => vi.restoreAllMocks());
const codeOf = (f: () => unknown) => {
  try {
    f();
  } catch (e) {
    return [(e as TrainerError).code, (e as Error).message] as const;
  }
  return undefined;
};

describe('train flags', () => {
  it('resolves defaults that train synthetic data at 32 px with a timestamped run folder', () => {
    const c = resolve([]);
    expect(c).toMatchObject({ dataset: 'synthetic', syntheticSize: { train: 3000, test: 1000 }, imageSize: 32, batchSize: 32, lr: 0.004, momentum: 0.9, auxWeight: 0.3, accumulate: 1, backend: 'auto', gradCompression: 'none', maxRestarts: 0, host: '127.0.0.1' });
    expect(c.out).toMatch(/runs\/20261128-102030$/);
    expect(Object.isFrozen(c)).toBe(true);
  });

  it('--workers=auto starts one worker per GPU, else one per core up to 8', () => {
    vi.spyOn(os, 'availableParallelism').mockReturnValue(2);
    expect(resolve([]).workers).toBe(2);
    vi.spyOn(os, 'availableParallelism').mockReturnValue(64);
    expect(resolve([]).workers).toBe(8);
    expect(resolve([], {}, 4).workers).toBe(4);
    expect(resolve(['--gpus=1,3'], {}, 4).workers).toBe(2);
    expect(resolve(['--workers=3'], {}, 4).workers).toBe(3);
  });

  it('accepts camelCase names, which Nx forwards where it would swallow --batch-size', () => {
    expect(resolve(['--batchSize=8', '--imageSize', '64'])).toMatchObject({ batchSize: 8, imageSize: 64 });
  });

  it('chooses the data plane automatically unless --data-plane names one', () => {
    expect(resolve([]).dataPlane).toBe('auto');
    expect(resolve(['--data-plane=coordinator']).dataPlane).toBe('coordinator');
  });

  it('overlaps the exchange with the backward where it applies unless --overlap=off', () => {
    expect(resolve([]).overlap).toBe('auto');
    expect(resolve(['--overlap=on', '--backend=wasm', '--data-plane=shm']).overlap).toBe('on');
    expect(resolve(['--overlap=auto', '--backend=webgpu', '--grad-compression=fp16']).overlap).toBe('auto'); // auto just stays off there
  });

  it('accepts --name=value and --name value forms', () => {
    const c = resolve(['--workers=2', '--batch-size', '8', '--lr-schedule=cosine', '--steps=5']);
    expect(c).toMatchObject({ workers: 2, batchSize: 8, lrSchedule: 'cosine', steps: 5 });
  });

  it.each([
    [['--bogus=1'], 'unknown flag --bogus'],
    [['--batch-size=0'], '--batch-size=0 is invalid: expected an integer >= 1'],
    [['--batch-size=3.5'], 'expected an integer'],
    [['--lr=abc'], '--lr=abc is invalid'],
    [['--dataset=imagenet'], 'expected one of synthetic, fashion-mnist'],
    [['--epochs=2', '--steps=3'], 'give --epochs or --steps, not both'],
    [['--workers=0'], '--workers=0 is invalid'],
    [['--workers=4', '--gpus=0,1'], 'give one GPU id per worker'],
    [['--gpus=0,x'], 'comma-separated device ids'],
    [['--host=0.0.0.0'], 'give --token'],
    [['--nnodes=2'], 'needs --coordinator'],
    [['--nnodes=2', '--node-rank=2', '--coordinator=ws://h:1'], 'must be below --nnodes'],
    [['--dataset=cifar10'], 'needs --data-dir'],
    [['--tls-cert=a.pem'], '--tls-cert and --tls-key go together'],
    [['--image-size=16'], 'expected an integer >= 28'],
    [['stray'], "unexpected argument 'stray'"],
    [['--synthetic-size=10'], 'expected TRAIN,TEST sample counts'],
    [['--data-plane=nvlink'], 'expected one of auto, shm, peer, coordinator'],
    [['--overlap=yes'], 'expected one of auto, on, off'],
    [['--overlap=on', '--grad-compression=fp16'], '--grad-compression=fp16 excludes it'],
    [['--overlap=on', '--accumulate=2'], '--accumulate > 1 excludes it'],
    [['--overlap=on', '--data-plane=peer'], '--data-plane=peer excludes it'],
    [['--overlap=on', '--backend=webgpu'], '--backend=webgpu excludes it'],
  ])('rejects %j with a clear BAD_FLAG error', (argv, message) => {
    const got = codeOf(() => resolve(argv));
    expect(got?.[0]).toBe('BAD_FLAG');
    expect(got?.[1]).toContain(message);
  });

  it('takes the coordinator token from the environment', () => {
    expect(resolve(['--host=0.0.0.0'], { GOOGLENET_COORDINATOR_TOKEN: 's3cret' }).token).toBe('s3cret');
  });

  it('writes a resumed run into the folder it resumes', () => {
    expect(runFolderOf('/x/runs/a/checkpoints/step-00000010.ckpt')).toBe('/x/runs/a');
    expect(resolve(['--resume=/x/runs/a']).out).toBe('/x/runs/a');
  });

  it('lists every flag with its default in --help', () => {
    expect(resolveTrainConfig(['--help'])).toBe('help');
    const h = trainHelp();
    for (const f of ['--dataset', '--data-dir', '--image-size', '--batch-size', '--epochs', '--steps', '--lr', '--momentum', '--weight-decay', '--lr-schedule', '--warmup', '--aux-weight', '--accumulate', '--backend', '--seed', '--out', '--eval-every', '--grad-compression', '--workers', '--gpus', '--resume', '--max-restarts', '--checkpoint-every', '--keep', '--coordinator', '--nnodes', '--node-rank']) {
      expect(h).toContain(f);
    }
    expect(h).toContain('(default: 0.004)');
  });
});
