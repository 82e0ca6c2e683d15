import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import type { CoordinatorError } from './errors.js';
import { bytes, inputs, q16 } from './plane-test-values.js';
import { referenceMean } from './reduce.js';
import { ShmPlane, defaultChunkElems, segmentBytes, shmSpaceProblem } from './shm-plane.js';
import { shmAddon, shmUnavailable } from './shm-native.js';

// The shm plane's registered slots (zero-copy all-reduce): several ranks in one thread, as shm-plane.test.ts.
const unavailable = shmUnavailable() ?? (shmAddon()?.reduceSlots ? null : 'the built addon predates reduceSlots (run npm ci)');
if (unavailable && process.env.GOOGLENET_REQUIRE_NATIVE === '1') throw new Error(`shm addon missing (GOOGLENET_REQUIRE_NATIVE=1): ${unavailable}`);
if (unavailable) console.log(`SKIPPED shm-slots.test.ts: needs the shm addon with registered slots (${unavailable}; apt-get install g++ and run npm ci)`);
const maybe = unavailable ? describe.skip : describe;

const segPath = () => `/dev/shm/googlenet-test-${randomBytes(6).toString('hex')}`;

/** `ranks` planes whose segment has registered slots of `shared` floats (only rank 0 says so: the others read it). */
async function planes(ranks: number, shared: number, o: { chunkElems?: number; timeoutMs?: number } = {}): Promise<ShmPlane[]> {
  const path = segPath();
  return Promise.all(Array.from({ length: ranks }, (_, rank) =>
    ShmPlane.open({ path, rank, ranks, timeoutMs: o.timeoutMs ?? 5000, chunkElems: o.chunkElems ?? 64, ...(rank === 0 ? { sharedElems: shared } : {}) })));
}

const slots = (ps: ShmPlane[]) => ps.map((p) => p.slot()!);

