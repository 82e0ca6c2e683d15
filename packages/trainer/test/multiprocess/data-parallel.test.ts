import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { selectBackend } from '@googlenet/model';
import { maxRelativeError, rankDigests, readJsonl, readTensors, tempDir, train } from '../helpers';

// Image size 32 and tiny batches keep each run to seconds of compute; process start-up dominates.
const common = ['--image-size=32', '--batch-size=4', '--steps=3', '--lr=0.05', '--backend=wasm', '--eval-every=0', '--seed=7'];

/** Both ranks of the 2-worker run end with identical weights, equal to the 1-worker run's within `tol`. */
function expectSameModel(two: string, one: string, tol: number): void {
  const digests = rankDigests(two);
  expect([...digests.keys()].sort()).toEqual([0, 1]);
  expect(digests.get(1)).toBe(digests.get(0));
  const { err, worst } = maxRelativeError(readTensors(path.join(two, 'model.safetensors')), readTensors(path.join(one, 'model.safetensors')));
  expect(err, `worst tensor ${worst}`).toBeLessThanOrEqual(tol);
}

describe('data-parallel training across processes', () => {
  it('2 workers x batch B equal 1 worker accumulating 2 micro-batches of B, and both ranks hold identical weights', async () => {
    const dir = tempDir('dp');
    const two = path.join(dir, 'two');
    const one = path.join(dir, 'one');
    await train([...common, '--workers=2', `--out=${two}`]);
    await train([...common, '--workers=1', '--accumulate=2', `--out=${one}`]);

    expectSameModel(two, one, 1e-5);

    // The same global figures were logged: the step metrics are sums over the same samples.
    const lossTwo = readJsonl(path.join(two, 'metrics.jsonl')).filter((r) => r.type === 'step').map((r) => r.loss as number);
    const lossOne = readJsonl(path.join(one, 'metrics.jsonl')).filter((r) => r.type === 'step').map((r) => r.loss as number);
    expect(lossTwo).toHaveLength(3);
    lossTwo.forEach((l, i) => expect(l).toBeCloseTo(lossOne[i]!, 4));
  }, 600_000);
});

// The same proof on the webgpu backend (one adapter shared by both workers, as on a one-GPU machine). CI runs it
// on Mesa's lavapipe (a CPU Vulkan driver); without any adapter it says so and skips.
const webgpu = await selectBackend('webgpu').then((i) => i.line, (e: Error) => {
  if (process.env.GOOGLENET_REQUIRE_WEBGPU === '1') throw new Error(`GOOGLENET_REQUIRE_WEBGPU=1 but webgpu is unavailable: ${e.message}`);
  console.warn(`SKIPPED webgpu data-parallel test: ${e.message}`);
  return null;
});
await selectBackend('cpu'); // this process only probes; the runs are child processes

describe.skipIf(!webgpu)('data-parallel training on webgpu', () => {
  it('2 webgpu workers through the coordinator equal 1 webgpu worker accumulating 2, with identical rank weights', async () => {
    const dir = tempDir('dp-webgpu');
    const two = path.join(dir, 'two');
    const one = path.join(dir, 'one');
    // A tiny test split: evaluation forwards on a CPU rasteriser are what would cost minutes here.
    const args = [...common.filter((a) => !a.startsWith('--backend') && !a.startsWith('--steps')), '--backend=webgpu', '--steps=2', '--synthetic-size=64,8'];
    const r = await train([...args, '--workers=2', `--out=${two}`]);
    expect(r.stdout).toMatch(/backend: webgpu on /);
    expect(r.stdout).toContain('workers on this machine share this adapter'); // what Dawn allows, said at run time
    await train([...args, '--workers=1', '--accumulate=2', `--out=${one}`]);

    expectSameModel(two, one, 1e-4);
  }, 600_000);
});
