import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { loggedSteps, maxRelativeError, range, readCounters, readJsonl, readTensors, startTrain, tempDir, train } from '../helpers';

// 48 training samples, 2 workers x batch 4: 6 steps per epoch, so 8 steps cross an epoch boundary. The step
// schedule with warm-up changes the lr during warm-up (steps 1-2) and halves it at the epoch boundary.
const common = [
  '--image-size=32', '--batch-size=4', '--lr=0.05', '--backend=wasm', '--seed=3', '--workers=2', '--synthetic-size=48,16',
  '--lr-schedule=step', '--step-epochs=1', '--gamma=0.5', '--warmup=2',
];

describe('exact resume', () => {
  it('8 steps straight equal 4 steps, stop, --resume, 4 more across an epoch boundary with a changing lr', async () => {
    const dir = tempDir('resume');
    const straight = path.join(dir, 'straight');
    const split = path.join(dir, 'split');
    await train([...common, '--steps=8', `--out=${straight}`]);
    await train([...common, '--steps=4', '--checkpoint-every=4', `--out=${split}`]);
    expect(fs.readdirSync(path.join(split, 'checkpoints'))).toContain('step-00000004.ckpt');
    // A writer killed mid-write leaves its temp file; the resumed run removes it.
    const deadPid = spawnSync(process.execPath, ['-e', '0']).pid;
    const stale = path.join(split, 'checkpoints', `step-00000005.ckpt.tmp-${deadPid}`);
    fs.writeFileSync(stale, 'half a checkpoint');
    const resumed = await train([...common, '--steps=8', `--resume=${split}`]);
    expect(resumed.stdout).toMatch(/resuming from .*step-00000004\.ckpt at step 4/);
    expect(fs.existsSync(stale)).toBe(false);

    const lrs = readJsonl(path.join(straight, 'metrics.jsonl')).filter((r) => r.type === 'step').map((r) => r.lr as number);
    expect(new Set(lrs).size, `lr per step: ${lrs}`).toBeGreaterThanOrEqual(3);
    const summary = JSON.parse(fs.readFileSync(path.join(split, 'summary.json'), 'utf8'));
    expect([summary.startStep, summary.stepsRun]).toEqual([4, 4]);

    const { err, worst } = maxRelativeError(readTensors(path.join(split, 'model.safetensors')), readTensors(path.join(straight, 'model.safetensors')));
    expect(err, `worst tensor ${worst}`).toBeLessThanOrEqual(1e-6);
    const counters = readCounters(path.join(split, 'model.safetensors'));
    expect(counters.size).toBeGreaterThan(50);
    expect(counters).toEqual(readCounters(path.join(straight, 'model.safetensors')));
    expect(new Set(counters.values())).toEqual(new Set([8n]));
    const losses = (d: string) => readJsonl(path.join(d, 'metrics.jsonl')).filter((r) => r.type === 'step').map((r) => [r.step, r.lr, r.loss]);
    expect(losses(split)).toEqual(losses(straight));
    expect(loggedSteps(split)).toEqual(range(1, 8));
  }, 600_000);

  it('refuses to resume with a changed batch size or lr schedule unless --resume-override allows it', async () => {
    const run = path.join(tempDir('resume-check'), 'run');
    await train([...common, '--steps=2', '--checkpoint-every=2', '--no-eval', `--out=${run}`]);
    // Restarting would fail the same way: the launcher does not spend --max-restarts on it.
    const refused = await startTrain([...common, '--steps=4', '--no-eval', '--batch-size=2', '--lr-schedule=cosine', '--max-restarts=2', `--resume=${run}`]).done;
    expect(refused.code).toBe(1);
    expect(refused.stderr).toMatch(/a restart cannot fix this, so none was tried/);
    expect(refused.stderr).not.toMatch(/restart 1\/2/);
    expect(refused.stderr).toMatch(/error \[RESUME_CONFIG_CHANGED\]: .*step-00000002\.ckpt was written by a run with other settings: batch-size 4 -> 2, lr-schedule step -> cosine, steps 2 -> 4\. .*--resume-override=batch-size,lr-schedule,steps/);
    const allowed = await train([...common, '--steps=4', '--no-eval', '--batch-size=2', '--lr-schedule=cosine', '--resume-override=all', `--resume=${run}`]);
    expect(allowed.stdout).toMatch(/resume: batch-size 4 -> 2 \(allowed by --resume-override\)/);
    expect(loggedSteps(run)).toEqual(range(1, 4));
  }, 600_000);
});
