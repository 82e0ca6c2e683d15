/**
 * createDataLoader: ties together the data set, the per-epoch plan of this rank's batches (sampler.ts),
 * the decode executor (pool.ts) and the read-ahead ring (prefetch.ts), and keeps the resumable cursor.
 */
import { allocBatchBuffers, type BatchBuffers, type BatchResult } from './decode.js';
import { openDataset } from './datasets/index.js';
import type { Dataset } from './datasets/types.js';
import { DataError } from './errors.js';
import { resolveOptions, type LoaderOptions, type LoaderState, type ResolvedOptions } from './options.js';
import { InlineExecutor, WorkerPool, type Executor } from './pool.js';
import { PrefetchQueue } from './prefetch.js';
import { batchesPerSlot, epochOrder, shardIndicesFromOrder, shardRecordBatches, shardRecordIndices, type SlotOptions } from './sampler.js';

export interface Batch {
  /** NHWC, batchSize*imageSize*imageSize*3, normalised; a reused buffer valid until the next next(). */
  images: Float32Array;
  /** batchSize labels; rows at or past `size` hold -1. */
  labels: Int32Array;
  /** Valid rows (== batchSize in training; may be smaller at the end of an evaluation pass). */
  size: number;
  epoch: number;
  /** This batch's position among this rank's batches of the epoch (0-based; step*accumulate + m in training). */
  indexInEpoch: number;
  /** Global slot (rank*accumulate + m) the batch belongs to. */
  slot: number;
  /** Step within the epoch: the batch is the step-th batch of its slot. */
  step: number;
  /** Sample id of each row (-1 past `size`); same lifetime as `images`. */
  indices: Int32Array;
}

export interface LoaderStats {
  /** Epoch of the last batch returned. */
  epoch: number;
  /** Bad samples skipped in that epoch so far (complete once its last batch has been returned). */
  skipped: number;
  /** Bad samples skipped since this loader was created. */
  skippedTotal: number;
  /** Decode threads in use (0: the calling thread). */
  threads: number;
}

export interface DataLoader {
  readonly numClasses: number;
  readonly classNames: string[];
  /** Batches per slot per epoch = steps per epoch (evaluation: the most any slot has). */
  readonly batchesPerEpoch: number;
  readonly datasetSize: number;
  /** The next batch; training crosses epoch boundaries by itself, evaluation (pad: false) resolves null at the end. */
  next(): Promise<Batch | null>;
  /** Position after the last batch returned. */
  state(): LoaderState;
  stats(): LoaderStats;
  /** Stops read-ahead and terminates the decode threads. */
  close(): Promise<void>;
}

interface PlanEntry {
  slot: number;
  step: number;
  indices: Int32Array;
}

/** This rank's batches of one epoch, in delivery order: step 0 slots m=0..A-1, step 1, ... */
class EpochPlanner {
  private readonly cache = new Map<number, PlanEntry[]>();

  constructor(
    private readonly ds: Dataset,
    private readonly o: ResolvedOptions,
  ) {}

  slotOptions(epoch: number, slot: number): SlotOptions {
    const o = this.o;
    return { seed: o.seed, epoch, slot, slots: o.worldSize * o.accumulate, batchSize: o.batchSize, shuffle: o.shuffle, dropLast: o.dropLast, pad: o.pad };
  }

  batchesOfSlot(slot: number): number {
    const so = this.slotOptions(0, slot);
    return this.ds.shardCounts ? shardRecordBatches(this.ds.shardCounts, so) : batchesPerSlot(this.ds.size, so);
  }

