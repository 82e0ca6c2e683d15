import * as tf from '@tensorflow/tfjs';
import { referenceMean } from '@googlenet/coordinator';
import {
  captureWebgpuStep, computeGradients, nativeSgdMeanActive, countDispatches, diffRecordings, discardRecording, dropoutInputs, dropoutStreams, ReplayError, StepGraph,
  type GoogLeNet, type GradTap, type WebgpuRecording,
} from '@googlenet/model';
import type { Batch } from '@googlenet/dataloader';
import { readAllInto } from './host';
import type { GradientReducer } from './reducer';
import type { Sgd } from './optim';
import { clipFlatGradients, clipGradientTensors } from './grad-clip';
import { allFinite, unscaleFlat, unscaleTensors, type LossScaler } from './loss-scale';
import { OverlapState, overlapBlocker, type OverlapChoice, type OverlapFigures } from './overlap';
import { EagerGradCopy } from './grad-copy';

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
  /**
   * CPU time of this process during the step (user + system, all threads: the loader's too), ms. On a shared
   * machine it measures the step's host cost where wall time also measures the neighbours.
   */
  cpuMs: number;
  /** webgpu: the step was a replay of a captured graph (no tfjs work on the host). */
  replayed?: boolean;
  /** A line for the log: graph replay started, or is off and why. */
  note?: string;
  /** Dynamic loss scaling: the scale this step's loss was multiplied by. */
  lossScale?: number;
  /** Dynamic loss scaling: the averaged gradient held an inf or NaN, so nothing was applied (the scale backed off). */
  skipped?: boolean;
  /** --overlap: the step's exchange overlapped its backward (overlap.ts). */
  overlap?: OverlapFigures;
}

export interface TrainStepOptions {
  auxWeight: number;
  /** Micro-batches per optimizer step on this worker. */
  accumulate: number;
  batchSize: number;
  imageSize: number;
  seed: number;
  rank: number;
  /** Label smoothing of every head's loss (0: off). */
  labelSmoothing?: number;
  /** Clip the averaged gradient to this global L2 norm (0 or absent: off). */
  clipGradNorm?: number;
  /** webgpu, one worker, one micro-batch: replay a captured step. Default: on unless GOOGLENET_WEBGPU_REPLAY=0. */
  replay?: boolean;
  /** Dynamic loss scaling (--precision=f16; loss-scale.ts): scales the loss, unscales the gradients, skips overflowing steps. */
  lossScaler?: LossScaler;
  /** --overlap (overlap.ts): 'auto' and 'on' overlap the exchange with the backward where it applies. Default off. */
  overlap?: { choice: OverlapChoice; bucketBytes: number; gradCompression: 'none' | 'fp16'; spareCores?: number };
}

interface GpuProfile {
  kernelMs: number;
  byName: Map<string, { ms: number; calls: number }>;
}

/** What one run() carries through its phases. */
interface StepContext {
  times: StepTimes;
  cpu0: NodeJS.CpuUsage;
  dispatched: (() => number) | null;
  d0: number;
  gpu: GpuProfile | null;
  /** Dispatches of the replayed graph, when the step was a replay. */
  replayed?: number;
  note?: string;
  lossScale?: number;
  skipped?: boolean;
  overlap?: OverlapFigures;
}

