import sharp from 'sharp';
import { describe, expect, it } from 'vitest';
import { chooseCrop, normaliser, Resampler } from '../augment.js';
import { decodeImage, decodeRows, imageDims } from './codec.js';

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

  it('renders a crop from the decoded rows bit-identically to rendering it from the whole image', async () => {
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
        const rows = await decodeRows(file, left, top, width, H);
        expect([rows.width, rows.height, rows.channels]).toEqual([width, H - top, full.channels]);
        rs.render(full.data, W, H, full.channels, box, norm, whole, 0);
        rs.render(rows.data, W, H, rows.channels, box, norm, part, 0, left, top, width);
        expect(part).toEqual(whole);
      }
    }
  });

  it('still rejects a truncated JPEG when the region lies above the missing data', async () => {
    const jpeg = await sharp(px, raw).jpeg({ quality: 90 }).toBuffer();
    const cut = jpeg.subarray(0, Math.floor(jpeg.length * 0.6));
    await expect(decodeImage(cut)).rejects.toThrow();
    await expect(decodeRows(cut, 0, 0, 10, H)).rejects.toThrow();
  });
});
