import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { GoogLeNet } from '../googlenet.js';
import type { HostTensor } from '../safetensors.js';
import { loadStateDict, stateDict } from '../state-dict.js';
import { hasPythonModules, toolsPython } from '../test-pytools.js';
import { pseudoRandom, useBackend } from '../test-utils.js';
import { exportOnnx } from './onnx.js';
import { exportTfjs } from './tfjs.js';

const CLASSES = 10;

/**
 * Weights with the statistics of a trained network (He-scaled convs, BN affine and running stats away from
 * 1/0), so logits are O(1): a fresh initialisation gives logits of 1e-13, where any export would "match".
 */
async function trainedLikeWeights(): Promise<Map<string, HostTensor>> {
  const fresh = new GoogLeNet({ numClasses: CLASSES, aux: false, seed: 1 });
  const dict = await stateDict(fresh);
  fresh.dispose();
  let seed = 1;
  for (const [name, t] of dict) {
    if (t.dtype !== 'F32') continue;
    const u = pseudoRandom(t.data.length, seed++);
    const fanIn = t.shape.slice(1).reduce((a, b) => a * b, 1);
    const map = name.endsWith('running_var') ? (v: number) => 1 + 0.5 * v
      : name.endsWith('running_mean') ? (v: number) => 0.1 * v
        : name.endsWith('.conv.1.weight') ? (v: number) => 1 + 0.2 * v
          : name.endsWith('bias') ? (v: number) => 0.1 * v
            : (v: number) => v * Math.sqrt(6 / fanIn);
    t.data = Float32Array.from(u, map);
  }
  return dict;
}

/** What `tf.loadLayersModel('file://…/model.json')` does in tfjs-node: read model.json and its shards. */
function fileHandler(dir: string): tf.io.IOHandler {
  return {
    load: async () => {
      const json = JSON.parse(readFileSync(join(dir, 'model.json'), 'utf8'));
      const group = json.weightsManifest[0];
      const buffers = group.paths.map((p: string) => new Uint8Array(readFileSync(join(dir, p))).buffer);
      return { modelTopology: json.modelTopology, weightSpecs: group.weights, weightData: tf.io.CompositeArrayBuffer.join(buffers), format: json.format };
    },
  };
}

const maxAbs = (t: tf.Tensor) => tf.tidy(() => tf.max(tf.abs(t)).dataSync()[0]!);

describe('export', () => {
  let weights: Map<string, HostTensor>;
  let model: GoogLeNet;
  const dir = mkdtempSync(join(tmpdir(), 'googlenet-export-'));

  beforeAll(async () => {
    await useBackend('wasm');
    weights = await trainedLikeWeights();
    model = new GoogLeNet({ numClasses: CLASSES, aux: false });
    loadStateDict(model, weights);
  });
  afterAll(() => model.dispose());

  // 224 is the seed's size; at 32 maxpool4 sees a 2x2 map (smaller than its window).
  it.each([[32, 2], [224, 1]])('tfjs: tf.loadLayersModel gives the model\'s logits at %i px (batch %i)', async (size, n) => {
    const { modelJson, shards } = await exportTfjs(model, size);
    const out = join(dir, `tfjs-${size}`);
    spawnSync('mkdir', ['-p', out]);
    for (const s of shards) writeFileSync(join(out, s.name), s.bytes);
    writeFileSync(join(out, 'model.json'), JSON.stringify(modelJson));
    // Stock layers only: nothing a plain TF.js needs project code for.
    const layers = (modelJson.modelTopology as { config: { layers: { class_name: string }[] } }).config.layers;
    expect([...new Set(layers.map((l) => l.class_name))].sort()).toEqual(['BatchNormalization', 'Concatenate', 'Conv2D', 'Dense',
      'GlobalAveragePooling2D', 'InputLayer', 'MaxPooling2D', 'ReLU', 'ZeroPadding2D']);
    expect(JSON.stringify(modelJson)).not.toMatch(/aux/);

    const loaded = await tf.loadLayersModel(fileHandler(out));
    const x = tf.tensor4d(pseudoRandom(n * size * size * 3, 7), [n, size, size, 3]);
    const ours = model.forward(x, { training: false }).main;
    const theirs = loaded.predict(x) as tf.Tensor;
    expect(theirs.shape).toEqual([n, CLASSES]);
    expect(maxAbs(ours)).toBeGreaterThan(0.5);
    expect(maxAbs(tf.sub(ours, theirs))).toBeLessThan(1e-4);
    tf.dispose([x, ours, theirs]);
    loaded.dispose();
  });

  it.each([[32, 2], [224, 1]])('onnx: onnx.checker accepts it and onnxruntime gives the model\'s logits at %i px (batch %i)', async (size, n) => {
    const { bytes, ops } = exportOnnx(weights, size);
    expect(ops).toEqual(expect.arrayContaining(['BatchNormalization', 'Concat', 'Conv', 'Gemm', 'GlobalAveragePool', 'MaxPool', 'Relu']));
    if (!hasPythonModules(`export.test.ts onnx ${size} px`, ['onnx', 'onnxruntime', 'numpy'])) return;
    const x = tf.tensor4d(pseudoRandom(n * size * size * 3, 7), [n, size, size, 3]);
    const ours = model.forward(x, { training: false }).main;
    const files = { model: join(dir, `m${size}.onnx`), input: join(dir, `x${size}.bin`), expected: join(dir, `y${size}.bin`) };
    writeFileSync(files.model, bytes);
    writeFileSync(files.input, new Uint8Array((await x.transpose([0, 3, 1, 2]).data() as Float32Array).buffer)); // NCHW, as model:infer
    writeFileSync(files.expected, new Uint8Array((await ours.data() as Float32Array).buffer));
    tf.dispose([x, ours]);
    const r = spawnSync(toolsPython(), [join(import.meta.dirname, 'onnx_check.py'), files.model, files.input, files.expected, String(n), String(size)], { encoding: 'utf8' });
    expect(r.status, r.stderr).toBe(0);
    const report = JSON.parse(r.stdout.trim().split('\n').pop()!);
    expect(report.opset).toBeGreaterThanOrEqual(17);
    expect(report.shape).toEqual([n, CLASSES]);
    expect(report.maxpool_ceil).toContain(1);
    expect(report.max_abs).toBeGreaterThan(0.5);
    expect(report.max_abs_diff).toBeLessThan(1e-4);
  });

  it('rejects an image size below 28 px with a coded error', async () => {
    expect(() => exportOnnx(weights, 16)).toThrow(expect.objectContaining({ code: 'INVALID_OPTION' }));
    await expect(exportTfjs(model, 16)).rejects.toMatchObject({ code: 'INVALID_OPTION' });
  });
});
