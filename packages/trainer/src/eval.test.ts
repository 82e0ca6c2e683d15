import fs from 'node:fs';
import path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { decodeSafetensors, encodeSafetensors, GoogLeNet, saveWeights, selectBackend } from '@googlenet/model';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { resolveTrainConfig, type TrainConfig } from './config';
import { renderConfusion } from './confusion-svg';
import { evaluateSplit, type EvalDataOptions } from './eval';
import { LocalReducer, type GradientReducer } from './reducer';
import { evaluate } from './worker';
import { repoRoot, startScript, tempDir } from '../test/helpers';

const evalEntry = path.join(repoRoot, 'packages/trainer/src/cli/eval.ts');
const TEST_SIZE = 37; // odd and not a multiple of the batch: uneven shards and short last batches
const data: EvalDataOptions = { dataset: 'synthetic', syntheticSize: { train: 8, test: TEST_SIZE }, imageSize: 32, batchSize: 8 };

/** `worldSize` in-process ranks whose metrics rounds sum, as the coordinator's do. */
function memoryReducers(worldSize: number): GradientReducer[] {
  // One rendezvous per collective: the last rank to arrive combines every rank's array in place.
  let round: { parts: (Float64Array | Float32Array)[]; done: Promise<void>; release: () => void } | undefined;
  const collective = async (m: Float64Array | Float32Array, combine: (sum: number) => number) => {
    if (!round) {
      let release!: () => void;
      round = { parts: [], done: new Promise((r) => (release = r)), release };
    }
    const r = round;
    r.parts.push(m);
    if (r.parts.length === worldSize) {
      round = undefined;
      const sum = new Float64Array(m.length);
      for (const p of r.parts) for (let i = 0; i < sum.length; i++) sum[i] += p[i]!;
      for (const p of r.parts) for (let i = 0; i < sum.length; i++) p[i] = combine(sum[i]!);
      r.release();
    }
    await r.done;
  };
  return Array.from({ length: worldSize }, () => ({
    worldSize,
    reduceMetrics: (m: Float64Array) => collective(m, (s) => s),
    // As the coordinator defines the mean: fround(float64 sum in rank order / R).
    allReduce: (d: Float32Array) => collective(d, (s) => Math.fround(s / worldSize)),
    broadcast: async () => {}, close: async () => {},
  }));
}

async function runEval(args: string[]) {
  return startScript(evalEntry, args).done;
}

