import { afterEach, describe, expect, it } from 'vitest';
import { referenceMean } from '../src/reduce.js';
import { shmUnavailable } from '../src/shm-native.js';
import type { BucketRanges } from '../src/overlap.js';
import { errorOf, randomFloats, startJob, stopJob, type Job } from './helpers.js';

// The overlap exchange (overlap.ts): buckets averaged by a worker thread while the main thread is blocked.
const unavailable = shmUnavailable();
if (unavailable && process.env.GOOGLENET_REQUIRE_NATIVE === '1') throw new Error(`shm addon missing (GOOGLENET_REQUIRE_NATIVE=1): ${unavailable}`);
if (unavailable) console.log(`SKIPPED test/overlap.test.ts: needs the shm addon (${unavailable}; apt-get install g++ and run npm ci)`);

let job: Job | null = null;
afterEach(async () => {
  if (job) await stopJob(job).catch(() => {});
  job = null;
});

const bytesOf = (x: Float32Array): Buffer => Buffer.from(x.buffer, x.byteOffset, x.byteLength);
const shared = (x: Float32Array): Float32Array => {
  const s = new Float32Array(new SharedArrayBuffer(x.byteLength));
  s.set(x);
  return s;
};
/** Blocks this thread for `ms` (as a backward pass does). */
const block = (ms: number) => Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
const epochNow = () => performance.timeOrigin + performance.now();

// 3 buckets in reverse order of the vector, the middle one of two ranges; values [90_000, 100_011) are the tail.
const NUMEL = 100_011, TAIL = 90_000;
const BUCKETS: BucketRanges[] = [[[60_000, 90_000]], [[20_000, 40_000], [40_000, 60_000]], [[0, 20_000]]];

(unavailable ? describe.skip : describe)('overlap exchange', () => {
  it('averages buckets on a thread while the main thread is blocked; bytes equal one all-reduce; the coordinator counts one step', async () => {
    job = await startJob(2, { dataPlane: 'shm' }, { dataPlane: 'shm', bucketBytes: 64 * 1024 });
    const inputs = [0, 1].map((r) => randomFloats(NUMEL, 40 + r));
    const datas = inputs.map(shared);
    const exchanges = await Promise.all(job.clients.map((c, r) => c.openOverlap(datas[r]!, BUCKETS)));
    for (let round = 0; round < 3; round++) {
      for (const [r, d] of datas.entries()) d.set(inputs[r]!.map((v) => v + round));
      const metrics = [0, 1].map((r) => new Float64Array([r + 1]));
      // Each rank: begin, mark buckets ready while "computing" (blocked), then finish and the tail through allReduce.
      const runs = job.clients.map(async (c, r) => {
        const ex = exchanges[r]!;
        ex.begin();
        ex.ready(0);
        block(150); // the thread exchanges bucket 0 meanwhile
        ex.ready(1);
        ex.ready(2);
        const blockedUntil = epochNow();
        const t = await ex.finish();
        await c.allReduce(datas[r]!, metrics[r], { preReduced: TAIL });
        return { t, blockedUntil };
      });
      const res = await Promise.all(runs);
      for (const { t, blockedUntil } of res) {
        expect(t.buckets).toHaveLength(3);
        expect(t.buckets[0]![0]).toBeLessThan(blockedUntil); // bucket 0 started while the main thread was blocked
      }
      const want = new Float32Array(NUMEL);
      referenceMean(inputs.map((x) => x.map((v) => v + round)), want);
      for (const d of datas) expect(bytesOf(d).equals(bytesOf(want))).toBe(true);
      for (const m of metrics) expect(Array.from(m)).toEqual([3]);
    }
    // a plain collective after the overlapped ones continues the segment's sequence
    const b = [0, 1].map((r) => randomFloats(100, r));
    await Promise.all(job.clients.map((c, r) => c.broadcast(b[r]!)));
    expect(bytesOf(b[1]!).equals(bytesOf(b[0]!))).toBe(true);
    await new Promise((r) => setTimeout(r, 100));
    expect(job.coord.status().step).toBe(3);
  }, 60_000);

  it('refuses collectives while a step holds the plane', async () => {
    job = await startJob(2, { dataPlane: 'shm' }, { dataPlane: 'shm' });
    const d = shared(randomFloats(64, 1));
    const ex = await job.clients[0]!.openOverlap(d, [[[0, 64]]]);
    ex.begin();
    expect((await errorOf(job.clients[0]!.allReduce(new Float32Array(8)))).code).toBe('BUSY');
    ex.cancel(new (await import('../src/errors.js')).CoordinatorError('CLOSED', 'test over'));
  }, 30_000);

  it('a peer that dies mid-exchange fails the step with ROUND_ABORTED, and a dead thread with THREAD_FAILED, not a hang', async () => {
    job = await startJob(2, { dataPlane: 'shm' }, { dataPlane: 'shm', timeoutMs: 20_000 });
    const datas = [0, 1].map((r) => shared(randomFloats(NUMEL, r)));
    const exchanges = await Promise.all(job.clients.map((c, r) => c.openOverlap(datas[r]!, BUCKETS)));
    // rank 1 leaves (as a crash would: its client fails, its segment abort word is set) while rank 0 exchanges
    exchanges[0]!.begin();
    for (let b = 0; b < 3; b++) exchanges[0]!.ready(b);
    const t0 = Date.now();
    const rank0 = errorOf(exchanges[0]!.finish());
    exchanges[1]!.begin();
    exchanges[1]!.cancel(new (await import('../src/errors.js')).CoordinatorError('CLOSED', 'rank 1 gives up'));
    const e = await rank0;
    expect(e.code).toBe('ROUND_ABORTED');
    expect(e.failedRank).toBe(1);
    expect(Date.now() - t0).toBeLessThan(10_000);
    // the client is failed with the same error
    expect((await errorOf(job.clients[0]!.allReduce(new Float32Array(8)))).code).toBe('ROUND_ABORTED');
    await stopJob(job);

    job = await startJob(2, { dataPlane: 'shm' }, { dataPlane: 'shm', timeoutMs: 20_000 });
    const d2 = [0, 1].map((r) => shared(randomFloats(NUMEL, r)));
    const ex2 = await Promise.all(job.clients.map((c, r) => c.openOverlap(d2[r]!, BUCKETS)));
    ex2[0]!.begin();
    await (ex2[0] as unknown as { worker: { terminate(): Promise<number> } }).worker.terminate();
    const dead = await errorOf(ex2[0]!.finish());
    expect(dead.code).toBe('THREAD_FAILED');
    expect((await errorOf(job.clients[0]!.allReduce(new Float32Array(8)))).code).toBe('THREAD_FAILED');
  }, 60_000);
});
