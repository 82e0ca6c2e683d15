import { describe, expect, it } from 'vitest';
import { batchesPerSlot, epochOrder, shardIndices, shardRecordBatches, shardRecordIndices, type SlotOptions } from './sampler.js';
import { Rng } from './rng.js';

type Mode = { pad: boolean; dropLast: boolean; name: string };
const MODES: Mode[] = [
  { pad: true, dropLast: false, name: 'pad' },
  { pad: true, dropLast: true, name: 'dropLast' },
  { pad: false, dropLast: false, name: 'eval' },
];

/** Asserts the sampling guarantees over all slots of one epoch. */
function checkSlots(n: number, slots: number, B: number, mode: Mode, lists: Int32Array[], batches: number[]) {
  const counts = new Int32Array(n);
  for (const l of lists) for (const i of l) counts[i]++;
  const lens = lists.map((l) => l.length);
  const ctx = `n=${n} slots=${slots} B=${B} ${mode.name}`;
  if (mode.dropLast) {
    const L = Math.floor(n / (slots * B)) * B;
    expect(lens, ctx).toEqual(lens.map(() => L)); // equal length
    expect(Math.max(...counts), ctx).toBeLessThanOrEqual(1); // disjoint
    expect(n - lens.reduce((a, b) => a + b, 0), ctx).toBeLessThan(slots * B); // drops less than one step
    expect(batches, ctx).toEqual(lens.map(() => L / B));
  } else if (mode.pad) {
    const L = Math.ceil(n / (slots * B)) * B;
    expect(lens, ctx).toEqual(lens.map(() => L));
    expect(Math.min(...counts), ctx).toBeGreaterThanOrEqual(1); // covering
    expect(Math.max(...counts) - Math.min(...counts), ctx).toBeLessThanOrEqual(1); // padding spread evenly
    expect(batches, ctx).toEqual(lens.map(() => L / B));
  } else {
    expect([...counts].every((c) => c === 1), ctx).toBe(true); // every sample exactly once
    expect(batches, ctx).toEqual(lens.map((l) => Math.ceil(l / B)));
    expect(Math.max(...batches) - Math.min(...batches), ctx).toBeLessThanOrEqual(1);
  }
}

describe('shardIndices (index data sets)', () => {
  it('gives disjoint, covering, equal-length slices for world sizes 1-8 with and without dropLast', () => {
    const rng = new Rng(42);
    for (let slots = 1; slots <= 8; slots++) {
      for (const mode of MODES) {
        for (let trial = 0; trial < 12; trial++) {
          const B = 1 + rng.int(5);
          const n = Math.max(mode.dropLast ? slots * B : 1, 1 + rng.int(120));
          const o = (slot: number): SlotOptions => ({ seed: 7, epoch: trial, slot, slots, batchSize: B, ...mode });
          const lists = Array.from({ length: slots }, (_, s) => shardIndices(n, o(s)));
          const batches = Array.from({ length: slots }, (_, s) => batchesPerSlot(n, o(s)));
          checkSlots(n, slots, B, mode, lists, batches);
        }
      }
    }
  });

  it('is a pure function of (seed, epoch): same inputs give the same slice, another epoch another order', () => {
    const o: SlotOptions = { seed: 3, epoch: 5, slot: 1, slots: 4, batchSize: 8 };
    expect(shardIndices(1000, o)).toEqual(shardIndices(1000, o));
    expect(shardIndices(1000, o)).not.toEqual(shardIndices(1000, { ...o, epoch: 6 }));
    expect(shardIndices(1000, o)).not.toEqual(shardIndices(1000, { ...o, seed: 4 }));
    expect([...epochOrder(10, { seed: 1, epoch: 0, shuffle: false })]).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
  });

  it('puts slot j of step k on the same samples whatever the split into workers x accumulate', () => {
    // 2 workers x accumulate 1 and 1 worker x accumulate 2 both have 2 slots: the layout depends on slots only.
    const o = { seed: 9, epoch: 2, slots: 2, batchSize: 4 };
    const twoWorkers = [0, 1].map((slot) => shardIndices(50, { ...o, slot }));
    const oneWorkerAcc2 = [0, 1].map((m) => shardIndices(50, { ...o, slot: 0 * 2 + m }));
    expect(oneWorkerAcc2).toEqual(twoWorkers);
    // and step k of the 2-slot layout holds the same samples as step k of 1 slot x batch 8
    const single = shardIndices(50, { ...o, slots: 1, slot: 0, batchSize: 8 });
    for (let k = 0; k < 6; k++) {
      const step = [...twoWorkers[0]!.subarray(4 * k, 4 * k + 4), ...twoWorkers[1]!.subarray(4 * k, 4 * k + 4)];
      expect(step).toEqual([...single.subarray(8 * k, 8 * k + 8)]);
    }
  });

  it('rejects impossible options with BAD_OPTION', () => {
    expect(() => shardIndices(10, { seed: 0, epoch: 0, slot: 2, slots: 2, batchSize: 1 })).toThrowError(expect.objectContaining({ code: 'BAD_OPTION' }));
    expect(() => shardIndices(5, { seed: 0, epoch: 0, slot: 0, slots: 2, batchSize: 4, dropLast: true })).toThrowError(/at least 8 samples/);
  });
});

describe('shardRecordIndices (shards)', () => {
  it('gives disjoint, covering, equal-length slices for world sizes 1-8 with and without dropLast', () => {
    const rng = new Rng(43);
    for (let slots = 1; slots <= 8; slots++) {
      for (const mode of MODES) {
        for (let trial = 0; trial < 10; trial++) {
          const B = 1 + rng.int(5);
          const counts = Array.from({ length: 1 + rng.int(7) }, () => 1 + rng.int(30));
          let n = counts.reduce((a, b) => a + b, 0);
          if (mode.dropLast && n < slots * B) {
            counts.push(slots * B);
            n += slots * B;
          }
          const o = (slot: number) => ({ seed: 11, epoch: trial, slot, slots, batchSize: B, window: 7, ...mode });
          const lists = Array.from({ length: slots }, (_, s) => shardRecordIndices(counts, o(s)));
          const batches = Array.from({ length: slots }, (_, s) => shardRecordBatches(counts, o(s)));
          checkSlots(n, slots, B, mode, lists, batches);
        }
      }
    }
  });

  it('deals whole shard files and re-deals them each epoch', () => {
    const counts = [10, 10, 10, 10];
    const o = { slots: 4, batchSize: 5, seed: 1, shuffle: true, window: 1 }; // window 1: no in-run shuffle
    const shardOf = (i: number) => Math.floor(i / 10);
    const deal = (epoch: number) => [0, 1, 2, 3].map((slot) => new Set([...shardRecordIndices(counts, { ...o, epoch, slot })].map(shardOf)));
    const e0 = deal(0);
    for (const s of e0) expect(s.size).toBe(1); // one whole shard per slot
    const epochs = [0, 1, 2, 3, 4, 5].map((e) => deal(e).map((s) => [...s][0]).join(''));
    expect(new Set(epochs).size).toBeGreaterThan(1);
  });
});
