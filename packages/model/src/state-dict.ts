/**
 * The model's weights as the seed's PyTorch state_dict: same keys, same order, PyTorch layouts (conv OIHW,
 * linear [out, in], aux clf_.0 inputs in NCHW flatten order c*16 + h*4 + w), num_batches_tracked as int64.
 */
import { randomBytes } from 'node:crypto';
import { readFile, rename, rm, writeFile } from 'node:fs/promises';
import * as tf from '@tensorflow/tfjs';
import { AUX } from './architecture.js';
import { StateDictError } from './errors.js';
import type { GoogLeNet, NamedVariable } from './googlenet.js';
import { decodeSafetensors, encodeSafetensors, type HostTensor } from './safetensors.js';

type Layout = 'conv' | 'linear' | 'aux_fc1' | 'vector';

interface Entry {
  name: string;
  /** undefined for num_batches_tracked. */
  variable?: NamedVariable;
  layout: Layout;
  /** PyTorch's shape. */
  shape: number[];
}

const isAux = (name: string): boolean => name.startsWith('aux1.') || name.startsWith('aux2.');

function layoutOf(name: string, rank: number): Layout {
  if (rank === 4) return 'conv';
  if (rank === 2) return /^aux[12]\.clf_\.0\.weight$/.test(name) ? 'aux_fc1' : 'linear';
  return 'vector';
}

function ptShape(layout: Layout, tfShape: number[]): number[] {
  switch (layout) {
    case 'conv': return [tfShape[3], tfShape[2], tfShape[0], tfShape[1]];
    case 'linear':
    case 'aux_fc1': return [tfShape[1], tfShape[0]];
    default: return [...tfShape];
  }
}

/** Every state_dict entry in PyTorch's order (BN buffers right after their layer's bias). */
function entries(model: GoogLeNet): Entry[] {
  const buffers = new Map(model.buffers.map((b) => [b.name, b]));
  const out: Entry[] = [];
  const add = (v: NamedVariable) => {
    const layout = layoutOf(v.name, v.variable.rank);
    out.push({ name: v.name, variable: v, layout, shape: ptShape(layout, v.variable.shape) });
  };
  for (const p of model.params) {
    add(p);
    const bn = /^(.*\.conv\.1)\.bias$/.exec(p.name);
    if (bn) {
      add(buffers.get(`${bn[1]}.running_mean`)!);
      add(buffers.get(`${bn[1]}.running_var`)!);
      out.push({ name: `${bn[1]}.num_batches_tracked`, layout: 'vector', shape: [] });
    }
  }
  return out;
}

const G = AUX.grid;
const C = AUX.convOut;

/**
 * Transposes a row-major array: out has shape perm.map(p => shape[p]). On the host rather than with tf ops:
 * the cpu backend's transpose costs seconds for 13M weights, this loop tens of milliseconds on any backend.
 */
export function permute(src: Float32Array, shape: number[], perm: number[]): Float32Array {
  const out = new Float32Array(src.length);
  const rank = shape.length;
  if (src.length === 0) return out;
  const inStrides = shape.map((_, i) => shape.slice(i + 1).reduce((a, b) => a * b, 1));
  const outShape = perm.map((p) => shape[p]);
  const step = perm.map((p) => inStrides[p]); // input stride along each output axis
  const idx = new Array<number>(rank).fill(0);
  const n = outShape[rank - 1];
  const inner = step[rank - 1];
  let at = 0;
  for (let o = 0; o < out.length; o += n) {
    for (let j = 0, k = at; j < n; j++, k += inner) out[o + j] = src[k];
    for (let d = rank - 2; d >= 0; d--) {
      at += step[d];
      if (++idx[d] < outShape[d]) break;
      at -= step[d] * outShape[d];
      idx[d] = 0;
    }
  }
  return out;
}

/** TF layout (conv HWIO, linear [in, out], aux fc1 rows in (h, w, c) order) -> PyTorch layout. */
function toTorch(data: Float32Array, tfShape: number[], layout: Layout): Float32Array {
  switch (layout) {
    case 'conv': return permute(data, tfShape, [3, 2, 0, 1]);
    case 'linear': return permute(data, tfShape, [1, 0]);
    case 'aux_fc1': return permute(data, [G, G, C, tfShape[1]], [3, 2, 0, 1]);
    default: return data;
  }
}

