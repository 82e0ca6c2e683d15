import * as tf from '@tensorflow/tfjs';
import { computeGradients, countDispatches, type GoogLeNet } from '@googlenet/model';
import type { Batch } from '@googlenet/dataloader';
import { readAllInto } from './host';
import type { GradientReducer } from './reducer';
import type { Sgd } from './optim';

/** Milliseconds spent in each phase of one optimizer step. */
export interface StepTimes {
  data: number;
  compute: number;
  reduce: number;
  apply: number;
}

/** Global (all ranks) figures of one step. */
export interface StepResult {
  loss: number;
  top1: number;
  top5: number;
  samples: number;
  times: StepTimes;
  /** webgpu: compute dispatches this worker issued in the step (ours and tfjs's). */
  dispatches?: number;
  /** A profiled step (webgpu, `profile: true`): GPU time of the compute phase's kernels, total and busiest. */
  gpu?: { kernelMs: number; kernels: { name: string; ms: number; calls: number }[] };
}

export interface TrainStepOptions {
  auxWeight: number;
  /** Micro-batches per optimizer step on this worker. */
  accumulate: number;
  batchSize: number;
  imageSize: number;
  seed: number;
  rank: number;
}

interface GpuProfile {
  kernelMs: number;
  byName: Map<string, { ms: number; calls: number }>;
}

const EMPTY = new Float32Array(0);

/** Loss sum, top-1 correct, top-5 correct, samples: summed over micro-batches and ranks. */
const M_LOSS = 0, M_TOP1 = 1, M_TOP5 = 2, M_COUNT = 3;

/**
 * One data-parallel optimizer step with named phases:
 *   data    - take `accumulate` micro-batches from the loader
 *   compute - forward (training) + loss + gradients per micro-batch, averaged over micro-batches
 *   reduce  - average gradients and BatchNorm running statistics over ranks (one coordinator round)
 *   apply   - SGD on the averaged gradients; assign the averaged running statistics
 * Gradients and running statistics travel in one reused Float32Array laid out as the model signature
 * (params, then BN buffers), so every rank ends the step with the same full model state.
 */
export class TrainStep {
  readonly flat: Float32Array;
  private readonly metrics = new Float64Array(4);
  private readonly paramOffsets: number[] = [];
  private readonly bufferOffsets: number[] = [];
  private readonly topK: number;

  constructor(
    private readonly model: GoogLeNet,
    private readonly sgd: Sgd,
    private readonly reducer: GradientReducer,
    private readonly opts: TrainStepOptions,
  ) {
    let off = 0;
    for (const p of model.params) {
      this.paramOffsets.push(off);
      off += p.variable.size;
    }
    for (const b of model.buffers) {
      this.bufferOffsets.push(off);
      off += b.variable.size;
    }
    this.flat = new Float32Array(off);
    this.topK = Math.min(5, model.numClasses);
  }

  /** Dropout masks depend only on (seed, step, global micro-batch slot): N workers x A equals 1 worker x N*A. */
  dropoutSeed(step: number, slot: number): number {
    let h = (this.opts.seed ^ 0x9e3779b9) >>> 0;
    for (const v of [step, slot]) {
      h = Math.imul(h ^ v, 0x85ebca6b) >>> 0;
      h = Math.imul(h ^ (h >>> 13), 0xc2b2ae35) >>> 0;
      h = (h ^ (h >>> 16)) >>> 0;
    }
    return h;
  }

