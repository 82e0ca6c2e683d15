import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import sharp from 'sharp';
import { afterAll, describe, expect, it } from 'vitest';
import { createDataLoader, type DataLoader } from './index.js';
import type { LoaderOptions } from './options.js';
import { makeShards } from './make-shards.js';
import { tempDir, writeImageFolderFixture } from './test-fixtures.js';

const tmp = tempDir();
afterAll(() => tmp.cleanup());

const base: LoaderOptions = {
  dataset: 'synthetic',
  split: 'train',
  imageSize: 16,
  batchSize: 8,
  rank: 0,
  worldSize: 1,
  seed: 3,
  threads: 0,
  prefetch: 2,
  syntheticSize: { train: 100, test: 37 },
};

interface Snap {
  epoch: number;
  slot: number;
  step: number;
  size: number;
  indices: number[];
  labels: number[];
  images: Float32Array;
}

/** Reads `n` batches (or to the end), copying them out since buffers are reused. */
async function take(l: DataLoader, n = Infinity): Promise<Snap[]> {
  const out: Snap[] = [];
  while (out.length < n) {
    const b = await l.next();
    if (!b) break;
    out.push({ epoch: b.epoch, slot: b.slot, step: b.step, size: b.size, indices: [...b.indices.subarray(0, b.size)], labels: [...b.labels.subarray(0, b.size)], images: b.images.slice(0, b.size * 16 * 16 * 3) });
  }
  return out;
}

async function run(opts: Partial<LoaderOptions>, n = Infinity): Promise<Snap[]> {
  const l = await createDataLoader({ ...base, ...opts });
  try {
    return await take(l, n);
  } finally {
    await l.close();
  }
}

