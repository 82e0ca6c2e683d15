import sharp from 'sharp';
import { describe, expect, it } from 'vitest';
import { chooseCrop, normaliser, Resampler } from '../augment.js';
import { decodeImage, decodeRegion, hasEndMarker, imageDims } from './codec.js';

const W = 61;
const H = 47;
const px = Uint8Array.from({ length: W * H * 3 }, (_, i) => (i * 13 + ((i / 150) | 0) * 7) & 0xff);
const raw = { raw: { width: W, height: H, channels: 3 as const } };

describe('encoded images: header size and region decode', () => {
  it('reads JPEG (baseline, progressive, grey) and PNG sizes from the header as sharp decodes them', async () => {
    const files = [
      await sharp(px, raw).jpeg({ quality: 90 }).toBuffer(),
      await sharp(px, raw).jpeg({ progressive: true }).toBuffer(),
      await sharp(px, raw).greyscale().jpeg().toBuffer(),
      await sharp(px, raw).png().toBuffer(),
    ];
    for (const f of files) expect(imageDims(f)).toEqual({ width: W, height: H });
    expect(imageDims(Buffer.from([0xff, 0xd8, 0xff, 0xe0, 0x00, 0x10, 7, 7, 7]))).toBeNull();
    expect(imageDims(Buffer.from('not an image'))).toBeNull();
  });

  it('renders a crop from the decoded region bit-identically to rendering it from the whole image', async () => {
    const S = 24;
    const rs = new Resampler(S);
    const norm = normaliser([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]);
    const whole = new Float32Array(S * S * 3);
    const part = new Float32Array(S * S * 3);
    for (const file of [await sharp(px, raw).jpeg({ quality: 90 }).toBuffer(), await sharp(px, raw).greyscale().png().toBuffer()]) {
      const full = await decodeImage(file);
      for (let index = 0; index < 40; index++) {
        // Training crops (smaller and larger than S, flipped or not) and the evaluation crop.
        const box = chooseCrop(W, H, { augment: index > 0, imageSize: S, seed: 3, epoch: 1, index });
        const left = Math.max(0, box.x - 1);
        const top = Math.max(0, box.y - 1);
        const width = Math.min(W, box.x + box.w + 1) - left;
        const height = Math.min(H, box.y + box.h + 1) - top;
        const rows = await decodeRegion(file, left, top, width, height);
        expect([rows.width, rows.height, rows.channels]).toEqual([width, height, full.channels]);
        rs.render(full.data, W, H, full.channels, box, norm, whole, 0);
        rs.render(rows.data, W, H, rows.channels, box, norm, part, 0, left, top, width);
        expect(part).toEqual(whole);
      }
    }
  });

  it('tells complete JPEG and PNG files from truncated ones and ones with data after the end', async () => {
    const jpeg = await sharp(px, raw).jpeg({ quality: 90 }).toBuffer();
    const png = await sharp(px, raw).png().toBuffer();
    expect(hasEndMarker(jpeg)).toBe(true);
    expect(hasEndMarker(png)).toBe(true);
    for (const f of [jpeg, png]) {
      const cut = f.subarray(0, Math.floor(f.length * 0.6));
      expect(hasEndMarker(cut)).toBe(false);
      await expect(decodeImage(cut)).rejects.toThrow();
    }
    // Bytes after EOI: not "complete" by this test, so the loader decodes it whole and sharp accepts it.
    const trailing = Buffer.concat([jpeg, Buffer.from('trailer')]);
    expect(hasEndMarker(trailing)).toBe(false);
    expect((await decodeImage(trailing)).width).toBe(W);
    expect(hasEndMarker(Buffer.from('not an image'))).toBe(false);
  });
});
