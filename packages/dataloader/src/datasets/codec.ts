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

export type ImageKind = 'jpeg' | 'png' | 'unknown';

/** Sniffs the container from the magic bytes (the file name may lie). */
export function imageKind(bytes: Uint8Array): ImageKind {
  if (bytes[0] === 0xff && bytes[1] === 0xd8) return 'jpeg';
  if (bytes[0] === 0x89 && bytes[1] === 0x50 && bytes[2] === 0x4e && bytes[3] === 0x47) return 'png';
  return 'unknown';
}
