/**
 * Crop choice and the one resampling loop that writes a normalised NHWC float32 sample straight into the
 * batch buffer. Randomness comes from an Rng keyed by (seed, epoch, sample index), so a sample's augmentation
 * does not depend on which rank or thread decodes it.
 */
import { nativeRender, type RenderAddon } from './native-render.js';
import { Rng } from './rng.js';

/** A source rectangle (pixels, may be fractional-free integers) and whether to mirror it. */
export interface CropBox {
  x: number;
  y: number;
  w: number;
  h: number;
  flip: boolean;
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

/** The crop of sample `index` in `epoch`: random-resized + flip when augmenting, else centre. */
export function chooseCrop(W: number, H: number, o: { augment: boolean; imageSize: number; seed: number; epoch: number; index: number }): CropBox {
  if (!o.augment) return centreCrop(W, H, o.imageSize);
  const rng = new Rng(o.seed, o.epoch, o.index, 0xa06);
  const box = randomResizedCrop(W, H, rng);
  box.flip = rng.next() < 0.5;
  return box;
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
