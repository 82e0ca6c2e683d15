/**
 * GoogLeNet (Inception v1 + BatchNorm + two aux heads), the seed notebook's model, in NHWC on TensorFlow.js.
 * Pure: no I/O, logging or backend choice. Parameters are named by the seed's PyTorch state_dict keys.
 */
import * as tf from '@tensorflow/tfjs';
import {
  AUX, type ConvSpec, FEATURES, INCEPTIONS, type InceptionConfig, MAIN_DROPOUT, MIN_IMAGE_SIZE, STAGES,
  inceptionConvs,
} from './architecture.js';
import { batchNormRelu, type BatchNormParams } from './batchnorm.js';
import { conv2d } from './conv.js';
import { dropout, DROPOUT_STREAM } from './dropout.js';
import { ModelError } from './errors.js';
import { initialValues, type TensorRole } from './init.js';
import { linear } from './linear.js';
import { concatChannels } from './native.js';
import { auxPool, globalAvgPool, maxPoolCeil, maxPoolSame3 } from './pool.js';

export interface GoogLeNetOptions {
  /** Output classes of the main and aux classifiers. Default 1000. */
  numClasses?: number;
  /** Build the two aux heads (the seed's model, for training); false: an inference-only model. Default true. */
  aux?: boolean;
  /** Initialisation seed, an integer in [0, 2^53). Default 0. */
  seed?: number;
}

export interface NamedVariable {
  /** The seed's PyTorch state_dict key, e.g. `inception3a.branch2.1.conv.0.weight`. */
  name: string;
  variable: tf.Variable;
}

export interface ForwardOptions {
  /** Training: batch statistics in BatchNorm, dropout on, aux heads run (if built). */
  training: boolean;
  /** Seed of the dropout masks (integer in [0, 2^53)); default: a fresh random one per call. */
  dropoutSeed?: number;
}

export interface GoogLeNetOutput {
  main: tf.Tensor2D;
  /** Training with aux heads only. */
  aux2?: tf.Tensor2D;
  aux1?: tf.Tensor2D;
  /** Training only: the running mean/var each BN layer would hold after this batch, aligned with `buffers`. */
  runningStats?: tf.Tensor[];
}

interface BasicConv { spec: ConvSpec; w: tf.Variable; bn: BatchNormParams; buffer: number }
interface Linear { w: tf.Variable; b: tf.Variable }
interface Inception { cfg: InceptionConfig; convs: BasicConv[] }
interface AuxHead { conv: BasicConv; fc1: Linear; fc2: Linear }

const DEFAULTS: Required<GoogLeNetOptions> = { numClasses: 1000, aux: true, seed: 0 };

export class GoogLeNet {
  readonly numClasses: number;
  readonly aux: boolean;
  /** Trainable, in state_dict order; TF layouts (conv HWIO, linear [in, out]). */
  readonly params: readonly NamedVariable[];
  /** BN running_mean / running_var, in state_dict order. */
  readonly buffers: readonly NamedVariable[];
  /** One counter shared by all BN layers (saved per layer as int64, as PyTorch does). */
  numBatchesTracked = 0;

  private readonly convs = new Map<string, BasicConv>();
  private readonly inceptions = new Map<string, Inception>();
  private readonly fc: Linear;
  private readonly auxHeads = new Map<string, AuxHead>();
  private readonly seed: number;

  constructor(opts: GoogLeNetOptions = {}) {
    const o = { ...DEFAULTS, ...opts };
    if (!Number.isInteger(o.numClasses) || o.numClasses < 1) {
      throw new ModelError('INVALID_OPTION', `numClasses must be a positive integer, got ${o.numClasses}`);
    }
    if (!Number.isSafeInteger(o.seed) || o.seed < 0) {
      throw new ModelError('INVALID_OPTION', `seed must be an integer in [0, 2^53), got ${o.seed}`);
    }
    this.numClasses = o.numClasses;
    this.aux = o.aux;
    this.seed = o.seed;
    const params: NamedVariable[] = [];
    const buffers: NamedVariable[] = [];
    const make = (list: NamedVariable[], name: string, shape: number[], role: TensorRole, trainable: boolean) => {
      const values = initialValues(name, shape.reduce((a, b) => a * b, 1), role, this.seed);
      const variable = tf.tidy(() => tf.variable(tf.tensor(values, shape), trainable));
      list.push({ name, variable });
      return variable;
    };
    const basic = (prefix: string, spec: ConvSpec): BasicConv => {
      const w = make(params, `${prefix}.conv.0.weight`, [spec.k, spec.k, spec.cin, spec.cout], 'weight', true);
      const gamma = make(params, `${prefix}.conv.1.weight`, [spec.cout], 'bn_weight', true);
      const beta = make(params, `${prefix}.conv.1.bias`, [spec.cout], 'bn_bias', true);
      const buffer = buffers.length;
      const runningMean = make(buffers, `${prefix}.conv.1.running_mean`, [spec.cout], 'running_mean', false);
      const runningVar = make(buffers, `${prefix}.conv.1.running_var`, [spec.cout], 'running_var', false);
      const layer = { spec, w, bn: { gamma, beta, runningMean, runningVar }, buffer };
      this.convs.set(prefix, layer);
      return layer;
    };
    const linear = (prefix: string, cin: number, cout: number): Linear => ({
      w: make(params, `${prefix}.weight`, [cin, cout], 'weight', true),
      b: make(params, `${prefix}.bias`, [cout], 'bias', true),
    });

    // Registration order = the seed's state_dict order: backbone, fc, then aux1, aux2.
    for (const st of STAGES) {
      if (st.kind === 'conv') basic(st.name, st.spec);
      if (st.kind === 'inception') {
        this.inceptions.set(st.name, {
          cfg: st.cfg, convs: inceptionConvs(st.cfg).map((b) => basic(`${st.name}.${b.path}`, b.spec)),
        });
      }
    }
    this.fc = linear('fc', FEATURES, this.numClasses);
    if (this.aux) {
      for (const st of STAGES) {
        if (st.kind !== 'aux') continue;
        this.auxHeads.set(st.name, {
          conv: basic(`${st.name}.feature_.1`, { cin: st.cin, cout: AUX.convOut, k: 1, stride: 1, pad: 0 }),
          fc1: linear(`${st.name}.clf_.0`, AUX.grid * AUX.grid * AUX.convOut, AUX.hidden),
          fc2: linear(`${st.name}.clf_.3`, AUX.hidden, this.numClasses),
        });
      }
    }
    this.params = Object.freeze(params);
    this.buffers = Object.freeze(buffers);
  }

