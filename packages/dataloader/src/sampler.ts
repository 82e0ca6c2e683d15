/**
 * Which samples each slot sees in an epoch: pure functions of (n, seed, epoch, slot, slots, batchSize, ...),
 * so that every process computes its own slice without talking to the others, and tests can check the
 * guarantees (disjoint, covering, equal length) exhaustively.
 *
 * A "slot" is one micro-batch stream: with worldSize W and accumulate A there are S = W*A slots and rank r
 * serves slots r*A .. r*A+A-1. Because the layout depends only on S, 2 workers x 1 and 1 worker x accumulate 2
 * see the same samples in every step.
 *
 * Layout (index data sets): the epoch's order (a permutation seeded by (seed, epoch), or 0..n-1 without
 * shuffle) is cut into global steps of S*B positions; slot j takes the j-th run of B positions of every step.
 *   pad (training): positions past n wrap to the start of the order, so every slot gets ceil(n/(S*B)) batches;
 *   dropLast:       the partial last step is dropped, so every slot gets floor(n/(S*B)) batches;
 *   neither (eval): the last step is partial; some slots get a short last batch or none; each sample once.
 */
import { DataError } from './errors.js';
import { Rng, shuffleRange } from './rng.js';

export interface SlotOptions {
  /** Base seed of the run. */
  seed: number;
  /** Epoch number (0-based); with the seed it keys the permutation. */
  epoch: number;
  /** This slot, 0 <= slot < slots. */
  slot: number;
  /** worldSize * accumulate. */
  slots: number;
  /** Samples per batch per slot. */
  batchSize: number;
  /** true: permute per epoch; false: natural order. Default true. */
  shuffle?: boolean;
  /** Drop the partial last step so that no sample repeats. Default false. */
  dropLast?: boolean;
  /** Wrap around so that every slot has the same number of full batches. Default true. */
  pad?: boolean;
}

function validate(n: number, o: SlotOptions): void {
  const bad = (what: string) => new DataError('BAD_OPTION', `sampler: ${what}`);
  if (!Number.isInteger(n) || n < 1) throw bad(`data set size must be a positive integer, got ${n}`);
  if (!Number.isInteger(o.slots) || o.slots < 1) throw bad(`slots must be a positive integer, got ${o.slots}`);
  if (!Number.isInteger(o.slot) || o.slot < 0 || o.slot >= o.slots) throw bad(`slot ${o.slot} is not in [0, ${o.slots})`);
  if (!Number.isInteger(o.batchSize) || o.batchSize < 1) throw bad(`batchSize must be a positive integer, got ${o.batchSize}`);
  if (!Number.isInteger(o.epoch) || o.epoch < 0) throw bad(`epoch must be a non-negative integer, got ${o.epoch}`);
  if (o.dropLast && n < o.slots * o.batchSize) {
    throw bad(
      `dropLast with ${o.slots} slot(s) x batch ${o.batchSize} needs at least ${o.slots * o.batchSize} samples, ` +
        `the data set has ${n}; lower the batch size or the world size, or turn dropLast off`,
    );
  }
}

/** The epoch's sample order: a permutation keyed by (seed, epoch), or the identity. */
export function epochOrder(n: number, opts: { seed: number; epoch: number; shuffle?: boolean }): Int32Array {
  const order = new Int32Array(n);
  for (let i = 0; i < n; i++) order[i] = i;
  if (opts.shuffle ?? true) shuffleRange(order, 0, n, new Rng(opts.seed, opts.epoch, 0x5e0));
  return order;
}

/** Number of positions in the epoch after padding or dropping. */
function globalLength(n: number, o: SlotOptions): number {
  const step = o.slots * o.batchSize;
  if (o.dropLast) return Math.floor(n / step) * step;
  if (o.pad ?? true) return Math.ceil(n / step) * step;
  return n;
}

/** Samples slot `o.slot` gets in this epoch. */
export function slotLength(n: number, o: SlotOptions): number {
  validate(n, o);
  const step = o.slots * o.batchSize;
  const g = globalLength(n, o);
  const full = Math.floor(g / step);
  const rest = g - full * step;
  return full * o.batchSize + Math.min(o.batchSize, Math.max(0, rest - o.slot * o.batchSize));
}

