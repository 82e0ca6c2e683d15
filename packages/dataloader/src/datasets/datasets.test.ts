import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { createDataLoader } from '../loader.js';
import { makeShards } from '../make-shards.js';
import { hasSystemPrerequisite } from '../test-prereqs.js';
import { FOLDER_COLOURS, fixturePixel, tempDir, writeCifarFixture, writeIdxFixture, writeImageFolderFixture } from '../test-fixtures.js';
import { FASHION_MNIST_DIR } from './fashion-mnist.js';
import { openDataset, openSource } from './index.js';
import { renderSynthetic, SYNTHETIC_KEEP_BYTES, SyntheticSource } from './synthetic.js';

const tmp = tempDir();
afterAll(() => tmp.cleanup());
const SYN = { train: 10, test: 10 };

async function readAll(src: ReturnType<typeof openSource>) {
  const out = [];
  for (let i = 0; i < src.size; i++) {
    const r = await src.read(i);
    out.push({ label: src.label(i), width: r.width, height: r.height, channels: r.channels, data: Uint8Array.from(r.data) });
  }
  return out;
}

describe('fashion-mnist (IDX gz)', () => {
  const dir = join(tmp.dir, 'fmnist');
  mkdirSync(dir);
  writeIdxFixture(dir);

  it('reads images and labels of both splits from a fixture', async () => {
    const train = openDataset('fashion-mnist', 'train', { dataDir: dir, imageSize: 28, syntheticSize: SYN });
    expect(train.size).toBe(12);
    const test = openDataset('fashion-mnist', 'test', { dataDir: dir, imageSize: 28, syntheticSize: SYN });
    expect(test.size).toBe(5);
    const s = await readAll(openSource(train.spec));
    expect(s[7]!.label).toBe(7);
    expect([s[7]!.width, s[7]!.height, s[7]!.channels]).toEqual([28, 28, 1]);
    expect(s[7]!.data[3 * 28 + 4]).toBe(fixturePixel(7, 3, 4));
  });

  it('replicates grey into three normalised channels at the native size', async () => {
    const l = await createDataLoader({ dataset: 'fashion-mnist', dataDir: dir, split: 'test', imageSize: 28, batchSize: 5, rank: 0, worldSize: 1, seed: 0, threads: 0 });
    const b = (await l.next())!;
    const at = (i: number, y: number, x: number, c: number) => b.images[((i * 28 + y) * 28 + x) * 3 + c]!;
    const expected = (fixturePixel(2, 10, 11) / 255 - 0.286) / 0.353;
    for (let c = 0; c < 3; c++) expect(at(2, 10, 11, c)).toBeCloseTo(expected, 5);
    expect([...b.labels]).toEqual([0, 1, 2, 3, 4]);
    await l.close();
  });

  it('says how to install the data set when the folder is missing', () => {
    const err = (() => {
      try {
        openDataset('fashion-mnist', 'train', { dataDir: join(tmp.dir, 'nowhere'), imageSize: 28, syntheticSize: SYN });
      } catch (e) {
        return e as { code: string; message: string };
      }
    })();
    expect(err?.code).toBe('DATASET_NOT_FOUND');
    expect(err?.message).toContain('apt-get install dataset-fashion-mnist');
  });

  it('rejects a file that is not IDX with DATASET_LAYOUT', () => {
    const bad = join(tmp.dir, 'fmnist-bad');
    mkdirSync(bad);
    writeIdxFixture(bad);
    writeFileSync(join(bad, 'train-images-idx3-ubyte.gz'), 'not gzip at all');
    expect(() => openDataset('fashion-mnist', 'train', { dataDir: bad, imageSize: 28, syntheticSize: SYN })).toThrowError(expect.objectContaining({ code: 'DATASET_LAYOUT' }));
  });
});

const haveFashionMnist = hasSystemPrerequisite({
  test: 'the real Fashion-MNIST', pkg: 'dataset-fashion-mnist', require: 'GOOGLENET_REQUIRE_DATASETS',
  missing: existsSync(join(FASHION_MNIST_DIR, 'train-images-idx3-ubyte.gz')) ? undefined : `no ${FASHION_MNIST_DIR}/train-images-idx3-ubyte.gz`,
});

