import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { loggedSteps, range, tempDir, train } from '../helpers';

// 10 synthetic classes: chance is 10 %. "Clearly higher" is set at 3x chance on the held-out split.
// Both runs take global batches of 32 for 100 steps (about an epoch). With the paper's random-resized-crop
// at 32 px, GoogLeNet learns fastest early with a moderate momentum (measured beside PyTorch on the same batches).
const CHANCE = 0.1;
const STEPS = 100;
const args = ['--dataset=synthetic', '--synthetic-size=3000,1000', '--image-size=32', `--steps=${STEPS}`, '--lr=0.005', '--momentum=0.5', '--backend=wasm', '--seed=1'];

describe('training learns the built-in data set', () => {
  it.each([1, 2])('--workers=%i reaches well above chance on the evaluation split', async (workers) => {
    const out = path.join(tempDir('learn'), `w${workers}`);
    const r = await train([...args, `--workers=${workers}`, `--batch-size=${32 / workers}`, `--out=${out}`]);
    const summary = JSON.parse(fs.readFileSync(path.join(out, 'summary.json'), 'utf8'));
    // Counted, not copied from the config: every step ran once and was recorded once.
    expect(summary.stepsRun).toBe(STEPS);
    expect(loggedSteps(out)).toEqual(range(1, STEPS));
    expect(summary.finalEval.top1, r.stdout.slice(-2000)).toBeGreaterThan(3 * CHANCE);
    // The run folder holds everything the user was promised.
    for (const f of ['config.json', 'train.log', 'metrics.jsonl', 'chart.svg', 'model.safetensors', 'summary.json']) {
      expect(fs.existsSync(path.join(out, f)), f).toBe(true);
    }
    expect(summary.numTensors.last).toBe(summary.numTensors.first);
    expect(r.stdout).toMatch(new RegExp(`summary: ${STEPS} steps`));
    expect(r.stdout).toMatch(/backend: wasm/);
  }, 900_000);
});