/** PyTorch layout -> TF layout (the inverse of toTorch). */
function fromTorch(data: Float32Array, ptShape: number[], layout: Layout): Float32Array {
  switch (layout) {
    case 'conv': return permute(data, ptShape, [2, 3, 1, 0]);
    case 'linear': return permute(data, ptShape, [1, 0]);
    case 'aux_fc1': return permute(data, [ptShape[0], C, G, G], [2, 3, 1, 0]);
    default: return data;
  }
}

/**
 * The seed's state_dict, PyTorch layouts, including num_batches_tracked (I64) per BN layer. Asynchronous
 * because GPU backends read back asynchronously (webgpu in Node has no synchronous read).
 */
export async function stateDict(model: GoogLeNet): Promise<Map<string, HostTensor>> {
  const dict = new Map<string, HostTensor>();
  for (const e of entries(model)) {
    if (!e.variable) {
      dict.set(e.name, { dtype: 'I64', shape: [], data: BigInt64Array.of(BigInt(model.numBatchesTracked)) });
      continue;
    }
    const v = e.variable.variable;
    const src = (await v.data()) as Float32Array; // may be the backend's own storage: never hand it out
    const data = e.layout === 'vector' ? Float32Array.from(src) : toTorch(src, v.shape, e.layout);
    dict.set(e.name, { dtype: 'F32', shape: e.shape, data });
  }
  return dict;
}

/**
 * Loads a state_dict strictly: every expected tensor present with its PyTorch shape and dtype (F32, or I64 for
 * num_batches_tracked), nothing extra; else one StateDictError naming every offending tensor, and nothing is
 * assigned. One documented exception: a model built with aux=false ignores `aux1.*` / `aux2.*` tensors, so an
 * inference model loads a training checkpoint (the aux heads do not affect inference).
 * numBatchesTracked becomes the largest of the per-layer counters (they are equal in files we or PyTorch write).
 */
export function loadStateDict(model: GoogLeNet, dict: Map<string, HostTensor>): void {
  const expected = entries(model);
  const problems: string[] = [];
  const fmt = (s: number[]) => `[${s.join(', ')}]`;
  for (const e of expected) {
    const t = dict.get(e.name);
    const dtype = e.variable ? 'F32' : 'I64';
    if (!t) problems.push(`${e.name}: missing (expected ${dtype} ${fmt(e.shape)})`);
    else if (t.dtype !== dtype) problems.push(`${e.name}: dtype ${t.dtype}, expected ${dtype}`);
    else if (!tf.util.arraysEqual(t.shape, e.shape)) problems.push(`${e.name}: shape ${fmt(t.shape)}, expected ${fmt(e.shape)}`);
  }
  const known = new Set(expected.map((e) => e.name));
  for (const name of dict.keys()) {
    if (!known.has(name) && !(isAux(name) && !model.aux)) problems.push(`${name}: unexpected`);
  }
  if (problems.length > 0) {
    throw new StateDictError(`state dict does not match GoogLeNet(numClasses=${model.numClasses}, aux=${model.aux}) ` +
      `in ${problems.length} tensor(s):\n  ${problems.join('\n  ')}\n` +
      `check that the file was saved from the seed's model with the same number of classes (--num-classes)`, problems);
  }
  let tracked = 0n;
  tf.tidy(() => {
    for (const e of expected) {
      const t = dict.get(e.name)!;
      if (!e.variable) {
        const v = (t.data as BigInt64Array)[0];
        if (v > tracked) tracked = v;
        continue;
      }
      const v = e.variable.variable;
      v.assign(tf.tensor(fromTorch(t.data as Float32Array, t.shape, e.layout), v.shape));
    }
  });
  model.numBatchesTracked = Number(tracked);
}

/** Writes the state_dict as safetensors, atomically (temp file + rename). */
export async function saveWeights(model: GoogLeNet, path: string, metadata: Record<string, string> = {}): Promise<void> {
  const bytes = encodeSafetensors(await stateDict(model), {
    format: 'pt', model: 'googlenet', num_classes: String(model.numClasses), aux: String(model.aux), ...metadata,
  });
  const tmp = `${path}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`;
  try {
    await writeFile(tmp, bytes);
    await rename(tmp, path);
  } catch (e) {
    await rm(tmp, { force: true });
    throw e;
  }
}

export async function loadWeights(model: GoogLeNet, path: string): Promise<void> {
  const bytes = await readFile(path);
  loadStateDict(model, decodeSafetensors(new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength)).tensors);
}
