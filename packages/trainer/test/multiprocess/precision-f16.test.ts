import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { decodeSafetensors, selectBackend } from '@googlenet/model';
import { rankDigests, readJsonl, tempDir, train } from '../helpers';

// --precision=f16 needs webgpu with shader-f16: CI runs it on Mesa's lavapipe (which has it); without an adapter it
// says so and skips (a failure where GOOGLENET_REQUIRE_WEBGPU=1).
const why = await selectBackend('webgpu', { precision: 'f16' }).then(() => '', (e: Error) => e.message);
if (why) {
  if (process.env.GOOGLENET_REQUIRE_WEBGPU === '1') throw new Error(`GOOGLENET_REQUIRE_WEBGPU=1 but webgpu f16 is unavailable: ${why}`);
  console.warn(`SKIPPED --precision=f16 run test: ${why}`);
}
await selectBackend('cpu'); // this process only probes; the runs are child processes

const common = ['--image-size=32', '--batch-size=4', '--lr=0.05', '--backend=webgpu', '--precision=f16', '--seed=5', '--workers=1',
  '--synthetic-size=64,8', '--eval-every=0', '--no-eval', '--checkpoint-every=2'];
const metaOf = (file: string) => JSON.parse(decodeSafetensors(new Uint8Array(fs.readFileSync(file))).metadata.checkpoint!);
const lastCheckpoint = (run: string) => {
  const dir = path.join(run, 'checkpoints');
  return path.join(dir, fs.readdirSync(dir).filter((f) => f.endsWith('.ckpt')).sort().at(-1)!);
};

describe.skipIf(!!why)('--precision=f16 runs', () => {
  it('say f16 in the backend line, log the loss scale per step, and resume the scaler exactly (4 straight = 2 + resume + 2)', async () => {
    const dir = tempDir('f16');
    const [straight, split] = [path.join(dir, 'straight'), path.join(dir, 'split')];
    const run = await train([...common, '--steps=4', `--out=${straight}`]);
    await train([...common, '--steps=2', `--out=${split}`]);
    await train([...common, '--steps=4', `--resume=${split}`]);

    expect(run.stdout).toMatch(/backend: webgpu f16[ ,(]/);
    expect(run.stdout).toContain('webgpu replay off, steps run through tfjs: dynamic loss scaling');
    const scales = (run: string) => readJsonl(path.join(run, 'metrics.jsonl')).filter((r) => r.type === 'step')
      .map((s) => [s.step, s.lossScale, s.skippedSteps] as [number, number, number]);
    const steps = scales(straight);
    expect(steps.map(([step]) => step)).toEqual([1, 2, 3, 4]);
    // GradScaler's rule, whatever this adapter's gradients do at the initial scale (here they overflow f16 operands
    // at 65536 and the scaler backs off, as PyTorch's does in its first steps): each step uses 65536 halved once per
    // step skipped before it, and no growth happens within 2000 good steps.
    const state = { scale: 65536, goodSteps: 0, skippedSteps: 0 };
    for (const [, scale, skipped] of steps) {
      expect(scale).toBe(state.scale);
      expect([state.skippedSteps, state.skippedSteps + 1]).toContain(skipped);
      if (skipped > state.skippedSteps) Object.assign(state, { scale: state.scale / 2, goodSteps: 0, skippedSteps: skipped });
      else state.goodSteps += 1;
    }
    // Resumed exactly: the same scale and skips step by step, and the same scaler state in the last checkpoint.
    expect(scales(split)).toEqual(steps);
    expect(metaOf(lastCheckpoint(straight)).lossScale).toEqual(state);
    expect(metaOf(lastCheckpoint(split)).lossScale).toEqual(state);
    // The weights' digest each worker logs (model.safetensors is not compared: on webgpu/lavapipe two files of equal
    // weights were seen to differ, a state-dict export issue reported separately).
    expect(rankDigests(split).get(0)).toBe(rankDigests(straight).get(0));
  }, 600_000);
});
