/**
 * What a replayed step does on the host besides encoding its recorded commands, at a given shape: the dropout
 * masks' stream keys (the masks themselves are made on the GPU) and the upload of the batch (images and labels)
 * through the queue; and, for comparison, the host-built masks of the normal path. Run on Dawn's null backend by
 * the bench (DAWNNODE_BACKEND=null), at 224x224 batch 64, where a whole step does not fit that backend's memory.
 * Prints one JSON line: {"keysMs", "uploadMs", "hostMasksMs", ...} (medians of 9).
 */
import { dropoutInputs, dropoutStreams, GoogLeNet, selectBackend } from '@googlenet/model';
import * as tf from '@tensorflow/tfjs';
import { parseFlags, type FlagSpec } from '../src/flags';

const FLAGS = {
  'image-size': { type: 'int', min: 28, default: 224, help: 'image side' },
  'batch-size': { type: 'int', min: 1, default: 64, help: 'images per step' },
} satisfies Record<string, FlagSpec>;
const f = parseFlags(process.argv.slice(2), FLAGS);
const [size, batch] = [f.imageSize as number, f.batchSize as number];
await selectBackend('webgpu');
const device = (tf.backend() as unknown as { device: GPUDevice }).device;
const model = new GoogLeNet({ numClasses: 10, seed: 1 });
const images = new Float32Array(batch * size * size * 3).fill(0.5);
const labels = new Int32Array(batch);
const usage = GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST;
const [imgBuf, lblBuf] = [device.createBuffer({ size: images.byteLength, usage }), device.createBuffer({ size: Math.max(16, labels.byteLength), usage })];
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[xs.length >> 1]!;
const masks: number[] = [];
const keys: number[] = [];
const upload: number[] = [];
for (let i = 0; i < 9; i++) {
  let t = performance.now();
  dropoutInputs(model, batch, i);
  masks.push(performance.now() - t);
  t = performance.now();
  dropoutStreams(model, batch, i);
  keys.push(performance.now() - t);
  t = performance.now();
  device.queue.writeBuffer(imgBuf, 0, images);
  device.queue.writeBuffer(lblBuf, 0, labels);
  upload.push(performance.now() - t);
  await device.queue.onSubmittedWorkDone();
}
console.log(JSON.stringify({ shape: `${size}x${size} b${batch}`, keysMs: median(keys), uploadMs: median(upload), hostMasksMs: median(masks), imageBytes: images.byteLength }));
process.exit(0);
