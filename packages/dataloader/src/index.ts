/** Public API of @googlenet/dataloader (see docs/contracts.md and this package's README). */
export { createDataLoader } from './loader.js';
export type { Batch, DataLoader, LoaderStats } from './loader.js';
export type { LoaderOptions, LoaderState } from './options.js';
export { AUGMENT_MODES, defaultAugment, padCropPadding } from './augment.js';
export type { AugmentMode } from './augment.js';
export type { DatasetName } from './datasets/types.js';
export { DataError } from './errors.js';
export type { DataErrorCode } from './errors.js';
export { shardIndices, shardRecordIndices, batchesPerSlot, shardRecordBatches, epochOrder } from './sampler.js';
export type { SlotOptions } from './sampler.js';
export { SYNTHETIC_CLASSES } from './datasets/synthetic.js';
