import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { readJsonl, tempDir, train } from '../helpers';

describe('memory over a long run', () => {
  it('keeps tf.memory().numTensors flat and resident memory bounded over 300 steps', async () => {
    const out = path.join(tempDir('memory'), 'run');
    await train(['--workers=1', '--steps=300', '--batch-size=4', '--image-size=32', '--backend=wasm', '--no-eval', `--out=${out}`]);
    const steps = readJsonl(path.join(out, 'metrics.jsonl')).filter((m) => m.type === 'step');
    expect(steps).toHaveLength(300);
    expect(new Set(steps.map((s) => s.numTensors)).size, 'tensors alive after each step').toBe(1);
    // The garbage collector's saw-tooth peaks no higher in the last third than in the middle third.
    const rss = steps.map((s) => s.rssMB as number);
    const middle = Math.max(...rss.slice(100, 200));
    const last = Math.max(...rss.slice(200));
    expect(last - middle, `rss peaks: ${middle} MB (steps 100-200), ${last} MB (200-300)`).toBeLessThan(32);
  }, 600_000);
});
