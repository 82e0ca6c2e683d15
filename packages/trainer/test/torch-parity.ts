/**
 * The same-batches comparison with PyTorch: the project's trainer step (TrainStep + Sgd, one worker) and
 * torch.optim.SGD on the seed's PyTorch model (test/torch_parity.py) start from one safetensors file the
 * project writes, see the same Fashion-MNIST batches (the project's own 28 -> 32 resize and grey -> RGB, no
 * augmentation) and the same dropout masks, and report each step's loss and the weights after chosen steps.
 * Used by torch-parity.test.ts (a short run that stays in the suite) and bench/torch-parity.ts (150 steps).
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import * as tf from '@tensorflow/tfjs';
import { createDataLoader, type DatasetName } from '@googlenet/dataloader';
import {
  AUX, DROPOUT_STREAM, GoogLeNet, MAIN_DROPOUT, decodeSafetensors, dropoutMask, encodeSafetensors, saveWeights,
  stateDict, type HostTensor,
} from '@googlenet/model';
import { LocalReducer } from '../src/reducer';
import { Sgd } from '../src/optim';
import { TrainStep } from '../src/step';

export const PYTHON = '/usr/bin/python3';
const SCRIPT = path.join(path.dirname(fileURLToPath(import.meta.url)), 'torch_parity.py');

export interface ParityOptions {
  steps: number;
  batchSize: number;
  imageSize: number;
  lr: number;
  momentum: number;
  weightDecay: number;
  auxWeight: number;
  /** Initialisation, sampling and dropout seed. */
  seed: number;
  /** Steps after which both sides' full state_dicts are compared. */
  record: number[];
  /** Scratch folder for the exchanged files. */
  dir: string;
  dataset?: DatasetName;
  /** Threads for PyTorch. */
  threads?: number;
  /** PyTorch trains in float64 too: the distance float32 rounding alone puts between two correct runs. */
  float64?: boolean;
  /** PyTorch prints a line every 10 steps (to this process's stderr). */
  progress?: boolean;
  /**
   * 'project': the model's own initialisation (torchvision's truncated normal, std 0.01). 'pytorch': conv and
   * linear layers as PyTorch's defaults draw them (uniform +-1/sqrt(fan_in), kaiming_uniform with a = sqrt(5)),
   * from a seeded generator. Default 'project'.
   */
  init?: 'project' | 'pytorch';
}

/** Distances between two state_dicts after `step` (see compare()). */
export interface Distance {
  step: number;
  /** Largest per-parameter ||a - b|| / ||b||, and which parameter. */
  err: number;
  worst: string;
  /** Per tensor (running statistics included). */
  perTensor: Map<string, number>;
  /** All trainable parameters as one vector: ||a - b|| / ||b||. */
  params: number;
  /** All trainable parameters: ||a - b|| / ||b - w0||, the difference against how far training moved them. */
  update: number;
}

export interface ParityResult {
  ours: number[];
  theirs: number[];
  /** PyTorch in float64 (with `float64`). */
  theirs64?: number[];
  /** PyTorch float32 against PyTorch float64, per recorded step (with `float64`). */
  rounding?: Distance[];
  /** Ours against PyTorch float64, per recorded step (with `float64`). */
  weights64?: Distance[];
  /** Per recorded step, ours against PyTorch float32. */
  weights: Distance[];
  seconds: { ours: number; theirs: number };
}

/** Whether /usr/bin/python3 can import torch, and why not. */
export function torchAvailable(): { ok: boolean; why: string } {
  const r = spawnSync(PYTHON, ['-c', 'import torch'], { encoding: 'utf8' });
  return { ok: r.status === 0, why: (r.stderr || r.error?.message || '').trim().split('\n').at(-1) ?? '' };
}

const f32 = (shape: number[], data: Float32Array): HostTensor => ({ dtype: 'F32', shape, data });

/** NHWC [B, S, S, 3] -> NCHW [B, 3, S, S] into `out` at `offset`. */
function toNchw(src: Float32Array, b: number, s: number, out: Float32Array, offset: number): void {
  const hw = s * s;
  for (let n = 0; n < b; n++) {
    for (let p = 0; p < hw; p++) for (let c = 0; c < 3; c++) out[offset + n * 3 * hw + c * hw + p] = src[(n * hw + p) * 3 + c]!;
  }
}

