import { existsSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { CoordinatorError } from './errors.js';
import { bytes, inputs, q16 } from './plane-test-values.js';
import { referenceMean } from './reduce.js';
import { ShmPlane, defaultChunkElems, segmentBytes, shmSpaceProblem } from './shm-plane.js';
import { shmUnavailable } from './shm-native.js';

// Several ranks in one thread: the plane waits in slices and yields to the event loop between them, so ranks in
// one process take turns (test/shm.test.ts runs ranks in processes of their own).
const unavailable = shmUnavailable();
if (unavailable && process.env.GOOGLENET_REQUIRE_NATIVE === '1') throw new Error(`shm addon missing (GOOGLENET_REQUIRE_NATIVE=1): ${unavailable}`);
if (unavailable) console.log(`SKIPPED shm-plane.test.ts: needs the shm addon (${unavailable}; apt-get install g++ and run npm ci)`);
const maybe = unavailable ? describe.skip : describe;

const segPath = () => `/dev/shm/googlenet-test-${randomBytes(6).toString('hex')}`;

async function planes(ranks: number, o: { chunkElems?: number; timeoutMs?: number } = {}): Promise<{ path: string; ps: ShmPlane[] }> {
  const path = segPath();
  const ps = await Promise.all(Array.from({ length: ranks }, (_, rank) => ShmPlane.open({ path, rank, ranks, timeoutMs: o.timeoutMs ?? 5000, chunkElems: o.chunkElems })));
  return { path, ps };
}

maybe('shared-memory data plane', () => {
  it('averages 1-5 ranks to the exact mean over several chunks and a ragged tail, identical bytes on every rank', async () => {
    for (let ranks = 1; ranks <= 5; ranks++) {
      const { ps } = await planes(ranks, { chunkElems: 64 });
      for (const n of [1, 7, 64, 203, 1000]) {
        const xs = inputs(ranks, n, ranks * 1000 + n);
        const expected = new Float32Array(n);
        referenceMean(xs, expected);
        const data = xs.map((x) => x.slice());
        await Promise.all(ps.map((p, r) => p.run('mean', 'f32', data[r]!)));
        for (const d of data) expect(bytes(d).equals(bytes(expected)), `${ranks} ranks, ${n} values`).toBe(true);
      }
      ps.forEach((p) => p.close());
    }
  });

  it('rounds inputs and the mean to binary16 for fp16, as the other planes do', async () => {
    const ranks = 3, n = 517;
    const { ps } = await planes(ranks, { chunkElems: 128 });
    const xs = inputs(ranks, n, 7);
    xs[0]![0] = 70000; xs[1]![1] = 1e-9; xs[2]![2] = 6.1e-5; // overflow, underflow, subnormal boundary
    const expected = new Float32Array(n);
    referenceMean(xs.map((x) => x.map(q16)), expected);
    const want = expected.map(q16);
    const data = xs.map((x) => x.slice());
    await Promise.all(ps.map((p, r) => p.run('mean', 'f16', data[r]!)));
    for (const d of data) expect(bytes(d).equals(bytes(want))).toBe(true);
    ps.forEach((p) => p.close());
  });

  it('sums metrics in rank order from 0 like the coordinator, also without data, and refuses a rank without them', async () => {
    const { ps } = await planes(3, { chunkElems: 64 });
    const ms = [Float64Array.of(-0, 0.1, 1e300), Float64Array.of(-0, 0.2, 1e300), Float64Array.of(-0, 0.3, -1e300)];
    const want = Array.from({ length: 3 }, (_, j) => 0 + ms[0]![j]! + ms[1]![j]! + ms[2]![j]!); // +0 for -0 sums, as rounds.ts
    await Promise.all(ps.map((p, r) => p.run('mean', 'f32', new Float32Array(0), ms[r])));
    for (const m of ms) expect(Array.from(m)).toEqual(want);
    expect(Object.is(ms[0]![0], 0)).toBe(true);
    const res = await Promise.allSettled(ps.map((p, r) => p.run('mean', 'f32', new Float32Array(100), r === 1 ? undefined : new Float64Array(1))));
    for (const r of res) expect(((r as PromiseRejectedResult).reason as CoordinatorError).code).toBe('SIZE_MISMATCH');
    ps.forEach((p) => p.close());
  });

  it('broadcasts rank 0\'s bytes to every rank', async () => {
    const { ps } = await planes(3, { chunkElems: 16 });
    const xs = inputs(3, 100, 3);
    await Promise.all(ps.map((p, r) => p.run('bcast', 'f32', xs[r]!)));
    for (const x of xs) expect(bytes(x).equals(bytes(xs[0]!))).toBe(true);
    ps.forEach((p) => p.close());
  });

  it('reuses its segment round after round: 20 all-reduces of a subarray give the reference bytes', async () => {
    const ranks = 2;
    const { ps } = await planes(ranks, { chunkElems: 256 });
    for (let round = 0; round < 20; round++) {
      const xs = inputs(ranks, 1500, round);
      const expected = new Float32Array(1000);
      referenceMean(xs.map((x) => x.subarray(300, 1300)), expected);
      await Promise.all(ps.map((p, r) => p.run('mean', 'f32', xs[r]!.subarray(300, 1300))));
      for (const x of xs) expect(bytes(x.subarray(300, 1300)).equals(bytes(expected))).toBe(true);
    }
    ps.forEach((p) => p.close());
  });

  it('leaves nothing in /dev/shm once every rank has mapped the segment', async () => {
    const { path, ps } = await planes(3);
    expect(existsSync(path)).toBe(false);
    expect(existsSync(`${path}.tmp`)).toBe(false);
    ps.forEach((p) => p.close());
  });

  it('fails every rank with SIZE_MISMATCH naming the other rank when lengths differ', async () => {
    const { ps } = await planes(2, { chunkElems: 64 });
    const res = await Promise.allSettled([ps[0]!.run('mean', 'f32', new Float32Array(100)), ps[1]!.run('mean', 'f32', new Float32Array(99))]);
    for (const r of res) {
      expect(r.status).toBe('rejected');
      expect(((r as PromiseRejectedResult).reason as CoordinatorError).code).toBe('SIZE_MISMATCH');
    }
    ps.forEach((p) => p.close());
  });

  it('fails with ROUND_TIMEOUT naming the rank that never arrives, and the others with ROUND_ABORTED', async () => {
    const { ps } = await planes(3, { timeoutMs: 300 });
    const t0 = Date.now();
    const res = await Promise.allSettled([ps[0]!.run('mean', 'f32', new Float32Array(10)), ps[1]!.run('mean', 'f32', new Float32Array(10))]);
    expect(Date.now() - t0).toBeLessThan(5000);
    const errs = res.map((r) => (r as PromiseRejectedResult).reason as CoordinatorError);
    expect(errs.map((e) => e.code).sort()).toEqual(['ROUND_ABORTED', 'ROUND_TIMEOUT']);
    for (const e of errs) expect(e.failedRank).toBe(2);
    ps.forEach((p) => p.close());
  });

  it('fails the others with ROUND_ABORTED when a rank closes mid-collective', async () => {
    const { ps } = await planes(2, { timeoutMs: 20_000 });
    const pending = ps[0]!.run('mean', 'f32', new Float32Array(10));
    setTimeout(() => ps[1]!.close(), 50);
    const e = await pending.catch((x: CoordinatorError) => x);
    expect(e).toBeInstanceOf(CoordinatorError);
    expect((e as CoordinatorError).code).toBe('ROUND_ABORTED');
    ps[0]!.close();
  });

  it('refuses bad options with INVALID_OPTIONS', async () => {
    await expect(ShmPlane.open({ path: segPath(), rank: 2, ranks: 2, timeoutMs: 100 })).rejects.toMatchObject({ code: 'INVALID_OPTIONS' });
    await expect(ShmPlane.open({ path: segPath(), rank: 0, ranks: 1, timeoutMs: 100, chunkElems: 12 })).rejects.toMatchObject({ code: 'INVALID_OPTIONS' });
  });

  it('gives up mapping with RENDEZVOUS_TIMEOUT and removes the segment when a rank never maps it', async () => {
    const path = segPath();
    await expect(ShmPlane.open({ path, rank: 0, ranks: 2, timeoutMs: 200 })).rejects.toMatchObject({ code: 'RENDEZVOUS_TIMEOUT' });
    expect(existsSync(path)).toBe(false);
  });

  it('keeps the segment within Docker\'s default 64 MiB /dev/shm for any number of ranks', () => {
    for (const r of [1, 2, 4, 8, 32, 64, 256]) {
      const c = defaultChunkElems(r);
      expect(c % 8).toBe(0);
      expect(segmentBytes(r)).toBeLessThan(64 * 1024 * 1024);
    }
  });

  it('says when /dev/shm lacks the space for a segment, so that the client offers no shared memory', () => {
    expect(shmSpaceProblem(4, { bavail: 1 << 20, bsize: 4096 })).toBeNull();
    expect(shmSpaceProblem(4, { bavail: 1000, bsize: 4096 })).toMatch(/^\/dev\/shm has 3\.9 MiB free, a segment for 4 ranks needs [\d.]+ MiB \(Docker: --shm-size=256m\)$/);
  });
});
