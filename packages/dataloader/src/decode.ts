/**
 * Fills one batch buffer: reads each sample from the Source, chooses its crop from (seed, epoch, index) and
 * resamples it into the NHWC float32 buffer. The same code runs in decode workers and, with threads: 0, in the
 * calling thread, which is why it only touches typed arrays handed to it.
 */
import { chooseCrop, normaliser, Resampler, type AugmentMode, type Normaliser } from './augment.js';
import { DataError } from './errors.js';
import { decodeRegion, hasEndMarker, imageDims } from './datasets/codec.js';
import type { RawImage, Source } from './datasets/types.js';

export interface DecodeConfig {
  imageSize: number;
  mean: readonly number[];
  std: readonly number[];
}

export interface BatchTask {
  indices: Int32Array; // sample ids, in batch order
  epoch: number;
  seed: number;
  augment: AugmentMode;
  onBadSample: 'error' | 'skip';
  /** Evaluation: drop bad samples (Batch.size shrinks). Training: refill them from good samples of the batch. */
  compact: boolean;
}

export interface SkipRecord {
  index: number;
  where: string;
  message: string;
}

export interface BatchResult {
  size: number;
  skipped: SkipRecord[];
}

/** One batch buffer of the ring; SharedArrayBuffer-backed so worker threads write into it directly. */
export interface BatchBuffers {
  images: Float32Array; // batchSize*imageSize*imageSize*3
  labels: Int32Array; // batchSize
  indices: Int32Array; // batchSize: the sample id in each row
}

export function allocBatchBuffers(batchSize: number, imageSize: number): BatchBuffers {
  return {
    images: new Float32Array(new SharedArrayBuffer(batchSize * imageSize * imageSize * 3 * 4)),
    labels: new Int32Array(new SharedArrayBuffer(batchSize * 4)),
    indices: new Int32Array(new SharedArrayBuffer(batchSize * 4)),
  };
}

export class BatchDecoder {
  private readonly source: Source;
  private readonly imageSize: number;
  private readonly resampler: Resampler;
  private readonly norm: Normaliser;
  private chain: Promise<unknown> = Promise.resolve();

  constructor(source: Source, cfg: DecodeConfig) {
    this.source = source;
    this.imageSize = cfg.imageSize;
    this.resampler = new Resampler(cfg.imageSize);
    this.norm = normaliser(cfg.mean, cfg.std);
  }

  /**
   * Batches run one after another: sources hand out scratch buffers that an overlapping batch would overwrite
   * while sharp still reads them.
   */
  fill(task: BatchTask, out: BatchBuffers): Promise<BatchResult> {
    const run = this.chain.then(() => this.fillNow(task, out));
    this.chain = run.catch(() => undefined);
    return run;
  }

  /**
   * Encoded samples: the crop is chosen from the header's size, then only the crop plus one pixel of border
   * on each side is decoded (see decodeRegion) and rendered exactly as from the full image. False when the
   * header cannot be read, the file does not end as a complete image (truncated, or data after the end), or
   * this decode fails; the caller then decodes the whole image, which reports a corrupt file with sharp's error.
   */
  private async renderEncoded(bytes: Uint8Array, task: BatchTask, index: number, images: Float32Array, offset: number): Promise<boolean> {
    const dims = imageDims(bytes);
    if (!dims || !hasEndMarker(bytes)) return false;
    const { width: W, height: H } = dims;
    const box = chooseCrop(W, H, { augment: task.augment, imageSize: this.imageSize, seed: task.seed, epoch: task.epoch, index });
    // Bilinear taps reach one pixel left/above of the crop and up to row/column x + w (clamped at the edge).
    const left = Math.max(0, box.x - 1);
    const top = Math.max(0, box.y - 1);
    const width = Math.min(W, box.x + box.w + 1) - left;
    const height = Math.min(H, box.y + box.h + 1) - top;
    let raw: RawImage;
    try {
      raw = await decodeRegion(bytes, left, top, width, height);
    } catch {
      return false;
    }
    if (raw.width !== width || raw.height !== height || raw.channels < 1 || raw.channels > 4) return false;
    this.resampler.render(raw.data, W, H, raw.channels, box, this.norm, images, offset, left, top, width);
    return true;
  }

  private async fillNow(task: BatchTask, out: BatchBuffers): Promise<BatchResult> {
    const S = this.imageSize;
    const per = S * S * 3;
    const skipped: SkipRecord[] = [];
    const bad: number[] = []; // rows to refill (training)
    let row = 0;
    for (let j = 0; j < task.indices.length; j++) {
      const index = task.indices[j]!;
      try {
        const bytes = this.source.encoded?.(index);
        if (bytes && (await this.renderEncoded(bytes, task, index, out.images, row * per))) {
          out.labels[row] = this.source.label(index);
          out.indices[row] = index;
          row++;
          continue;
        }
        const got = this.source.read(index);
        const raw: RawImage = got instanceof Promise ? await got : got;
        if (raw.width < 1 || raw.height < 1 || raw.channels < 1 || raw.channels > 4) throw new Error(`unsupported image ${raw.width}x${raw.height}x${raw.channels}`);
        const box = chooseCrop(raw.width, raw.height, { augment: task.augment, imageSize: S, seed: task.seed, epoch: task.epoch, index });
        this.resampler.render(raw.data, raw.width, raw.height, raw.channels, box, this.norm, out.images, row * per);
        out.labels[row] = this.source.label(index);
        out.indices[row] = index;
        row++;
      } catch (err) {
        if (err instanceof DataError && err.code === 'DEPENDENCY_MISSING') throw err; // not this sample's fault
        const where = this.source.where(index);
        const message = err instanceof Error ? err.message : String(err);
        if (task.onBadSample === 'error') {
          throw new DataError('BAD_SAMPLE', `cannot read sample ${index} (${where}): ${message}; fix or remove the file, or pass onBadSample: 'skip'`, { path: where, cause: err });
        }
        skipped.push({ index, where, message });
        if (!task.compact) bad.push(row++);
      }
    }
    if (!task.compact && bad.length > 0) {
      // Keep training batches full (every rank must see batchSize rows): reuse the nearest good row.
      const badSet = new Set(bad);
      const good: number[] = [];
      for (let r = 0; r < row; r++) if (!badSet.has(r)) good.push(r);
      if (good.length === 0) {
        throw new DataError('BAD_SAMPLE', `every sample of a batch was unreadable (${skipped.map((s) => s.where).slice(0, 3).join(', ')}, ...); check the data folder`, { path: skipped[0]!.where });
      }
      for (const r of bad) {
        const src = good.reduce((best, g) => (Math.abs(g - r) < Math.abs(best - r) ? g : best), good[0]!);
        out.images.copyWithin(r * per, src * per, (src + 1) * per);
        out.labels[r] = out.labels[src]!;
        out.indices[r] = out.indices[src]!;
      }
    }
    // Rows past the end of a short evaluation batch hold stale data; mark them so misuse is visible.
    out.labels.fill(-1, row);
    out.indices.fill(-1, row);
    return { size: row, skipped };
  }
}