export async function runParity(o: ParityOptions): Promise<ParityResult> {
  const { steps, batchSize: B, imageSize: S } = o;
  const px = S * S * 3;
  const loader = await createDataLoader({
    dataset: o.dataset ?? 'fashion-mnist', split: 'train', imageSize: S, batchSize: B, rank: 0, worldSize: 1, seed: o.seed,
    shuffle: true, augment: 'none', pad: true, threads: 0,
  });
  const images: Float32Array[] = [];
  const labels: Int32Array[] = [];
  for (let k = 0; k < steps; k++) {
    const b = (await loader.next())!;
    images.push(b.images.slice(0, B * px));
    labels.push(b.labels.slice(0, B));
  }
  await loader.close();

  const model = new GoogLeNet({ numClasses: 10, aux: true, seed: o.seed });
  const sgd = new Sgd(model.params.map((p) => p.variable), { momentum: o.momentum, weightDecay: o.weightDecay });
  const trainStep = new TrainStep(model, sgd, new LocalReducer(), {
    auxWeight: o.auxWeight, accumulate: 1, batchSize: B, imageSize: S, seed: o.seed, rank: 0,
  });
  if (o.init === 'pytorch') pytorchDefaultInit(model, o.seed);
  const init = path.join(o.dir, 'init.safetensors');
  await saveWeights(model, init);

  // The batches and the masks the project's step will draw (dropout seed of (step, slot 0)).
  const nchw = new Float32Array(steps * B * px);
  const lab = new Int32Array(steps * B);
  const masks = { main: new Float32Array(steps * B * 1024), aux1: new Float32Array(steps * B * 1024), aux2: new Float32Array(steps * B * 1024) };
  for (let k = 0; k < steps; k++) {
    toNchw(images[k]!, B, S, nchw, k * B * px);
    lab.set(labels[k]!, k * B);
    const seed = trainStep.dropoutSeed(k, 0);
    const n = B * 1024;
    masks.main.set(dropoutMask(seed, DROPOUT_STREAM.main, n, MAIN_DROPOUT), k * n);
    masks.aux1.set(dropoutMask(seed, DROPOUT_STREAM.aux1, n, AUX.dropout), k * n);
    masks.aux2.set(dropoutMask(seed, DROPOUT_STREAM.aux2, n, AUX.dropout), k * n);
  }
  const data = path.join(o.dir, 'data.safetensors');
  fs.writeFileSync(data, encodeSafetensors(new Map<string, HostTensor>([
    ['images', f32([steps, B, 3, S, S], nchw)],
    ['labels', { dtype: 'I32', shape: [steps, B], data: lab }],
    ['mask_main', f32([steps, B, 1024], masks.main)],
    ['mask_aux1', f32([steps, B, 1024], masks.aux1)],
    ['mask_aux2', f32([steps, B, 1024], masks.aux2)],
  ])));

  // PyTorch first, then ours: one at a time on a shared machine.
  const torchRun = (float64: boolean) => {
    const out = path.join(o.dir, float64 ? 'torch64.safetensors' : 'torch.safetensors');
    const r = spawnSync(PYTHON, [SCRIPT, '--init', init, '--data', data, '--out', out, '--lr', String(o.lr),
      '--momentum', String(o.momentum), '--weight-decay', String(o.weightDecay), '--aux-weight', String(o.auxWeight),
      '--record', o.record.join(','), '--threads', String(o.threads ?? 2), ...(float64 ? ['--float64'] : []), ...(o.progress ? ['--progress'] : [])],
    { encoding: 'utf8', timeout: 3_600_000, stdio: ['ignore', 'pipe', o.progress ? 'inherit' : 'pipe'] });
    if (r.status !== 0) throw new Error(`torch_parity.py failed (status ${r.status}):\n${r.stderr ?? ''}${r.error?.message ?? ''}`);
    return decodeSafetensors(new Uint8Array(fs.readFileSync(out))).tensors;
  };
  let t0 = performance.now();
  const torch = torchRun(false);
  const theirsSec = (performance.now() - t0) / 1000;
  const torch64 = o.float64 ? torchRun(true) : undefined;

  t0 = performance.now();
  const ours: number[] = [];
  const weights: Distance[] = [];
  const weights64: Distance[] = [];
  const init0 = await stateDict(model);
  try {
    for (let k = 0; k < steps; k++) {
      const res = await trainStep.run(k, async () => ({ images: images[k]!, labels: labels[k]!, size: B, epoch: 0, indexInEpoch: k, slot: 0, step: k, indices: new Int32Array(B) }), o.lr);
      ours.push(res.loss);
      if (o.record.includes(k + 1)) {
        const dict = await stateDict(model);
        weights.push(compare(k + 1, dict, torch, init0));
        if (torch64) weights64.push(compare(k + 1, dict, torch64, init0));
      }
    }
  } finally {
    model.dispose();
    sgd.dispose();
  }
  const oursSec = (performance.now() - t0) / 1000;
  const losses = (m: Map<string, HostTensor>) => [...(m.get('loss')!.data as Float32Array)];
  const result: ParityResult = { ours, theirs: losses(torch), weights, seconds: { ours: oursSec, theirs: theirsSec } };
  if (torch64) {
    result.theirs64 = losses(torch64);
    result.weights64 = weights64;
    result.rounding = o.record.map((k) => compare(k, unprefix(torch, k), torch64, init0));
  }
  return result;
}

