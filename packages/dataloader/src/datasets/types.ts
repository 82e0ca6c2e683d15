/**
 * Two halves of a data set: `Dataset` (what the loader needs in the calling thread: size, classes,
 * normalisation, and a serialisable SourceSpec) and `Source` (what a decode thread builds from the spec to
 * read pixels). Specs hold SharedArrayBuffers for in-memory data so worker threads see the pixels without a copy.
 */

export type DatasetName = 'synthetic' | 'fashion-mnist' | 'cifar10' | 'imagefolder' | 'shards';
export type Split = 'train' | 'test';

/** Decoded pixels of one sample: HWC uint8 with 1 to 4 channels. */
export interface RawImage {
  data: Uint8Array;
  width: number;
  height: number;
  channels: number;
}

export interface Source {
  readonly size: number;
  label(i: number): number;
  /** Pixels of sample i. The data may be a view into shared memory or a scratch buffer valid until the next read. */
  read(i: number): RawImage | Promise<RawImage>;
  /**
   * Optional: the encoded bytes (JPEG/PNG) of sample i, or null when it is stored as pixels. When given, the
   * decoder reads the header, chooses the crop and decodes only the rows and columns the crop needs; read()
   * remains the fallback. Same lifetime rules as read().
   */
  encoded?(i: number): Uint8Array | null;
  /** Where sample i lives, for error messages: a file path, or `path#record`. */
  where(i: number): string;
  close?(): void;
}

export type SourceSpec =
  | {
      kind: 'memory';
      count: number;
      width: number;
      height: number;
      channels: number;
      pixels: SharedArrayBuffer; // count*height*width*channels uint8, HWC per sample
      labels: SharedArrayBuffer; // count int32
      where: string; // the file the pixels came from
    }
  | { kind: 'synthetic'; count: number; imageSize: number; seed: number }
  | { kind: 'files'; paths: string[]; labels: Int32Array }
  | { kind: 'shards'; dir: string; files: string[]; counts: number[] };

export interface Dataset {
  readonly name: DatasetName;
  readonly split: Split;
  readonly size: number;
  readonly classNames: string[];
  /** Per-channel mean and std of the [0, 1] pixels, used to normalise. */
  readonly mean: [number, number, number];
  readonly std: [number, number, number];
  readonly spec: SourceSpec;
  /** shards only: records per shard file, in manifest order (sampling reads whole files). */
  readonly shardCounts?: number[];
}
