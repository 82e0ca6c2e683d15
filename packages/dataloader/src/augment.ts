/**
 * Crop choice and the one resampling loop that writes a normalised NHWC float32 sample straight into the
 * batch buffer. Randomness comes from an Rng keyed by (seed, epoch, sample index), so a sample's augmentation
 * does not depend on which rank or thread decodes it.
 */
import type { DatasetName } from './datasets/types.js';
import { nativeRender, type RenderAddon } from './native-render.js';
import { Rng } from './rng.js';

/**
 * Training augmentations. Every mode starts from the evaluation view (centreCrop, resized to imageSize) except
 * `inception`, which replaces it:
 * - `inception`: the GoogLeNet paper's random-resized crop (8-100 % of the area, aspect 3/4-4/3) + flip;
 *   for photographs (imagefolder, shards).
 * - `pad-crop`: the CIFAR / Fashion-MNIST recipe: torchvision's RandomCrop(imageSize, padding=pad) on the
 *   resized image (zero padding, i.e. black before normalisation, pad = imageSize/8: 4 px at 32 px), then
 *   RandomHorizontalFlip; for small images, where an 8 % crop keeps a few pixels of the object.
 * - `flip`: RandomHorizontalFlip only.
 * - `none`: the evaluation view (what evaluation always uses).
 */
export type AugmentMode = 'inception' | 'pad-crop' | 'flip' | 'none';
export const AUGMENT_MODES: readonly AugmentMode[] = ['inception', 'pad-crop', 'flip', 'none'];

/** Small-image data sets get pad-crop, photographs the paper's crop. */
export function defaultAugment(dataset: DatasetName): AugmentMode {
  return dataset === 'imagefolder' || dataset === 'shards' ? 'inception' : 'pad-crop';
}

/** pad-crop's padding on each side, in output pixels: 4 at 32 px as in the CIFAR recipe, scaled with the size. */
export const padCropPadding = (imageSize: number): number => Math.max(1, Math.round(imageSize / 8));

/** A source rectangle (pixels, may be fractional-free integers) and whether to mirror it. */
export interface CropBox {
  x: number;
  y: number;
  w: number;
  h: number;
  flip: boolean;
  /**
   * pad-crop: after resampling (and flipping), output pixel (i, j) takes the rendered pixel
   * (i + shift.y, j + shift.x), or pixel value 0 where that lies outside (RandomCrop's zero padding).
   */
  shift?: { x: number; y: number };
}

/** GoogLeNet paper / torchvision RandomResizedCrop: area 8-100 %, aspect 3/4-4/3, 10 tries then centre. */
export function randomResizedCrop(W: number, H: number, rng: Rng, scale: [number, number] = [0.08, 1], ratio: [number, number] = [3 / 4, 4 / 3]): CropBox {
  const area = W * H;
  const logLo = Math.log(ratio[0]);
  const logHi = Math.log(ratio[1]);
  for (let attempt = 0; attempt < 10; attempt++) {
    const target = area * rng.uniform(scale[0], scale[1]);
    const aspect = Math.exp(rng.uniform(logLo, logHi));
    const w = Math.round(Math.sqrt(target * aspect));
    const h = Math.round(Math.sqrt(target / aspect));
    if (w > 0 && h > 0 && w <= W && h <= H) {
      const y = rng.int(H - h + 1);
      const x = rng.int(W - w + 1);
      return { x, y, w, h, flip: false };
    }
  }
  // Fallback as torchvision: the whole image, clamped to the allowed aspect range, centred.
  let w = W;
  let h = H;
  if (W / H < ratio[0]) h = Math.round(W / ratio[0]);
  else if (W / H > ratio[1]) w = Math.round(H * ratio[1]);
  return { x: Math.floor((W - w) / 2), y: Math.floor((H - h) / 2), w, h, flip: false };
}

/**
 * Evaluation crop: a centred square. Images larger than the target keep 87.5 % of the short side (the
 * usual "resize 256, crop 224"); small images (28x28 -> 32, 32 -> 32) keep everything, i.e. a plain resize.
 */
export function centreCrop(W: number, H: number, imageSize: number): CropBox {
  const short = Math.min(W, H);
  const side = short > imageSize ? Math.max(1, Math.round(short * 0.875)) : short;
  return { x: Math.floor((W - side) / 2), y: Math.floor((H - side) / 2), w: side, h: side, flip: false };
}

