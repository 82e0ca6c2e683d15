/**
 * `nx run model:infer`: logits for the float32 NCHW tensor `input` of a safetensors file, written as float32
 * `logits` [N, classes]. The model is built without aux heads, so weights with or without aux tensors load.
 */
import { readFile, rename, writeFile } from 'node:fs/promises';
import * as tf from '@tensorflow/tfjs';
import { MIN_IMAGE_SIZE } from '../architecture.js';
import { selectBackend, type BackendName } from '../backend.js';
import { ModelError } from '../errors.js';
import { GoogLeNet } from '../googlenet.js';
import { decodeSafetensors, encodeSafetensors } from '../safetensors.js';
import { loadStateDict } from '../state-dict.js';
import { runCli, type FlagSpec } from './args.js';

const FLAGS: FlagSpec[] = [
  { name: 'weights', type: 'string', help: 'weights (.safetensors, the seed\'s state_dict)' },
  { name: 'input', type: 'string', help: 'safetensors file holding `input`, float32 [N, 3, H, W]' },
  { name: 'output', type: 'string', help: 'safetensors file to write `logits` [N, classes] to' },
  { name: 'num-classes', type: 'int', optional: true, min: 1, help: 'classes (default: from the weights\' fc.bias)' },
  { name: 'batch-size', type: 'int', default: 32, min: 1, help: 'images per forward pass' },
  { name: 'backend', type: 'backend', default: 'auto', help: 'tfjs backend' },
];

await runCli('nx run model:infer', 'Runs GoogLeNet inference (eval mode) on a safetensors tensor.', FLAGS, async (f) => {
  await selectBackend(f.backend as BackendName, { log: (l) => console.error(l) });
  const weights = decodeSafetensors(await readFile(f.weights as string)).tensors;
  const input = decodeSafetensors(await readFile(f.input as string)).tensors.get('input');
  if (!input || input.dtype !== 'F32' || input.shape.length !== 4 || input.shape[1] !== 3
    || input.shape[2] < MIN_IMAGE_SIZE || input.shape[3] < MIN_IMAGE_SIZE) {
    const got = input ? `${input.dtype} [${input.shape.join(', ')}]` : 'nothing';
    throw new ModelError('INVALID_INPUT', `${f.input} must hold \`input\`: F32 [N, 3, H, W] with H, W >= ${MIN_IMAGE_SIZE}; ` +
      `found ${got}`);
  }
  const numClasses = (f['num-classes'] as number | undefined) ?? weights.get('fc.bias')?.shape[0] ?? 1000;
  const model = new GoogLeNet({ numClasses, aux: false });
  loadStateDict(model, weights);
  const [n, , h, w] = input.shape;
  const batch = f['batch-size'] as number;
  const logits = new Float32Array(n * numClasses);
  const perImage = 3 * h * w;
  for (let start = 0; start < n; start += batch) {
    const m = Math.min(batch, n - start);
    const chunk = (input.data as Float32Array).subarray(start * perImage, (start + m) * perImage);
    const out = tf.tidy(() => {
      const x = tf.tensor4d(chunk, [m, 3, h, w]).transpose([0, 2, 3, 1]) as tf.Tensor4D; // NCHW -> NHWC
      return model.forward(x, { training: false }).main.dataSync() as Float32Array;
    });
    logits.set(out, start * numClasses);
  }
  const path = f.output as string;
  const tmp = `${path}.${process.pid}.tmp`;
  await writeFile(tmp, encodeSafetensors(new Map([['logits', { dtype: 'F32', shape: [n, numClasses], data: logits }]])));
  await rename(tmp, path);
  console.error(`wrote ${path}: logits [${n}, ${numClasses}]`);
  model.dispose();
});
