import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { decodeSafetensors } from '@googlenet/model';
import { maxRelativeError, readJsonl, readTensors, tempDir, train } from '../helpers';

// 2 workers x batch 4 on 48 synthetic samples, every feature of issue 17's list on, evaluated every 2 steps.
const common = [
  '--image-size=32', '--batch-size=4', '--lr=0.05', '--backend=wasm', '--seed=5', '--workers=2', '--synthetic-size=48,16',
  '--eval-every=2', '--checkpoint-every=2',
];
const features = ['--clip-grad-norm=1', '--label-smoothing=0.1', '--nesterov', '--ema-decay=0.9'];
const metadataOf = (file: string) => decodeSafetensors(new Uint8Array(fs.readFileSync(file))).metadata;

describe('training features (clip, label smoothing, Nesterov, EMA, best weights)', () => {
  it('4 steps straight equal 2 steps, stop, --resume, 2 more: raw and EMA weights alike; EMA evaluated and saved, best kept', async () => {
    const dir = tempDir('features');
    const [straight, split] = [path.join(dir, 'straight'), path.join(dir, 'split')];
    const run = await train([...common, ...features, '--steps=4', `--out=${straight}`]);
    await train([...common, ...features, '--steps=2', `--out=${split}`]);
    await train([...common, ...features, '--steps=4', `--resume=${split}`]);

    for (const file of ['model.safetensors', 'model-ema.safetensors']) {
      const { err, worst } = maxRelativeError(readTensors(path.join(split, file)), readTensors(path.join(straight, file)));
      expect(err, `${file}: worst tensor ${worst}`).toBeLessThanOrEqual(1e-6);
    }
    // The EMA is its own set of weights (decay 0.9 over 4 steps), not a copy of the raw ones.
    const { err } = maxRelativeError(readTensors(path.join(straight, 'model-ema.safetensors')), readTensors(path.join(straight, 'model.safetensors')));
    expect(err).toBeGreaterThan(1e-4);

    const config = JSON.parse(fs.readFileSync(path.join(straight, 'config.json'), 'utf8'));
    expect(config).toMatchObject({ clipGradNorm: 1, labelSmoothing: 0.1, nesterov: true, emaDecay: 0.9 });
    const evals = readJsonl(path.join(straight, 'metrics.jsonl')).filter((r) => r.type === 'eval');
    expect(evals.map((e) => e.step)).toEqual([2, 4]);
    for (const e of evals) expect(e.ema).toMatchObject({ top1: expect.any(Number), top5: expect.any(Number), loss: expect.any(Number), samples: 16 });
    expect(run.stdout).toMatch(/eval @ step 4: top-1 .* \| EMA: top-1 [\d.]+%/);
    expect(run.stdout).toMatch(/final EMA: +top-1/);

    // best.safetensors: the weights of the first evaluation with the highest top-1.
    const best = Math.max(...evals.map((e) => e.top1 as number));
    const bestStep = evals.find((e) => e.top1 === best)!.step;
    const meta = metadataOf(path.join(straight, 'best.safetensors'));
    expect([Number(meta.step), Number(meta.top1)]).toEqual([bestStep, best]);
    if (bestStep === 4) {
      expect(maxRelativeError(readTensors(path.join(straight, 'best.safetensors')), readTensors(path.join(straight, 'model.safetensors'))).err).toBe(0);
    }
  }, 600_000);

  it('resuming a checkpoint written without an EMA starts the EMA from its weights', async () => {
    const run = path.join(tempDir('features-noema'), 'run');
    await train([...common, '--steps=2', '--no-eval', `--out=${run}`]);
    const ckpt = path.join(run, 'checkpoints', 'step-00000002.ckpt');
    const r = await train([...common, '--steps=3', '--no-eval', '--ema-decay=0.5', '--resume-override=ema-decay', `--resume=${ckpt}`]);
    expect(r.stdout).toMatch(/holds no EMA of the weights; the EMA starts from its weights/);
    // One step later: ema = 0.5 x (step-2 weights) + 0.5 x (step-3 weights), tensor by tensor.
    const at2 = readTensors(ckpt);
    const at3 = readTensors(path.join(run, 'model.safetensors'));
    const ema = readTensors(path.join(run, 'model-ema.safetensors'));
    const expected = new Map([...at3].map(([name, w]) => [name, w.map((v, i) => 0.5 * at2.get(name)![i]! + 0.5 * v)]));
    const { err, worst } = maxRelativeError(ema, expected);
    expect(err, `worst tensor ${worst}`).toBeLessThanOrEqual(1e-5);
  }, 600_000);
});