describe.skipIf(!haveFashionMnist)('the real Fashion-MNIST', () => {
  it('has 60,000 + 10,000 balanced 28x28 samples', async () => {
    const train = openDataset('fashion-mnist', 'train', { imageSize: 28, syntheticSize: SYN });
    const test = openDataset('fashion-mnist', 'test', { imageSize: 28, syntheticSize: SYN });
    expect([train.size, test.size]).toEqual([60_000, 10_000]);
    const src = openSource(train.spec);
    const hist = new Array(10).fill(0);
    for (let i = 0; i < src.size; i++) hist[src.label(i)]++;
    expect(hist).toEqual(new Array(10).fill(6000));
    expect(src.label(0)).toBe(9); // the first training image is an ankle boot
    const first = (await src.read(0)).data;
    const mean = first.reduce((a, b) => a + b, 0) / first.length / 255;
    expect(mean).toBeGreaterThan(0.05);
    expect(mean).toBeLessThan(0.9);
  });
});

describe('cifar10 (binary batches)', () => {
  const dir = join(tmp.dir, 'cifar', 'cifar-10-batches-bin');
  mkdirSync(dir, { recursive: true });
  writeCifarFixture(dir);

  it('reads the five training batches and the test batch, CHW to HWC', async () => {
    const train = openDataset('cifar10', 'train', { dataDir: join(tmp.dir, 'cifar'), imageSize: 32, syntheticSize: SYN });
    expect(train.size).toBe(15);
    const s = await readAll(openSource(train.spec));
    expect(s[4]!.label).toBe(2); // (4*3) % 10
    expect(s[4]!.data[(5 * 32 + 6) * 3 + 2]).toBe(fixturePixel(4, 5, 6, 2));
    const test = openDataset('cifar10', 'test', { dataDir: dir, imageSize: 32, syntheticSize: SYN });
    const t = await readAll(openSource(test.spec));
    expect(t.map((x) => x.label)).toEqual([5, 8, 1]); // records 15..17
    expect(t[0]!.data[1]).toBe(fixturePixel(15, 0, 0, 1));
  });

  it('names the missing batch files and where to download them', () => {
    expect(() => openDataset('cifar10', 'train', { dataDir: tmp.dir, imageSize: 32, syntheticSize: SYN })).toThrowError(/data_batch_1\.bin.*cifar-10-binary\.tar\.gz/s);
  });
});

describe('imagefolder', () => {
  const root = join(tmp.dir, 'folder');

  it('decodes JPEG and PNG files, with classes sorted by name and train/val splits', async () => {
    await writeImageFolderFixture(root, 'train', 2);
    await writeImageFolderFixture(root, 'val', 1);
    const train = openDataset('imagefolder', 'train', { dataDir: root, imageSize: 16, syntheticSize: SYN });
    expect(train.classNames).toEqual(['ant', 'bee', 'cat']);
    expect(train.size).toBe(6);
    const s = await readAll(openSource(train.spec));
    for (const x of s) {
      const rgb = FOLDER_COLOURS[train.classNames[x.label]!]!;
      expect([x.width, x.height]).toEqual([40, 30]);
      for (let c = 0; c < 3; c++) expect(Math.abs(x.data[c]! - rgb[c]!)).toBeLessThan(6);
    }
    const val = openDataset('imagefolder', 'test', { dataDir: root, imageSize: 16, syntheticSize: SYN });
    expect(val.size).toBe(3);
  });

  it('refuses an evaluation split for a flat folder instead of evaluating on training images', async () => {
    const flat = join(tmp.dir, 'flat');
    await writeImageFolderFixture(flat, '', 1);
    expect(openDataset('imagefolder', 'train', { dataDir: flat, imageSize: 16, syntheticSize: SYN }).size).toBe(3);
    expect(() => openDataset('imagefolder', 'test', { dataDir: flat, imageSize: 16, syntheticSize: SYN })).toThrowError(expect.objectContaining({ code: 'DATASET_LAYOUT' }));
    expect(() => openDataset('imagefolder', 'train', { dataDir: join(tmp.dir, 'no-such'), imageSize: 16, syntheticSize: SYN })).toThrowError(expect.objectContaining({ code: 'DATASET_NOT_FOUND' }));
  });
});