const EMPTY = new Float32Array(0);
/** Normal steps before the first capture: the first compiles pipelines and starts the momentum buffers. */
const WARM_STEPS = 1;

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
  /** `flat` is this rank's slot of the shared-memory plane: the exchange averages it in place, no copy in or out. */
  readonly inSharedSegment: boolean;
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
    const ov = opts.overlap;
    const blocked = ov && ov.choice !== 'off' ? overlapBlocker({
      worldSize: reducer.worldSize, backend: tf.getBackend(), accumulate: opts.accumulate, gradCompression: ov.gradCompression, lossScaling: !!opts.lossScaler,
      ...(ov.choice === 'auto' && ov.spareCores !== undefined ? { spareCores: ov.spareCores } : {}),
    }) : 'off';
    // The overlap thread averages the gradients in place, so they live in memory both threads share. Otherwise in the
    // shared-memory plane's registered slot where the job has one: the other ranks average it there, with no copy.
    const shared = blocked === null ? null : reducer.sharedBuffer?.(off) ?? null;
    this.flat = shared ?? new Float32Array(blocked === null ? new SharedArrayBuffer(off * 4) : new ArrayBuffer(off * 4));
    this.inSharedSegment = shared !== null;
    if (blocked === null) this.overlap = new OverlapState(model, this.flat, this.paramOffsets, ov!.bucketBytes);
    else if (blocked !== 'off' && reducer.worldSize > 1) this.overlapNote = `overlap off: ${blocked}`;
    if (this.overlap === null && tf.getBackend() === 'wasm' && opts.accumulate === 1) this.eager = new EagerGradCopy(model, this.flat, this.paramOffsets);
    // The gathered step (runGathered): with 2-3 ranks on one machine, reading every slot inside the update moves less
    // memory than averaging into every slot and reading the mean back (R slot passes against ~3); from 4 it moves more.
    this.gather = shared !== null && reducer.worldSize >= 2 && reducer.worldSize <= 3 && !!reducer.gatherShared && !opts.clipGradNorm &&
      !opts.lossScaler && nativeSgdMeanActive();
    this.topK = Math.min(5, model.numClasses);
  }

  /** --overlap on this rank (null: off). */
  private readonly overlap: OverlapState | null = null;
  /** Average by gathering (runGathered) where the reducer offers it; false after it declined once. */
  private gather: boolean;
  /** A step gathered already (the log says so once). */
  private gathered = false;
  /** The last step gathered: the other ranks may still read `flat` until sharedReleased(). */
  private gatherOpen = false;
  /** runGathered: the running statistics' mean (the slot itself is still read by the others then). */
  private statsMean: Float32Array | null = null;
  /** Wasm, one micro-batch, no overlap: gradients are copied into `flat` during the backward (grad-copy.ts). */
  private readonly eager: EagerGradCopy | null = null;
  /** Why overlap is off although asked for, said once. */
  private overlapNote?: string;

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
    const webgpu = tf.getBackend() === 'webgpu';
    const dispatched = webgpu ? countDispatches() : null;
    const c: StepContext = {
      times: { data: 0, compute: 0, reduce: 0, apply: 0 }, cpu0: process.cpuUsage(), dispatched, d0: dispatched?.() ?? 0,
      gpu: profile && webgpu ? { kernelMs: 0, byName: new Map() } : null,
    };
    this.metrics.fill(0);
    if (webgpu && this.replay.warm === 0 && this.replayWanted() && (this.reducer.worldSize > 1 || this.opts.accumulate > 1)) {
      this.replay.off = this.reducer.worldSize > 1 ? 'several workers exchange gradients through the host' : 'several micro-batches per step (--accumulate)';
      if (this.opts.rank === 0) c.note = `webgpu replay off, steps run through tfjs: ${this.replay.off}`;
    }
    if (webgpu && this.replay.warm === 0 && this.replayWanted() && this.opts.lossScaler) {
      // A replayed graph has its scale baked in and no skip branch: each step must read the overflow check first.
      this.replay.off = 'dynamic loss scaling (--precision=f16) reads an overflow check before applying each step';
      if (this.opts.rank === 0) c.note = `webgpu replay off, steps run through tfjs: ${this.replay.off}`;
    }
    if (this.opts.lossScaler) c.lossScale = this.opts.lossScaler.scale;
    if (this.overlapNote) {
      if (this.opts.rank === 0) addNote(c, this.overlapNote);
      this.overlapNote = undefined;
    }
    // One worker on a GPU: nothing to exchange, so the gradients never leave the device.
    if (this.reducer.worldSize === 1 && webgpu) return this.runOnDevice(step, nextBatch, lr, c);
    return this.runExchanged(step, nextBatch, lr, c);
  }

  /** Graph replay's state on this worker (see graphStep). */
  private readonly replay: { warm: number; graph?: StepGraph; reference?: WebgpuRecording; off?: string } = { warm: 0 };

  /** Releases the captured graph (its buffers go back to tfjs's pool). */
  dispose(): void {
    this.replay.graph?.dispose();
    this.replay.graph = undefined;
  }

  /**
   * The device-resident step (one webgpu worker): micro-batch gradients summed on the GPU, SGD and the running
   * statistics applied there by our kernels; the loss/accuracy figures are read last, so the GPU is not idle
   * while JS issues the SGD kernels. With one micro-batch and no profiling, steps are replayed (graphStep).
   */
  private async runOnDevice(step: number, nextBatch: () => Promise<Batch>, lr: number, c: StepContext): Promise<StepResult> {
    const { accumulate } = this.opts;
    let first: Batch | undefined;
    if (accumulate === 1 && !c.gpu && this.replayWanted()) {
      const t = performance.now();
      first = await nextBatch();
      c.times.data += performance.now() - t;
      const r = await this.graphStep(step, first, lr, c);
      if (r) return r;
    }
    let acc: tf.Tensor[] | undefined;
    const pending: tf.Tensor[] = [];
    for (let m = 0; m < accumulate; m++) {
      let t = performance.now();
      const batch = m === 0 && first ? first : await nextBatch();
      c.times.data += performance.now() - t;
      t = performance.now();
      const { stats, parts } = await this.microBatch(batch, this.dropoutSeed(step, this.opts.rank * accumulate + m), c.gpu);
      this.metrics[M_COUNT] += batch.size;
      pending.push(stats);
      acc = this.addParts(acc, parts);
      c.times.compute += performance.now() - t;
    }
    const t = performance.now();
    const mean = accumulate === 1 ? acc! : tf.tidy(() => acc!.map((a) => tf.div(a, accumulate)));
    if (this.opts.lossScaler) {
      await this.applyScaledOnDevice(mean, lr, this.opts.lossScaler, c);
    } else {
      this.applyOnDevice(mean, lr);
    }
    if (mean !== acc) tf.dispose(mean);
    tf.dispose(acc!);
    c.times.apply = performance.now() - t;
    // This read waits for the GPU to finish the step: compute time, as on the other path.
    const w = performance.now();
    for (const stats of pending.splice(0)) await this.addFigures(stats, []);
    c.times.compute += performance.now() - w;
    await this.reducer.allReduce(EMPTY, this.metrics);
    return this.finish(c);
  }

  /**
   * Issues one micro-batch step on a device-resident backend (forward, backward, SGD, running statistics) without
   * waiting for it; returns its [loss sum, top-1, top-5] tensor (the caller reads and disposes it).
   */
  issue(batch: Batch, dropoutSeed: number, lr: number): tf.Tensor {
    const [figures, ...parts] = this.compute(batch, dropoutSeed);
    this.applyOnDevice(parts, lr);
    tf.dispose(parts);
    return figures!;
  }

  /** SGD on the GPU and the new running statistics, from gradients then statistics (the model-signature order). */
  private applyOnDevice(parts: readonly tf.Tensor[], lr: number): void {
    const params = this.model.params.length;
    const grads = parts.slice(0, params);
    const clipped = this.opts.clipGradNorm ? clipGradientTensors(grads, this.opts.clipGradNorm) : grads;
    this.sgd.stepDevice(clipped, lr);
    if (clipped !== grads) tf.dispose(clipped);
    this.model.assignRunningStats(parts.slice(params));
  }

  /** applyOnDevice of the unscaled gradients when they are all finite; otherwise the step is skipped (one read). */
  private async applyScaledOnDevice(parts: readonly tf.Tensor[], lr: number, scaler: LossScaler, c: StepContext): Promise<void> {
    const params = this.model.params.length;
    const { grads, check } = unscaleTensors(parts.slice(0, params), scaler.scale);
    try {
      const finite = !Number.isNaN((await check.data())[0]);
      if (scaler.update(finite)) this.applyOnDevice([...grads, ...parts.slice(params)], lr);
      else c.skipped = true;
    } finally {
      tf.dispose([...grads, check]);
    }
  }

  private replayWanted(): boolean {
    return this.replay.off === undefined && (this.opts.replay ?? process.env.GOOGLENET_WEBGPU_REPLAY !== '0');
  }

  /**
   * One micro-batch step as a replayable graph (@googlenet/model's webgpu-replay): after WARM_STEPS normal
   * steps (pipelines compiled, momentum started), two steps are captured and compared (anything that differs
   * between them must be a named input: the batch, the dropout masks, the learning rate), the second is sealed,
   * and later steps replay it. Null: run this step the normal way (warm-up, or the graph no longer applies:
   * it is then dropped and captured again later). The result's `note` says when replay starts or is off.
   */
  private async graphStep(step: number, batch: Batch, lr: number, c: StepContext): Promise<StepResult | null> {
    const r = this.replay;
    const seed = this.dropoutSeed(step, this.opts.rank);
    const t = performance.now();
    const streams = dropoutStreams(this.model, this.opts.batchSize, seed);
    if (r.graph) {
      // The dropout masks are made on the GPU from their stream keys (the host loop would cost more than the step).
      const keys = Object.fromEntries(Object.entries(streams).map(([name, d]) => [name, d.key]));
      let replayed: boolean;
      try {
        replayed = r.graph.replay({ images: batch.images, labels: batch.labels }, { lr }, keys);
      } catch (e) {
        // A batch unlike the captured one (another size): this run's steps go through tfjs from now on.
        if (!(e instanceof ReplayError)) throw e;
        this.dispose();
        r.off = e.message;
        c.note = `webgpu replay off, steps run through tfjs: ${e.message}`;
        return null;
      }
      if (!replayed) {
        const why = r.graph.invalidReason();
        this.dispose();
        r.warm = 0;
        c.note = `webgpu replay: captured again later (${why})`;
        return null;
      }
      const [figures] = await r.graph.readOutputs();
      this.addFigureValues(figures!);
      this.model.numBatchesTracked++;
      this.metrics[M_COUNT] += batch.size;
      c.times.compute += performance.now() - t;
      c.replayed = r.graph.dispatches;
      await this.reducer.allReduce(EMPTY, this.metrics);
      return this.finish(c);
    }
    if (r.warm < WARM_STEPS || !this.sgd.state().started) {
      r.warm++;
      return null;
    }
    const inputs = { images: batch.images, labels: batch.labels, ...dropoutInputs(this.model, this.opts.batchSize, seed) };
    const { result: stats, recording, why } = captureWebgpuStep(() => this.issue(batch, seed, lr), inputs);
    if (!recording) {
      r.off = why;
    } else if (!r.reference) {
      r.reference = recording;
      discardRecording(recording); // compared, never replayed
    } else {
      const differs = diffRecordings(r.reference, recording);
      r.reference = undefined;
      try {
        if (differs) throw new ReplayError('REPLAY_MISMATCH', `two captured steps differ: ${differs}`);
        r.graph = StepGraph.seal(recording, [stats], streams);
        c.note = `webgpu replay: step ${step + 2} on replays a captured step (${r.graph.dispatches} dispatches in one submit)`;
      } catch (e) {
        if (!(e instanceof ReplayError)) throw e;
        discardRecording(recording);
        r.off = e.message;
      }
    }
    if (r.off) c.note = `webgpu replay off, steps run through tfjs: ${r.off}`;
    this.metrics[M_COUNT] += batch.size;
    await this.addFigures(stats, []);
    c.times.compute += performance.now() - t;
    await this.reducer.allReduce(EMPTY, this.metrics);
    return this.finish(c);
  }

  /** Gradients and statistics go to the host, are averaged over ranks (one coordinator round) and applied there. */
  private async runExchanged(step: number, nextBatch: () => Promise<Batch>, lr: number, c: StepContext): Promise<StepResult> {
    const { accumulate } = this.opts;
    const ov = this.overlap;
    if (ov?.phase === 'on') return this.runOverlapped(step, nextBatch, lr, c, ov);
    let acc: tf.Tensor[] | undefined;
    for (let m = 0; m < accumulate; m++) {
      let t = performance.now();
      const batch = await nextBatch();
      c.times.data += performance.now() - t;
      if (m === 0 && this.gatherOpen) {
        // The others read this rank's slot inside their last update; it is written again from here on.
        t = performance.now();
        await this.reducer.sharedReleased!();
        this.gatherOpen = false;
        c.times.reduce += performance.now() - t;
      }
      t = performance.now();
      // --overlap's first step runs without it and learns the order in which the backward yields gradients.
      this.eager?.begin();
      const tap = ov?.phase === 'learn' ? ov.learnTap : this.eager?.tap;
      const { stats, parts } = await this.microBatch(batch, this.dropoutSeed(step, this.opts.rank * accumulate + m), c.gpu, tap);
      this.metrics[M_COUNT] += batch.size;
      await this.addFigures(stats, parts);
      if (accumulate === 1) {
        await this.writeFlat(parts);
        tf.dispose(parts);
      } else {
        acc = this.addParts(acc, parts);
      }
      c.times.compute += performance.now() - t;
    }
    if (acc !== undefined) {
      const t = performance.now();
      const scaled = tf.tidy(() => acc!.map((a) => tf.div(a, accumulate)));
      await this.writeFlat(scaled);
      tf.dispose(scaled);
      tf.dispose(acc);
      c.times.compute += performance.now() - t;
    }

    const gradEnd = this.bufferOffsets[0] ?? this.flat.length;
    // Unscaled before the exchange, so that an f16 wire (--grad-compression) carries values in its range.
    if (this.opts.lossScaler) unscaleFlat(this.flat, gradEnd, this.opts.lossScaler.scale);
    if (this.gather && await this.runGathered(lr, c)) return this.finish(c);
    let t = performance.now();
    // Only the gradients may be compressed (--grad-compression); the running statistics after them stay fp32.
    await this.reducer.allReduce(this.flat, this.metrics, gradEnd);
    c.times.reduce = performance.now() - t;

    t = performance.now();
    // An inf or NaN on any rank reaches the average, so every rank takes the same decision.
    if (this.opts.lossScaler && !this.opts.lossScaler.update(allFinite(this.flat, gradEnd))) c.skipped = true;
    else this.apply(lr);
    c.times.apply = performance.now() - t;
    if (ov?.phase === 'learn') {
      const line = await ov.open(this.reducer);
      if (this.opts.rank === 0) addNote(c, line);
    }
    return this.finish(c);
  }

  /**
   * A step whose exchange overlaps its backward (overlap.ts): the tap copies each gradient into `flat` as the
   * backward yields it and hands complete buckets to the exchange thread; afterwards the running statistics
   * and metrics follow in one announced all-reduce, as in runExchanged, and the update is the same.
   */
  private async runOverlapped(step: number, nextBatch: () => Promise<Batch>, lr: number, c: StepContext, ov: OverlapState): Promise<StepResult> {
    let t = performance.now();
    const batch = await nextBatch();
    c.times.data += performance.now() - t;
    t = performance.now();
    const params = this.model.params.length;
    const gradEnd = this.bufferOffsets[0] ?? this.flat.length;
    ov.begin();
    let out: tf.Tensor[];
    let backwardEndMs: number;
    try {
      out = this.compute(batch, this.dropoutSeed(step, this.opts.rank), ov.tap);
      backwardEndMs = performance.timeOrigin + performance.now();
      try {
        ov.afterBackward(out.slice(1, 1 + params));
        await readAllInto(out.slice(1 + params), this.flat, gradEnd);
      } catch (e) {
        tf.dispose(out);
        throw e;
      }
    } catch (e) {
      ov.cancel(e as Error);
      throw e;
    }
    const [stats, ...parts] = out;
    this.metrics[M_COUNT] += batch.size;
    await this.addFigures(stats!, parts);
    tf.dispose(parts);
    c.times.compute += performance.now() - t;

    t = performance.now();
    const timing = await ov.finish();
    await this.reducer.allReduce(this.flat, this.metrics, gradEnd, gradEnd);
    c.times.reduce = performance.now() - t;
    c.overlap = { buckets: timing.buckets.length, firstStartMs: timing.buckets[0]?.[0] ?? 0, backwardEndMs, waitMs: timing.waitMs };

    t = performance.now();
    this.apply(lr);
    c.times.apply = performance.now() - t;
    return this.finish(c);
  }

  /**
   * Reduce and apply in one: once every rank wrote its slot, each rank reads all R slots inside its SGD (the exact
   * mean, as the all-reduce would have written it, fused into the update: nativeSgdMean) and averages the running
   * statistics into memory of its own; nothing is written into the slots, which the others read until each releases
   * them (the next step awaits that before writing its slot). Same bytes as allReduce then apply. False: the reducer
   * declined (another plane, fp16 wire), so this and later steps all-reduce.
   */
  private async runGathered(lr: number, c: StepContext): Promise<boolean> {
    let t = performance.now();
    const views = await this.reducer.gatherShared!(this.flat, this.metrics);
    if (!views) {
      this.gather = false;
      return false;
    }
    this.gatherOpen = true;
    if (!this.gathered && this.opts.rank === 0) addNote(c, `reduce and SGD fused: each rank averages every rank's slot inside its update (${views.length} ranks), nothing written back`);
    this.gathered = true;
    c.times.reduce += performance.now() - t;
    t = performance.now();
    const gradEnd = this.bufferOffsets[0] ?? this.flat.length;
    try {
      this.statsMean ??= new Float32Array(this.flat.length - gradEnd);
      referenceMean(views.map((v) => v.subarray(gradEnd)), this.statsMean);
      if (!this.sgd.stepMeanOf(views, this.paramOffsets, lr)) {
        // A weight that shares its memory (not this model's): average into memory of this rank's own, then the plain step.
        const mean = new Float32Array(gradEnd);
        referenceMean(views.map((v) => v.subarray(0, gradEnd)), mean);
        this.sgd.stepFlat(mean, this.paramOffsets, lr);
      }
    } finally {
      this.reducer.releaseShared!();
    }
    this.assignRunningStatsFrom(this.statsMean, gradEnd);
    c.times.apply = performance.now() - t;
    return true;
  }

  /** `acc + parts` (both disposed), or `parts` when nothing is accumulated yet. */
  private addParts(acc: tf.Tensor[] | undefined, parts: tf.Tensor[]): tf.Tensor[] {
    if (acc === undefined) return parts;
    const sum = tf.tidy(() => acc.map((a, i) => tf.add(a, parts[i]!)));
    tf.dispose(acc);
    tf.dispose(parts);
    return sum;
  }

  /** The step's global figures from the reduced metrics, plus the webgpu dispatch count and profile. */
  private finish(c: StepContext): StepResult {
    const n = this.metrics[M_COUNT]!;
    const cpu = process.cpuUsage(c.cpu0);
    const result: StepResult = {
      loss: this.metrics[M_LOSS]! / n, top1: this.metrics[M_TOP1]! / n, top5: this.metrics[M_TOP5]! / n, samples: n, times: c.times,
      cpuMs: (cpu.user + cpu.system) / 1000,
    };
    if (c.dispatched) result.dispatches = c.replayed ?? c.dispatched() - c.d0;
    if (c.replayed !== undefined) result.replayed = true;
    if (c.note) result.note = c.note;
    if (c.lossScale !== undefined) result.lossScale = c.lossScale;
    if (c.skipped) result.skipped = true;
    if (c.overlap) result.overlap = c.overlap;
    if (c.gpu) {
      const kernels = [...c.gpu.byName].map(([name, v]) => ({ name, ...v })).sort((a, b) => b.ms - a.ms);
      result.gpu = { kernelMs: c.gpu.kernelMs, kernels };
    }
    return result;
  }

  /** Adds a micro-batch's [loss sum, top-1, top-5] to the step's metrics; frees `parts` too if the read fails. */
  private async addFigures(stats: tf.Tensor, parts: tf.Tensor[]): Promise<void> {
    try {
      this.addFigureValues((await stats.data()) as Float32Array);
    } catch (err) {
      tf.dispose(parts);
      throw err;
    } finally {
      stats.dispose();
    }
  }

  private addFigureValues(f: Float32Array): void {
    this.metrics[M_LOSS] += f[0]!;
    this.metrics[M_TOP1] += f[1]!;
    this.metrics[M_TOP5] += f[2]!;
  }

  /**
   * [figures (loss sum, top-1, top-5), ...gradients, ...running statistics] of one micro-batch, synchronously;
   * `onGradient` sees each gradient during the backward (--overlap).
   */
  private compute(batch: Batch, dropoutSeed: number, onGradient?: GradTap): tf.Tensor[] {
    const { batchSize, imageSize, auxWeight, labelSmoothing } = this.opts;
    return tf.tidy(() => {
      const x = tf.tensor4d(batch.images, [batchSize, imageSize, imageSize, 3]);
      const y = tf.tensor1d(batch.labels, 'int32');
      const lossScale = this.opts.lossScaler?.scale;
      const r = computeGradients(this.model, x, y, { auxWeight, dropoutSeed, labelSmoothing, ...(lossScale ? { lossScale } : {}), ...(onGradient ? { onGradient } : {}) });
      const figures = tf.stack([tf.mul(r.loss, batch.size), ...correctCounts(r.logits, y, this.topK)]);
      return [figures, ...r.grads, ...r.runningStats];
    });
  }

  /** Gradients then running statistics of one micro-batch (kept tensors) and its figures; profiled when `gpu`. */
  private async microBatch(batch: Batch, dropoutSeed: number, gpu: GpuProfile | null, onGradient?: GradTap): Promise<{ stats: tf.Tensor; parts: tf.Tensor[] }> {
    let out: tf.Tensor[] = [];
    if (gpu) {
      // tf.time on webgpu puts a timestamp query around every dispatch: exact per-kernel GPU time, slower step.
      const t = await tf.time(() => { out = this.compute(batch, dropoutSeed); }) as tf.TimingInfo & { getExtraProfileInfo?: () => string };
      gpu.kernelMs += t.kernelMs as number;
      for (const item of (t.getExtraProfileInfo?.() ?? '').split(', ').filter(Boolean)) {
        const cut = item.lastIndexOf(': ');
        const e = gpu.byName.get(item.slice(0, cut)) ?? { ms: 0, calls: 0 };
        e.ms += Number(item.slice(cut + 2));
        e.calls++;
        gpu.byName.set(item.slice(0, cut), e);
      }
    } else {
      out = this.compute(batch, dropoutSeed, onGradient);
    }
    const [stats, ...parts] = out;
    return { stats: stats!, parts };
  }

  /**
   * computeGradients' grads then runningStats, end to end: the model-signature order of `flat`. With the eager
   * copy the gradients are there already (but those the tap did not see as returned) and only the statistics follow.
   */
  private async writeFlat(parts: readonly tf.Tensor[]): Promise<void> {
    if (!this.eager) {
      await readAllInto(parts, this.flat);
      return;
    }
    const params = this.model.params.length;
    this.eager.finish(parts.slice(0, params));
    await readAllInto(parts.slice(params), this.flat, this.bufferOffsets[0] ?? this.flat.length);
  }

  private apply(lr: number): void {
    if (this.opts.clipGradNorm) clipFlatGradients(this.flat, this.bufferOffsets[0] ?? this.flat.length, this.opts.clipGradNorm);
    this.sgd.stepFlat(this.flat, this.paramOffsets, lr);
    this.assignRunningStatsFrom(this.flat, 0);
  }

  /** The running statistics from `src`, laid out as `flat` from float `base` on (the whole vector: base 0). */
  private assignRunningStatsFrom(src: Float32Array, base: number): void {
    // On wasm, tf.tensor() copies into the wasm heap; elsewhere the backend may keep a reference to the
    // array we hand it, and `src` is overwritten next step, so those backends get a copy.
    const copy = tf.getBackend() !== 'wasm';
    tf.tidy(() => this.model.assignRunningStats(this.model.buffers.map((b, i) => {
      const at = this.bufferOffsets[i]! - base, a = src.subarray(at, at + b.variable.size);
      return tf.tensor(copy ? a.slice() : a, b.variable.shape, 'float32');
    })));
  }
}

/** Adds a line to the step's note (rank 0 logs it). */
function addNote(c: { note?: string }, line: string): void {
  c.note = c.note ? `${c.note}; ${line}` : line;
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
