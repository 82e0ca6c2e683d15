import * as tf from '@tensorflow/tfjs';
import { nativeSgd, nativeSgdMean, webgpuSgd } from '@googlenet/model';
import { wasmView } from './host';

export interface SgdOptions {
  /** Momentum factor; 0 disables the momentum buffers. */
  momentum: number;
  /** L2 penalty added to the gradient before momentum, as torch.optim.SGD does. */
  weightDecay: number;
  /** Nesterov momentum as torch.optim.SGD(nesterov=True): the step is d + momentum*buf instead of buf. Default false. */
  nesterov?: boolean;
}

/**
 * SGD with momentum and weight decay, step for step the same arithmetic as torch.optim.SGD
 * (dampening 0): d = g + wd*w; buf = d on the first step, else momentum*buf + d; w -= lr*buf, or with Nesterov
 * w -= lr*(d + momentum*buf).
 * Every rank applies it to the same averaged gradient, so every rank keeps identical weights.
 */
export class Sgd {
  private readonly buffers: tf.Variable[];
  /** False until the first step, when PyTorch initialises each buffer to the gradient itself. */
  private started = false;

  constructor(
    private readonly params: readonly tf.Variable[],
    private readonly opts: SgdOptions,
  ) {
    // In a tidy so the zeros tensor is released and the variable alone owns its memory.
    this.buffers = opts.momentum > 0 ? params.map((p) => tf.tidy(() => tf.variable(tf.zerosLike(p), false))) : [];
  }

  /** Applies one step. `grads` are aligned with the params and are not disposed. */
  step(grads: readonly tf.Tensor[], lr: number): void {
    const { momentum, weightDecay } = this.opts;
    tf.tidy(() => {
      for (let i = 0; i < this.params.length; i++) {
        const p = this.params[i]!;
        let d = grads[i]!;
        if (weightDecay !== 0) d = tf.add(d, tf.mul(p, weightDecay));
        if (momentum !== 0) {
          const buf = this.buffers[i]!;
          const next = this.started ? tf.add(tf.mul(buf, momentum), d) : d;
          buf.assign(next);
          d = this.opts.nesterov ? tf.add(d, tf.mul(next, momentum)) : next;
        }
        p.assign(tf.sub(p, tf.mul(d, lr)));
      }
    });
    this.started = true;
  }

  /**
   * The same step with the gradients given as slices of one flat buffer (`grads.subarray(offsets[i], ...)`).
   * On wasm it updates the weights and momentum buffers in place on the heap in one pass per tensor, in
   * float32 with the same operation order as step(), instead of five tfjs kernels and fresh tensors per
   * parameter; elsewhere (or when a weight shares memory) it falls back to step().
   */
  stepFlat(grads: Float32Array, offsets: readonly number[], lr: number): void {
    const { momentum, weightDecay } = this.opts;
    const buffers = momentum !== 0 ? this.buffers : null;
    const opts = { momentum, weightDecay, lr, started: this.started, nesterov: this.opts.nesterov === true };
    // The webgpu kernel knows no Nesterov step: it takes the JS loop or tfjs there.
    if (nativeSgd(this.params, buffers, grads, offsets, opts) || (!opts.nesterov && webgpuSgd(this.params, buffers, grads, offsets, opts))) {
      this.started = true;
      return;
    }
    const views = this.params.map((p, i) => ({ w: wasmView(p), b: momentum !== 0 ? wasmView(this.buffers[i]!) : undefined }));
    if (views.some((v) => !v.w || (momentum !== 0 && !v.b))) {
      const tensors = this.params.map((p, i) => tf.tensor(grads.slice(offsets[i]!, offsets[i]! + p.size), p.shape, 'float32'));
      this.step(tensors, lr);
      tf.dispose(tensors);
      return;
    }
    const f = Math.fround;
    const [mom, wd, rate] = [f(momentum), f(weightDecay), f(lr)];
    views.forEach(({ w, b }, i) => {
      const g = grads.subarray(offsets[i]!, offsets[i]! + w!.length);
      if (b && this.opts.nesterov) sgdNesterovKernel(w!, b, g, mom, wd, rate, this.started);
      else if (b) sgdMomentumKernel(w!, b, g, mom, wd, rate, this.started);
      else sgdPlainKernel(w!, g, wd, rate);
    });
    this.started = true;
  }

