import { floatToHalf, halfToFloat } from './fp16.js';

// Test helpers shared by the in-process data plane tests (shm-plane.test.ts, hier-plane.test.ts).

/** Values spanning many magnitudes and signs, so that summation order shows in the bits. */
export function inputs(ranks: number, n: number, seed: number): Float32Array[] {
  let s = seed >>> 0;
  const next = () => ((s = (Math.imul(s, 1664525) + 1013904223) >>> 0) / 2 ** 32);
  return Array.from({ length: ranks }, () => Float32Array.from({ length: n }, () => (next() - 0.5) * 10 ** Math.floor(next() * 12 - 6)));
}

export const bytes = (a: Float32Array) => Buffer.from(a.buffer, a.byteOffset, a.byteLength);
/** x rounded to binary16 and back. */
export const q16 = (x: number) => halfToFloat(floatToHalf(x));