describe('shards', () => {
  it('round-trips raw records: the same (label, pixels) multiset as the source', async () => {
    const fm = join(tmp.dir, 'fmnist');
    const out = join(tmp.dir, 'shards-fm');
    const manifests = await makeShards({ from: 'fashion-mnist', dataDir: fm, out, shards: 3 });
    expect(manifests.map((m) => [m.split, m.total, m.shards.map((s) => s.count)])).toEqual([
      ['train', 12, [4, 4, 4]],
      ['test', 5, [1, 2, 2]],
    ]);
    const key = (x: { label: number; data: Uint8Array }) => `${x.label}:${Buffer.from(x.data).toString('base64')}`;
    for (const split of ['train', 'test'] as const) {
      const a = openDataset('shards', split, { dataDir: out, imageSize: 28, syntheticSize: SYN });
      const b = openDataset('fashion-mnist', split, { dataDir: fm, imageSize: 28, syntheticSize: SYN });
      expect(a.classNames).toEqual(b.classNames);
      expect((await readAll(openSource(a.spec))).map(key).sort()).toEqual((await readAll(openSource(b.spec))).map(key).sort());
    }
  });

  it('stores imagefolder JPEG/PNG bytes as they are and decodes them on read', async () => {
    const out = join(tmp.dir, 'shards-folder');
    await makeShards({ from: 'imagefolder', dataDir: join(tmp.dir, 'folder'), out, shards: 2, split: 'train' });
    const ds = openDataset('shards', 'train', { dataDir: out, imageSize: 16, syntheticSize: SYN });
    expect(ds.size).toBe(6);
    for (const x of await readAll(openSource(ds.spec))) {
      const rgb = FOLDER_COLOURS[ds.classNames[x.label]!]!;
      for (let c = 0; c < 3; c++) expect(Math.abs(x.data[c]! - rgb[c]!)).toBeLessThan(6);
    }
    // a missing split is a clear error
    expect(() => openDataset('shards', 'test', { dataDir: out, imageSize: 16, syntheticSize: SYN })).toThrowError(expect.objectContaining({ code: 'DATASET_NOT_FOUND' }));
  });

  it('names a truncated shard file', async () => {
    const out = join(tmp.dir, 'shards-trunc');
    const [m] = await makeShards({ from: 'synthetic', out, shards: 2, split: 'train', limit: 20, imageSize: 8 });
    const file = join(out, 'train', m!.shards[1]!.file);
    writeFileSync(file, Buffer.from('GNSHARD1 and then nothing useful'));
    expect(() => openDataset('shards', 'train', { dataDir: out, imageSize: 8, syntheticSize: SYN })).toThrowError(file);
  });
});

describe('synthetic', () => {
  it('a split that fits is drawn once at open and reads the same pixels as drawing at every read', () => {
    const kept = new SyntheticSource({ count: 40, imageSize: 8, seed: 5 });
    // More images than the budget holds: drawn at every read into one scratch buffer.
    const drawn = new SyntheticSource({ count: Math.floor(SYNTHETIC_KEEP_BYTES / (8 * 8 * 3)) + 1, imageSize: 8, seed: 5 });
    expect(drawn.read(0).data).toBe(drawn.read(1).data);
    const px = new Uint8Array(8 * 8 * 3);
    const first = kept.read(0).data.slice();
    for (const i of [0, 7, 39, 7]) {
      const r = kept.read(i);
      expect(renderSynthetic(5, i, 8, px)).toBe(kept.label(i));
      expect([r.width, r.height, r.channels]).toEqual([8, 8, 3]);
      expect(Buffer.from(r.data).equals(Buffer.from(px))).toBe(true);
      expect(Buffer.from(drawn.read(i).data).equals(Buffer.from(px))).toBe(true);
    }
    // Each image has memory of its own: reading others did not change the first one's pixels.
    expect(Buffer.from(kept.read(0).data).equals(Buffer.from(first))).toBe(true);
    for (const i of [-1, 40, 1.5]) expect(() => kept.read(i)).toThrowError(RangeError);
  });
});
