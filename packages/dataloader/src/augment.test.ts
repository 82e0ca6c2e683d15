import { describe, expect, it } from 'vitest';
import {
  AUGMENT_MODES, centreCrop, chooseCrop, defaultAugment, normaliser, padCropPadding, randomResizedCrop, Resampler,
  type AugmentMode, type CropBox,
} from './augment.js';
import { resolveOptions } from './options.js';
import { Rng } from './rng.js';

const identity = normaliser([0, 0, 0], [1 / 255, 1 / 255, 1 / 255]); // v -> v

describe('Resampler', () => {
  it('copies pixels exactly when the crop is the whole image at the same size', () => {
    const W = 5;
    const src = Uint8Array.from({ length: W * W * 3 }, (_, i) => (i * 7) % 256);
    const out = new Float32Array(W * W * 3 + 3);
    new Resampler(W).render(src, W, W, 3, { x: 0, y: 0, w: W, h: W, flip: false }, identity, out, 3);
    expect([...out.subarray(3)]).toEqual([...src]);
  });

  it('mirrors columns when flipping and replicates grey into three channels', () => {
    const src = Uint8Array.from([10, 20, 30, 40]); // 2x2 grey
    const out = new Float32Array(12);
    new Resampler(2).render(src, 2, 2, 1, { x: 0, y: 0, w: 2, h: 2, flip: true }, identity, out, 0);
    expect([...out]).toEqual([20, 20, 20, 10, 10, 10, 40, 40, 40, 30, 30, 30]);
  });

  for (const native of [false, true]) {
    it(`interpolates bilinearly and normalises with mean and std (${native ? 'native loop where built' : 'JavaScript loop'})`, () => {
      const src = Uint8Array.from([0, 0, 0, 255, 255, 255]); // 2x1 RGB: black, white
      const out = new Float32Array(4 * 4 * 3);
      const norm = normaliser([0.5, 0.5, 0.5], [0.5, 0.5, 0.5]); // [0,255] -> [-1, 1]
      new Resampler(4, { native }).render(src, 2, 1, 3, { x: 0, y: 0, w: 2, h: 1, flip: false }, norm, out, 0);
      const r = [0, 3, 6, 9].map((k) => out[k]!);
      expect(r[0]).toBeCloseTo(-1); // clamped at the left edge
      expect(r[1]).toBeCloseTo(-0.5); // a quarter of the way
      expect(r[2]).toBeCloseTo(0.5);
      expect(r[3]).toBeCloseTo(1);
      expect(out.subarray(12, 24)).toEqual(out.subarray(0, 12)); // one source row: every output row alike
    });
  }
});

describe('crops', () => {
  it('keeps random-resized crops inside the image, 8-100 % of the area, aspect 3/4-4/3', () => {
    const rng = new Rng(1);
    for (let t = 0; t < 2000; t++) {
      const W = 20 + rng.int(500);
      const H = 20 + rng.int(500);
      const b = randomResizedCrop(W, H, rng);
      expect(b.x >= 0 && b.y >= 0 && b.x + b.w <= W && b.y + b.h <= H).toBe(true);
      const area = (b.w * b.h) / (W * H);
      if (W / H >= 0.75 && W / H <= 4 / 3) expect(area).toBeGreaterThan(0.06); // rounding at small sizes
      expect(area).toBeLessThanOrEqual(1);
    }
  });

  it('derives the augmentation from (seed, epoch, index) only', () => {
    const o = { augment: true, imageSize: 32, seed: 5, epoch: 2, index: 17 };
    expect(chooseCrop(100, 80, o)).toEqual(chooseCrop(100, 80, o));
    const others = [chooseCrop(100, 80, { ...o, index: 18 }), chooseCrop(100, 80, { ...o, epoch: 3 }), chooseCrop(100, 80, { ...o, seed: 6 })];
    for (const b of others) expect(b).not.toEqual(chooseCrop(100, 80, o));
  });

  it('centre-crops 87.5 % of the short side of large images and keeps small images whole', () => {
    expect(centreCrop(500, 375, 224)).toEqual({ x: 86, y: 23, w: 328, h: 328, flip: false });
    expect(centreCrop(28, 28, 32)).toEqual({ x: 0, y: 0, w: 28, h: 28, flip: false });
    expect(centreCrop(32, 32, 32)).toEqual({ x: 0, y: 0, w: 32, h: 32, flip: false });
  });
});