describe('createDataLoader', () => {
  it('serves NHWC float32 batches with int32 labels in reused buffers', async () => {
    const l = await createDataLoader(base);
    expect(l.numClasses).toBe(10);
    expect(l.datasetSize).toBe(100);
    expect(l.batchesPerEpoch).toBe(13); // ceil(100 / 8)
    const seen = new Set<Float32Array>();
    for (let i = 0; i < 6; i++) {
      const b = (await l.next())!;
      expect(b.images).toBeInstanceOf(Float32Array);
      expect(b.images.length).toBe(8 * 16 * 16 * 3);
      expect(b.labels).toBeInstanceOf(Int32Array);
      expect(b.size).toBe(8);
      for (let r = 0; r < 8; r++) expect(b.labels[r]).toBe(b.indices[r]! % 10);
      seen.add(b.images);
    }
    expect(seen.size).toBe(3); // prefetch 2 + 1 buffers in a ring
    await l.close();
  });

  it('is deterministic, and decoding in worker threads gives the same batches as in the calling thread', async () => {
    const a = await run({}, 30);
    const b = await run({}, 30);
    const c = await run({ threads: 2, prefetch: 3 }, 30);
    expect(b).toEqual(a);
    expect(c).toEqual(a);
    expect(a[13]!.epoch).toBe(1); // crosses the epoch boundary by itself
    expect(a[13]!.indices).not.toEqual(a[0]!.indices); // reshuffled
  });

  it('gives 2 workers x batch B and 1 worker x accumulate 2 x batch B the same samples in every step', async () => {
    const r0 = await run({ worldSize: 2, rank: 0 }, 14);
    const r1 = await run({ worldSize: 2, rank: 1 }, 14);
    const acc = await run({ accumulate: 2 }, 28);
    for (let k = 0; k < 14; k++) {
      expect(acc[2 * k]).toEqual(r0[k]);
      expect(acc[2 * k + 1]).toEqual(r1[k]);
    }
    // and the ranks' slices of an epoch are disjoint up to the wrap-around padding
    const e0 = new Set([...r0.slice(0, 7), ...r1.slice(0, 7)].flatMap((s) => s.indices));
    expect(e0.size).toBe(100);
  });

  it('resumes from state() with exactly the batches that would have come next, across epochs', async () => {
    for (const cut of [0, 5, 13, 20]) {
      const all = await run({ worldSize: 3, rank: 2, accumulate: 2 }, 30);
      const l = await createDataLoader({ ...base, worldSize: 3, rank: 2, accumulate: 2 });
      await take(l, cut);
      const state = l.state();
      await l.close();
      const rest = await run({ worldSize: 3, rank: 2, accumulate: 2, state: JSON.parse(JSON.stringify(state)) }, 30 - cut);
      expect(rest).toEqual(all.slice(cut));
    }
  });

  it('resumes a step-aligned state under another worldSize x accumulate with the same product', async () => {
    const two = await run({ worldSize: 2, rank: 0 }, 10);
    const l = await createDataLoader({ ...base, accumulate: 2 });
    await take(l, 8); // 4 steps
    const state = l.state();
    await l.close();
    const resumed = await run({ worldSize: 2, rank: 0, state }, 6);
    expect(resumed).toEqual(two.slice(4));
    await expect(createDataLoader({ ...base, worldSize: 4, rank: 0, state })).rejects.toMatchObject({ code: 'BAD_STATE' });
    await expect(createDataLoader({ ...base, seed: 4, accumulate: 2, state })).rejects.toMatchObject({ code: 'BAD_STATE' });
  });

  it('evaluates each test sample exactly once over all ranks, with short last batches and null at the end', async () => {
    for (const worldSize of [1, 2, 3, 5]) {
      const seen: number[] = [];
      for (let rank = 0; rank < worldSize; rank++) {
        const l = await createDataLoader({ ...base, split: 'test', worldSize, rank });
        expect(l.batchesPerEpoch).toBe(Math.ceil(37 / (8 * worldSize)));
        const got = await take(l);
        expect(await l.next()).toBeNull();
        await l.close();
        for (const b of got.slice(0, -1)) expect(b.size).toBe(8);
        seen.push(...got.flatMap((b) => b.indices));
      }
      expect(seen.sort((a, b) => a - b)).toEqual(Array.from({ length: 37 }, (_, i) => i));
    }
  });

  it('reads shards with equal batch counts on every rank and deterministic, resumable order', async () => {
    const out = join(tmp.dir, 'shards');
    await makeShards({ from: 'synthetic', out, shards: 5, imageSize: 16, syntheticSize: { train: 100, test: 37 } });
    const opts = { dataset: 'shards' as const, dataDir: out, worldSize: 3 };
    const lens: number[] = [];
    const union = new Set<number>();
    for (let rank = 0; rank < 3; rank++) {
      const l = await createDataLoader({ ...base, ...opts, rank });
      lens.push(l.batchesPerEpoch);
      for (const b of await take(l, l.batchesPerEpoch)) for (const i of b.indices) union.add(i);
      await l.close();
    }
    expect(lens).toEqual([5, 5, 5]); // ceil(100 / 24)
    expect(union.size).toBe(100);
    const all = await run({ ...opts, rank: 1 }, 12);
    expect(await run({ ...opts, rank: 1, threads: 1 }, 12)).toEqual(all);
    const l = await createDataLoader({ ...base, ...opts, rank: 1 });
    await take(l, 7);
    const state = l.state();
    await l.close();
    expect(await run({ ...opts, rank: 1, state }, 5)).toEqual(all.slice(7));
    // evaluation over shards: every record once
    const ev = [0, 1, 2].map((rank) => run({ ...opts, split: 'test', rank }));
    const idx = (await Promise.all(ev)).flat().flatMap((b) => b.indices);
    expect(idx.sort((a, b) => a - b)).toEqual(Array.from({ length: 37 }, (_, i) => i));
  });

  it('validates options with BAD_OPTION', async () => {
    await expect(createDataLoader({ ...base, rank: 1 })).rejects.toMatchObject({ code: 'BAD_OPTION' });
    await expect(createDataLoader({ ...base, batchSize: 0 })).rejects.toMatchObject({ code: 'BAD_OPTION' });
    await expect(createDataLoader({ ...base, dataset: 'mnist' as never })).rejects.toMatchObject({ code: 'BAD_OPTION' });
    await expect(createDataLoader({ ...base, batchsize: 3 } as never)).rejects.toThrowError(/unknown option "batchsize"/);
    await expect(createDataLoader({ ...base, dropLast: true, batchSize: 64, worldSize: 2 })).rejects.toMatchObject({ code: 'BAD_OPTION' });
  });

  it('stops cleanly: close() terminates the decode threads and next() then rejects', async () => {
    const l = await createDataLoader({ ...base, threads: 2, prefetch: 4 });
    expect(l.stats().threads).toBe(2);
    await l.next();
    await l.close(); // with batches still in flight
    await expect(l.next()).rejects.toMatchObject({ code: 'LOADER_CLOSED' });
    await l.close(); // idempotent
  });
});