  /** Params then buffers with their TF shapes: what data-parallel workers must agree on. */
  signature(): { name: string; shape: number[] }[] {
    return [...this.params, ...this.buffers].map((p) => ({ name: p.name, shape: [...p.variable.shape] }));
  }

  /** x: NHWC float32 [N, H, W, 3], H and W >= 28. Training returns (main, aux2, aux1) like the seed. */
  forward(x: tf.Tensor4D, opts: ForwardOptions): GoogLeNetOutput {
    if (x.rank !== 4 || x.shape[3] !== 3 || x.shape[1] < MIN_IMAGE_SIZE || x.shape[2] < MIN_IMAGE_SIZE) {
      throw new ModelError('INVALID_INPUT', `GoogLeNet expects NHWC input [N, H, W, 3] with H, W >= ${MIN_IMAGE_SIZE}, ` +
        `got [${x.shape.join(', ')}]; transpose NCHW data with x.transpose([0, 2, 3, 1])`);
    }
    const training = opts.training;
    const seed = opts.dropoutSeed ?? Math.floor(Math.random() * 2 ** 32);
    return tf.tidy(() => {
      const stats: tf.Tensor[] = new Array(this.buffers.length);
      const basic = (layer: BasicConv, h: tf.Tensor4D, inputGrad = true): tf.Tensor4D => {
        const { stride, pad } = layer.spec;
        const { y, running } = batchNormRelu(conv2d(h, layer.w as tf.Tensor4D, { stride, pad, inputGrad }), layer.bn, training);
        if (running) [stats[layer.buffer], stats[layer.buffer + 1]] = running;
        return y;
      };
      const inception = (block: Inception, h: tf.Tensor4D): tf.Tensor4D => {
        const [b1, b2a, b2b, b3a, b3b, b4] = block.convs;
        return concatChannels([
          basic(b1, h),
          basic(b2b, basic(b2a, h)),
          basic(b3b, basic(b3a, h)),
          basic(b4, maxPoolSame3(h)),
        ]);
      };
      const dense = (l: Linear, h: tf.Tensor2D): tf.Tensor2D => linear(h, l.w as tf.Tensor2D, l.b as tf.Tensor1D);
      const auxHead = (head: AuxHead, h: tf.Tensor4D, stream: number): tf.Tensor2D => {
        const f = basic(head.conv, auxPool(h));                          // N x 4 x 4 x 128
        const flat = f.reshape([f.shape[0], AUX.grid * AUX.grid * AUX.convOut]) as tf.Tensor2D; // (h, w, c) order
        const hidden = tf.relu(dense(head.fc1, flat));                   // N x 1024
        return dense(head.fc2, training ? dropout(hidden, AUX.dropout, seed, stream) : hidden);
      };

      const out: GoogLeNetOutput = { main: undefined as unknown as tf.Tensor2D };
      let h = x;
      for (const st of STAGES) {
        switch (st.kind) {
          case 'conv':
            h = basic(this.convs.get(st.name)!, h, st.name !== 'conv1'); // nobody needs the image's gradient
            break;
          case 'maxpool':
            h = maxPoolCeil(h);
            break;
          case 'inception':
            h = inception(this.inceptions.get(st.name)!, h);
            break;
          case 'aux':
            if (training && this.aux) out[st.name] = auxHead(this.auxHeads.get(st.name)!, h, DROPOUT_STREAM[st.name]);
            break;
          case 'head':
            if (st.name === 'fc') {
              const pooled = globalAvgPool(h);                              // N x 1024
              out.main = dense(this.fc, training ? dropout(pooled, MAIN_DROPOUT, seed, DROPOUT_STREAM.main) : pooled);
            }
            break;
        }
      }
      if (training) out.runningStats = stats;
      return out as unknown as tf.TensorContainer;
    }) as unknown as GoogLeNetOutput;
  }

  /**
   * Assigns running statistics (aligned with `buffers`, e.g. forward's `runningStats` averaged over
   * micro-batches and workers) and counts one more tracked batch, as one PyTorch training step does.
   * The tensors stay owned by the caller.
   */
  assignRunningStats(stats: readonly tf.Tensor[]): void {
    if (stats.length !== this.buffers.length) {
      throw new ModelError('INVALID_INPUT', `assignRunningStats: expected ${this.buffers.length} tensors ` +
        `(aligned with model.buffers), got ${stats.length}`);
    }
    stats.forEach((t, i) => {
      const b = this.buffers[i];
      if (!tf.util.arraysEqual(t.shape, b.variable.shape)) {
        throw new ModelError('INVALID_INPUT', `assignRunningStats: ${b.name} has shape [${b.variable.shape}], got [${t.shape}]`);
      }
    });
    stats.forEach((t, i) => this.buffers[i].variable.assign(t));
    this.numBatchesTracked++;
  }

  dispose(): void {
    for (const p of [...this.params, ...this.buffers]) p.variable.dispose();
  }
}
