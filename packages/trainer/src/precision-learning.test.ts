/**
 * The learning test of --precision=f16 (issue 14): does f16 learn as fp32 does? GoogLeNet on the built-in synthetic
 * set at 32 px: 100 steps from one starting point on the same batches, once in fp32 and once in f16 (f16 GEMM
 * operands with f32 accumulation, fp32 master weights, GradScaler with PyTorch's defaults), both scored on the same
 * held-out images: f16 must end within 3 points of fp32's top-1, and fp32 must have learned in those 100 steps.
 *
 * Why the 100 steps start from a briefly pretrained network and not from the seed's initialisation: from scratch,
 * 100 steps end in a regime where the held-out top-1 is decided by luck, not by precision. Measured here on wasm
 * (fp32 only, batch 8, lr 0.005, momentum 0.5, seed 1): lr x 1, x 0.999, x 1.01, x 0.99 end at 22.0, 33.0, 24.0,
 * 29.7 % top-1, and at batch 32 (lr 0.005, momentum 0.9) lr x 0.999 ... x 1.01 spread 57.0-66.3 %; a lr 1e-3 off is
 * about what f16's rounding does to every update, so any f16-vs-fp32 bound there tests the perturbation's luck
 * (the old version of this test failed so: fp32 38.7 %, f16 25.7 % with no step skipped). From a network pretrained
 * for 300 steps (86.0 %), 100 more steps at lr 5e-4, momentum 0.5, batch 8 reach 91.3 % (seed 1) and 89.7 %
 * (seed 2) for every one of lr x 1, 0.999, 1.001, 0.99, 1.01: there a difference between f16 and fp32 is f16's.
 *
 * The pretraining runs on wasm in this process (fp32, ~30 s idle); the two compared runs on webgpu. Needs webgpu with
 * shader-f16 (Mesa's lavapipe in CI); without it the test says that it skipped, and fails where
 * GOOGLENET_REQUIRE_WEBGPU=1.
 */
import { describe, expect, it } from 'vitest';
import { selectBackend, stateDict, type HostTensor } from '@googlenet/model';
import { syntheticData, trainAndEvaluate } from './precision-compare';

const why = await selectBackend('webgpu', { precision: 'f16' }).then(() => '', (e: Error) => e.message);
if (why) {
  if (process.env.GOOGLENET_REQUIRE_WEBGPU === '1') throw new Error(`GOOGLENET_REQUIRE_WEBGPU=1 but webgpu f16 is unavailable: ${why}`);
  console.warn(`SKIPPED f16 learning test: ${why}`);
}

const STEPS = 100;
const PRETRAIN = { steps: 300, batchSize: 32, lr: 0.005, momentum: 0.9, seed: 11 };
const RECIPE = { lr: 5e-4, momentum: 0.5 };

describe.skipIf(!!why)('--precision=f16 learns as well as fp32', () => {
  it(`ends ${STEPS} steps at 32 px within 3 points of fp32's held-out top-1, from the same start on the same batches`, async () => {
    await selectBackend('wasm');
    const pre = await syntheticData({ ...PRETRAIN, imageSize: 32, trainSamples: PRETRAIN.steps * PRETRAIN.batchSize, testSamples: 300 });
    let start: Map<string, HostTensor> | undefined;
    const before = await trainAndEvaluate(pre, { lr: PRETRAIN.lr, momentum: PRETRAIN.momentum, inspect: async (m) => { start = await stateDict(m); } });

    const data = await syntheticData({ steps: STEPS, batchSize: 8, imageSize: 32, seed: 1, trainSamples: STEPS * 8, testSamples: 300 });
    // The same device both times: selectBackend switches the kernels (fp32 leaves tfjs's own in charge).
    await selectBackend('webgpu', { precision: 'fp32' });
    const fp32 = await trainAndEvaluate(data, { ...RECIPE, init: start });
    await selectBackend('webgpu', { precision: 'f16' });
    const half = await trainAndEvaluate(data, { ...RECIPE, init: start, lossScale: {} });
    const pct = (v: number) => `${(v * 100).toFixed(1)} %`;
    const say = `start ${pct(before.top1)}; after ${STEPS} steps fp32 ${pct(fp32.top1)}, f16 ${pct(half.top1)} (skipped ${half.skipped}, ` +
      `scales ${[...new Set(half.scales)].join(' ')}); ${fp32.msPerStep.toFixed(0)} / ${half.msPerStep.toFixed(0)} ms per step`;
    console.log(say);
    // The same held-out images before and after (the test split is fixed), so "learned" is a comparison.
    expect(fp32.top1 - before.top1, say).toBeGreaterThanOrEqual(0.02);
    expect(Math.abs(half.top1 - fp32.top1), say).toBeLessThanOrEqual(0.03);
    // Loss scaling did its job: scaled f16 steps ran, not a run of skips.
    expect(half.skipped, say).toBeLessThan(10);
  }, 1_800_000);
});