  entries(epoch: number): PlanEntry[] {
    let plan = this.cache.get(epoch);
    if (plan) return plan;
    const { rank, accumulate: A, batchSize: B } = this.o;
    const order = this.ds.shardCounts ? undefined : epochOrder(this.ds.size, { seed: this.o.seed, epoch, shuffle: this.o.shuffle });
    const lists: Int32Array[] = [];
    for (let m = 0; m < A; m++) {
      const so = this.slotOptions(epoch, rank * A + m);
      lists.push(order ? shardIndicesFromOrder(order, so) : shardRecordIndices(this.ds.shardCounts!, so));
    }
    plan = [];
    const steps = Math.max(...lists.map((l) => Math.ceil(l.length / B)));
    for (let k = 0; k < steps; k++) {
      for (let m = 0; m < A; m++) {
        const l = lists[m]!;
        if (k * B < l.length) plan.push({ slot: rank * A + m, step: k, indices: l.subarray(k * B, Math.min(l.length, (k + 1) * B)) });
      }
    }
    // Read-ahead spans at most two epochs; keep a third for a caller that lags.
    if (this.cache.size >= 3) this.cache.delete(Math.min(...this.cache.keys()));
    this.cache.set(epoch, plan);
    return plan;
  }
}

interface Delivered {
  epoch: number;
  position: number;
  entry: PlanEntry;
  ring: number;
  result: BatchResult;
}

/** Checks a resume state against the options and converts it to this layout's (epoch, position). */
function startFrom(o: ResolvedOptions, perEpoch: number): { epoch: number; position: number } {
  const s = o.state;
  if (!s) return { epoch: 0, position: 0 };
  const bad = (why: string) => new DataError('BAD_STATE', `dataloader: cannot resume from ${JSON.stringify(s)}: ${why}`);
  if (s.version !== 1) throw bad(`state version ${s.version} is not supported (expected 1)`);
  if (s.dataset !== o.dataset) throw bad(`it was saved for data set ${s.dataset}, not ${o.dataset}`);
  if (s.seed !== o.seed) throw bad(`it was saved with seed ${s.seed}, not ${o.seed}; pass the same seed`);
  if (!Number.isInteger(s.epoch) || s.epoch < 0 || !Number.isInteger(s.position) || s.position < 0) throw bad('epoch and position must be non-negative integers');
  let position = s.position;
  if (s.worldSize !== o.worldSize || s.accumulate !== o.accumulate) {
    // The sample layout depends only on worldSize*accumulate, so a run may change the split between
    // processes and accumulation at a step boundary.
    if (s.worldSize * s.accumulate !== o.worldSize * o.accumulate) {
      throw bad(`it was saved for worldSize ${s.worldSize} x accumulate ${s.accumulate}; worldSize x accumulate must stay ${s.worldSize * s.accumulate}`);
    }
    if (s.position % s.accumulate !== 0) throw bad('it was saved in the middle of an accumulation step; resume with the same worldSize and accumulate');
    position = (s.position / s.accumulate) * o.accumulate;
  }
  if (position > perEpoch) throw bad(`position ${position} is past the end of the epoch (${perEpoch} batches); were the data set or batch size changed?`);
  if (position === perEpoch && o.pad) return { epoch: s.epoch + 1, position: 0 };
  return { epoch: s.epoch, position };
}

class Loader implements DataLoader {
  readonly numClasses: number;
  readonly classNames: string[];
  readonly batchesPerEpoch: number;
  readonly datasetSize: number;
  private readonly o: ResolvedOptions;
  private readonly planner: EpochPlanner;
  private readonly ring: BatchBuffers[];
  private readonly exec: Executor;
  private readonly queue: PrefetchQueue<Delivered>;
  private readonly perEpoch: number; // next() calls per epoch (training); this rank's batches (evaluation)
  private cursor: { epoch: number; position: number }; // after the last batch returned
  private skipped = 0;
  private skippedTotal = 0;
  private skippedWhere: string[] = [];
  private statsEpoch: number;
  private closed = false;

