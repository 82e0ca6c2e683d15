import * as tf from '@tensorflow/tfjs';
import { describe, expect, it } from 'vitest';
import { correctCounts } from './step';

describe('correctCounts', () => {
  it('counts top-1 and top-5 hits as a sort would (distinct logits; 10 and 1,000 classes)', async () => {
    await tf.setBackend('cpu');
    for (const classes of [10, 1000]) {
      const batch = 64;
      let s = 12345;
      const logits = Float32Array.from({ length: batch * classes }, () => ((s = (s * 1103515245 + 12345) >>> 0) / 2 ** 32) * 8 - 4);
      // Half the labels are the row's argmax or near it, so both counts are well away from 0 and from batch.
      const labels = Int32Array.from({ length: batch }, (_, r) => {
        const row = Array.from(logits.subarray(r * classes, (r + 1) * classes)).map((v, j) => [v, j] as const).sort((a, b) => b[0] - a[0]);
        return row[r % 8]![1];
      });
      let top1 = 0;
      let top5 = 0;
      for (let r = 0; r < batch; r++) {
        const row = logits.subarray(r * classes, (r + 1) * classes);
        const rank = Array.from(row).filter((v) => v > row[labels[r]!]!).length;
        if (rank === 0) top1++;
        if (rank < 5) top5++;
      }
      const [a, b] = correctCounts(tf.tensor2d(logits, [batch, classes]), tf.tensor1d(labels, 'int32'), 5);
      expect([(await a.data())[0], (await b.data())[0]]).toEqual([top1, top5]);
      expect(top1).toBe(8); // rows with r % 8 == 0
      expect(top5).toBe(40); // r % 8 in 0..4
    }
  });
});
