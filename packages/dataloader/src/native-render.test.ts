import { describe, expect, it } from 'vitest';
import { chooseCrop, normaliser, Resampler, type CropBox } from './augment.js';
import { nativeRender, nativeRenderStatus } from './native-render.js';

// The compiled loop must write the same bits as the JavaScript one, or a run's pixels would depend on whether
// the machine had a compiler at install. Without the build there is nothing to compare: say so loudly, and
// fail where the build is required (.ci/run sets GOOGLENET_REQUIRE_NATIVE=1).
const addon = nativeRender();
if (!addon) {
  const msg = `native render loop unavailable: ${nativeRenderStatus()}`;
  if (process.env.GOOGLENET_REQUIRE_NATIVE === '1') throw new Error(`${msg} (GOOGLENET_REQUIRE_NATIVE=1)`);
  console.warn(`SKIPPED native-render tests: ${msg}`);
}

function image(W: number, H: number, C: number, seed: number): Uint8Array {
  const a = new Uint8Array(W * H * C);
  for (let i = 0; i < a.length; i++) a[i] = ((i + seed) * 2654435761) >>> 24;
  return a;
}

describe.skipIf(!addon)('native render loop', () => {
  const norm = normaliser([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]);

  it('writes bit-identical pixels to the JavaScript loop: 1-4 channels, random and centre crops, flips, sizes', () => {
    let compared = 0;
    for (const [W, H] of [[500, 375], [61, 47], [28, 28], [7, 300]] as const) {
      for (const C of [1, 2, 3, 4]) {
        const src = image(W, H, C, W + C);
        for (const S of [16, 32, 224]) {
          const js = new Resampler(S, { native: false });
          const nat = new Resampler(S);
          const a = new Float32Array(S * S * 3 + 5);
          const b = new Float32Array(S * S * 3 + 5);
          for (let index = 0; index < 12; index++) {
            const box = chooseCrop(W, H, { augment: index > 0, imageSize: S, seed: 9, epoch: index, index });
            if (index % 3 === 1) box.flip = !box.flip;
            js.render(src, W, H, C, box, norm, a, 5);
            nat.render(src, W, H, C, box, norm, b, 5);
            expect(Buffer.from(b.buffer).equals(Buffer.from(a.buffer))).toBe(true);
            compared++;
          }
        }
      }
    }
    expect(compared).toBe(4 * 4 * 3 * 12);
  });

  it('renders from a region of the image exactly as from the whole image', () => {
    const W = 120, H = 90, C = 3, S = 32;
    const src = image(W, H, C, 1);
    const nat = new Resampler(S);
    const whole = new Float32Array(S * S * 3);
    const part = new Float32Array(S * S * 3);
    for (let index = 0; index < 30; index++) {
      const box = chooseCrop(W, H, { augment: true, imageSize: S, seed: 2, epoch: 0, index });
      const left = Math.max(0, box.x - 1), top = Math.max(0, box.y - 1);
      const width = Math.min(W, box.x + box.w + 1) - left, height = Math.min(H, box.y + box.h + 1) - top;
      const region = new Uint8Array(width * height * C);
      for (let y = 0; y < height; y++) region.set(src.subarray(((top + y) * W + left) * C, ((top + y) * W + left + width) * C), y * width * C);
      nat.render(src, W, H, C, box, norm, whole, 0);
      nat.render(region, W, H, C, box, norm, part, 0, left, top, width);
      expect(part).toEqual(whole);
    }
  });

  it('refuses taps outside the source and writes outside the output instead of touching foreign memory', () => {
    const S = 8;
    const nat = new Resampler(S);
    const box: CropBox = { x: 10, y: 10, w: 20, h: 20, flip: false };
    const src = image(40, 40, 3, 0);
    expect(() => nat.render(src, 40, 40, 3, box, norm, new Float32Array(S * S * 3 - 1), 0)).toThrow(/out too small/);
    expect(() => nat.render(src.subarray(0, 40 * 20 * 3), 40, 40, 3, box, norm, new Float32Array(S * S * 3), 0)).toThrow(/rows fall outside/);
    // A region that starts right of the crop's left edge.
    expect(() => nat.render(src, 40, 40, 3, box, norm, new Float32Array(S * S * 3), 0, 15, 0, 25)).toThrow(/columns fall outside/);
  });
});
