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
    const steps = readJsonl(path.join(straight, 'metrics.jsonl')).filter((r) => r.type === 'step');
    expect(steps.map((s) => [s.lossScale, s.skippedSteps])).toEqual([[65536, 0], [65536, 0], [65536, 0], [65536, 0]]);
    // The scaler's growth tracker counts 4 good steps in both: the resumed run took 2 from the checkpoint.
    for (const r of [straight, split]) expect(metaOf(lastCheckpoint(r)).lossScale).toEqual({ scale: 65536, goodSteps: 4, skippedSteps: 0 });
    // The weights' digest each worker logs (model.safetensors is not compared: on webgpu/lavapipe two files of equal
    // weights were seen to differ, a state-dict export issue reported separately).
    expect(rankDigests(split).get(0)).toBe(rankDigests(straight).get(0));
  }, 600_000);
});