/**
 * The crop of sample `index` in `epoch` under `augment` (true and false, from before the modes existed, mean
 * `inception` and `none`).
 */
export function chooseCrop(W: number, H: number, o: { augment: AugmentMode | boolean; imageSize: number; seed: number; epoch: number; index: number }): CropBox {
  const mode = o.augment === true ? 'inception' : o.augment === false ? 'none' : o.augment;
  if (mode === 'none') return centreCrop(W, H, o.imageSize);
  const rng = new Rng(o.seed, o.epoch, o.index, 0xa06);
  if (mode === 'inception') {
    const box = randomResizedCrop(W, H, rng);
    box.flip = rng.next() < 0.5;
    return box;
  }
  const box = centreCrop(W, H, o.imageSize);
  if (mode === 'pad-crop') {
    // RandomCrop(padding=p): the crop's corner in the padded image is uniform in [0, 2p] on each axis.
    const p = padCropPadding(o.imageSize);
    const top = rng.int(2 * p + 1);
    const left = rng.int(2 * p + 1);
    box.flip = rng.next() < 0.5;
    // Flip after the crop (torchvision's order): the horizontal shift of the mirrored render changes sign.
    box.shift = { x: box.flip ? p - left : left - p, y: top - p };
  } else {
    box.flip = rng.next() < 0.5;
  }
  return box;
}

/**
 * In place on one rendered HWC sample: out(i, j) = rendered(i + dy, j + dx), `fill` (per channel) outside.
 * copyWithin moves overlapping ranges correctly, so no scratch buffer is needed.
 */
export function translate(out: Float32Array, offset: number, S: number, dx: number, dy: number, fill: Float32Array): void {
  const row = S * 3;
  const fillRange = (from: number, to: number) => {
    for (let o = from; o < to; o += 3) {
      out[o] = fill[0]!;
      out[o + 1] = fill[1]!;
      out[o + 2] = fill[2]!;
    }
  };
  if (dy > 0) {
    for (let i = 0; i < S; i++) {
      const dst = offset + i * row;
      if (i + dy < S) out.copyWithin(dst, dst + dy * row, dst + (dy + 1) * row);
      else fillRange(dst, dst + row);
    }
  } else if (dy < 0) {
    for (let i = S - 1; i >= 0; i--) {
      const dst = offset + i * row;
      if (i + dy >= 0) out.copyWithin(dst, dst + dy * row, dst + (dy + 1) * row);
      else fillRange(dst, dst + row);
    }
  }
  if (dx === 0) return;
  const n = Math.min(S, Math.abs(dx)) * 3;
  for (let i = 0; i < S; i++) {
    const base = offset + i * row;
    if (dx > 0) {
      out.copyWithin(base, base + n, base + row);
      fillRange(base + row - n, base + row);
    } else {
      out.copyWithin(base + n, base, base + row - n);
      fillRange(base, base + n);
    }
  }
}

/** Per-channel affine map from a uint8 value to the normalised float: v * scale + bias = (v/255 - mean)/std. */
export interface Normaliser {
  scale: Float32Array;
  bias: Float32Array;
}

export function normaliser(mean: readonly number[], std: readonly number[]): Normaliser {
  const scale = new Float32Array(3);
  const bias = new Float32Array(3);
  for (let c = 0; c < 3; c++) {
    scale[c] = 1 / (255 * std[c]!);
    bias[c] = -mean[c]! / std[c]!;
  }
  return { scale, bias };
}

/**
 * Bilinear crop+resize+flip+normalise into `out` at `offset` (imageSize*imageSize*3 floats, HWC).
 * One Resampler per thread: its small per-column tables are allocated once, so a sample costs no allocation.
 * The compiled loop (native-render.ts) is used where built; it writes the same bits as the loop below.
 */
export class Resampler {
  readonly size: number;
  private readonly addon: RenderAddon | null;
  private readonly xa: Int32Array; // left source column * channels
  private readonly xb: Int32Array; // right source column * channels
  private readonly fx: Float32Array; // weight of the right column

  /** `native: false` forces the JavaScript loop (tests compare the two). */
  constructor(size: number, opts: { native?: boolean } = {}) {
    this.size = size;
    this.addon = opts.native === false ? null : nativeRender();
    this.xa = new Int32Array(size);
    this.xb = new Int32Array(size);
    this.fx = new Float32Array(size);
  }

