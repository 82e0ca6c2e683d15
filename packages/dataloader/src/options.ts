/** The loader's public option and state types, their defaults, and validation (once, up front). */
import { AUGMENT_MODES, defaultAugment, type AugmentMode } from './augment.js';
import { DATASET_NAMES } from './datasets/index.js';
import type { DatasetName } from './datasets/types.js';
import { DataError } from './errors.js';

export interface LoaderOptions {
  /** Which data set. */
  dataset: DatasetName;
  /** Folder of the data set; fashion-mnist defaults to /usr/share/datasets/fashion-mnist, others need it (not synthetic). */
  dataDir?: string;
  /** 'train' or 'test'. */
  split: 'train' | 'test';
  /** Side of the square output images. */
  imageSize: number;
  /** Samples per batch per slot. */
  batchSize: number;
  /** This worker, 0 <= rank < worldSize. */
  rank: number;
  /** Number of data-parallel workers. */
  worldSize: number;
  /** 1: micro-batches per step; rank r serves slots r*accumulate+m of worldSize*accumulate, m = 0..accumulate-1 in turn. */
  accumulate?: number;
  /** Base seed: keys the epoch permutation and the augmentation. */
  seed: number;
  /** Permute each epoch. Default: split === 'train'. */
  shuffle?: boolean;
  /** Training augmentation (augment.ts). Default: train: defaultAugment(dataset) (pad-crop for small images, inception for photographs); test: 'none', the only mode evaluation accepts. */
  augment?: AugmentMode;
  /** Drop the partial last step instead of padding. Default false. */
  dropLast?: boolean;
  /** Wrap so that every slot has equal full batches, epoch after epoch. Default: split === 'train'. false: one pass, uneven, null at the end. */
  pad?: boolean;
  /** 4: batches decoded ahead; the ring holds prefetch+1 batch buffers. */
  prefetch?: number;
  /** 1: decode worker threads; 0 decodes in the calling thread. */
  threads?: number;
  /** 'error': a bad image throws DataError BAD_SAMPLE naming it; 'skip': count it and go on. */
  onBadSample?: 'error' | 'skip';
  /** Resume: yield exactly the batches that would have come next after this state. */
  state?: LoaderState;
  /** Synthetic data set sizes. Default { train: 10000, test: 2000 }. */
  syntheticSize?: { train: number; test: number };
  /** Where to report end-of-epoch skip counts and fallbacks (not called on the hot path). */
  log?: (line: string) => void;
}

export interface LoaderState {
  version: 1;
  seed: number;
  epoch: number;
  /** next() calls consumed in the epoch (steps x accumulate, plus micro-batches of an unfinished step). */
  position: number;
  worldSize: number;
  accumulate: number;
  dataset: string;
}

export type ResolvedOptions = Readonly<
  Required<Omit<LoaderOptions, 'dataDir' | 'state' | 'log'>> & Pick<LoaderOptions, 'dataDir' | 'state' | 'log'>
>;

const KNOWN = new Set([
  'dataset', 'dataDir', 'split', 'imageSize', 'batchSize', 'rank', 'worldSize', 'accumulate', 'seed', 'shuffle', 'augment',
  'dropLast', 'pad', 'prefetch', 'threads', 'onBadSample', 'state', 'syntheticSize', 'log',
]);

const bad = (msg: string) => new DataError('BAD_OPTION', `dataloader: ${msg}`);

function int(name: string, v: unknown, min: number, max = Number.MAX_SAFE_INTEGER): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) {
    throw bad(`${name} must be an integer in [${min}, ${max === Number.MAX_SAFE_INTEGER ? 'inf' : max}], got ${JSON.stringify(v)}`);
  }
  return v;
}

function bool(name: string, v: unknown, dflt: boolean): boolean {
  if (v === undefined) return dflt;
  if (typeof v !== 'boolean') throw bad(`${name} must be true or false, got ${JSON.stringify(v)}`);
  return v;
}

export function resolveOptions(opts: LoaderOptions): ResolvedOptions {
  if (typeof opts !== 'object' || opts === null) throw bad('options must be an object');
  for (const k of Object.keys(opts)) if (!KNOWN.has(k)) throw bad(`unknown option ${JSON.stringify(k)}; known: ${[...KNOWN].join(', ')}`);
  if (!DATASET_NAMES.includes(opts.dataset)) throw bad(`dataset must be one of ${DATASET_NAMES.join(', ')}, got ${JSON.stringify(opts.dataset)}`);
  if (opts.split !== 'train' && opts.split !== 'test') throw bad(`split must be 'train' or 'test', got ${JSON.stringify(opts.split)}`);
  const train = opts.split === 'train';
  const worldSize = int('worldSize', opts.worldSize, 1, 4096);
  const rank = int('rank', opts.rank, 0);
  if (rank >= worldSize) throw bad(`rank ${rank} is not below worldSize ${worldSize}`);
  const onBadSample = opts.onBadSample ?? 'error';
  if (onBadSample !== 'error' && onBadSample !== 'skip') throw bad(`onBadSample must be 'error' or 'skip', got ${JSON.stringify(onBadSample)}`);
  const syntheticSize = opts.syntheticSize ?? { train: 10_000, test: 2_000 };
  int('syntheticSize.train', syntheticSize.train, 1);
  int('syntheticSize.test', syntheticSize.test, 1);
  if (opts.dataDir !== undefined && (typeof opts.dataDir !== 'string' || opts.dataDir === '')) throw bad(`dataDir must be a non-empty path, got ${JSON.stringify(opts.dataDir)}`);
  if (opts.log !== undefined && typeof opts.log !== 'function') throw bad('log must be a function');
  const augment = opts.augment ?? (train ? defaultAugment(opts.dataset) : 'none');
  if (!AUGMENT_MODES.includes(augment)) throw bad(`augment must be one of ${AUGMENT_MODES.join(', ')}, got ${JSON.stringify(augment)}`);
  if (!train && augment !== 'none') throw bad(`augment: '${augment}' on the test split; evaluation never augments: pass 'none' or leave it out`);
  return Object.freeze({
    dataset: opts.dataset,
    dataDir: opts.dataDir,
    split: opts.split,
    imageSize: int('imageSize', opts.imageSize, 1, 4096),
    batchSize: int('batchSize', opts.batchSize, 1, 1 << 16),
    rank,
    worldSize,
    accumulate: int('accumulate', opts.accumulate ?? 1, 1, 4096),
    seed: int('seed', opts.seed, 0),
    shuffle: bool('shuffle', opts.shuffle, train),
    augment,
    dropLast: bool('dropLast', opts.dropLast, false),
    pad: bool('pad', opts.pad, train),
    prefetch: int('prefetch', opts.prefetch ?? 4, 0, 1024),
    threads: int('threads', opts.threads ?? 1, 0, 256),
    onBadSample,
    state: opts.state,
    syntheticSize: { train: syntheticSize.train, test: syntheticSize.test },
    log: opts.log,
  });
}