/** PyTorch's state_dict after step k, under the plain names. */
function unprefix(m: Map<string, HostTensor>, k: number): Map<string, HostTensor> {
  const p = `step${k}.`;
  return new Map([...m].filter(([n]) => n.startsWith(p)).map(([n, t]) => [n.slice(p.length), t]));
}

/**
 * PyTorch's default Conv2d/Linear initialisation (kaiming_uniform_ with a = sqrt(5): U(+-1/sqrt(fan_in)) for
 * weights, and the same bound for linear biases), drawn from a seeded generator; BatchNorm stays at 1 and 0.
 */
export function pytorchDefaultInit(model: GoogLeNet, seed: number): void {
  let state = (seed * 2654435761 + 12345) >>> 0;
  const uniform = () => {
    // mulberry32
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const fanIn = new Map<string, number>();
  for (const { name, variable } of model.params) {
    if (name.endsWith('.conv.0.weight')) fanIn.set(name, variable.shape.slice(0, 3).reduce((a, b) => a * b, 1)); // HWIO
    else if (/(^fc|clf_\.\d)\.weight$/.test(name)) fanIn.set(name, variable.shape[0]!);                      // [in, out]
  }
  for (const { name, variable } of model.params) {
    const fan = fanIn.get(name) ?? fanIn.get(name.replace(/\.bias$/, '.weight'));
    if (fan === undefined || name.includes('.conv.1.')) continue; // BatchNorm weight and bias
    const bound = 1 / Math.sqrt(fan);
    const values = Float32Array.from({ length: variable.size }, () => (2 * uniform() - 1) * bound);
    tf.tidy(() => variable.assign(tf.tensor(values, variable.shape)));
  }
}

const isParam = (name: string) => !/running_(mean|var)$|num_batches_tracked$/.test(name);

/**
 * Ours against a reference state_dict after `step`: per tensor ||a - b|| / ||b||; over all trainable
 * parameters together, the same (`params`) and the difference relative to how far the reference moved from
 * the initial weights (`update`: ||a - b|| / ||b - w0||).
 */
function compare(step: number, ours: Map<string, HostTensor>, torch: Map<string, HostTensor>, init: Map<string, HostTensor>): Distance {
  const perTensor = new Map<string, number>();
  let err = 0;
  let worst = '';
  let [dd, bb, uu] = [0, 0, 0];
  for (const [name, t] of ours) {
    if (t.dtype !== 'F32') continue;
    const ref = torch.get(`step${step}.${name}`);
    if (!ref) throw new Error(`PyTorch's state_dict after step ${step} has no ${name}`);
    const a = t.data as Float32Array;
    const b = ref.data as Float32Array;
    const w0 = init.get(name)!.data as Float32Array;
    let [d, m, u] = [0, 0, 0];
    for (let i = 0; i < a.length; i++) {
      d += (a[i]! - b[i]!) ** 2;
      m += b[i]! ** 2;
      u += (b[i]! - w0[i]!) ** 2;
    }
    const e = Math.sqrt(d) / Math.max(Math.sqrt(m), 1e-12);
    perTensor.set(name, e);
    if (isParam(name)) {
      [dd, bb, uu] = [dd + d, bb + m, uu + u];
      if (e > err) [err, worst] = [e, name];
    }
  }
  return { step, err, worst, perTensor, params: Math.sqrt(dd / bb), update: Math.sqrt(dd / Math.max(uu, 1e-30)) };
}
