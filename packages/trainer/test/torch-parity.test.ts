/**
 * The project's trainer step against PyTorch, batch for batch (issue 16): same initial weights (one safetensors
 * file the project writes), same Fashion-MNIST batches (the project's own resize and grey -> RGB, no
 * augmentation), same dropout masks, SGD momentum 0.9 + weight decay, loss CE(main) + 0.3 x both aux heads.
 *
 * Why PyTorch's default initialisation here: with the project's (torchvision's truncated normal, std 0.01) the
 * network is ill-conditioned in float32: PyTorch's own float32 gradient at step 1 is 0.5-1.6 % away from its
 * float64 one (bench/torch-parity.ts --float64=true), so two correct float32 implementations agree only to
 * ~1e-2. With U(+-1/sqrt(fan_in)) weights float32 is ~100x more accurate, and the first steps can be compared
 * at 1e-4: the sharp check of the gradients, the aux weighting, the dropout masks and the SGD update.
 * From about step 3 on, any two float32 runs of this network drift apart (PyTorch float32 against float64 as
 * much as ours against PyTorch: the trajectories are chaotic), so after 50 steps the bound is loose: it
 * catches a wrong optimizer or loss, not rounding.
 */
import fs from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { selectBackend } from '@googlenet/model';
import { PYTHON, runParity, torchAvailable, type ParityResult } from './torch-parity';
import { tempDir } from './helpers';

const FASHION = '/usr/share/datasets/fashion-mnist';

function prerequisite(test: string, pkg: string, env: string, missing: string | undefined): boolean {
  if (missing === undefined) return true;
  const line = `${test}: needs ${pkg} (apt-get install ${pkg}); ${missing}`;
  if (process.env[env] === '1') throw new Error(`${env}=1 but ${line}`);
  console.warn(`SKIPPED ${line}`);
  return false;
}

const torch = torchAvailable();
const ready =
  prerequisite('torch parity', 'python3-torch', 'GOOGLENET_REQUIRE_TORCH', torch.ok ? undefined : `${PYTHON} cannot import torch (${torch.why})`) &&
  prerequisite('torch parity', 'dataset-fashion-mnist', 'GOOGLENET_REQUIRE_DATASETS', fs.existsSync(FASHION) ? undefined : `${FASHION} is missing`);

// Measured here (2026-11-30): step 1: update 2.9e-5, worst tensor 4.8e-5, loss equal to 6 digits; step 2: loss
// 8e-5 apart, update 1.2-1.8e-2 (one step already amplifies a 1e-5 difference ~400x); step 50: params 0.20-0.22,
// mean loss of steps 26-50 within a few %. PyTorch float32 against float64 differs as much at each of these.
// Weight decay 5e-3 (not the recipes' 1e-4) so that a lost decay term shows at step 1: without it in our SGD,
// step 1's update is 1.2e-3 off (fails); without momentum, step 2's is 0.44 off (fails). Both verified.
const STEP1_UPDATE = 1e-4;
const STEP1_TENSOR = 1e-3;
const STEP2_LOSS = 1e-3;
const STEP2_UPDATE = 0.1;
const STEP50_PARAMS = 0.3;
const STEP50_LOSS = 0.25;

describe.skipIf(!ready)('same batches as PyTorch', () => {
  let dir: string;
  let r: ParityResult;

  beforeAll(async () => {
    await selectBackend('wasm');
    dir = tempDir('parity');
    r = await runParity({
      steps: 50, batchSize: 8, imageSize: 32, lr: 0.005, momentum: 0.9, weightDecay: 5e-3, auxWeight: 0.3, seed: 1,
      record: [1, 2, 50], dir, init: 'pytorch', threads: 2,
    });
    console.log(`torch parity: losses ${r.ours.slice(0, 3).map((v) => v.toFixed(5))} vs ${r.theirs.slice(0, 3).map((v) => v.toFixed(5))}; ` +
      r.weights.map((w) => `step ${w.step}: update ${w.update.toExponential(2)}, params ${w.params.toExponential(2)}, worst ${w.worst} ${w.err.toExponential(2)}`).join('; '));
  }, 600_000);

  afterAll(() => {
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  it('takes the same first step: every parameter within 1e-3 of PyTorch\'s, the whole update within 1e-4', () => {
    const [s1] = r.weights;
    expect(s1!.update).toBeLessThan(STEP1_UPDATE);
    expect(s1!.err, s1!.worst).toBeLessThan(STEP1_TENSOR);
    for (const [name, e] of s1!.perTensor) if (!name.includes('running_')) expect(e, name).toBeLessThan(STEP1_TENSOR);
  });

  it('computes the same loss on the first two steps, and the second update (the first with momentum) within 10 %', () => {
    expect(Math.abs(r.ours[0]! - r.theirs[0]!) / r.theirs[0]!).toBeLessThan(1e-5);
    expect(Math.abs(r.ours[1]! - r.theirs[1]!) / r.theirs[1]!).toBeLessThan(STEP2_LOSS);
    expect(r.weights[1]!.update).toBeLessThan(STEP2_UPDATE);
  });

  it(`stays within ${STEP50_PARAMS} (relative L2 of all parameters) of PyTorch after 50 steps, at the same mean loss`, () => {
    const s50 = r.weights[2]!;
    expect(s50.params).toBeLessThan(STEP50_PARAMS);
    const mean = (a: number[]) => a.slice(25).reduce((s, v) => s + v, 0) / 25;
    expect(Math.abs(mean(r.ours) - mean(r.theirs)) / mean(r.theirs)).toBeLessThan(STEP50_LOSS);
  });
});