maybe('shared-memory plane, registered slots', () => {
  it('averages 1-5 ranks in place to the bytes of the copying path (exact mean), identical on every rank', async () => {
    for (let ranks = 1; ranks <= 5; ranks++) {
      const n = 1000;
      const ps = await planes(ranks, n);
      for (const len of [1, 7, 64, 203, 1000]) {
        const xs = inputs(ranks, len, ranks * 1000 + len);
        const copied = xs.map((x) => x.slice());
        await Promise.all(ps.map((p, r) => p.run('mean', 'f32', copied[r]!))); // the chunked path, for comparison
        const expected = new Float32Array(len);
        referenceMean(xs, expected);
        const ss = slots(ps);
        ss.forEach((s, r) => s.set(xs[r]!));
        await Promise.all(ps.map((p, r) => p.run('mean', 'f32', ss[r]!.subarray(0, len))));
        for (let r = 0; r < ranks; r++) {
          expect(bytes(ss[r]!.subarray(0, len)).equals(bytes(expected)), `${ranks} ranks, ${len} values`).toBe(true);
          expect(bytes(ss[r]!.subarray(0, len)).equals(bytes(copied[r]!))).toBe(true);
        }
      }
      ps.forEach((p) => p.close());
    }
  });

  it('fp16 head then fp32 tail of one slot, with metrics: the rounding and sums of the copying path', async () => {
    const ranks = 3, n = 517, head = 300;
    const ps = await planes(ranks, n);
    const xs = inputs(ranks, n, 7);
    xs[0]![0] = 70000; xs[1]![1] = 1e-9; xs[2]![2] = 6.1e-5; // overflow, underflow, subnormal boundary
    const want = new Float32Array(n);
    referenceMean(xs.map((x) => x.subarray(0, head).map(q16)), want.subarray(0, head));
    want.subarray(0, head).set(want.subarray(0, head).map(q16));
    referenceMean(xs.map((x) => x.subarray(head)), want.subarray(head));
    const ss = slots(ps);
    ss.forEach((s, r) => s.set(xs[r]!));
    const ms = ps.map((_, r) => Float64Array.of(r, 0.5));
    await Promise.all(ps.map((p, r) => p.run('mean', 'f16', ss[r]!.subarray(0, head), ms[r])));
    await Promise.all(ps.map((p, r) => p.run('mean', 'f32', ss[r]!.subarray(head))));
    for (const s of ss) expect(bytes(s).equals(bytes(want))).toBe(true);
    for (const m of ms) expect(Array.from(m)).toEqual([3, 1.5]);
    ps.forEach((p) => p.close());
  });

  it('broadcasts rank 0\'s slot, and interleaves with copied collectives round after round', async () => {
    const ranks = 3, n = 300;
    const ps = await planes(ranks, n, { chunkElems: 48 });
    const ss = slots(ps);
    for (let round = 0; round < 20; round++) {
      const xs = inputs(ranks, n, round);
      ss.forEach((s, r) => s.set(xs[r]!));
      await Promise.all(ps.map((p, r) => p.run('bcast', 'f32', ss[r]!)));
      for (const s of ss) expect(bytes(s).equals(bytes(xs[0]!))).toBe(true);
      const other = inputs(ranks, 211, round + 100);
      const want = new Float32Array(211);
      referenceMean(other, want);
      await Promise.all(ps.map((p, r) => p.run('mean', 'f32', other[r]!)));
      for (const o of other) expect(bytes(o).equals(bytes(want))).toBe(true);
      ss.forEach((s, r) => s.set(xs[r]!));
      const mean = new Float32Array(n);
      referenceMean(xs, mean);
      await Promise.all(ps.map((p, r) => p.run('mean', 'f32', ss[r]!)));
      for (const s of ss) expect(bytes(s).equals(bytes(mean))).toBe(true);
    }
    ps.forEach((p) => p.close());
  });

  it('fails every rank with SIZE_MISMATCH when one rank passes its slot and another a copy or another range', async () => {
    for (const [a, b] of [[0, -1], [0, 8]] as const) {
      const ps = await planes(2, 64);
      const ss = slots(ps);
      const res = await Promise.allSettled([ps[0]!.run('mean', 'f32', ss[0]!.subarray(a, a + 32)),
        ps[1]!.run('mean', 'f32', b < 0 ? new Float32Array(32) : ss[1]!.subarray(b, b + 32))]);
      for (const r of res) expect(((r as PromiseRejectedResult).reason as CoordinatorError).code).toBe('SIZE_MISMATCH');
      expect(String((res[0] as PromiseRejectedResult).reason.message)).toMatch(/registered slots at 0 .*rank 1/);
      ps.forEach((p) => p.close());
    }
  });

  it('gather: every rank sees every rank\'s slot range (rank order) and the summed metrics; averaging the views gives the all-reduce\'s bytes', async () => {
    for (const ranks of [1, 2, 3]) {
      const n = 300, at = 40, len = 203;
      const ps = await planes(ranks, n);
      const ss = slots(ps);
      for (let round = 0; round < 3; round++) {
        const xs = inputs(ranks, len, ranks * 10 + round);
        ss.forEach((s, r) => s.subarray(at, at + len).set(xs[r]!));
        const ms = ps.map((_, r) => Float64Array.of(r + 1));
        const got = await Promise.all(ps.map((p, r) => p.gather(ss[r]!.subarray(at, at + len), ms[r])));
        const want = new Float32Array(len);
        referenceMean(xs, want);
        for (const [r, g] of got.entries()) {
          expect(g.views.length).toBe(ranks);
          g.views.forEach((v, k) => expect(bytes(v).equals(bytes(xs[k]!)), `rank ${r} sees rank ${k}`).toBe(true));
          const mean = new Float32Array(len);
          referenceMean(g.views, mean);
          expect(bytes(mean).equals(bytes(want))).toBe(true);
          expect(ms[r]![0]).toBe((ranks * (ranks + 1)) / 2);
        }
        // Nothing was written into the slots: each still holds its own values.
        ss.forEach((s, r) => expect(bytes(s.subarray(at, at + len)).equals(bytes(xs[r]!))).toBe(true));
        // A rank holding the views is refused another collective; released, the next one (an all-reduce) works.
        await expect(ps[0]!.run('mean', 'f32', new Float32Array(8))).rejects.toMatchObject({ code: 'BUSY' });
        ps.forEach((p) => p.releaseGather());
        await Promise.all(ps.map((p) => p.gatherReleased()));
        const ys = inputs(ranks, 16, round + 50);
        await Promise.all(ps.map((p, r) => p.run('mean', 'f32', ys[r]!)));
      }
      ps.forEach((p) => p.close());
    }
  });

  it('gather: a rank waits in gatherReleased() until every rank released its views; one gathering beside one averaging is SIZE_MISMATCH', async () => {
    const ps = await planes(2, 64, { timeoutMs: 20_000 });
    const ss = slots(ps);
    await Promise.all(ps.map((p, r) => p.gather(ss[r]!)));
    ps[0]!.releaseGather();
    let released = false;
    const waiting = ps[0]!.gatherReleased().then(() => (released = true));
    await new Promise((r) => setTimeout(r, 60));
    expect(released).toBe(false); // rank 1 may still be reading rank 0's slot
    ps[1]!.releaseGather();
    await waiting;
    expect(released).toBe(true);
    const res = await Promise.allSettled([ps[0]!.gather(ss[0]!), ps[1]!.run('mean', 'f32', ss[1]!)]);
    for (const r of res) expect(((r as PromiseRejectedResult).reason as CoordinatorError).code).toBe('SIZE_MISMATCH');
    ps.forEach((p) => p.close());
  });

  it('gather: a rank that leaves while another waits for its release fails that one at once (ROUND_ABORTED)', async () => {
    const ps = await planes(2, 64, { timeoutMs: 20_000 });
    const ss = slots(ps);
    await Promise.all(ps.map((p, r) => p.gather(ss[r]!)));
    ps[0]!.releaseGather();
    const t = performance.now();
    const waiting = ps[0]!.gatherReleased();
    setTimeout(() => ps[1]!.leave(), 50);
    await expect(waiting).rejects.toMatchObject({ code: 'ROUND_ABORTED', failedRank: 1 });
    expect(performance.now() - t).toBeLessThan(5000);
    await expect(ps[0]!.gather(ss[0]!)).rejects.toMatchObject({ code: 'ROUND_ABORTED' }); // the abort word stays: no more collectives
    ps.forEach((p) => p.close());
  });

  it('refuses a view of the segment outside this rank\'s slot with INVALID_OPTIONS', async () => {
    const ps = await planes(2, 64);
    const header = new Float32Array(ps[0]!.slot()!.buffer, 0, 16);
    await expect(ps[0]!.run('mean', 'f32', header)).rejects.toMatchObject({ code: 'INVALID_OPTIONS' });
    ps.forEach((p) => p.close());
  });

  it('fails the others with ROUND_ABORTED when a rank closes mid-collective, and detaches the closed rank\'s slot', async () => {
    const ps = await planes(2, 64, { timeoutMs: 20_000 });
    const ss = slots(ps);
    const pending = ps[0]!.run('mean', 'f32', ss[0]!);
    setTimeout(() => ps[1]!.close(), 50);
    await expect(pending).rejects.toMatchObject({ code: 'ROUND_ABORTED' });
    expect(ps[1]!.slot()).toBeNull();
    expect(ss[1]!.length).toBe(0); // unmapped: the view is detached, not dangling
    ps[0]!.close();
  });

  it('a rank that leaves (its client failed) fails the others at once, refuses more collectives, and keeps its slot mapped until close', async () => {
    const ps = await planes(2, 64, { timeoutMs: 20_000 });
    const ss = slots(ps);
    const pending = ps[0]!.run('mean', 'f32', ss[0]!);
    setTimeout(() => ps[1]!.leave(), 50);
    await expect(pending).rejects.toMatchObject({ code: 'ROUND_ABORTED', failedRank: 1 });
    ss[1]!.fill(3); // the trainer may still write its gradients before it hears of the failure
    expect(ss[1]!.length).toBe(64);
    expect(ss[1]![63]).toBe(3);
    await expect(ps[1]!.run('mean', 'f32', ss[1]!)).rejects.toMatchObject({ code: 'CLOSED' });
    ps.forEach((p) => p.close());
    expect(ss[1]!.length).toBe(0);
  });

  it('takes rank 0\'s layout on every rank: slots of its length, or none, and nothing left in /dev/shm', async () => {
    const path = segPath();
    const ps = await Promise.all([0, 1].map((rank) => ShmPlane.open({ path, rank, ranks: 2, timeoutMs: 5000, sharedElems: rank === 0 ? 1000 : 5 })));
    expect(ps.map((p) => p.slot()!.length)).toEqual([1000, 1000]);
    expect(existsSync(path)).toBe(false);
    ps.forEach((p) => p.close());
    const none = await planes(2, 0);
    expect(none.map((p) => p.slot())).toEqual([null, null]);
    none.forEach((p) => p.close());
  });

  it('counts the slots in the segment size and in the /dev/shm space check', () => {
    const c = defaultChunkElems(2);
    expect(segmentBytes(2, c, 1000)).toBeGreaterThanOrEqual(segmentBytes(2, c) + 2 * 4000);
    expect(segmentBytes(2, c, 1000) % 64).toBe(0);
    const free = { bavail: Math.ceil(segmentBytes(2) / 4096), bsize: 4096 };
    expect(shmSpaceProblem(2, free)).toBeNull();
    expect(shmSpaceProblem(2, free, 13_385_816)).toMatch(/needs 1\d\d\.\d MiB/);
  });
});