  /**
   * The step on the exact mean over ranks of gradients that lie in R buffers (`slots`, rank order: the shared-memory
   * plane's gathered views), laid out as stepFlat's `grads`: averaged inside the native update, never stored. Returns
   * false (nothing done) where the native kernel does not run; the caller then averages first and calls stepFlat.
   */
  stepMeanOf(slots: Float32Array[], offsets: readonly number[], lr: number): boolean {
    const { momentum, weightDecay } = this.opts;
    const opts = { momentum, weightDecay, lr, started: this.started, nesterov: this.opts.nesterov === true };
    if (!nativeSgdMean(this.params, momentum !== 0 ? this.buffers : null, slots, offsets, opts)) return false;
    this.started = true;
    return true;
  }

  /**
   * A step with gradients that stay on the device (one worker on a GPU: no host round trip). On webgpu the
   * in-place kernels read them where they are; elsewhere step().
   */
  stepDevice(grads: readonly tf.Tensor[], lr: number): void {
    const { momentum, weightDecay } = this.opts;
    const buffers = momentum !== 0 ? this.buffers : null;
    if (!this.opts.nesterov && webgpuSgd(this.params, buffers, grads, null, { momentum, weightDecay, lr, started: this.started })) {
      this.started = true;
      return;
    }
    this.step(grads, lr);
  }

  /** Momentum buffers for a checkpoint; `started` tells whether they hold anything yet. */
  state(): { started: boolean; buffers: readonly tf.Variable[] } {
    return { started: this.started, buffers: this.buffers };
  }

  /** Restores buffers written by state() (same order and shapes). */
  load(started: boolean, values: readonly Float32Array[]): void {
    if (values.length !== this.buffers.length) {
      throw new Error(`optimizer state has ${values.length} momentum buffers, the model needs ${this.buffers.length}`);
    }
    values.forEach((v, i) => {
      const b = this.buffers[i]!;
      tf.tidy(() => b.assign(tf.tensor(v, b.shape)));
    });
    this.started = started;
  }

  /** After a broadcast has overwritten the buffers with rank 0's: adopt rank 0's started flag too. */
  markStarted(started: boolean): void {
    this.started = started;
  }

  dispose(): void {
    this.buffers.forEach((b) => b.dispose());
  }
}

const f32 = Math.fround;

// Monomorphic loops over typed arrays (V8 keeps them tight: ~4 ns per element here); each product and sum is
// rounded to float32 as the tfjs kernels round it, so the result is bitwise that of Sgd.step().
function sgdMomentumKernel(w: Float32Array, b: Float32Array, g: Float32Array, mom: number, wd: number, rate: number, started: boolean): void {
  const n = w.length;
  for (let i = 0; i < n; i++) {
    let d = f32(g[i]! + f32(w[i]! * wd));
    if (started) d = f32(f32(b[i]! * mom) + d);
    b[i] = d;
    w[i] = f32(w[i]! - f32(d * rate));
  }
}

function sgdNesterovKernel(w: Float32Array, b: Float32Array, g: Float32Array, mom: number, wd: number, rate: number, started: boolean): void {
  const n = w.length;
  for (let i = 0; i < n; i++) {
    const d = f32(g[i]! + f32(w[i]! * wd));
    const buf = started ? f32(f32(b[i]! * mom) + d) : d;
    b[i] = buf;
    w[i] = f32(w[i]! - f32(f32(d + f32(buf * mom)) * rate));
  }
}

function sgdPlainKernel(w: Float32Array, g: Float32Array, wd: number, rate: number): void {
  const n = w.length;
  for (let i = 0; i < n; i++) w[i] = f32(w[i]! - f32(f32(g[i]! + f32(w[i]! * wd)) * rate));
}
