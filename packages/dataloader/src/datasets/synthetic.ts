/**
 * A built-in, file-free, learnable data set: ten classes of procedurally drawn patterns with a random
 * dark background and a light foreground colour, random size and position, and pixel noise. Sample i is a pure
 * function of (dataset seed, i), so any process renders any sample on demand.
 */
import { Rng } from '../rng.js';
import type { Dataset, RawImage, Source, Split } from './types.js';

export const SYNTHETIC_CLASSES = [
  'circle',
  'square',
  'triangle',
  'cross',
  'horizontal-stripes',
  'vertical-stripes',
  'ring',
  'diagonal-line',
  'checker',
  'dot-grid',
];

// Fixed per split (not the training seed), so that the data set is the same whatever seed a run uses and the
// test split never overlaps the training split.
export const SYNTHETIC_SEEDS: Record<Split, number> = { train: 0x5ee0, test: 0x7e57 };

/** Whether (u, v), in units of the shape's half-size around its centre, is foreground for class k. */
function inside(k: number, u: number, v: number): boolean {
  const au = Math.abs(u);
  const av = Math.abs(v);
  const box = au <= 1 && av <= 1;
  switch (k) {
    case 0: // circle
      return u * u + v * v <= 1;
    case 1: // square
      return au <= 0.8 && av <= 0.8;
    case 2: // triangle, apex up
      return v >= -0.85 && v <= 0.85 && au <= ((v + 0.85) / 1.7) * 0.95;
    case 3: // plus-shaped cross
      return (au <= 0.25 && av <= 1) || (av <= 0.25 && au <= 1);
    case 4: // horizontal stripes: three bars
      return box && Math.floor((v + 1) * 2.5) % 2 === 0;
    case 5: // vertical stripes
      return box && Math.floor((u + 1) * 2.5) % 2 === 0;
    case 6: {
      // ring
      const d = u * u + v * v;
      return d <= 1 && d >= 0.36;
    }
    case 7: // one thick diagonal from top-left to bottom-right
      return box && Math.abs(u - v) <= 0.35;
    case 8: // 4x4 checker
      return box && (Math.floor((u + 1) * 2) + Math.floor((v + 1) * 2)) % 2 === 0;
    case 9: {
      // 3x3 dot grid
      if (!box) return false;
      const gu = ((u + 1) * 1.5) % 1;
      const gv = ((v + 1) * 1.5) % 1;
      return (gu - 0.5) ** 2 + (gv - 0.5) ** 2 <= 0.09;
    }
    default:
      return false;
  }
}

const luma = (c: number[]) => 0.299 * c[0]! + 0.587 * c[1]! + 0.114 * c[2]!;

/** Renders sample i (label i % 10) into `out` (size*size*3 uint8, HWC). Returns the label. */
export function renderSynthetic(seed: number, i: number, size: number, out: Uint8Array): number {
  const label = i % SYNTHETIC_CLASSES.length;
  const rng = new Rng(seed, i, 0x517);
  // A dark background and a light foreground, always: the class is in the shape, not in a contrast polarity
  // the network would have to learn both ways round. Colours still vary freely within each range.
  const bg = [rng.int(112), rng.int(112), rng.int(112)];
  let fg = [112 + rng.int(144), 112 + rng.int(144), 112 + rng.int(144)];
  for (let t = 0; t < 16 && luma(fg) - luma(bg) < 80; t++) fg = [112 + rng.int(144), 112 + rng.int(144), 112 + rng.int(144)];
  if (luma(fg) - luma(bg) < 80) fg = [255, 255, 255];
  const r = size * rng.uniform(0.28, 0.46); // half-size of the shape
  const cx = rng.uniform(r, size - r);
  const cy = rng.uniform(r, size - r);
  const noise = 24;
  let o = 0;
  for (let y = 0; y < size; y++) {
    const v = (y + 0.5 - cy) / r;
    for (let x = 0; x < size; x++) {
      const u = (x + 0.5 - cx) / r;
      const c = inside(label, u, v) ? fg : bg;
      for (let ch = 0; ch < 3; ch++) {
        const p = c[ch]! + (rng.next() - 0.5) * 2 * noise;
        out[o++] = p < 0 ? 0 : p > 255 ? 255 : p;
      }
    }
  }
  return label;
}

export function syntheticDataset(split: Split, count: number, imageSize: number): Dataset {
  return {
    name: 'synthetic',
    split,
    size: count,
    classNames: [...SYNTHETIC_CLASSES],
    // Uniformly random colours: mean about 0.5, std about 0.3 per channel.
    mean: [0.5, 0.5, 0.5],
    std: [0.3, 0.3, 0.3],
    spec: { kind: 'synthetic', count, imageSize, seed: SYNTHETIC_SEEDS[split] },
  };
}

/**
 * A split whose images all fit in this many bytes is drawn once, when the source opens, and read from memory after
 * that, as the in-memory data sets are (fashion-mnist, cifar10). Drawing costs ~30 us per 32 px image in JS, ~1 ms
 * per batch of 32: on a worker bound to one core, that was a millisecond of every training step (its decode thread
 * shares the core). Bounded: drawing time grows with the bytes, so at most ~0.7 s at open whatever the size; larger
 * splits (3,000 images at 224 px are 452 MB) are drawn at every read, as before.
 */
export const SYNTHETIC_KEEP_BYTES = 64 * 1024 * 1024;

export class SyntheticSource implements Source {
  readonly size: number;
  private readonly seed: number;
  private readonly imageSize: number;
  private readonly scratch: Uint8Array;
  /** Every image of the split, drawn at open (null: the split is larger than SYNTHETIC_KEEP_BYTES). */
  private readonly kept: Uint8Array | null = null;

  constructor(spec: { count: number; imageSize: number; seed: number }) {
    this.size = spec.count;
    this.seed = spec.seed;
    this.imageSize = spec.imageSize;
    const per = spec.imageSize * spec.imageSize * 3;
    this.scratch = new Uint8Array(per);
    if (spec.count * per <= SYNTHETIC_KEEP_BYTES) {
      this.kept = new Uint8Array(spec.count * per);
      for (let i = 0; i < spec.count; i++) renderSynthetic(this.seed, i, this.imageSize, this.kept.subarray(i * per, (i + 1) * per));
    }
  }

  label(i: number): number {
    return i % SYNTHETIC_CLASSES.length;
  }

  /** The image's pixels; callers read them only (a kept image is the source's own copy). */
  read(i: number): RawImage {
    if (!(Number.isInteger(i) && i >= 0 && i < this.size)) throw new RangeError(`synthetic: sample ${i} is outside 0..${this.size - 1}`);
    const per = this.scratch.length;
    let data: Uint8Array;
    if (this.kept) data = this.kept.subarray(i * per, (i + 1) * per);
    else renderSynthetic(this.seed, i, this.imageSize, (data = this.scratch));
    return { data, width: this.imageSize, height: this.imageSize, channels: 3 };
  }

  where(i: number): string {
    return `synthetic#${i}`;
  }
}
