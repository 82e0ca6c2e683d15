import os from 'node:os';
import type * as tf from '@tensorflow/tfjs';
import { CoordinatorError, type BucketRanges, type OverlapExchange, type OverlapTiming } from '@googlenet/coordinator';
import type { GoogLeNet, GradTap } from '@googlenet/model';
import { TrainerError } from './errors';
import { readInto } from './host';
import type { GradientReducer } from './reducer';

/**
 * --overlap: the gradient exchange overlaps the backward pass (shm data plane, wasm and cpu backends).
 *
 * The backward hands each parameter's gradient out as soon as it computes it (@googlenet/model's gradient tap),
 * the last layers first. Here it is copied at once into its place in the step's flat vector, which lives in a
 * SharedArrayBuffer; when every parameter of a bucket is in, the bucket is marked ready and the coordinator
 * client's overlap thread averages it over the ranks on the shm segment while this thread goes on with the
 * backward. After the backward only the buckets not yet done (at least the last, conv1's) are waited for.
 *
 * Buckets follow the order in which the backward produces gradients, as DDP's do: learnt from the first step
 * (which runs without overlap), rank 0's order broadcast so that every rank cuts the same buckets; the first
 * bucket holds at most 1 MiB (DDP's first bucket) so that the exchange starts early, the others --bucket-mb.
 * The order is the reverse of the forward, with the aux heads between the stages they branch from, so a bucket
 * can be two or three ranges of the vector (one collective each).
 *
 * A gradient copied during the backward is final only if nothing is added to it later, which holds because each
 * parameter feeds exactly one op: checked every step (the tensor the tap saw must be the one variableGrads
 * returned); a violation fails the step (OVERLAP_GRADIENT_CHANGED) rather than apply stale bytes.
 */

export type OverlapChoice = 'auto' | 'on' | 'off';
export const OVERLAP_CHOICES: readonly OverlapChoice[] = ['auto', 'on', 'off'];

/** DDP's first bucket (torch.distributed's _DEFAULT_FIRST_BUCKET_BYTES). */
const FIRST_BUCKET_BYTES = 1024 * 1024;

/** What decides whether a step can overlap, known before the job starts. */
export interface OverlapSettings {
  worldSize: number;
  /** tf.getBackend() */
  backend: string;
  accumulate: number;
  gradCompression: 'none' | 'fp16';
  lossScaling: boolean;
  /**
   * --overlap=auto only: cores of this machine left over once its workers' compute threads have theirs. The
   * exchange thread competes with compute on a busy core: 2 workers x 1 thread on 2 cores measured no gain (the
   * coordinator README has the figures), so auto turns it on only where a core is free for it.
   */
  spareCores?: number;
}

/**
 * Cores of this machine that its `localWorkers` workers' native compute threads leave free (GOOGLENET_NATIVE_THREADS,
 * which the launcher sets to cores / workers; the addon's own default is 2).
 */
export function spareCores(localWorkers: number): number {
  const cores = os.availableParallelism();
  const t = Number(process.env.GOOGLENET_NATIVE_THREADS);
  const threads = Number.isInteger(t) && t > 0 ? t : Math.min(2, cores);
  return cores - localWorkers * threads;
}

/**
 * Why a step cannot overlap with these settings, or null. The rest (the shm plane) is known only once the job
 * runs: OverlapState.open says it then.
 */
export function overlapBlocker(s: OverlapSettings): string | null {
  if (s.worldSize === 1) return 'one worker exchanges nothing';
  if (s.backend !== 'wasm' && s.backend !== 'cpu') {
    return `the ${s.backend} backend cannot read a gradient synchronously inside the backward (only wasm and cpu can)`;
  }
  if (s.accumulate > 1) return '--accumulate > 1 sums micro-batches before the exchange';
  if (s.gradCompression !== 'none') return '--grad-compression=fp16 is not overlapped (and on shared memory it only costs)';
  if (s.lossScaling) return 'loss scaling unscales the whole vector before the exchange';
  if (s.spareCores !== undefined && s.spareCores < 1) {
    return 'no core is free for the exchange thread (the workers\' compute threads use them all; no gain measured then): --overlap=on forces it';
  }
  return null;
}

/** A step's overlap figures (metrics.jsonl `overlap`). */
export interface OverlapFigures {
  buckets: number;
  /** When the overlap thread started the first bucket, and when the backward returned (ms since the epoch). */
  firstStartMs: number;
  backwardEndMs: number;
  /** The reduce phase's wait for buckets still in flight after the backward (ms). */
  waitMs: number;
}

/** One rank's overlap across steps: 'learn' (first step), then 'on', or 'off' with the reason. */
export class OverlapState {
  phase: 'learn' | 'on' | 'off' = 'learn';
  reason = '';
  private order: number[] = [];
  private exchange: OverlapExchange | null = null;
  /** Per step: the gradient tensor id the tap saw for each param (-1: not yet). */
  private readonly seen: Int32Array;
  private readonly bucketOf: Int32Array;
  private remaining = new Int32Array(0);
  private total = new Int32Array(0);
  private readonly index: Map<number, number>;