  constructor(o: ResolvedOptions, ds: Dataset, planner: EpochPlanner, ring: BatchBuffers[], exec: Executor, start: { epoch: number; position: number }) {
    this.o = o;
    this.numClasses = ds.classNames.length;
    this.classNames = [...ds.classNames];
    this.datasetSize = ds.size;
    this.planner = planner;
    this.ring = ring;
    this.exec = exec;
    const S = o.worldSize * o.accumulate;
    this.batchesPerEpoch = o.pad || o.dropLast ? planner.batchesOfSlot(o.rank * o.accumulate) : Math.max(...Array.from({ length: S }, (_, s) => planner.batchesOfSlot(s)));
    this.perEpoch = planner.entries(start.epoch).length;
    this.cursor = { ...start };
    this.statsEpoch = start.epoch;
    const sched = { ...start };
    const train = o.pad;
    this.queue = new PrefetchQueue<Delivered>(o.prefetch, (_seq, ringIndex) => {
      if (!train && sched.position >= this.perEpoch) return null;
      const { epoch, position } = sched;
      const entry = planner.entries(epoch)[position]!;
      sched.position++;
      if (train && sched.position === this.perEpoch) {
        sched.epoch++;
        sched.position = 0;
      }
      const task = { indices: entry.indices, epoch, seed: o.seed, augment: o.augment, onBadSample: o.onBadSample, compact: !o.pad };
      return exec.run(task, ringIndex).then((result) => ({ epoch, position, entry, ring: ringIndex, result }));
    });
  }

  async next(): Promise<Batch | null> {
    if (this.closed) throw new DataError('LOADER_CLOSED', 'the data loader is closed; create a new one to read more batches');
    const d = await this.queue.next();
    if (d === null) return null;
    if (d.epoch !== this.statsEpoch) {
      this.statsEpoch = d.epoch;
      this.skipped = 0;
      this.skippedWhere = [];
    }
    this.skipped += d.result.skipped.length;
    this.skippedTotal += d.result.skipped.length;
    for (const s of d.result.skipped) if (this.skippedWhere.length < 5) this.skippedWhere.push(s.where);
    this.cursor = { epoch: d.epoch, position: d.position + 1 };
    if (this.cursor.position === this.perEpoch && this.skipped > 0) {
      this.o.log?.(`dataloader: epoch ${d.epoch}: skipped ${this.skipped} bad sample(s): ${this.skippedWhere.join(', ')}${this.skipped > this.skippedWhere.length ? ', ...' : ''}`);
    }
    const buf = this.ring[d.ring]!;
    return {
      images: buf.images,
      labels: buf.labels,
      indices: buf.indices,
      size: d.result.size,
      epoch: d.epoch,
      indexInEpoch: d.position,
      slot: d.entry.slot,
      step: d.entry.step,
    };
  }

  state(): LoaderState {
    const o = this.o;
    let { epoch, position } = this.cursor;
    if (o.pad && position === this.perEpoch) {
      epoch++;
      position = 0;
    }
    return { version: 1, seed: o.seed, epoch, position, worldSize: o.worldSize, accumulate: o.accumulate, dataset: o.dataset };
  }

  stats(): LoaderStats {
    return { epoch: this.statsEpoch, skipped: this.skipped, skippedTotal: this.skippedTotal, threads: this.exec.threads };
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.queue.close();
    await this.exec.close();
  }
}

export async function createDataLoader(opts: LoaderOptions): Promise<DataLoader> {
  const o = resolveOptions(opts);
  const ds = openDataset(o.dataset, o.split, { dataDir: o.dataDir, imageSize: o.imageSize, syntheticSize: o.syntheticSize });
  const planner = new EpochPlanner(ds, o);
  const start = startFrom(o, planner.entries(o.state?.epoch ?? 0).length);
  const ring = Array.from({ length: o.prefetch + 1 }, () => allocBatchBuffers(o.batchSize, o.imageSize));
  const cfg = { imageSize: o.imageSize, mean: ds.mean, std: ds.std };
  let exec: Executor;
  if (o.threads > 0) {
    try {
      exec = await WorkerPool.start(o.threads, ds.spec, cfg, ring);
    } catch (err) {
      // A data problem found while a worker opened the source is the user's to fix; anything else means
      // threads cannot start in this embedding (no tsx to resolve, a bundler): decode in this thread instead.
      if (err instanceof DataError && err.code !== 'WORKER_FAILED') throw err;
      o.log?.(`dataloader: decode threads unavailable (${(err as Error).message}); decoding in the calling thread`);
      exec = new InlineExecutor(ds.spec, cfg, ring);
    }
  } else {
    exec = new InlineExecutor(ds.spec, cfg, ring);
  }
  return new Loader(o, ds, planner, ring, exec, start);
}
