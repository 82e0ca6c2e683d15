/**
 * Writes any data set into the `shards` format (see datasets/shard-file.ts and the README). Samples are
 * permuted (by `seed`) before being cut into shards, so that each shard holds a mix of classes even when the
 * source is sorted by class (imagefolder is): the loader's shuffle is only window-local inside a shard.
 */
import { mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import sharp from 'sharp';
import { imageKind } from './datasets/codec.js';
import { openDataset, openSource } from './datasets/index.js';
import { MANIFEST_FORMAT, MANIFEST_VERSION, type ShardManifest } from './datasets/shards.js';
import { RecordEncoding, ShardWriter } from './datasets/shard-file.js';
import type { DatasetName, Split } from './datasets/types.js';
import { DataError } from './errors.js';
import { Rng, shuffleRange } from './rng.js';

export interface MakeShardsOptions {
  /** Source data set (any but shards itself). */
  from: Exclude<DatasetName, 'shards'>;
  /** Output folder; each split goes to out/<split>/. */
  out: string;
  /** Number of shard files per split. */
  shards: number;
  /** Source folder (as LoaderOptions.dataDir). */
  dataDir?: string;
  /** 'both' (default), 'train' or 'test'. */
  split?: Split | 'both';
  /** synthetic only: drawn image size. Default 32. */
  imageSize?: number;
  /** Seed of the record order. Default 0. */
  seed?: number;
  /** Write only the first `limit` samples of the permuted order (small shard sets for tests and trials). */
  limit?: number;
  /** synthetic only. Default { train: 10000, test: 2000 }. */
  syntheticSize?: { train: number; test: number };
  log?: (line: string) => void;
}

async function writeSplit(o: MakeShardsOptions, split: Split): Promise<ShardManifest> {
  const ds = openDataset(o.from, split, { dataDir: o.dataDir, imageSize: o.imageSize ?? 32, syntheticSize: o.syntheticSize ?? { train: 10_000, test: 2_000 } });
  const source = openSource(ds.spec);
  const order = Int32Array.from({ length: ds.size }, (_, i) => i);
  shuffleRange(order, 0, order.length, new Rng(o.seed ?? 0, 0x5a4d5));
  const total = Math.min(ds.size, o.limit ?? ds.size);
  if (o.shards > total) throw new DataError('BAD_OPTION', `make-shards: --shards=${o.shards} is more than the ${total} samples of the ${split} split; use fewer shards`);
  const dir = join(o.out, split);
  mkdirSync(dir, { recursive: true });
  const shards: ShardManifest['shards'] = [];
  const N = o.shards;
  const digits = Math.max(5, String(N).length);
  for (let k = 0; k < N; k++) {
    const file = `${split}-${String(k).padStart(digits, '0')}-of-${String(N).padStart(digits, '0')}.gnshard`;
    const w = new ShardWriter(join(dir, file));
    const lo = Math.floor((k * total) / N);
    const hi = Math.floor(((k + 1) * total) / N);
    for (let t = lo; t < hi; t++) {
      const i = order[t]!;
      const label = source.label(i);
      if (ds.spec.kind === 'files') {
        // Keep the photographer's JPEG/PNG bytes: smaller than pixels and decoded in the loader's threads.
        const path = ds.spec.paths[i]!;
        const bytes = readFileSync(path);
        const kind = imageKind(bytes);
        let meta: Awaited<ReturnType<ReturnType<typeof sharp>['metadata']>>;
        try {
          if (kind === 'unknown') throw new Error('not a JPEG or PNG file');
          meta = await sharp(bytes).metadata();
        } catch (err) {
          throw new DataError('BAD_SAMPLE', `make-shards: cannot read ${path}: ${(err as Error).message}; fix or remove the file`, { path, cause: err });
        }
        w.append(bytes, { label, width: meta.width ?? 0, height: meta.height ?? 0, channels: meta.channels ?? 0, encoding: kind === 'png' ? RecordEncoding.Png : RecordEncoding.Jpeg });
      } else {
        const got = source.read(i);
        const raw = got instanceof Promise ? await got : got;
        w.append(raw.data, { label, width: raw.width, height: raw.height, channels: raw.channels, encoding: RecordEncoding.Raw });
      }
    }
    const bytes = w.finish();
    shards.push({ file, count: hi - lo, bytes });
    o.log?.(`make-shards: ${join(dir, file)}: ${hi - lo} records, ${(bytes / 1e6).toFixed(1)} MB`);
  }
  source.close?.();
  const manifest: ShardManifest = {
    format: MANIFEST_FORMAT,
    version: MANIFEST_VERSION,
    source: o.from,
    split,
    classNames: ds.classNames,
    mean: ds.mean,
    std: ds.std,
    total,
    shards,
  };
  writeFileSync(join(dir, 'manifest.json.tmp'), `${JSON.stringify(manifest, null, 2)}\n`);
  renameSync(join(dir, 'manifest.json.tmp'), join(dir, 'manifest.json'));
  return manifest;
}

export async function makeShards(o: MakeShardsOptions): Promise<ShardManifest[]> {
  const splits: Split[] = (o.split ?? 'both') === 'both' ? ['train', 'test'] : [o.split as Split];
  const out: ShardManifest[] = [];
  for (const s of splits) out.push(await writeSplit(o, s));
  return out;
}