/** Batches slot `o.slot` gets in this epoch (the last one may be short only when pad and dropLast are off). */
export function batchesPerSlot(n: number, o: SlotOptions): number {
  return Math.ceil(slotLength(n, o) / o.batchSize);
}

/** Like shardIndices, from an order already computed with epochOrder (the loader serves several slots). */
export function shardIndicesFromOrder(order: Int32Array, o: SlotOptions): Int32Array {
  const n = order.length;
  const len = slotLength(n, o);
  const out = new Int32Array(len);
  const B = o.batchSize;
  const step = o.slots * B;
  for (let t = 0; t < len; t++) {
    const k = Math.floor(t / B);
    const pos = k * step + o.slot * B + (t - k * B);
    out[t] = order[pos % n]!;
  }
  return out;
}

/** The sample indices slot `o.slot` sees in epoch `o.epoch`, in order; batch b is [b*B, (b+1)*B). */
export function shardIndices(n: number, o: SlotOptions): Int32Array {
  validate(n, o);
  return shardIndicesFromOrder(epochOrder(n, o), o);
}

/**
 * The `shards` format: the records are stored in files, so a slot should read long contiguous runs instead of
 * random records. Each epoch the shard files are permuted (seeded by (seed, epoch)) and concatenated into one
 * virtual sequence of T records, which is cut into S contiguous runs: slot j therefore reads whole shard files
 * plus at most two partial ones, front to back.
 *   pad:      each run has L = ceil(T/(S*B))*B records, the last runs wrapping to the start;
 *   dropLast: L = floor(T/(S*B))*B, the tail (< S*B records) is not read this epoch;
 *   eval:     run j is [floor(j*T/S), floor((j+1)*T/S)): uneven by at most one record, each record once.
 * With shuffle, records are also permuted within windows of `window` consecutive positions of a run (keyed by
 * (seed, epoch, slot, window)), which mixes neighbouring records while keeping reads local.
 * Returned values are global record ids: shard s's record r is (sum of counts before s) + r.
 */
export function shardRecordIndices(counts: readonly number[], o: SlotOptions & { window?: number }): Int32Array {
  const T = counts.reduce((a, b) => a + b, 0);
  validate(T, o);
  const shuffle = o.shuffle ?? true;
  const base: number[] = [];
  let acc = 0;
  for (const c of counts) {
    base.push(acc);
    acc += c;
  }
  const shardOrder = Int32Array.from(counts.keys());
  if (shuffle) shuffleRange(shardOrder, 0, shardOrder.length, new Rng(o.seed, o.epoch, 0x5a4d));
  const virtual = new Int32Array(T);
  let v = 0;
  for (const s of shardOrder) for (let r = 0; r < counts[s]!; r++) virtual[v++] = base[s]! + r;

  const S = o.slots;
  const B = o.batchSize;
  let start: number;
  let len: number;
  if (o.dropLast || (o.pad ?? true)) {
    len = (o.dropLast ? Math.floor(T / (S * B)) : Math.ceil(T / (S * B))) * B;
    start = o.slot * len;
  } else {
    start = Math.floor((o.slot * T) / S);
    len = Math.floor(((o.slot + 1) * T) / S) - start;
  }
  const out = new Int32Array(len);
  for (let t = 0; t < len; t++) out[t] = virtual[(start + t) % T]!;
  if (shuffle) {
    const w = o.window ?? 1024;
    for (let lo = 0, k = 0; lo < len; lo += w, k++) shuffleRange(out, lo, Math.min(len, lo + w), new Rng(o.seed, o.epoch, o.slot, k, 0x3a1));
  }
  return out;
}

/** Batches per slot for the shards layout (see shardRecordIndices). */
export function shardRecordBatches(counts: readonly number[], o: SlotOptions): number {
  const T = counts.reduce((a, b) => a + b, 0);
  validate(T, o);
  const S = o.slots;
  const B = o.batchSize;
  if (o.dropLast) return Math.floor(T / (S * B));
  if (o.pad ?? true) return Math.ceil(T / (S * B));
  return Math.ceil((Math.floor(((o.slot + 1) * T) / S) - Math.floor((o.slot * T) / S)) / B);
}
