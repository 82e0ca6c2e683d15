import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { decodeSafetensors, encodeSafetensors } from '../safetensors.js';
import { GoogLeNet } from '../googlenet.js';
import { loadWeights } from '../state-dict.js';
import { pseudoRandom, useBackend } from '../test-utils.js';

const HERE = dirname(fileURLToPath(import.meta.url));
const ROOT = resolve(HERE, '../../../..');
const TSX = join(ROOT, 'node_modules/.bin/tsx');

function cli(script: string, ...args: string[]) {
  const r = spawnSync(TSX, [join(HERE, `${script}.ts`), ...args], { cwd: ROOT, encoding: 'utf8', timeout: 60_000 });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

describe('CLI', () => {
  const dir = mkdtempSync(join(tmpdir(), 'googlenet-cli-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('summary prints the table for the given classes, image size and batch size', () => {
    const r = cli('summary', '--num-classes=10', '--image-size=32', '--batch-size=4');
    expect(r.status).toBe(0);
    expect(r.stdout).toMatch(/├─BasicConv2d: 1-1\s+\[4, 64, 16, 16\]\s+9,536/);
    expect(r.stdout).toMatch(/├─Linear: 1-21\s+\[4, 10\]\s+10,250/);
    expect(r.stdout).toContain('Total params: 10,341,566');
    expect(r.stdout).toContain('Non-trainable params: 0');
  });

  it('prints usage for --help and one clear error line (exit 2) for bad flags', () => {
    for (const help of ['--help', '-h']) expect(cli('summary', help).stdout).toContain('--image-size=<int>');
    for (const [flag, message] of [['--classes=3', 'unknown flag --classes'], ['--num-classes=ten', 'expected an integer >= 1'],
      ['--image-size=16', '--image-size=16 is invalid: expected an integer >= 28'], ['--aux=maybe', 'expected true or false']]) {
      const r = cli('summary', flag);
      expect(r.status).toBe(2);
      expect(r.stderr).toContain(message);
      expect(r.stderr).not.toContain('    at '); // no stack trace
    }
    const missing = cli('infer', '--weights=a.safetensors');
    expect(missing.stderr).toContain('--input is required');
  });

  it('init writes weights that infer uses for the logits our model computes', async () => {
    const weights = join(dir, 'w.safetensors');
    const init = cli('init', `--out=${weights}`, '--seed=3', '--num-classes=5', '--aux=false', '--backend=wasm');
    expect(init.status, init.stderr).toBe(0);
    const input = pseudoRandom(2 * 3 * 36 * 36, 8);
    writeFileSync(join(dir, 'x.safetensors'),
      encodeSafetensors(new Map([['input', { dtype: 'F32', shape: [2, 3, 36, 36], data: input }]])));
    const infer = cli('infer', `--weights=${weights}`, `--input=${join(dir, 'x.safetensors')}`,
      `--output=${join(dir, 'y.safetensors')}`, '--backend=wasm');
    expect(infer.status, infer.stderr).toBe(0);
    const logits = decodeSafetensors(readFileSync(join(dir, 'y.safetensors'))).tensors.get('logits')!;
    expect([logits.dtype, logits.shape]).toEqual(['F32', [2, 5]]);

    await useBackend('wasm');
    const model = new GoogLeNet({ numClasses: 5, aux: false, seed: 3 });
    const bytes = (m: GoogLeNet) => Buffer.concat(m.params.map((p) => Buffer.from((p.variable.dataSync() as Float32Array).buffer)));
    const fresh = bytes(model);
    await loadWeights(model, weights);
    expect(bytes(model).equals(fresh)).toBe(true); // same seed, same weights
    const expected = tf.tidy(() => model.forward(
      tf.tensor4d(input, [2, 3, 36, 36]).transpose([0, 2, 3, 1]) as tf.Tensor4D, { training: false }).main.dataSync());
    expect(logits.data).toEqual(expected);
    model.dispose();
  });
});
