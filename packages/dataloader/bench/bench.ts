/**
 * `nx run dataloader:bench [-- --images=N --threads=N]`: images per second through the whole loader
 * (read, decode, augment, normalise into the batch buffer) for each data set, as a table plus one JSON line.
 * It writes its own JPEG fixtures (500x375, like ImageNet photos) to a temp folder and removes them.
 */
import { mkdirSync, rmSync, mkdtempSync, existsSync } from 'node:fs';
import { availableParallelism, tmpdir } from 'node:os';
import { join } from 'node:path';
import sharp from 'sharp';
import { parseFlags, usage, type FlagSpec } from '../src/cli/args.js';
import { renderSynthetic } from '../src/datasets/synthetic.js';
import { FASHION_MNIST_DIR } from '../src/datasets/fashion-mnist.js';
import { DataError } from '../src/errors.js';
import { makeShards } from '../src/make-shards.js';
import { createDataLoader, type LoaderOptions } from '../src/index.js';
import { nativeRenderStatus } from '../src/native-render.js';

const FLAGS: Record<string, FlagSpec> = {
  images: { type: 'int', min: 32, help: 'JPEG fixtures to write and images per JPEG measurement (default 960: a second or more per row, so one slow moment does not decide the figure)' },
  threads: { type: 'int', min: 1, help: 'decode threads for the pool rows (default: available cores)' },
};

interface Row {
  name: string;
  threads: number;
  imageSize: number;
  images: number;
  seconds: number;
  imgPerSec: number;
}

async function measure(name: string, opts: LoaderOptions, images: number): Promise<Row> {
  const l = await createDataLoader(opts);
  try {
    await l.next(); // warm-up: worker start, first reads
    const batches = Math.ceil(images / opts.batchSize);
    const t0 = performance.now();
    for (let i = 0; i < batches; i++) await l.next();
    const seconds = (performance.now() - t0) / 1000;
    const n = batches * opts.batchSize;
    return { name, threads: opts.threads ?? 1, imageSize: opts.imageSize, images: n, seconds, imgPerSec: n / seconds };
  } finally {
    await l.close();
  }
}

async function writeJpegs(root: string, n: number): Promise<void> {
  const W = 500;
  const H = 375;
  const px = new Uint8Array(W * W * 3);
  for (let i = 0; i < n; i++) {
    const dir = join(root, 'train', `class${i % 10}`);
    mkdirSync(dir, { recursive: true });
    renderSynthetic(0xbe7c, i, W, px);
    await sharp(px.subarray(0, W * H * 3), { raw: { width: W, height: H, channels: 3 } }).jpeg({ quality: 90 }).toFile(join(dir, `${i}.jpg`));
  }
}

async function main(argv: string[]): Promise<void> {
  const { help, values } = parseFlags(argv, FLAGS, 'bench');
  if (help) {
    console.log(usage('nx run dataloader:bench -- [flags]', 'Loader throughput per data set (images/s).', FLAGS));
    return;
  }
  const images = (values.images as number | undefined) ?? 960;
  const pool = (values.threads as number | undefined) ?? availableParallelism();
  const tmp = mkdtempSync(join(tmpdir(), 'dataloader-bench-'));
  try {
    await writeJpegs(join(tmp, 'jpeg'), images);
    const common = { split: 'train' as const, rank: 0, worldSize: 1, seed: 0, prefetch: 4 };
    const jpeg = { ...common, dataset: 'imagefolder' as const, dataDir: join(tmp, 'jpeg'), imageSize: 224, batchSize: 32 };
    const rows: Row[] = [];
    rows.push(await measure('imagefolder JPEG 500x375 -> 224 crop', { ...jpeg, threads: 0 }, images));
    rows.push(await measure('imagefolder JPEG 500x375 -> 224 crop', { ...jpeg, threads: pool }, images));
    await makeShards({ from: 'imagefolder', dataDir: join(tmp, 'jpeg'), out: join(tmp, 'shards-jpeg'), shards: 4, split: 'train' });
    rows.push(await measure('shards (JPEG records) -> 224 crop', { ...jpeg, dataset: 'shards', dataDir: join(tmp, 'shards-jpeg'), threads: pool }, images));
    const small = { ...common, imageSize: 32, batchSize: 128 };
    if (existsSync(join(FASHION_MNIST_DIR, 'train-images-idx3-ubyte.gz'))) {
      rows.push(await measure('fashion-mnist 28 -> 32 crop', { ...small, dataset: 'fashion-mnist', threads: 0 }, 20_000));
      rows.push(await measure('fashion-mnist 28 -> 32 crop', { ...small, dataset: 'fashion-mnist', threads: pool }, 20_000));
    } else {
      console.log(`(fashion-mnist skipped: not in ${FASHION_MNIST_DIR}; apt-get install dataset-fashion-mnist)`);
    }
    rows.push(await measure('synthetic 32 (drawn on the fly)', { ...small, dataset: 'synthetic', threads: 0 }, 20_000));
    rows.push(await measure('synthetic 32 (drawn on the fly)', { ...small, dataset: 'synthetic', threads: pool }, 20_000));
    await makeShards({ from: 'synthetic', out: join(tmp, 'shards-raw'), shards: 8, split: 'train', imageSize: 32 });
    rows.push(await measure('shards (raw records) 32', { ...small, dataset: 'shards', dataDir: join(tmp, 'shards-raw'), threads: 0 }, 20_000));
    rows.push(await measure('shards (raw records) 32', { ...small, dataset: 'shards', dataDir: join(tmp, 'shards-raw'), threads: pool }, 20_000));

    const w = Math.max(...rows.map((r) => r.name.length));
    console.log(`crop/resize loop: ${nativeRenderStatus()}`);
    console.log(`${'data set'.padEnd(w)} | threads |  images | seconds |   img/s`);
    console.log(`${'-'.repeat(w)}-|---------|---------|---------|--------`);
    for (const r of rows) {
      const t = r.threads === 0 ? 'inline' : String(r.threads);
      console.log(`${r.name.padEnd(w)} | ${t.padStart(7)} | ${String(r.images).padStart(7)} | ${r.seconds.toFixed(2).padStart(7)} | ${r.imgPerSec.toFixed(0).padStart(7)}`);
    }
    console.log(JSON.stringify({ bench: 'dataloader', cores: availableParallelism(), render: nativeRenderStatus(), rows: rows.map((r) => ({ ...r, seconds: +r.seconds.toFixed(3), imgPerSec: +r.imgPerSec.toFixed(1) })) }));
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
}

main(process.argv.slice(2)).catch((err) => {
  console.error(err instanceof DataError ? `${err.message} [${err.code}]` : err);
  process.exit(err instanceof DataError && err.code === 'BAD_OPTION' ? 2 : 1);
});
