/** JPEG/PNG decoding through sharp (libvips), to 8-bit HWC pixels. */
import type { Sharp, SharpOptions } from 'sharp';
import { DataError } from '../errors.js';
import type { RawImage } from './types.js';

type SharpFn = ((input: Uint8Array, options: SharpOptions) => Sharp) & { concurrency(n: number): number; cache(on: boolean): unknown };
let loading: Promise<SharpFn> | undefined;

/**
 * sharp, loaded on first use: only encoded data sets need it, so synthetic, Fashion-MNIST, CIFAR and raw
 * shards run where it is absent (the single-file bundle for GPU machines ships without libvips).
 */
function sharpLib(): Promise<SharpFn> {
  loading ??= import('sharp').then(
    (m) => {
      const sharp = (m.default ?? m) as unknown as SharpFn;
      // Decoding runs one image per thread and scales by adding decode threads; libvips' own thread pool
      // would only oversubscribe the cores. The pixel cache is useless for images read once per epoch.
      sharp.concurrency(1);
      sharp.cache(false);
      return sharp;
    },
    (err: unknown) => {
      throw new DataError('DEPENDENCY_MISSING', `decoding JPEG/PNG images needs the sharp package, which failed to load ` +
        `(${(err as Error).message.split('\n')[0]}); run npm ci, or use a data set of raw pixels (synthetic, fashion-mnist, cifar10, raw shards)`, { cause: err });
    },
  );
  return loading;
}

/** Decodes an encoded image; throws sharp's error for corrupt or truncated input (failOn: 'warning'). */
export async function decodeImage(bytes: Uint8Array): Promise<RawImage> {
  const sharp = await sharpLib();
  const { data, info } = await sharp(bytes, { failOn: 'warning' }).raw({ depth: 'uchar' }).toBuffer({ resolveWithObject: true });
  return { data, width: info.width, height: info.height, channels: info.channels };
}

/**
 * Decodes the region `left, top, width, height` of an encoded image: libvips skips converting and copying the
 * pixels outside it, and stops reading a JPEG once the rows it needs are out, so the rows below the region
 * cost nothing (TensorFlow's decode_and_crop_jpeg, used by its ImageNet pipelines, does the same). Call it
 * only for files that pass hasEndMarker: a truncated file then never gets here, and damage below the region
 * cannot change the pixels it returns. Damage inside the region fails as decodeImage does (failOn: 'warning').
 */
export async function decodeRegion(bytes: Uint8Array, left: number, top: number, width: number, height: number): Promise<RawImage> {
  const sharp = await sharpLib();
  const { data, info } = await sharp(bytes, { failOn: 'warning' })
    .extract({ left, top, width, height })
    .raw({ depth: 'uchar' })
    .toBuffer({ resolveWithObject: true });
  return { data, width: info.width, height: info.height, channels: info.channels };
}

/**
 * Whether the file ends as a complete JPEG (EOI marker FF D9) or PNG (IEND chunk) does. A truncated download
 * does not; neither does a JPEG with bytes appended after EOI, which the loader then decodes whole, so that
 * sharp decides whether it is an image.
 */
export function hasEndMarker(bytes: Uint8Array): boolean {
  const n = bytes.length;
  const kind = imageKind(bytes);
  if (kind === 'jpeg') return n >= 4 && bytes[n - 2] === 0xff && bytes[n - 1] === 0xd9;
  if (kind === 'png') {
    // Length 0, 'IEND', CRC ae 42 60 82.
    const tail = [0, 0, 0, 0, 0x49, 0x45, 0x4e, 0x44, 0xae, 0x42, 0x60, 0x82];
    if (n < 8 + tail.length) return false;
    for (let i = 0; i < tail.length; i++) if (bytes[n - tail.length + i] !== tail[i]) return false;
    return true;
  }
  return false;
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
