import { describe, expect, it } from 'vitest';
import { sumCounts } from './eval';
import type { GradientReducer } from './reducer';

/** R ranks in one process: allReduce gives each the coordinator's fround(float64 sum / R) of all ranks' data. */
function fakeRanks(perRank: Float32Array[]): GradientReducer {
  const r = perRank.length;
  return {
    worldSize: r,
    async allReduce(data: Float32Array) {
      for (let i = 0; i < data.length; i++) {
        let s = 0;
        for (const d of perRank) s += d[i]!;
        data[i] = Math.fround(s / r);
      }
    },
    async reduceMetrics() {},
    async broadcast() {},
    async close() {},
  };
}

describe('sumCounts', () => {
  it('sums integer counts over ranks exactly through the averaging collective, up to 2^23 per cell', async () => {
    const big = 2 ** 23 - 7;
    const ranks = [Float32Array.of(1, 0, 5, 2, big - 1000), Float32Array.of(0, 0, 7, 1, 999), Float32Array.of(1, 3, 0, 0, 0)];
    for (const r of [3, 7]) {
      const all = Array.from({ length: r }, (_, i) => ranks[i % 3]!);
      const mine = Float64Array.from(all[0]!);
      await sumCounts(fakeRanks(all), mine);
      const expected = Array.from({ length: 5 }, (_, i) => all.reduce((s, d) => s + d[i]!, 0));
      expect(Array.from(mine)).toEqual(expected);
    }
  });

  it('leaves a single process untouched', async () => {
    const c = Float64Array.of(3, 4);
    await sumCounts(fakeRanks([Float32Array.of(3, 4)]), c);
    expect(Array.from(c)).toEqual([3, 4]);
  });
});
