import { describe, expect, it } from 'vitest';
import { floatToHalf, halfToFloat } from './fp16.js';
import { Arena, referenceMean } from './reduce.js';

function randomFloats(n: number, seed: number): Float32Array {
  // xorshift: reproducible, and spanning many binades so rounding actually matters
  let s = seed >>> 0 || 1;
  const next = () => ((s ^= s << 13), (s ^= s >>> 17), (s ^= s << 5), (s >>> 0) / 2 ** 32);
  return Float32Array.from({ length: n }, () => (next() - 0.5) * 10 ** (next() * 8 - 4));
}

/** ulp of a float32 value */
function ulp(x: number): number {
  const a = Math.abs(Math.fround(x));
  if (a < 2 ** -126) return 2 ** -149;
  return 2 ** (Math.floor(Math.log2(a)) - 23);
}

describe('Arena.mean', () => {
  for (const ranks of [1, 2, 3, 4, 5]) {
    it(`matches the float64 rank-order reference bitwise and lies within 0.5 ulp of the exact mean for ${ranks} rank(s)`, () => {
      const n = 1003; // not a multiple of 4: exercises the scalar tail
      const inputs = Array.from({ length: ranks }, (_, r) => randomFloats(n, 7 + r));
      const stride = 4096 * 4;
      const a = new Arena((ranks + 1) * stride);
      inputs.forEach((x, r) => a.f32.set(x, (r * stride) >> 2));
      const out = ranks * stride;
      a.mean(out, 0, stride, ranks, n, 'f32');
      const got = a.f32.slice(out >> 2, (out >> 2) + n);
      const ref = new Float32Array(n);
      referenceMean(inputs, ref);
      expect(Buffer.from(got.buffer).equals(Buffer.from(ref.buffer))).toBe(true);
      for (let i = 0; i < n; i++) {
        let exact = 0;
        for (const x of inputs) exact += x[i]!;
        exact /= ranks;
        expect(Math.abs(got[i]! - exact)).toBeLessThanOrEqual(0.5 * ulp(exact));
      }
    });
  }

  it('gives the same bytes with the SIMD kernels and the JavaScript fallback, for f16 inputs too', () => {
    const n = 517;
    const simd = new Arena();
    const js = new Arena(1 << 16, false);
    expect(simd.simd).toBe(true);
    const h = Uint16Array.from(randomFloats(3 * 1024, 3), (x) => floatToHalf(x));
    for (const a of [simd, js]) a.u16.set(h, 0);
    for (const a of [simd, js]) a.mean(8192, 0, 2048, 3, n, 'f16');
    expect(Buffer.from(simd.u8.subarray(8192, 8192 + 4 * n)).equals(Buffer.from(js.u8.subarray(8192, 8192 + 4 * n)))).toBe(true);
    const x = simd.f32[(8192 >> 2) + 5]!;
    expect(x).toBe(Math.fround((halfToFloat(h[5]!) + halfToFloat(h[1024 + 5]!) + halfToFloat(h[2048 + 5]!)) / 3));
  });
});

describe('fp16 conversions', () => {
  it('encode every float32 bit pattern class like the scalar reference (round to nearest even)', () => {
    const a = new Arena(1 << 22);
    const n = 1 << 18;
    const u32 = new Uint32Array(a.u8.buffer, 0, n);
    for (let i = 0; i < n; i++) u32[i] = (Math.imul(i, 2654435761) ^ (i << 7)) >>> 0;
    // exact ties at half precision in both directions
    u32.set([0x3f801000, 0x3f803000, 0x477ff000, 0x477fefff, 0x33000000, 0x33000001, 0x7fc00000, 0xff800000, 0x80000000], 0);
    a.toHalf(n * 4, 0, n);
    const f32 = new Float32Array(a.u8.buffer, 0, n);
    const want = Uint16Array.from(f32, (x) => floatToHalf(x));
    expect(Buffer.from(a.u8.buffer, n * 4, n * 2).equals(Buffer.from(want.buffer))).toBe(true);
    expect(floatToHalf(1 + 2 ** -11)).toBe(0x3c00); // tie -> even
    expect(floatToHalf(1 + 3 * 2 ** -11)).toBe(0x3c02); // tie -> even (up)
    expect(floatToHalf(65520)).toBe(0x7c00); // rounds to Inf
  });

  it('decode all 65536 half values exactly', () => {
    const a = new Arena(1 << 20);
    for (let i = 0; i < 65536; i++) a.u16[i] = i;
    a.fromHalf(1 << 17, 0, 65536);
    let bad = 0;
    for (let i = 0; i < 65536; i++) {
      const want = halfToFloat(i);
      const got = a.f32[(1 << 15) + i]!;
      if (Number.isNaN(want) ? !Number.isNaN(got) : !Object.is(got, Math.fround(want)) || floatToHalf(want) !== i) bad++;
    }
    expect(bad).toBe(0);
  });
});