  constructor(private readonly model: GoogLeNet, private readonly flat: Float32Array, private readonly paramOffsets: readonly number[],
    private readonly bucketBytes: number) {
    this.index = new Map(model.params.map((p, i) => [p.variable.id, i]));
    this.seen = new Int32Array(model.params.length).fill(-1);
    this.bucketOf = new Int32Array(model.params.length).fill(-1);
  }

  /** First step: records the order in which the backward produces the gradients. */
  readonly learnTap: GradTap = (param) => {
    const i = this.index.get(param.id);
    if (i !== undefined && !this.order.includes(i)) this.order.push(i);
  };

  /**
   * After the first step: agrees on rank 0's order (a broadcast, on every rank), cuts the buckets and starts the
   * exchange thread. Returns the line for the log.
   */
  async open(reducer: GradientReducer): Promise<string> {
    const n = this.model.params.length;
    for (let i = 0; i < n; i++) if (!this.order.includes(i)) this.order.push(i); // no gradient: goes last
    const wire = Float32Array.from(this.order);
    await reducer.broadcast(wire);
    this.order = Array.from(wire);
    const buckets = this.cut();
    if (!reducer.openOverlap) return this.off('this reducer has no overlap exchange');
    try {
      this.exchange = await reducer.openOverlap(this.flat, buckets.map((b) => b.ranges));
    } catch (e) {
      if ((e as { code?: string }).code !== 'INVALID_OPTIONS') throw e;
      return this.off((e as Error).message);
    }
    for (const [k, b] of buckets.entries()) for (const i of b.params) this.bucketOf[i] = k;
    this.total = Int32Array.from(buckets, (b) => b.params.length);
    this.remaining = new Int32Array(buckets.length);
    this.phase = 'on';
    const mb = (x: number) => (x / 2 ** 20).toFixed(1);
    return `overlap on: ${buckets.length} buckets of ${buckets.map((b) => mb(b.bytes)).join(', ')} MB in backward order, exchanged by a thread while the backward runs`;
  }

  off(reason: string): string {
    this.phase = 'off';
    this.reason = reason;
    return `overlap off: ${reason}`;
  }

  /** Opens a step (before the backward). */
  begin(): void {
    this.seen.fill(-1);
    this.remaining.set(this.total);
    this.exchange!.begin();
  }

  /** During the backward: copies a parameter's gradient into the vector; a complete bucket goes to the thread. */
  readonly tap: GradTap = (param, grad) => {
    const i = this.index.get(param.id);
    if (i === undefined) return;
    if (this.seen[i] !== -1) throw this.changed(i);
    readInto(grad, this.flat, this.paramOffsets[i]!);
    this.seen[i] = grad.id;
    const b = this.bucketOf[i]!;
    if (--this.remaining[b]! === 0) this.exchange!.ready(b);
  };

  /**
   * After the backward: every gradient the tap copied must be the one returned (else it changed afterwards);
   * any it did not see (none in this model) is copied now, completing its bucket.
   */
  afterBackward(grads: readonly tf.Tensor[]): void {
    for (let i = 0; i < grads.length; i++) {
      if (this.seen[i] === -1) {
        readInto(grads[i]!, this.flat, this.paramOffsets[i]!);
        this.seen[i] = grads[i]!.id;
        if (--this.remaining[this.bucketOf[i]!]! === 0) this.exchange!.ready(this.bucketOf[i]!);
      } else if (this.seen[i] !== grads[i]!.id) {
        throw this.changed(i);
      }
    }
  }

  /** Waits for the buckets still in flight. */
  finish(): Promise<OverlapTiming> {
    return this.exchange!.finish();
  }

  /** The step failed on this rank: the thread stops and the job fails at once (not at the round timeout). */
  cancel(err: Error): void {
    this.exchange?.cancel(new CoordinatorError('CLOSED', `this rank's step failed during the backward: ${err.message}`));
  }

  private changed(i: number): TrainerError {
    return new TrainerError('OVERLAP_GRADIENT_CHANGED', `the gradient of ${this.model.params[i]!.name} changed after the backward handed it ` +
      `to the exchange (the parameter feeds more than one op, so tfjs adds to it later); run with --overlap=off`);
  }

  /** Buckets in backward order: the first up to 1 MiB, the others up to bucketBytes; each as merged ranges. */
  private cut(): { params: number[]; ranges: BucketRanges; bytes: number }[] {
    const out: { params: number[]; ranges: BucketRanges; bytes: number }[] = [];
    let cur: number[] = [], bytes = 0;
    const close = () => {
      const ranges: BucketRanges = [];
      for (const i of [...cur].sort((a, b) => this.paramOffsets[a]! - this.paramOffsets[b]!)) {
        const lo = this.paramOffsets[i]!, hi = lo + this.model.params[i]!.variable.size;
        const last = ranges.at(-1);
        if (last && last[1] === lo) last[1] = hi;
        else ranges.push([lo, hi]);
      }
      out.push({ params: cur, ranges, bytes });
      cur = [];
      bytes = 0;
    };
    for (const i of this.order) {
      cur.push(i);
      bytes += this.model.params[i]!.variable.size * 4;
      if (bytes >= (out.length === 0 ? Math.min(FIRST_BUCKET_BYTES, this.bucketBytes) : this.bucketBytes)) close();
    }
    if (cur.length) close();
    return out;
  }
}
