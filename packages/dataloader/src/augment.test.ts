import { describe, expect, it } from 'vitest';
import { centreCrop, chooseCrop, normaliser, randomResizedCrop, Resampler } from './augment.js';
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
