/**
 * Scalar IEEE binary16 conversions: the reference the SIMD kernels (simd.ts) are tested against, and the
 * code path for the few tail elements the kernels leave (they work on blocks of 8).
 */
const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

/** float32 -> binary16, round to nearest even; NaN stays NaN (quiet), overflow goes to +-Inf. */
export function floatToHalf(x: number): number {
  f32[0] = x;
  const u = u32[0]!;
  const sign = (u >>> 16) & 0x8000;
  const a = u & 0x7fffffff;
  if (a >= 0x47800000) return sign | (a > 0x7f800000 ? 0x7e00 : 0x7c00); // >= 65536, Inf, NaN
  if (a < 0x38800000) {
    // Subnormal half (or zero): adding 0.5 puts the half's subnormal step (2^-24) at float's last mantissa
    // bit, so the float addition itself rounds to nearest even.
    u32[0] = a;
    f32[0] = f32[0]! + 0.5;
    return sign | (u32[0]! - 0x3f000000);
  }
  // Normal: rebias the exponent, add 0xfff plus the lowest kept bit (ties to even), carry may bump the exponent.
  return sign | (((a + 0xc8000fff + ((a >>> 13) & 1)) >>> 13) & 0xffff);
}

/** binary16 -> float32 (exact). */
export function halfToFloat(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const e = (h >>> 10) & 0x1f;
  const m = h & 0x3ff;
  if (e === 0) return sign * m * 2 ** -24;
  if (e === 31) return m ? NaN : sign * Infinity;
  return sign * (1 + m / 1024) * 2 ** (e - 15);
}

export function encodeHalf(out: Uint16Array, src: Float32Array, from = 0, to = src.length): void {
  for (let i = from; i < to; i++) out[i] = floatToHalf(src[i]!);
}

export function decodeHalf(out: Float32Array, src: Uint16Array, from = 0, to = src.length): void {
  for (let i = from; i < to; i++) out[i] = halfToFloat(src[i]!);
}