  async run(step: number, nextBatch: () => Promise<Batch>, lr: number, profile = false): Promise<StepResult> {
    const { accumulate } = this.opts;
    const times: StepTimes = { data: 0, compute: 0, reduce: 0, apply: 0 };
    const dispatched = tf.getBackend() === 'webgpu' ? countDispatches() : null;
    const d0 = dispatched?.() ?? 0;
    const gpu = profile && tf.getBackend() === 'webgpu' ? { kernelMs: 0, byName: new Map<string, { ms: number; calls: number }>() } : null;
    const onDevice = this.reducer.worldSize === 1 && tf.getBackend() === 'webgpu';
    this.metrics.fill(0);
    let acc: tf.Tensor[] | undefined;
    const pending: tf.Tensor[] = [];
    for (let m = 0; m < accumulate; m++) {
      let t = performance.now();
      const batch = await nextBatch();
      times.data += performance.now() - t;
      t = performance.now();
      const slot = this.opts.rank * accumulate + m;
      const { stats, parts } = await this.microBatch(batch, this.dropoutSeed(step, slot), gpu);
      this.metrics[M_COUNT] += batch.size;
      // Reading the figures waits for the GPU to finish this micro-batch. On the device-resident path that
      // wait comes after the SGD kernels are issued, so the GPU is not idle while JS issues them.
      if (onDevice) pending.push(stats);
      else await this.addFigures(stats, parts);
      if (accumulate === 1 && !onDevice) {
        await this.writeFlat(parts);
        tf.dispose(parts);
      } else if (acc === undefined) {
        acc = parts;
      } else {
        const prev = acc;
        acc = tf.tidy(() => prev.map((a, i) => tf.add(a, parts[i]!)));
        tf.dispose(prev);
        tf.dispose(parts);
      }
      times.compute += performance.now() - t;
    }
    if (onDevice) {
      // One worker on a GPU: nothing to exchange, so the gradients never leave the device (the host round
      // trip of 54 MB each way, and the wait for the GPU it forces, was a large part of a step).
      const t = performance.now();
      const mean = accumulate === 1 ? acc! : tf.tidy(() => acc!.map((a) => tf.div(a, accumulate)));
      const params = this.model.params.length;
      this.sgd.stepDevice(mean.slice(0, params), lr);
      this.model.assignRunningStats(mean.slice(params));
      if (mean !== acc) tf.dispose(mean);
      tf.dispose(acc!);
      times.apply = performance.now() - t;
      // This read waits for the GPU to finish the step: compute time, as on the other path.
      const w = performance.now();
      for (const stats of pending.splice(0)) await this.addFigures(stats, []);
      times.compute += performance.now() - w;
      await this.reducer.allReduce(EMPTY, this.metrics);
      return this.finish(times, dispatched, d0, gpu);
    }
    if (acc !== undefined) {
      const t = performance.now();
      const scaled = tf.tidy(() => acc!.map((a) => tf.div(a, accumulate)));
      await this.writeFlat(scaled);
      tf.dispose(scaled);
      tf.dispose(acc);
      times.compute += performance.now() - t;
    }

    let t = performance.now();
    await this.reducer.allReduce(this.flat, this.metrics);
    times.reduce = performance.now() - t;

    t = performance.now();
    this.apply(lr);
    times.apply = performance.now() - t;

    return this.finish(times, dispatched, d0, gpu);
  }

  /** The step's global figures from the reduced metrics, plus the webgpu dispatch count and profile. */
  private finish(times: StepTimes, dispatched: (() => number) | null, d0: number, gpu: GpuProfile | null): StepResult {
    const n = this.metrics[M_COUNT]!;
    const result: StepResult = { loss: this.metrics[M_LOSS]! / n, top1: this.metrics[M_TOP1]! / n, top5: this.metrics[M_TOP5]! / n, samples: n, times };
    if (dispatched) result.dispatches = dispatched() - d0;
    if (gpu) {
      const kernels = [...gpu.byName].map(([name, v]) => ({ name, ...v })).sort((a, b) => b.ms - a.ms);
      result.gpu = { kernelMs: gpu.kernelMs, kernels };
    }
    return result;
  }

