/**
 * Dynamic loss scaling for f16 compute, as PyTorch's torch.amp.GradScaler: the loss is multiplied by `scale`
 * before backward so that small gradients survive f16 operands; the gradients are divided by it again before
 * the optimizer. A step whose AVERAGED gradient (the same on every rank after the exchange) holds an inf or NaN
 * is skipped (weights, momentum, BatchNorm statistics unchanged) and the scale halves; after `growthInterval`
 * good steps in a row it doubles. The constants are GradScaler's defaults, deliberately not flags: they are
 * what every AMP recipe uses, and the scale adapts on its own.
 */
import * as tf from '@tensorflow/tfjs';

export interface LossScaleOptions {
  /** First scale. Default 65536 (2^16), GradScaler's init_scale. */
  init: number;
  /** Scale multiplier after growthInterval good steps. Default 2. */
  growthFactor: number;
  /** Scale multiplier on an overflow. Default 0.5. */
  backoffFactor: number;
  /** Good steps in a row before the scale grows. Default 2000. */
  growthInterval: number;
}

export const LOSS_SCALE_DEFAULTS: Readonly<LossScaleOptions> = Object.freeze({ init: 65536, growthFactor: 2, backoffFactor: 0.5, growthInterval: 2000 });

/** What a checkpoint keeps so that a resumed run scales (and skips) exactly as an uninterrupted one. */
export interface LossScaleState {
  scale: number;
  /** Good steps since the last growth or overflow (GradScaler's growth tracker). */
  goodSteps: number;
  /** Steps skipped for an overflow since the run began. */
  skippedSteps: number;
}

export class LossScaler {
  private readonly opts: LossScaleOptions;
  private s: LossScaleState;

  constructor(opts: Partial<LossScaleOptions> = {}, state?: LossScaleState) {
    this.opts = { ...LOSS_SCALE_DEFAULTS, ...opts };
    this.s = state ? { ...state } : { scale: this.opts.init, goodSteps: 0, skippedSteps: 0 };
  }

  get scale(): number {
    return this.s.scale;
  }

  /** After the averaged gradient is known: true = apply the step; false = skip it (the scale has backed off). */
  update(finite: boolean): boolean {
    if (!finite) {
      this.s = { scale: this.s.scale * this.opts.backoffFactor, goodSteps: 0, skippedSteps: this.s.skippedSteps + 1 };
      return false;
    }
    const goodSteps = this.s.goodSteps + 1;
    this.s = goodSteps === this.opts.growthInterval
      ? { ...this.s, scale: this.s.scale * this.opts.growthFactor, goodSteps: 0 }
      : { ...this.s, goodSteps };
    return true;
  }

  state(): LossScaleState {
    return { ...this.s };
  }
}

/** Divides flat[0, end) by `scale` in place (before the exchange: an f16 wire then carries unscaled values). */
export function unscaleFlat(flat: Float32Array, end: number, scale: number): void {
  const inv = 1 / scale;
  for (let i = 0; i < end; i++) flat[i]! *= inv;
}

/** Whether flat[0, end) is all finite (x - x is 0 for a finite x and NaN for inf or NaN). */
export function allFinite(flat: Float32Array, end: number): boolean {
  for (let i = 0; i < end; i++) {
    const v = flat[i]!;
    if (v - v !== 0) return false;
  }
  return true;
}

/**
 * On the device: the gradients divided by `scale`, and a scalar that is 0 when they are all finite and NaN
 * otherwise (x*0 is NaN exactly for inf and NaN; per-tensor sums then one sum of those). Caller disposes both.
 */
export function unscaleTensors(grads: readonly tf.Tensor[], scale: number): { grads: tf.Tensor[]; check: tf.Scalar } {
  return tf.tidy(() => {
    const inv = tf.scalar(1 / scale);
    const out = grads.map((g) => tf.mul(g, inv));
    const check = tf.sum(tf.stack(grads.map((g) => tf.sum(tf.mul(g, 0))))) as tf.Scalar;
    return { grads: out, check };
  });
}
