/** JPEG/PNG decoding through sharp (libvips), to 8-bit HWC pixels. */
import sharp from 'sharp';
import type { RawImage } from './types.js';

// Decoding runs one image per thread and scales by adding decode threads; libvips' own thread pool would
// only oversubscribe the cores. The pixel cache is useless for images read once per epoch.
sharp.concurrency(1);
sharp.cache(false);

/** Decodes an encoded image; throws sharp's error for corrupt or truncated input (failOn: 'warning'). */
export async function decodeImage(bytes: Uint8Array): Promise<RawImage> {
  const { data, info } = await sharp(bytes, { failOn: 'warning' }).raw({ depth: 'uchar' }).toBuffer({ resolveWithObject: true });
  return { data, width: info.width, height: info.height, channels: info.channels };
}

/**
 * Decodes rows `top` to the bottom of an encoded image, keeping columns `left` to `left + width`: libvips then
 * skips converting and copying the pixels outside. The region deliberately runs to the last row so that the
 * whole file is still read and a truncated or corrupt image fails exactly as decodeImage does (libvips stops
 * reading a JPEG once the rows it needs are out). `height` is the image's height from imageDims.
 */
export async function decodeRows(bytes: Uint8Array, left: number, top: number, width: number, height: number): Promise<RawImage> {
  const { data, info } = await sharp(bytes, { failOn: 'warning' })
    .extract({ left, top, width, height: height - top })
    .raw({ depth: 'uchar' })
    .toBuffer({ resolveWithObject: true });
  return { data, width: info.width, height: info.height, channels: info.channels };
}

/**
 * Width and height from a JPEG's SOF or a PNG's IHDR header, without decoding (sharp's metadata() costs a
 * pipeline per call). These are the stored dimensions, which is what sharp decodes to (no EXIF rotation).
 * Null when the header is not one of those or cannot be parsed; callers then decode the whole image.
 */
export function imageDims(bytes: Uint8Array): { width: number; height: number } | null {
  const n = bytes.length;
  if (imageKind(bytes) === 'png') {
    // Signature (8), IHDR length (4), 'IHDR' (4), then width and height, big-endian.
    if (n < 24 || bytes[12] !== 0x49 || bytes[13] !== 0x48 || bytes[14] !== 0x44 || bytes[15] !== 0x52) return null;
    const width = ((bytes[16]! << 24) | (bytes[17]! << 16) | (bytes[18]! << 8) | bytes[19]!) >>> 0;
    const height = ((bytes[20]! << 24) | (bytes[21]! << 16) | (bytes[22]! << 8) | bytes[23]!) >>> 0;
    return width > 0 && height > 0 ? { width, height } : null;
  }
  if (imageKind(bytes) !== 'jpeg') return null;
  let p = 2;
  while (p + 3 < n) {
    if (bytes[p] !== 0xff) return null;
    let m = bytes[p + 1]!;
    while (m === 0xff && p + 2 < n) m = bytes[++p + 1]!; // fill bytes
    p += 2;
    if (m === 0xd8 || m === 0x01 || (m >= 0xd0 && m <= 0xd7)) continue; // no length field
    if (m === 0xd9 || m === 0xda || p + 1 >= n) return null; // end of image / start of scan before any SOF
    const len = (bytes[p]! << 8) | bytes[p + 1]!;
    if (m >= 0xc0 && m <= 0xcf && m !== 0xc4 && m !== 0xc8 && m !== 0xcc) {
      if (len < 8 || p + 6 >= n) return null;
      const height = (bytes[p + 3]! << 8) | bytes[p + 4]!;
      const width = (bytes[p + 5]! << 8) | bytes[p + 6]!;
      return width > 0 && height > 0 ? { width, height } : null;
    }
    if (len < 2) return null;
    p += len;
  }
  return null;
}

export type ImageKind = 'jpeg' | 'png' | 'unknown';

/** Sniffs the container from the magic bytes (the file name may lie). */
export function imageKind(bytes: Uint8Array): ImageKind {
  if (bytes[0] === 0xff && bytes[1] === 0xd8) return 'jpeg';
  if (bytes[0] === 0x89 && bytes[1] === 0x50 && bytes[2] === 0x4e && bytes[3] === 0x47) return 'png';
  return 'unknown';
}
