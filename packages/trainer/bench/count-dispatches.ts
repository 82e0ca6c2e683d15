/**
 * Dispatches of one training step at a given shape on the webgpu adapter of this machine (in CI: Mesa's
 * lavapipe), counted while the step is encoded: its command buffers are never submitted, so a 224x224 batch-64
 * step can be counted on a CPU adapter that would need minutes and gigabytes to execute it. The count is what the
 * bench multiplies by the host cost per dispatch measured on Dawn's null backend (which cannot allocate that
 * shape). Prints one JSON line: {"dispatches": N, ...}.
 *   npx tsx packages/trainer/bench/count-dispatches.ts --image-size=224 --batch-size=64 --num-classes=1000
 */
import * as tf from '@tensorflow/tfjs';
import { countDispatches, GoogLeNet, selectBackend } from '@googlenet/model';
import { parseFlags, helpText, type FlagSpec } from '../src/flags';
import { Sgd } from '../src/optim';
import { LocalReducer } from '../src/reducer';
import { TrainStep } from '../src/step';

const FLAGS = {
  'image-size': { type: 'int', min: 28, default: 224, help: 'image side' },
  'batch-size': { type: 'int', min: 1, default: 64, help: 'images per step' },
  'num-classes': { type: 'int', min: 2, default: 1000, help: 'classes' },
  help: { type: 'boolean', default: false, help: 'print this help' },
} satisfies Record<string, FlagSpec>;

const f = parseFlags(process.argv.slice(2), FLAGS);
if (f.help) {
  console.log(helpText('Usage: tsx packages/trainer/bench/count-dispatches.ts [options]', FLAGS));
  process.exit(0);
}
const [size, batch, classes] = [f.imageSize as number, f.batchSize as number, f.numClasses as number];
const info = await selectBackend('webgpu');
const model = new GoogLeNet({ numClasses: classes, seed: 1 });
const sgd = new Sgd(model.params.map((p) => p.variable), { momentum: 0.9, weightDecay: 1e-4 });
const step = new TrainStep(model, sgd, new LocalReducer(), { auxWeight: 0.3, accumulate: 1, batchSize: batch, imageSize: size, seed: 1, rank: 0, replay: false });
const images = new Float32Array(batch * size * size * 3);
const labels = Int32Array.from({ length: batch }, (_, i) => i % classes);
// Command buffers are encoded (and counted) but never submitted: nothing runs, nothing is zeroed or touched.
const be = tf.backend() as unknown as { queue: GPUQueue };
const queue = be.queue;
be.queue = new Proxy(queue, {
  get: (t, p) => (p === 'submit' ? () => {} : typeof Reflect.get(t, p) === 'function' ? (Reflect.get(t, p) as Function).bind(t) : Reflect.get(t, p)),
});
const counted = countDispatches();
const b = { images, labels, size: batch, epoch: 0, indexInEpoch: 0, slot: 0, step: 0, indices: new Int32Array(batch) };
// The second step is counted: the first also builds cached constants and starts the momentum buffers.
step.issue(b, 1, 0.01).dispose();
const d0 = counted();
step.issue(b, 2, 0.01).dispose();
const dispatches = counted() - d0;
console.log(JSON.stringify({ dispatches, shape: `${size}x${size} b${batch}`, classes, adapter: info.line, tensors: tf.memory().numTensors }));
process.exit(0);