describe('augmentation modes', () => {
  const N = 9000;
  const boxes = (mode: AugmentMode, W = 28, H = 28, imageSize = 32): CropBox[] =>
    Array.from({ length: N }, (_, index) => chooseCrop(W, H, { augment: mode, imageSize, seed: 3, epoch: 1, index }));
  const flipRate = (b: CropBox[]) => b.filter((x) => x.flip).length / b.length;
  // 9,000 fair coin flips: the rate's standard deviation is 0.0053; 0.03 is over 5 of them.
  const FLIP_TOL = 0.03;

  it('pad-crop shifts by a whole number of pixels uniform in [-4, 4] on each axis at 32 px, and flips half', () => {
    expect(padCropPadding(32)).toBe(4);
    const b = boxes('pad-crop');
    for (const axis of ['x', 'y'] as const) {
      const counts = new Map<number, number>();
      for (const box of b) counts.set(box.shift![axis], (counts.get(box.shift![axis]) ?? 0) + 1);
      expect([...counts.keys()].sort((p, q) => p - q)).toEqual([-4, -3, -2, -1, 0, 1, 2, 3, 4]);
      // Each of the 9 offsets expects 1,000 hits (standard deviation 31): within 150 of it.
      for (const c of counts.values()) expect(Math.abs(c - N / 9)).toBeLessThan(150);
    }
    // The two axes are drawn independently: as many (dx, dy) corners as the 1/81 product predicts.
    const corners = b.filter((x) => Math.abs(x.shift!.x) === 4 && Math.abs(x.shift!.y) === 4).length;
    expect(Math.abs(corners - (4 * N) / 81)).toBeLessThan(90);
    expect(Math.abs(flipRate(b) - 0.5)).toBeLessThan(FLIP_TOL);
    // The source rectangle is the evaluation view: the whole 28 x 28 image, resized.
    for (const box of b) expect({ x: box.x, y: box.y, w: box.w, h: box.h }).toEqual({ x: 0, y: 0, w: 28, h: 28 });
  });

  it('pad-crop renders exactly RandomCrop(32, padding=4) then RandomHorizontalFlip of the resized image', () => {
    const S = 32;
    const p = padCropPadding(S);
    const src = Uint8Array.from({ length: 28 * 28 }, (_, i) => 1 + ((i * 37) % 254)); // grey, never 0
    const norm = normaliser([0.25, 0.5, 0.75], [0.5, 0.25, 0.125]);
    const view = new Float32Array(S * S * 3);
    new Resampler(S).render(src, 28, 28, 1, centreCrop(28, 28, S), norm, view, 0);
    const fill = [0, 1, 2].map((c) => norm.bias[c]!);
    const resampler = new Resampler(S);
    for (let index = 0; index < 40; index++) {
      const box = chooseCrop(28, 28, { augment: 'pad-crop', imageSize: S, seed: 8, epoch: 0, index });
      const out = new Float32Array(S * S * 3 + 6);
      resampler.render(src, 28, 28, 1, box, norm, out, 6);
      // torchvision: the crop's corner (top, left) in the image padded by p; then the mirror if flipped.
      const top = box.shift!.y + p;
      const left = box.flip ? p - box.shift!.x : box.shift!.x + p;
      const want = new Float32Array(S * S * 3);
      for (let i = 0; i < S; i++) {
        for (let j = 0; j < S; j++) {
          const jj = box.flip ? S - 1 - j : j;
          const [si, sj] = [i + top - p, jj + left - p];
          for (let c = 0; c < 3; c++) {
            want[(i * S + j) * 3 + c] = si >= 0 && si < S && sj >= 0 && sj < S ? view[(si * S + sj) * 3 + c]! : fill[c]!;
          }
        }
      }
      expect(out.subarray(6)).toEqual(want);
    }
  });

  it('flip mirrors half the samples and never moves them', () => {
    const b = boxes('flip');
    expect(Math.abs(flipRate(b) - 0.5)).toBeLessThan(FLIP_TOL);
    for (const box of b) {
      expect(box.shift).toBeUndefined();
      expect({ x: box.x, y: box.y, w: box.w, h: box.h }).toEqual({ x: 0, y: 0, w: 28, h: 28 });
    }
  });

  it('none is the evaluation view for every sample (identity at the same size)', () => {
    for (const box of boxes('none').slice(0, 500)) expect(box).toEqual(centreCrop(28, 28, 32));
    const src = Uint8Array.from({ length: 32 * 32 * 3 }, (_, i) => (i * 11) % 256);
    const out = new Float32Array(32 * 32 * 3);
    new Resampler(32).render(src, 32, 32, 3, chooseCrop(32, 32, { augment: 'none', imageSize: 32, seed: 1, epoch: 0, index: 5 }), identity, out, 0);
    expect([...out]).toEqual([...src]);
  });

  it('inception crops 8-100 % of the area at uniformly spread positions and flips half', () => {
    const b = boxes('inception', 200, 200, 224);
    const areas = b.map((x) => (x.w * x.h) / (200 * 200));
    expect(Math.min(...areas)).toBeGreaterThan(0.07);
    expect(Math.max(...areas)).toBeLessThanOrEqual(1);
    // Area uniform in [0.08, 1] before the aspect check rejects some large ones: the mean sits just below 0.54.
    const mean = areas.reduce((a, v) => a + v, 0) / N;
    expect(mean).toBeGreaterThan(0.4);
    expect(mean).toBeLessThan(0.56);
    // Where the crop is smaller than the image, its corner is uniform over the free room: mean position 1/2.
    const free = b.filter((x) => x.w < 200 && x.h < 200);
    const pos = free.reduce((a, x) => a + x.x / (200 - x.w) + x.y / (200 - x.h), 0) / (2 * free.length);
    expect(Math.abs(pos - 0.5)).toBeLessThan(0.02);
    expect(Math.abs(flipRate(b) - 0.5)).toBeLessThan(FLIP_TOL);
    for (const box of b) expect(box.shift).toBeUndefined();
  });

  it('defaults to pad-crop for small-image data sets and to the paper\'s crop for photographs', () => {
    expect(['fashion-mnist', 'cifar10', 'synthetic'].map((d) => defaultAugment(d as never))).toEqual(['pad-crop', 'pad-crop', 'pad-crop']);
    expect(defaultAugment('imagefolder')).toBe('inception');
    expect(defaultAugment('shards')).toBe('inception');
    const base = { dataset: 'fashion-mnist' as const, imageSize: 32, batchSize: 4, rank: 0, worldSize: 1, seed: 0 };
    expect(resolveOptions({ ...base, split: 'train' }).augment).toBe('pad-crop');
    expect(resolveOptions({ ...base, dataset: 'imagefolder', dataDir: '/x', split: 'train' }).augment).toBe('inception');
    expect(resolveOptions({ ...base, split: 'test' }).augment).toBe('none');
  });

  it('rejects an unknown mode and any augmentation of the test split with BAD_OPTION', () => {
    const base = { dataset: 'fashion-mnist' as const, imageSize: 32, batchSize: 4, rank: 0, worldSize: 1, seed: 0 };
    expect(() => resolveOptions({ ...base, split: 'train', augment: 'crop' as never })).toThrowError(expect.objectContaining({ code: 'BAD_OPTION', message: expect.stringContaining(AUGMENT_MODES.join(', ')) }));
    for (const augment of ['inception', 'pad-crop', 'flip'] as const) {
      expect(() => resolveOptions({ ...base, split: 'test', augment })).toThrowError(expect.objectContaining({ code: 'BAD_OPTION', message: expect.stringContaining('evaluation never augments') }));
    }
  });
});
