/**
 * GoogLeNet's inference graph (no aux heads, dropout is the identity) as an ONNX model, opset 17, NCHW like
 * PyTorch: input `input` float32 [N, 3, S, S] normalised as in training, output `logits` [N, classes].
 * Weights come straight from the PyTorch-layout state_dict (Conv weights OIHW, Gemm with transB as nn.Linear).
 * The graph is built for one image size S: the max pools use ceil_mode=1 as the seed's do, and where a map is
 * smaller than the 3x3 window (maxpool4 below 47 px) the model takes the max of the whole map, so that pool is
 * a GlobalMaxPool, which only a fixed size can decide. The batch dimension is free (`N`).
 * Field numbers: onnx/onnx.proto (https://github.com/onnx/onnx/blob/main/onnx/onnx.proto).
 */
import { type ConvSpec, MIN_IMAGE_SIZE, STAGES, convOutSize, inceptionConvs, maxPoolCeilSize } from '../architecture.js';
import { BN_EPS } from '../batchnorm.js';
import { ModelError } from '../errors.js';
import { ProtoWriter } from '../protobuf.js';
import type { HostTensor } from '../safetensors.js';

export const ONNX_OPSET = 17;
const IR_VERSION = 8; // the IR version of opset 17 (onnx 1.12)
const FLOAT = 1;
const ATTR = { FLOAT: 1, INT: 2, INTS: 7 } as const;

type Attr = [name: string, value: number | number[], kind?: 'float'];

class GraphBuilder {
  readonly nodes: ProtoWriter[] = [];
  readonly initializers: ProtoWriter[] = [];
  readonly ops = new Set<string>();
  private n = 0;

  constructor(private readonly weights: Map<string, HostTensor>) {}

  node(op: string, inputs: string[], attrs: Attr[] = [], name = `${op.toLowerCase()}_${this.n}`): string {
    this.n++;
    this.ops.add(op);
    const output = name;
    const w = new ProtoWriter();
    for (const i of inputs) w.string(1, i);
    w.string(2, output).string(3, name).string(4, op);
    for (const [attrName, value, kind] of attrs) {
      const a = new ProtoWriter().string(1, attrName);
      if (Array.isArray(value)) {
        for (const v of value) a.int(8, v);
        a.int(20, ATTR.INTS);
      } else if (kind === 'float') {
        a.float(2, value).int(20, ATTR.FLOAT);
      } else {
        a.int(3, value).int(20, ATTR.INT);
      }
      w.message(5, a);
    }
    this.nodes.push(w);
    return output;
  }

  /** A state_dict tensor as an initializer named by its PyTorch key. */
  weight(name: string): string {
    const t = this.weights.get(name);
    if (!t || t.dtype !== 'F32') throw new ModelError('INVALID_INPUT', `export: the weights lack the F32 tensor ${name}`);
    const data = t.data as Float32Array;
    const w = new ProtoWriter();
    for (const d of t.shape) w.int(1, d);
    w.int(2, FLOAT).string(8, name).bytes(9, new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
    this.initializers.push(w);
    return name;
  }

  /** Conv (no bias) + BatchNormalization + Relu: the seed's BasicConv2d. */
  basic(prefix: string, spec: ConvSpec, x: string): string {
    const { k, stride, pad } = spec;
    const y = this.node('Conv', [x, this.weight(`${prefix}.conv.0.weight`)],
      [['kernel_shape', [k, k]], ['strides', [stride, stride]], ['pads', [pad, pad, pad, pad]]], `${prefix}.conv.0`);
    const bn = this.node('BatchNormalization', [y, ...['weight', 'bias', 'running_mean', 'running_var'].map((s) => this.weight(`${prefix}.conv.1.${s}`))],
      [['epsilon', BN_EPS, 'float']], `${prefix}.conv.1`);
    return this.node('Relu', [bn], [], `${prefix}.conv.2`);
  }
}

const valueInfo = (name: string, dims: (number | string)[]): ProtoWriter => {
  const shape = new ProtoWriter();
  for (const d of dims) shape.message(1, typeof d === 'number' ? new ProtoWriter().int(1, d) : new ProtoWriter().string(2, d));
  const tensorType = new ProtoWriter().int(1, FLOAT).message(2, shape);
  return new ProtoWriter().string(1, name).message(2, new ProtoWriter().message(1, tensorType));
};

export interface OnnxExport {
  bytes: Uint8Array;
  /** Operator types used, for the log. */
  ops: string[];
}

/** Encodes the inference graph for [N, 3, imageSize, imageSize] inputs. `weights`: PyTorch names and layouts. */
export function exportOnnx(weights: Map<string, HostTensor>, imageSize: number): OnnxExport {
  if (!Number.isInteger(imageSize) || imageSize < MIN_IMAGE_SIZE) {
    throw new ModelError('INVALID_OPTION', `--image-size=${imageSize}: GoogLeNet needs at least ${MIN_IMAGE_SIZE} px`);
  }
  const numClasses = weights.get('fc.bias')?.shape[0];
  if (numClasses === undefined) throw new ModelError('INVALID_INPUT', 'export: the weights lack fc.bias');
  const g = new GraphBuilder(weights);
  let x = 'input';
  let size = imageSize;
  for (const st of STAGES) {
    if (st.kind === 'conv') {
      x = g.basic(st.name, st.spec, x);
      size = convOutSize(size, st.spec);
    } else if (st.kind === 'maxpool') {
      x = size >= 3
        ? g.node('MaxPool', [x], [['kernel_shape', [3, 3]], ['strides', [2, 2]], ['ceil_mode', 1]], st.name)
        : g.node('GlobalMaxPool', [x], [], st.name);
      size = maxPoolCeilSize(size);
    } else if (st.kind === 'inception') {
      const input = x;
      const c = Object.fromEntries(inceptionConvs(st.cfg).map((b) => [b.path, b.spec]));
      const conv = (path: string, from: string) => g.basic(`${st.name}.${path}`, c[path]!, from);
      const pooled = g.node('MaxPool', [input], [['kernel_shape', [3, 3]], ['strides', [1, 1]], ['pads', [1, 1, 1, 1]]], `${st.name}.branch4.0`);
      x = g.node('Concat', [
        conv('branch1', input),
        conv('branch2.1', conv('branch2.0', input)),
        conv('branch3.1', conv('branch3.0', input)),
        conv('branch4.1', pooled),
      ], [['axis', 1]], st.name);
    } else if (st.kind === 'head' && st.name === 'fc') {
      const pooled = g.node('GlobalAveragePool', [x], [], 'avgpool');          // N x 1024 x 1 x 1
      const flat = g.node('Flatten', [pooled], [['axis', 1]], 'flatten');       // N x 1024
      x = g.node('Gemm', [flat, g.weight('fc.weight'), g.weight('fc.bias')], [['transB', 1]], 'logits');
    }
  }
  const graph = new ProtoWriter();
  for (const n of g.nodes) graph.message(1, n);
  graph.string(2, 'googlenet');
  for (const t of g.initializers) graph.message(5, t);
  graph.message(11, valueInfo('input', ['N', 3, imageSize, imageSize]));
  graph.message(12, valueInfo(x, ['N', numClasses]));
  const model = new ProtoWriter()
    .int(1, IR_VERSION)
    .string(2, 'googlenet-dp')
    .string(3, '0.1.0')
    .message(7, graph)
    .message(8, new ProtoWriter().string(1, '').int(2, ONNX_OPSET));
  return { bytes: model.finish(), ops: [...g.ops].sort() };
}
