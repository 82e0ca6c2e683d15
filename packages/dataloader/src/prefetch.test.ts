import { describe, expect, it } from 'vitest';
import { PrefetchQueue } from './prefetch.js';

describe('PrefetchQueue', () => {
  it('delivers items in order although they finish out of order, never using more than depth+1 buffers', async () => {
    const inUse = new Set<number>();
    let maxAhead = 0;
    let released = -1;
    const q = new PrefetchQueue<{ seq: number; ring: number }>(3, (seq, ring) => {
      if (seq >= 20) return null;
      expect(inUse.has(ring)).toBe(false); // a ring slot is never handed out twice at once
      inUse.add(ring);
      maxAhead = Math.max(maxAhead, seq - released);
      return new Promise((resolve) => setTimeout(() => resolve({ seq, ring }), (seq * 7) % 5));
    });
    const got: number[] = [];
    let prev: { seq: number; ring: number } | null = null;
    for (;;) {
      if (prev) {
        // The caller's buffer is released by asking for the next item.
        inUse.delete(prev.ring);
        released = prev.seq;
      }
      const item: { seq: number; ring: number } | null = await q.next();
      if (!item) break;
      got.push(item.seq);
      prev = item;
    }
    expect(got).toEqual(Array.from({ length: 20 }, (_, i) => i));
    expect(maxAhead).toBeLessThanOrEqual(4);
    expect(await q.next()).toBeNull();
  });

  it('rejects next() after close with LOADER_CLOSED', async () => {
    const q = new PrefetchQueue<number>(2, (seq) => Promise.resolve(seq));
    expect(await q.next()).toBe(0);
    q.close();
    await expect(q.next()).rejects.toMatchObject({ code: 'LOADER_CLOSED' });
  });
});
