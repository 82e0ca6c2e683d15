/**
 * Counter-based randomness: every random stream is a pure function of a key such as (seed, epoch) or
 * (seed, epoch, sample index), never of a rank, a thread or call order. That is what makes any sample's
 * augmentation and any epoch's permutation reproducible in any process.
 */

/** murmur3's 32-bit finaliser: a cheap full-avalanche mix. */
function fmix32(h: number): number {
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

/** Hashes a tuple of integers (each may be any safe integer, negative included) to 32 bits. */
export function hashKey(...parts: number[]): number {
  let h = 0x9e3779b9 ^ parts.length;
  for (const p of parts) {
    // Fold the high bits in too so that seeds above 2^32 still differ.
    const lo = p >>> 0;
    const hi = Math.floor(p / 4294967296) >>> 0;
    h = fmix32((h ^ lo) + 0x7f4a7c15);
    h = fmix32((h ^ hi) + 0x165667b1);
  }
  return h;
}

/** A small fast PRNG (sfc32) seeded from a key; returns floats in [0, 1). */
export class Rng {
  private a: number;
  private b: number;
  private c: number;
  private d: number;

  constructor(...key: number[]) {
    const h = hashKey(...key);
    this.a = h;
    this.b = fmix32(h ^ 0x243f6a88);
    this.c = fmix32(h ^ 0x85a308d3);
    this.d = 1;
    for (let i = 0; i < 12; i++) this.u32(); // decorrelate nearby keys
  }

  u32(): number {
    const t = (((this.a + this.b) | 0) + this.d) | 0;
    this.d = (this.d + 1) | 0;
    this.a = this.b ^ (this.b >>> 9);
    this.b = (this.c + (this.c << 3)) | 0;
    this.c = (this.c << 21) | (this.c >>> 11);
    this.c = (this.c + t) | 0;
    return t >>> 0;
  }

  /** Uniform in [0, 1). */
  next(): number {
    return this.u32() / 4294967296;
  }

  /** Uniform in [lo, hi). */
  uniform(lo: number, hi: number): number {
    return lo + (hi - lo) * this.next();
  }

  /** Uniform integer in [0, n). */
  int(n: number): number {
    return Math.floor(this.next() * n);
  }
}

/** Fisher-Yates in place over a[lo, hi). */
export function shuffleRange(a: Int32Array, lo: number, hi: number, rng: Rng): void {
  for (let i = hi - 1; i > lo; i--) {
    const j = lo + rng.int(i - lo + 1);
    const t = a[i]!;
    a[i] = a[j]!;
    a[j] = t;
  }
}
