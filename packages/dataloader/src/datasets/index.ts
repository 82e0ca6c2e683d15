/** Opens a data set by name (calling thread) and a Source from its spec (any thread). */
import { DataError } from '../errors.js';
import { cifar10Dataset } from './cifar10.js';
import { FASHION_MNIST_DIR, fashionMnistDataset } from './fashion-mnist.js';
import { FileSource, imagefolderDataset } from './imagefolder.js';
import { MemorySource } from './memory.js';
import { ShardSource, shardsDataset } from './shards.js';
import { SyntheticSource, syntheticDataset } from './synthetic.js';
import type { Dataset, DatasetName, Source, SourceSpec, Split } from './types.js';

export const DATASET_NAMES: readonly DatasetName[] = ['synthetic', 'fashion-mnist', 'cifar10', 'imagefolder', 'shards'];

export interface OpenOptions {
  dataDir?: string;
  /** synthetic only: images are drawn at this size. */
  imageSize: number;
  syntheticSize: { train: number; test: number };
}

export function openDataset(name: DatasetName, split: Split, o: OpenOptions): Dataset {
  switch (name) {
    case 'synthetic':
      return syntheticDataset(split, o.syntheticSize[split], o.imageSize);
    case 'fashion-mnist':
      return fashionMnistDataset(split, o.dataDir ?? FASHION_MNIST_DIR);
    case 'cifar10':
      return cifar10Dataset(split, o.dataDir);
    case 'imagefolder':
      return imagefolderDataset(split, o.dataDir);
    case 'shards':
      return shardsDataset(split, o.dataDir);
    default:
      throw new DataError('BAD_OPTION', `unknown data set ${JSON.stringify(name)}; expected one of ${DATASET_NAMES.join(', ')}`);
  }
}

export function openSource(spec: SourceSpec): Source {
  switch (spec.kind) {
    case 'memory':
      return new MemorySource(spec);
    case 'synthetic':
      return new SyntheticSource(spec);
    case 'files':
      return new FileSource(spec);
    case 'shards':
      return new ShardSource(spec);
  }
}

export type { Dataset, DatasetName, RawImage, Source, SourceSpec, Split } from './types.js';