describe('evaluation', () => {
  let model: GoogLeNet;
  const dir = tempDir('eval');
  const run = path.join(dir, 'run');

  beforeAll(async () => {
    await selectBackend('wasm');
    model = new GoogLeNet({ numClasses: 10, aux: true, seed: 5 });
    fs.mkdirSync(run);
    await saveWeights(model, path.join(run, 'model.safetensors'));
    fs.writeFileSync(path.join(run, 'config.json'), JSON.stringify({ dataset: 'synthetic', syntheticSize: data.syntheticSize, imageSize: 32 }));
  });
  afterAll(() => model.dispose());

  it('agrees with the training loop\'s evaluate() and counts every test sample once in the confusion matrix', async () => {
    const r = await evaluateSplit(data, 0, model, new LocalReducer());
    const cfg = resolveTrainConfig(['--dataset=synthetic', `--synthetic-size=8,${TEST_SIZE}`, '--batch-size=8', '--decode-threads=0']) as TrainConfig;
    const reference = await evaluate(cfg, { rank: 0, worldSize: 1, localRank: 0, attempt: 0 }, model, new LocalReducer());
    expect(r.samples).toBe(TEST_SIZE);
    expect(reference.samples).toBe(TEST_SIZE);
    expect(r.loss).toBeCloseTo(reference.loss, 5);
    expect(r.top1).toBe(reference.top1);
    expect(r.top5).toBe(reference.top5);
    const total = r.confusion.flat().reduce((a, b) => a + b, 0);
    const diagonal = r.confusion.reduce((a, row, i) => a + row[i]!, 0);
    expect(total).toBe(TEST_SIZE);
    expect(diagonal).toBe(Math.round(r.top1 * TEST_SIZE));
    expect(r.classNames).toHaveLength(10);
  });

  it('splits the test set over 3 ranks with the same figures and confusion matrix as 1 rank', async () => {
    const one = await evaluateSplit(data, 0, model, new LocalReducer());
    const before = tf.memory().numTensors;
    const three = await Promise.all(memoryReducers(3).map((red, rank) => evaluateSplit(data, rank, model, red)));
    expect(tf.memory().numTensors).toBe(before);
    for (const r of three) {
      expect(r.samples).toBe(TEST_SIZE);
      expect(r.confusion).toEqual(one.confusion);
      expect(r.top1).toBe(one.top1);
      expect(r.loss).toBeCloseTo(one.loss, 5);
    }
  });

  it('names Fashion-MNIST\'s classes in the confusion matrix', async () => {
    // A 12-image test split in Fashion-MNIST's IDX format (uncompressed files are accepted too).
    const fm = path.join(dir, 'fashion');
    fs.mkdirSync(fm);
    const idx = (dims: number[], data: Uint8Array) => {
      const head = Buffer.alloc(4 + 4 * dims.length);
      head.writeUInt32BE(0x0800 + dims.length, 0);
      dims.forEach((d, i) => head.writeUInt32BE(d, 4 + 4 * i));
      return Buffer.concat([head, data]);
    };
    fs.writeFileSync(path.join(fm, 't10k-images-idx3-ubyte'), idx([12, 28, 28], Uint8Array.from({ length: 12 * 28 * 28 }, (_, i) => (i * 7) % 256)));
    fs.writeFileSync(path.join(fm, 't10k-labels-idx1-ubyte'), idx([12], Uint8Array.from({ length: 12 }, (_, i) => i % 10)));
    const r = await evaluateSplit({ dataset: 'fashion-mnist', dataDir: fm, imageSize: 32, batchSize: 8 }, 0, model, new LocalReducer());
    expect(r.samples).toBe(12);
    expect(r.classNames).toEqual(['T-shirt/top', 'Trouser', 'Pullover', 'Dress', 'Coat', 'Sandal', 'Shirt', 'Sneaker', 'Bag', 'Ankle boot']);
    expect(r.confusion.map((row) => row.reduce((a, b) => a + b, 0))).toEqual([2, 2, 1, 1, 1, 1, 1, 1, 1, 1]);
    expect(renderConfusion({ confusion: r.confusion, classNames: r.classNames, title: '' })).toContain('>Ankle boot</text>');
  });

  it('nx run trainer:eval --workers=2 on a run folder writes eval.json and a confusion matrix with the class names', async () => {
    const r = await runEval([`--weights=${run}`, '--workers=2', '--backend=wasm']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/eval: top-1 [\d.]+%  top-5 [\d.]+%  loss [\d.]+  on 37 test images of synthetic \(2 worker/);
    const report = JSON.parse(fs.readFileSync(path.join(run, 'eval.json'), 'utf8'));
    const single = await evaluateSplit(data, 0, model, new LocalReducer());
    expect(report.samples).toBe(TEST_SIZE);
    expect(report.top1).toBe(single.top1);
    expect(report.confusion).toEqual(single.confusion);
    expect(report.perClass[0]).toMatchObject({ class: 0, name: single.classNames[0] });
    const svg = fs.readFileSync(path.join(run, 'confusion.svg'), 'utf8');
    for (const name of single.classNames) expect(svg).toContain(`>${name}</text>`);
  }, 120_000);

  it.each([
    ['a truncated file', 'WEIGHTS_UNREADABLE', (b: Uint8Array) => b.subarray(0, b.length - 1000)],
    ['a missing tensor', 'WEIGHTS_MISMATCH', (b: Uint8Array) => {
      const { tensors, metadata } = decodeSafetensors(b);
      tensors.delete('inception4c.branch2.1.conv.0.weight');
      return encodeSafetensors(tensors, metadata);
    }],
  ])('bad weights (%s) are one line with code %s', async (_what, code, damage) => {
    const file = path.join(dir, `bad-${code}.safetensors`);
    fs.writeFileSync(file, damage(new Uint8Array(fs.readFileSync(path.join(run, 'model.safetensors')))));
    const r = await runEval([`--weights=${file}`, '--dataset=synthetic', '--backend=wasm']);
    expect(r.code).toBe(1);
    const errors = r.stderr.split('\n').filter((l) => l.startsWith('error'));
    expect(errors, r.stderr).toHaveLength(1);
    expect(errors[0]).toMatch(new RegExp(`^error \\[${code}\\]: ${file.replace(/[.]/g, '\\.')}`));
    expect(r.stderr).not.toMatch(/\n\s+at /); // no stack trace
  }, 60_000);

  it('weights for another class count are one line naming both counts', async () => {
    const five = new GoogLeNet({ numClasses: 5, aux: false });
    const file = path.join(dir, 'five.safetensors');
    await saveWeights(five, file);
    five.dispose();
    const r = await runEval([`--weights=${file}`, '--dataset=synthetic', `--synthetic-size=8,${TEST_SIZE}`, '--backend=wasm', '--workers=2']);
    expect(r.code).toBe(1);
    const errors = r.stderr.split('\n').filter((l) => l.startsWith('error'));
    expect(errors, r.stderr).toEqual([expect.stringMatching(/^error \[WEIGHTS_MISMATCH\]: the weights classify 5 classes but synthetic has 10/)]);
  }, 60_000);
});