describe('bad input', () => {
  const root = join(tmp.dir, 'bad');
  const corrupt = join(root, 'train', 'bee', 'broken.jpg');
  const setup = (async () => {
    await writeImageFolderFixture(root, 'train', 4);
    await writeImageFolderFixture(root, 'val', 2);
    mkdirSync(join(root, 'val', 'bee'), { recursive: true });
    // A JPEG header and then garbage: what a truncated download looks like.
    writeFileSync(corrupt, Buffer.concat([Buffer.from([0xff, 0xd8, 0xff, 0xe0, 0x00, 0x10]), Buffer.alloc(200, 7)]));
    writeFileSync(join(root, 'val', 'bee', 'broken.png'), Buffer.from('\x89PNG\r\n\x1a\n garbage'));
  })();
  const opts = { dataset: 'imagefolder' as const, dataDir: root, batchSize: 13, imageSize: 16 };

  for (const threads of [0, 1]) {
    it(`names the corrupt JPEG in a BAD_SAMPLE error (threads ${threads})`, async () => {
      await setup;
      const l = await createDataLoader({ ...base, ...opts, threads });
      await expect(l.next()).rejects.toMatchObject({ code: 'BAD_SAMPLE', message: expect.stringContaining(corrupt) });
      await l.close();
    });
  }

  it('skips and counts bad samples, keeps training batches full, and reports at the end of the epoch', async () => {
    await setup;
    const lines: string[] = [];
    const l = await createDataLoader({ ...base, ...opts, onBadSample: 'skip', threads: 1, log: (s) => lines.push(s) });
    const b = (await l.next())!; // 13 files, batch 13: the whole epoch
    expect(b.size).toBe(13);
    expect(l.stats()).toMatchObject({ epoch: 0, skipped: 1, skippedTotal: 1 });
    expect(lines.join('\n')).toContain(corrupt);
    await l.next();
    expect(l.stats()).toMatchObject({ epoch: 1, skipped: 1, skippedTotal: 2 });
    await l.close();
  });

  it('rejects a truncated JPEG in every epoch, whichever rows its random crop needs', async () => {
    // Only the crop's region of an encoded image is decoded; the missing end must still be noticed when the
    // crop lies entirely above the cut.
    const dir = join(tmp.dir, 'cut');
    await writeImageFolderFixture(dir, 'train', 1);
    const W = 100, H = 400; // tall: crops (aspect 3/4-4/3) are at most ~133 rows, many end above the cut
    const noise = Uint8Array.from({ length: W * H * 3 }, (_, i) => (i * 2654435761) >>> 24);
    const jpeg = await sharp(noise, { raw: { width: W, height: H, channels: 3 } }).jpeg({ quality: 90 }).toBuffer();
    const cut = join(dir, 'train', 'bee', 'cut.jpg');
    writeFileSync(cut, jpeg.subarray(0, Math.floor(jpeg.length * 0.7)));
    const l = await createDataLoader({ ...base, dataset: 'imagefolder', dataDir: dir, batchSize: 4, imageSize: 16, onBadSample: 'skip' });
    for (let epoch = 0; epoch < 6; epoch++) {
      await l.next(); // 4 files, batch 4: one batch per epoch
      expect(l.stats()).toMatchObject({ epoch, skipped: 1 });
    }
    await l.close();
  });

  it('drops bad samples from evaluation batches (size shrinks)', async () => {
    await setup;
    const l = await createDataLoader({ ...base, ...opts, split: 'test', onBadSample: 'skip' });
    const got = await take(l);
    await l.close();
    expect(got.reduce((a, b) => a + b.size, 0)).toBe(6);
    expect(l.stats().skipped).toBe(1);
  });
});
