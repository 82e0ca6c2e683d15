import { describe, expect, it } from 'vitest';
import { exactMeanF32, randomFloats } from './helpers.js';

describe('exactMeanF32 (the test oracle)', () => {
  it('rounds the exact mean to nearest float32, ties to even, subnormals and signs included', () => {
    const ulp1 = 2 ** -23; // float32 spacing just above 1
    expect(exactMeanF32([1, 1 + 2 * ulp1])).toBe(1 + ulp1); // exact
    expect(exactMeanF32([1, 1 + ulp1])).toBe(1); // halfway between 1 and 1+ulp: to even (1)
    expect(exactMeanF32([1 + ulp1, 1 + 2 * ulp1])).toBe(1 + 2 * ulp1); // halfway: to even (1+2ulp)
    expect(exactMeanF32([1, 1, 1 + ulp1])).toBe(1); // 1 + ulp/3 rounds down
    expect(exactMeanF32([1, 1 + ulp1, 1 + ulp1])).toBe(1 + ulp1); // 1 + 2ulp/3 rounds up
    expect(exactMeanF32([2 ** -149, 0])).toBe(0); // half the smallest subnormal: to even (0)
    expect(exactMeanF32([3 * 2 ** -149, 0])).toBe(2 * 2 ** -149); // 1.5 subnormal steps: to even (2)
    expect(exactMeanF32([-3, -4])).toBe(-3.5);
    expect(exactMeanF32([1e30, 3e30].map(Math.fround))).toBe(Math.fround((Math.fround(1e30) + Math.fround(3e30)) / 2));
    expect(exactMeanF32([5, -5])).toBe(0);
  });

  it('agrees with float64 arithmetic where that is exact (two ranks: the sum and the halving are exact)', () => {
    const a = randomFloats(20_000, 3), b = randomFloats(20_000, 4);
    for (let i = 0; i < a.length; i++) expect(exactMeanF32([a[i]!, b[i]!])).toBe(Math.fround((a[i]! + b[i]!) / 2));
  });
});
