import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { bytes, inputs, q16 } from './plane-test-values.js';
import { HierPlane, placement } from './hier-plane.js';
import { PeerPlane } from './peer.js';
import { Arena, referenceMean } from './reduce.js';
import { shmUnavailable } from './shm-native.js';

// Every rank of several simulated machines in one thread, with small chunks and frames so that a few hundred
// values cross several segment chunks and TCP frames (test/hier.test.ts runs ranks as processes through the client).
const unavailable = shmUnavailable();
if (unavailable && process.env.GOOGLENET_REQUIRE_NATIVE === '1') throw new Error(`shm addon missing (GOOGLENET_REQUIRE_NATIVE=1): ${unavailable}`);
if (unavailable) console.log(`SKIPPED hier-plane.test.ts: needs the shm addon (${unavailable}; apt-get install g++ and run npm ci)`);
const maybe = unavailable ? describe.skip : describe;

const segPath = () => `/dev/shm/googlenet-test-${randomBytes(6).toString('hex')}`;

interface Job { planes: HierPlane[]; paths: string[]; failures: string[]; seq: number }

async function job(machines: number[], o: { chunkElems: number; pieceElems: number }): Promise<Job> {
  const world = machines.at(-1)!;
  const links = await Promise.all(Array.from({ length: world }, () => PeerPlane.listen('127.0.0.1', new Arena(), world)));
  const peers = links.map((l) => ({ host: '127.0.0.1', port: l.port }));
  const dataKey = randomBytes(32).toString('hex');
  const paths = machines.slice(1).map(segPath);
  const failures: string[] = [];
  const planes = await Promise.all(links.map((l, rank) => HierPlane.open({
    path: paths[placement(machines, rank).m]!, rank, machines, peers, dataKey, links: l, timeoutMs: 60_000, ...o,
  })));
  planes.forEach((p, r) => { p.onFailure = (peer, code) => failures.push(`${r}->${peer} ${code}`); });
  return { planes, paths, failures, seq: 0 };
}

/** One collective on every rank, as the client runs it: begin at the announcement, run at the go. */
async function run(j: Job, op: 'mean' | 'bcast', dtype: 'f32' | 'f16', data: Float32Array[]): Promise<void> {
  const seq = ++j.seq;
  j.planes.forEach((p, r) => p.begin(seq, op, dtype, data[r]!));
  await Promise.all(j.planes.map((p) => p.run()));
}

describe('placement', () => {
  it('numbers machines, local ranks and the carriers (the fewest ranks on any machine)', () => {
    expect(placement([0, 2, 5, 7], 0)).toMatchObject({ m: 0, M: 3, me: 0, L: 2, S: 2 });
    expect(placement([0, 2, 5, 7], 4)).toMatchObject({ m: 1, M: 3, me: 2, L: 3, S: 2 });
    expect(placement([0, 2, 5, 7], 6)).toMatchObject({ m: 2, M: 3, me: 1, L: 2, S: 2 });
    expect(placement([0, 2, 4], 3, 64).chunk).toBe(64);
  });
});

maybe('hierarchical data plane (in one thread)', () => {
  for (const machines of [[0, 2, 4], [0, 2, 5, 7]]) {
    it(`machines ${machines.join(',')}: the flat exact mean's bytes (fp32 and fp16) and rank 0's broadcast on every rank, round after round`, async () => {
      const j = await job(machines, { chunkElems: 64, pieceElems: 16 });
      const R = machines.at(-1)!;
      for (const p of j.paths) expect(existsSync(p)).toBe(false); // unlinked once every local rank mapped it
      for (const n of [0, 1, 7, 64, 203, 1000]) {
        const xs = inputs(R, n, R * 1000 + n);
        // Where the float64 sum rounds: in rank order 2^30 + 2^-40 - 2^30 + 2^-40 = 2^-40, but per-machine sums
        // added (2^30 + 2^-40) + (-2^30 + 2^-40) give 0. Only a sum in the flat order gives the flat bytes.
        if (n > 3) xs.forEach((x, r) => { x[3] = [2 ** 30, 2 ** -40, -(2 ** 30), 2 ** -40][r] ?? 0; });
        const want = new Float32Array(n);
        referenceMean(xs, want);
        if (n > 3) expect(want[3]).toBe(Math.fround(2 ** -40 / R));
        let data = xs.map((x) => x.slice());
        await run(j, 'mean', 'f32', data);
        for (const [r, d] of data.entries()) expect(bytes(d).equals(bytes(want)), `f32, ${n} values, rank ${r}`).toBe(true);

        if (n > 3) xs.forEach((x) => { x[3] = 1; }); // 2^30 is Inf in binary16
        const want16 = new Float32Array(n);
        referenceMean(xs.map((x) => x.map(q16)), want16);
        want16.set(want16.map(q16));
        data = xs.map((x) => x.slice());
        await run(j, 'mean', 'f16', data);
        for (const [r, d] of data.entries()) expect(bytes(d).equals(bytes(want16)), `f16, ${n} values, rank ${r}`).toBe(true);

        data = xs.map((x) => x.slice());
        await run(j, 'bcast', 'f32', data);
        for (const [r, d] of data.entries()) expect(bytes(d).equals(bytes(xs[0]!)), `bcast, ${n} values, rank ${r}`).toBe(true);
      }
      expect(j.failures).toEqual([]);
      j.planes.forEach((p) => p.close());
    }, 240_000);
  }

  it('a rank that leaves mid-collective fails its machine with ROUND_ABORTED naming it, and its links report it to the other machine', async () => {
    const j = await job([0, 2, 4], { chunkElems: 64, pieceElems: 16 });
    const data = inputs(4, 300, 1);
    j.planes.forEach((p, r) => p.begin(1, 'mean', 'f32', data[r]!));
    const runs = j.planes.slice(0, 3).map((p) => p.run().then(() => null, (e: { code: string; failedRank?: number; message: string }) => e));
    await new Promise((r) => setTimeout(r, 50));
    j.planes[3]!.destroy(); // rank 3 (machine 1, carrier of slice 1) never copies in
    const err2 = await runs[2]!;
    expect(err2).toMatchObject({ code: 'ROUND_ABORTED', failedRank: 3 });
    expect(err2!.message).toMatch(/rank 3 left the collective/);
    while (!j.failures.includes('1->3 CONNECTION_LOST')) await new Promise((r) => setTimeout(r, 5));
    // The client turns that report into the coordinator's abort; here the remaining ranks are simply closed.
    j.planes.slice(0, 3).forEach((p) => p.destroy());
    for (const e of await Promise.all(runs.slice(0, 2))) expect(e?.code).toBe('CLOSED');
  });
});
