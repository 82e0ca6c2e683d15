import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { maxRelativeError, readJsonl, readTensors, tempDir, train } from '../helpers';

const common = ['--image-size=32', '--batch-size=4', '--lr=0.05', '--backend=wasm', '--seed=3', '--workers=2', '--lr-schedule=paper'];

describe('exact resume', () => {
  it('2K steps straight equal K steps, stop, --resume, K more', async () => {
    const dir = tempDir('resume');
    const straight = path.join(dir, 'straight');
    const split = path.join(dir, 'split');
    await train([...common, '--steps=4', `--out=${straight}`]);
    await train([...common, '--steps=2', '--checkpoint-every=2', `--out=${split}`]);
    expect(fs.readdirSync(path.join(split, 'checkpoints'))).toContain('step-00000002.ckpt');
    const resumed = await train([...common, '--steps=4', `--resume=${split}`]);
    expect(resumed.stdout).toMatch(/resuming from .*step-00000002\.ckpt at step 2/);

    const { err, worst } = maxRelativeError(readTensors(path.join(split, 'model.safetensors')), readTensors(path.join(straight, 'model.safetensors')));
    expect(err, `worst tensor ${worst}`).toBeLessThanOrEqual(1e-6);
    const losses = (dirName: string) => readJsonl(path.join(dirName, 'metrics.jsonl')).filter((r) => r.type === 'step').map((r) => [r.step, r.loss]);
    expect(losses(split)).toEqual(losses(straight));
  }, 600_000);
});
