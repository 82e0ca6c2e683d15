/**
 * `nx run model:export --weights=<run folder|.safetensors|.ckpt> --format=tfjs|onnx [--out=...]`: the
 * inference graph (no aux heads) with the trained weights, for use without this project: a TF.js Layers
 * model (model.json + shards) or an ONNX model (opset 17).
 */
import { mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { selectBackend } from '../backend.js';
import { CliError } from '../errors.js';
import { exportOnnx, ONNX_OPSET } from '../export/onnx.js';
import { exportTfjs } from '../export/tfjs.js';
import { inferenceModel, readWeightsFile } from '../weights-file.js';
import { runCli, type FlagSpec } from './args.js';

const FLAGS: FlagSpec[] = [
  { name: 'weights', type: 'string', help: 'run folder, .safetensors state_dict or .ckpt checkpoint' },
  { name: 'format', type: 'string', help: 'tfjs (model.json + weight shards) or onnx (opset 17)' },
  { name: 'out', type: 'string', optional: true, help: 'output folder (tfjs) or .onnx file (default: beside the weights, tfjs/ or model.onnx)' },
  { name: 'image-size', type: 'int', optional: true, min: 28, help: 'input size the graph is built for (default: the run\'s config.json, else 224)' },
];

/** The image size a run was trained at, from the config.json of the weights' run folder, if there is one. */
async function runImageSize(weightsFile: string): Promise<number | undefined> {
  for (const dir of [dirname(weightsFile), dirname(dirname(weightsFile))]) {
    try {
      const size = JSON.parse(await readFile(join(dir, 'config.json'), 'utf8')).imageSize;
      if (Number.isInteger(size)) return size as number;
    } catch {
      // not a run folder
    }
  }
  return undefined;
}

await runCli('nx run model:export', 'Exports the inference graph with trained weights as TF.js or ONNX.', FLAGS, async (f) => {
  const format = f.format as string;
  if (format !== 'tfjs' && format !== 'onnx') throw new CliError(`--format=${format} is not supported; use tfjs or onnx`);
  const weights = await readWeightsFile(f.weights as string);
  const imageSize = (f['image-size'] as number | undefined) ?? (await runImageSize(weights.file)) ?? 224;
  const here = dirname(weights.file);
  // Nothing is computed, building the graph is all; wasm, unlike cpu, prints no tfjs-node banner.
  await selectBackend('wasm', { log: () => {} });
  if (format === 'onnx') {
    // Validates names and shapes against the model before writing anything.
    inferenceModel(weights).dispose();
    const out = (f.out as string | undefined) ?? join(here, 'model.onnx');
    const { bytes, ops } = exportOnnx(weights.tensors, imageSize);
    await mkdir(dirname(out), { recursive: true });
    const tmp = `${out}.${process.pid}.tmp`;
    await writeFile(tmp, bytes);
    await rename(tmp, out);
    console.log(`wrote ${out}: ONNX opset ${ONNX_OPSET}, input \`input\` float32 [N, 3, ${imageSize}, ${imageSize}] (NCHW), ` +
      `output \`logits\` [N, ${weights.numClasses}]; ${(bytes.length / 1e6).toFixed(1)} MB; ops ${ops.join(', ')}`);
    return;
  }
  const model = inferenceModel(weights);
  try {
    const out = (f.out as string | undefined) ?? join(here, 'tfjs');
    const { modelJson, shards } = await exportTfjs(model, imageSize);
    await mkdir(out, { recursive: true });
    for (const s of shards) await writeFile(join(out, s.name), s.bytes);
    await writeFile(join(out, 'model.json'), JSON.stringify(modelJson));
    console.log(`wrote ${join(out, 'model.json')} + ${shards.length} shard(s): TF.js Layers model, input float32 ` +
      `[N, ${imageSize}, ${imageSize}, 3] (NHWC), output logits [N, ${weights.numClasses}]; load with ` +
      `tf.loadLayersModel('${basename(out)}/model.json')`);
  } finally {
    model.dispose();
  }
});
