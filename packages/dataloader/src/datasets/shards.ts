/**
 * The project's sharded format: a folder with manifest.json and N shard files (see shard-file.ts), written by
 * `nx run dataloader:make-shards`. make-shards writes DIR/train/ and/or DIR/test/; the loader accepts DIR (and
 * picks DIR/<split>) or a split folder itself.
 */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { DataError } from '../errors.js';
import { decodeImage } from './codec.js';
import { RecordEncoding, ShardReader } from './shard-file.js';
import type { Dataset, RawImage, Source, Split } from './types.js';

export const MANIFEST_FORMAT = 'googlenet-shards';
export const MANIFEST_VERSION = 1;

export interface ShardManifest {
  format: typeof MANIFEST_FORMAT;
  version: 1;
  source: string; // the data set the shards were made from
  split: Split;
  classNames: string[];
  mean: [number, number, number];
  std: [number, number, number];
  total: number;
  shards: { file: string; count: number; bytes: number }[];
}

const HOW = 'write them with: nx run dataloader:make-shards --from=<data set> --out=DIR --shards=N';

export function findManifest(dataDir: string, split: Split): string {
  const candidates = [join(dataDir, split, 'manifest.json'), join(dataDir, 'manifest.json')];
  const found = candidates.find((p) => existsSync(p));
  if (!found) throw new DataError('DATASET_NOT_FOUND', `shards: no ${candidates.join(' or ')}; ${HOW}`, { path: dataDir });
  return found;
}

export function readManifest(path: string): ShardManifest {
  let m: ShardManifest;
  try {
    m = JSON.parse(readFileSync(path, 'utf8')) as ShardManifest;
  } catch (err) {
    throw new DataError('DATASET_LAYOUT', `shards: ${path} is not valid JSON (${(err as Error).message}); ${HOW}`, { path, cause: err });
  }
  const bad = (why: string) => new DataError('DATASET_LAYOUT', `shards: ${path}: ${why}; ${HOW}`, { path });
  if (m.format !== MANIFEST_FORMAT) throw bad(`format is ${JSON.stringify(m.format)}, expected "${MANIFEST_FORMAT}"`);
  if (m.version !== MANIFEST_VERSION) throw bad(`format version ${m.version} is not supported (this loader reads version ${MANIFEST_VERSION})`);
  if (!Array.isArray(m.shards) || m.shards.length === 0) throw bad('no shards listed');
  if (!Array.isArray(m.classNames) || m.classNames.length === 0) throw bad('no class names');
  if (m.shards.reduce((a, s) => a + s.count, 0) !== m.total) throw bad('shard counts do not add up to total');
  return m;
}

export function shardsDataset(split: Split, dataDir: string | undefined): Dataset {
  if (!dataDir) throw new DataError('DATASET_NOT_FOUND', `shards: no data folder given; ${HOW} and pass DIR as --data-dir`);
  const manifestPath = findManifest(dataDir, split);
  const m = readManifest(manifestPath);
  if (m.split !== split) {
    throw new DataError('DATASET_LAYOUT', `shards: ${manifestPath} holds the ${m.split} split, not ${split}; write it with make-shards --split=${split}`, { path: manifestPath });
  }
  const dir = join(manifestPath, '..');
  // Open every shard once here so that a missing or truncated file fails at start, naming the file.
  for (const s of m.shards) {
    const r = new ShardReader(join(dir, s.file));
    r.close();
    if (r.count !== s.count) throw new DataError('DATASET_LAYOUT', `shards: ${join(dir, s.file)} holds ${r.count} records, the manifest says ${s.count}; ${HOW}`, { path: join(dir, s.file) });
  }
  return {
    name: 'shards',
    split,
    size: m.total,
    classNames: m.classNames,
    mean: m.mean,
    std: m.std,
    spec: { kind: 'shards', dir, files: m.shards.map((s) => s.file), counts: m.shards.map((s) => s.count) },
    shardCounts: m.shards.map((s) => s.count),
  };
}

export class ShardSource implements Source {
  readonly size: number;
  private readonly readers: ShardReader[];
  private readonly base: number[] = []; // first global record id of each shard

  constructor(spec: { dir: string; files: string[]; counts: number[] }) {
    this.readers = spec.files.map((f) => new ShardReader(join(spec.dir, f)));
    let acc = 0;
    for (const c of spec.counts) {
      this.base.push(acc);
      acc += c;
    }
    this.size = acc;
  }

  /** Global record id -> (shard, record) by binary search over the shard bases. */
  private locate(i: number): [ShardReader, number] {
    let lo = 0;
    let hi = this.base.length - 1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1;
      if (this.base[mid]! <= i) lo = mid;
      else hi = mid - 1;
    }
    return [this.readers[lo]!, i - this.base[lo]!];
  }

  label(i: number): number {
    const [r, k] = this.locate(i);
    return r.label(k);
  }

  read(i: number): RawImage | Promise<RawImage> {
    const [r, k] = this.locate(i);
    const rec = r.read(k);
    if (rec.encoding === RecordEncoding.Raw) {
      if (rec.bytes.length !== rec.width * rec.height * rec.channels) throw new Error(`raw record is ${rec.bytes.length} bytes, expected ${rec.width}x${rec.height}x${rec.channels}`);
      return { data: rec.bytes, width: rec.width, height: rec.height, channels: rec.channels };
    }
    return decodeImage(rec.bytes);
  }

  encoded(i: number): Uint8Array | null {
    const [r, k] = this.locate(i);
    return r.encoding(k) === RecordEncoding.Raw ? null : r.read(k).bytes;
  }

  where(i: number): string {
    const [r, k] = this.locate(i);
    return `${r.path}#${k}`;
  }

  close(): void {
    for (const r of this.readers) r.close();
  }
}