  /** Gradients then running statistics of one micro-batch (kept tensors) and its loss/accuracy figures. */
  /** Adds a micro-batch's [loss sum, top-1, top-5] to the step's metrics; frees `parts` too if the read fails. */
  private async addFigures(stats: tf.Tensor, parts: tf.Tensor[]): Promise<void> {
    try {
      const f = (await stats.data()) as Float32Array;
      this.metrics[M_LOSS] += f[0]!;
      this.metrics[M_TOP1] += f[1]!;
      this.metrics[M_TOP5] += f[2]!;
    } catch (err) {
      tf.dispose(parts);
      throw err;
    } finally {
      stats.dispose();
    }
  }

  private async microBatch(batch: Batch, dropoutSeed: number, gpu: GpuProfile | null): Promise<{ stats: tf.Tensor; parts: tf.Tensor[] }> {
    const { batchSize, imageSize, auxWeight } = this.opts;
    const compute = () => tf.tidy(() => {
      const x = tf.tensor4d(batch.images, [batchSize, imageSize, imageSize, 3]);
      const y = tf.tensor1d(batch.labels, 'int32');
      const r = computeGradients(this.model, x, y, { auxWeight, dropoutSeed });
      const figures = tf.stack([tf.mul(r.loss, batch.size), ...correctCounts(r.logits, y, this.topK)]);
      return [figures, ...r.grads, ...r.runningStats];
    });
    let out: tf.Tensor[] = [];
    if (gpu) {
      // tf.time on webgpu puts a timestamp query around every dispatch: exact per-kernel GPU time, slower step.
      const t = await tf.time(() => { out = compute(); }) as tf.TimingInfo & { getExtraProfileInfo?: () => string };
      gpu.kernelMs += t.kernelMs as number;
      for (const item of (t.getExtraProfileInfo?.() ?? '').split(', ').filter(Boolean)) {
        const cut = item.lastIndexOf(': ');
        const e = gpu.byName.get(item.slice(0, cut)) ?? { ms: 0, calls: 0 };
        e.ms += Number(item.slice(cut + 2));
        e.calls++;
        gpu.byName.set(item.slice(0, cut), e);
      }
    } else {
      out = compute();
    }
    const [stats, ...parts] = out;
    return { stats: stats!, parts };
  }

  /** computeGradients' grads then runningStats, end to end: the model-signature order of `flat`. */
  private async writeFlat(parts: readonly tf.Tensor[]): Promise<void> {
    await readAllInto(parts, this.flat);
  }

  private apply(lr: number): void {
    const { buffers } = this.model;
    // On wasm, tf.tensor() copies into the wasm heap; elsewhere the backend may keep a reference to the
    // array we hand it, and `flat` is overwritten next step, so those backends get a copy.
    const copy = tf.getBackend() !== 'wasm';
    const view = (off: number, v: tf.Variable) => {
      const a = this.flat.subarray(off, off + v.size);
      return tf.tensor(copy ? a.slice() : a, v.shape, 'float32');
    };
    this.sgd.stepFlat(this.flat, this.paramOffsets, lr);
    tf.tidy(() => this.model.assignRunningStats(buffers.map((b, i) => view(this.bufferOffsets[i]!, b.variable))));
  }
}

/**
 * Top-1 and top-k correct counts of a batch, as scalars. Top-k without a sort: the label is among the k best
 * when fewer than k logits exceed its own (ties count in its favour). On webgpu tf.topk is a bitonic sort of
 * ~35 dispatches at 1,000 classes; this is 9 whatever the class count.
 */
export function correctCounts(logits: tf.Tensor2D, labels: tf.Tensor1D, k: number): [tf.Scalar, tf.Scalar] {
  const top1 = tf.sum(tf.cast(tf.equal(tf.argMax(logits, 1), labels), 'float32'));
  const own = tf.sum(tf.mul(logits, tf.oneHot(labels, logits.shape[1])), 1, true);
  const above = tf.sum(tf.cast(tf.greater(logits, own), 'float32'), 1);
  const topk = tf.sum(tf.cast(tf.less(above, k), 'float32'));
  return [top1 as tf.Scalar, topk as tf.Scalar];
}
