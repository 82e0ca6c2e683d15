import * as tf from '@tensorflow/tfjs';

export interface SgdOptions {
  /** Momentum factor; 0 disables the momentum buffers. */
  momentum: number;
  /** L2 penalty added to the gradient before momentum, as torch.optim.SGD does. */
  weightDecay: number;
}

/**
 * SGD with momentum and weight decay, step for step the same arithmetic as torch.optim.SGD
 * (dampening 0, no Nesterov): d = g + wd*w; buf = d on the first step, else momentum*buf + d; w -= lr*buf.
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
    this.buffers = opts.momentum > 0 ? params.map((p) => tf.variable(tf.zerosLike(p), false)) : [];
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
          d = next;
        }
        p.assign(tf.sub(p, tf.mul(d, lr)));
      }
    });
    this.started = true;
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
