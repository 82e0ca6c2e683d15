/**
 * Cross-checks against PyTorch (Debian's python3-torch): our weights file loads into the seed's PyTorch model
 * with strict=True and gives the same logits (eval, and training with the same dropout masks, and the same
 * updated BN running statistics); a file PyTorch writes loads into our model and gives the same logits.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { GoogLeNet } from '../src/googlenet.js';
import { AUX, MAIN_DROPOUT } from '../src/architecture.js';
import { dropoutMask, DROPOUT_STREAM } from '../src/dropout.js';
import { decodeSafetensors, encodeSafetensors, type HostTensor } from '../src/safetensors.js';
import { loadWeights, saveWeights } from '../src/state-dict.js';
import { hasSystemPrerequisite } from '../src/test-prereqs.js';
import { pseudoRandom, relErr, useBackend } from '../src/test-utils.js';

const PYTHON = '/usr/bin/python3';
const SCRIPT = join(dirname(fileURLToPath(import.meta.url)), 'torch_ref.py');
const [N, SIZE, CLASSES, DROPOUT_SEED] = [2, 80, 10, 77]; // 80: ceil-mode pools pad, aux pools adaptively (5x5 -> 4x4)
const TOL = 1e-4;
// In training mode inception5a/5b normalise over only N*2*2 = 8 values per channel, which amplifies float32
// rounding: PyTorch's own float32 main logits differ from its float64 ones by 1.2e-4 here (we measured ~4e-4).
const TRAIN_MAIN_TOL = 1e-3;

/** Why /usr/bin/python3 cannot import torch, or undefined when it can. */
function torchMissing(): string | undefined {
  const r = spawnSync(PYTHON, ['-c', 'import torch.nn'], { encoding: 'utf8' });
  if (r.status === 0) return undefined;
  return `${PYTHON} cannot import torch (${(r.stderr || r.error?.message || '').trim().split('\n').at(-1)})`;
}

const haveTorch = hasSystemPrerequisite({ test: 'PyTorch cross-check', pkg: 'python3-torch', require: 'GOOGLENET_REQUIRE_TORCH', missing: torchMissing() });

/** Random BN weights and statistics, so that eval mode exercises every BN tensor. */
function randomiseBatchNorm(model: GoogLeNet): void {
  let seed = 100;
  const fill = (name: string, lo: number, hi: number, list: typeof model.params) => {
    for (const p of list.filter((q) => q.name.endsWith(name))) {
      const u = pseudoRandom(p.variable.size, seed++);
      p.variable.assign(tf.tensor(u.map((v) => lo + ((v + 1) / 2) * (hi - lo)), p.variable.shape));
    }
  };
  fill('conv.1.weight', 0.5, 1.5, model.params);
  fill('conv.1.bias', -0.1, 0.1, model.params);
  fill('running_mean', -0.1, 0.1, model.buffers);
  fill('running_var', 0.5, 1.5, model.buffers);
}

const f32 = (shape: number[], data: Float32Array): HostTensor => ({ dtype: 'F32', shape, data });

describe.skipIf(!haveTorch)('PyTorch cross-check', () => {
  let dir: string;
  let out: Map<string, HostTensor>;
  let ours: GoogLeNet;
  let x: tf.Tensor4D;

  beforeAll(async () => {
    await useBackend('wasm');
    dir = mkdtempSync(join(tmpdir(), 'googlenet-torch-'));
    ours = new GoogLeNet({ numClasses: CLASSES, seed: 5 });
    randomiseBatchNorm(ours);
    ours.numBatchesTracked = 3;
    await saveWeights(ours, join(dir, 'ours.safetensors'));
    const nchw = pseudoRandom(N * 3 * SIZE * SIZE, 1234);
    x = tf.tidy(() => tf.tensor4d(nchw, [N, 3, SIZE, SIZE]).transpose([0, 2, 3, 1]) as tf.Tensor4D);
    const mask = (stream: number, p: number) => f32([N, 1024], dropoutMask(DROPOUT_SEED, stream, N * 1024, p));
    writeFileSync(join(dir, 'in.safetensors'), encodeSafetensors(new Map([
      ['input', f32([N, 3, SIZE, SIZE], nchw)],
      ['mask_main', mask(DROPOUT_STREAM.main, MAIN_DROPOUT)],
      ['mask_aux1', mask(DROPOUT_STREAM.aux1, AUX.dropout)],
      ['mask_aux2', mask(DROPOUT_STREAM.aux2, AUX.dropout)],
    ])));
    const r = spawnSync(PYTHON, [SCRIPT, '--input', join(dir, 'in.safetensors'), '--weights', join(dir, 'ours.safetensors'),
      '--out', join(dir, 'out.safetensors'), '--write-weights', join(dir, 'theirs.safetensors'),
      '--num-classes', String(CLASSES), '--seed', '3'], { encoding: 'utf8', timeout: 120_000 });
    if (r.status !== 0) throw new Error(`torch_ref.py failed (status ${r.status}):\n${r.stderr}${r.error?.message ?? ''}`);
    out = decodeSafetensors(readFileSync(join(dir, 'out.safetensors'))).tensors;
  });

  afterAll(() => {
    ours?.dispose();
    x?.dispose();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('PyTorch loads our weights strictly and computes the same eval logits', () => {
    const logits = tf.tidy(() => ours.forward(x, { training: false }).main.dataSync());
    expect(relErr(logits, out.get('ours.logits')!.data as Float32Array)).toBeLessThanOrEqual(TOL);
  });

  it('matches PyTorch in training mode: all three heads, and the updated BN running statistics', () => {
    tf.tidy(() => {
      const r = ours.forward(x, { training: true, dropoutSeed: DROPOUT_SEED });
      const heads = { main: r.main, aux2: r.aux2!, aux1: r.aux1! };
      for (const [name, t] of Object.entries(heads)) {
        const tol = name === 'main' ? TRAIN_MAIN_TOL : TOL;
        expect(relErr(t.dataSync(), out.get(`ours.train_${name}`)!.data as Float32Array), name).toBeLessThanOrEqual(tol);
      }
      ours.buffers.forEach((b, i) => {
        const ref = out.get(`ours.stats.${b.name}`)!.data as Float32Array;
        expect(relErr(r.runningStats![i].dataSync(), ref), b.name).toBeLessThanOrEqual(TOL);
      });
    });
  });

  it('loads weights PyTorch wrote (random BN statistics included) and computes the same eval logits', async () => {
    const theirs = new GoogLeNet({ numClasses: CLASSES, seed: 0 });
    await loadWeights(theirs, join(dir, 'theirs.safetensors'));
    expect(theirs.numBatchesTracked).toBe(7);
    const logits = tf.tidy(() => theirs.forward(x, { training: false }).main.dataSync());
    expect(relErr(logits, out.get('theirs.logits')!.data as Float32Array)).toBeLessThanOrEqual(TOL);
    theirs.dispose();
  });
});