  /**
   * `src` is HWC uint8 with `C` channels (1: grey, replicated; 2: grey+alpha; 3: RGB; 4: RGBA, alpha ignored).
   * Sampling points are pixel centres (align_corners=false), clamped at the image edge.
   * `src` may hold only part of the W x H image: columns srcLeft to srcLeft + srcWidth of rows srcTop onwards
   * (what decodeRegion returns), as long as it covers the crop plus one pixel of border where the image has one.
   * Coordinates and weights are computed in full-image space, so the pixels are identical to rendering from
   * the whole image.
   */
  render(src: Uint8Array, W: number, H: number, C: number, box: CropBox, norm: Normaliser, out: Float32Array, offset: number, srcLeft = 0, srcTop = 0, srcWidth = W): void {
    this.resample(src, W, H, C, box, norm, out, offset, srcLeft, srcTop, srcWidth);
    // The padding is pixel value 0, which normalises to the bias.
    if (box.shift) translate(out, offset, this.size, box.shift.x, box.shift.y, norm.bias);
  }

  private resample(src: Uint8Array, W: number, H: number, C: number, box: CropBox, norm: Normaliser, out: Float32Array, offset: number, srcLeft: number, srcTop: number, srcWidth: number): void {
    const S = this.size;
    if (this.addon) {
      this.addon.render(src, W, H, C, box.x, box.y, box.w, box.h, box.flip, norm.scale, norm.bias, out, offset, srcLeft, srcTop, srcWidth, S);
      return;
    }
    const { xa, xb, fx } = this;
    const sxScale = box.w / S;
    for (let ox = 0; ox < S; ox++) {
      const col = box.flip ? S - 1 - ox : ox;
      let sx = box.x + (col + 0.5) * sxScale - 0.5;
      if (sx < 0) sx = 0;
      else if (sx > W - 1) sx = W - 1;
      const x0 = Math.floor(sx);
      const x1 = x0 + 1 < W ? x0 + 1 : x0;
      xa[ox] = (x0 - srcLeft) * C;
      xb[ox] = (x1 - srcLeft) * C;
      fx[ox] = sx - x0;
    }
    const syScale = box.h / S;
    const rowStride = srcWidth * C;
    const s0 = norm.scale[0]!, s1 = norm.scale[1]!, s2 = norm.scale[2]!;
    const b0 = norm.bias[0]!, b1 = norm.bias[1]!, b2 = norm.bias[2]!;
    let o = offset;
    for (let oy = 0; oy < S; oy++) {
      let sy = box.y + (oy + 0.5) * syScale - 0.5;
      if (sy < 0) sy = 0;
      else if (sy > H - 1) sy = H - 1;
      const y0 = Math.floor(sy);
      const y1 = y0 + 1 < H ? y0 + 1 : y0;
      const fy = sy - y0;
      const r0 = (y0 - srcTop) * rowStride;
      const r1 = (y1 - srcTop) * rowStride;
      if (C >= 3) {
        for (let ox = 0; ox < S; ox++) {
          const a = xa[ox]!, b = xb[ox]!, f = fx[ox]!;
          const p00 = r0 + a, p01 = r0 + b, p10 = r1 + a, p11 = r1 + b;
          let t = src[p00]! + (src[p01]! - src[p00]!) * f;
          let u = src[p10]! + (src[p11]! - src[p10]!) * f;
          out[o++] = (t + (u - t) * fy) * s0 + b0;
          t = src[p00 + 1]! + (src[p01 + 1]! - src[p00 + 1]!) * f;
          u = src[p10 + 1]! + (src[p11 + 1]! - src[p10 + 1]!) * f;
          out[o++] = (t + (u - t) * fy) * s1 + b1;
          t = src[p00 + 2]! + (src[p01 + 2]! - src[p00 + 2]!) * f;
          u = src[p10 + 2]! + (src[p11 + 2]! - src[p10 + 2]!) * f;
          out[o++] = (t + (u - t) * fy) * s2 + b2;
        }
      } else {
        for (let ox = 0; ox < S; ox++) {
          const a = xa[ox]!, b = xb[ox]!, f = fx[ox]!;
          const t = src[r0 + a]! + (src[r0 + b]! - src[r0 + a]!) * f;
          const u = src[r1 + a]! + (src[r1 + b]! - src[r1 + a]!) * f;
          const v = t + (u - t) * fy;
          out[o++] = v * s0 + b0;
          out[o++] = v * s1 + b1;
          out[o++] = v * s2 + b2;
        }
      }
    }
  }
}
