import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { readdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { HOST_ID_ENV } from '../src/host-id.js';
import { shmUnavailable } from '../src/shm-native.js';
import { startCoordinator } from '../src/index.js';
import { randomFloats, startJob, stopJob } from './helpers.js';
import { withRoundingCase } from './fixtures/hier-inputs.js';

// The hierarchical plane: 2 "machines" x 2 ranks on one host (forced host ids), each rank in its own process,
// through the real client and coordinator, against the flat peer plane on the same inputs.
const worker = fileURLToPath(new URL('./fixtures/hier-worker.ts', import.meta.url));
const unavailable = shmUnavailable();
if (unavailable && process.env.GOOGLENET_REQUIRE_NATIVE === '1') throw new Error(`shm addon missing (GOOGLENET_REQUIRE_NATIVE=1): ${unavailable}`);
if (unavailable) console.log(`SKIPPED test/hier.test.ts: needs the shm addon (${unavailable}; apt-get install g++ and run npm ci)`);

const MACHINES = ['machine-a', 'machine-a', 'machine-b', 'machine-b'];
// Odd lengths (ragged slices); several chunks and TCP frames per slice are covered in src/hier-plane.test.ts, where
// they can be made small (here a chunk is 2 Mi floats: each of 4 processes would hash and sum 8 MB per rank).
const NUMEL = 300_007, HEAD = 200_003;

type Line = Record<string, unknown>;

/** Runs the 4 ranks as processes against `url`; resolves with each one's output lines and exit signal. */
function ranks(url: string, mode: string): Promise<{ lines: Line[]; signal: string | null }[]> {
  return Promise.all(MACHINES.map((host, rank) => new Promise<{ lines: Line[]; signal: string | null }>((resolve) => {
    const p = spawn(process.execPath, ['--import', 'tsx', worker, url, String(rank), '4', String(NUMEL), String(HEAD), mode], {
      stdio: ['ignore', 'pipe', 'inherit'], env: { ...process.env, [HOST_ID_ENV]: host },
    });
    let out = '';
    p.stdout.on('data', (d) => (out += d));
    p.on('exit', (_code, signal) => resolve({ lines: out.trim().split('\n').filter(Boolean).map((l) => JSON.parse(l) as Line), signal }));
  })));
}

const sha = (x: Float32Array) => createHash('sha256').update(new Uint8Array(x.buffer, x.byteOffset, x.byteLength)).digest('hex');
const segments = () => new Set(readdirSync('/dev/shm').filter((f) => f.startsWith('googlenet-')));

(unavailable ? describe.skip : describe)('hierarchical data plane (2 machines x 2 ranks, forced host ids)', () => {
  it('chooses hier and gives every rank the flat peer plane\'s bytes: fp32 mean, fp16 head + fp32 tail, metrics, broadcast', async () => {
    // One coordinator per job (fp32, then fp16): ranks reconnecting for a second job on the same coordinator race
    // the slowest rank's bye of the first (under load that took a CI run 120 s).
    const logs: string[] = [];
    const before = segments();
    const res: { lines: Line[]; signal: string | null }[] = [[], [], [], []].map(() => ({ lines: [], signal: null }));
    for (const compression of ['none', 'fp16'] as const) {
      const coord = await startCoordinator({ worldSize: 4, dataPlane: 'auto', log: (l) => logs.push(l) });
      const job = await ranks(coord.url, `bytes=${compression}`);
      await coord.close();
      job.forEach((r, i) => { res[i]!.lines.push(...r.lines); res[i]!.signal ??= r.signal; });
    }
    expect(logs.filter((l) => l.includes('data plane')).map((l) => l.replace(/.*data plane /, ''))).toEqual(Array(2).fill('hier (2 hosts of 2+2 ranks)'));
    // The flat peer plane, in this process, on the same inputs.
    const flat: Record<string, Line> = {};
    for (const compression of ['none', 'fp16'] as const) {
      const job = await startJob(4, { dataPlane: 'peer' }, { gradCompression: compression, dataPlane: 'peer' });
      const datas = [0, 1, 2, 3].map((r) => withRoundingCase(randomFloats(NUMEL, 90 + r), r, HEAD + 1)), metrics = [0, 1, 2, 3].map((r) => new Float64Array([r, 0.5]));
      await Promise.all(job.clients.map((c, r) => c.allReduce(datas[r]!, metrics[r], { compressibleLength: HEAD })));
      expect(job.clients[0]!.lastTiming.dataPlane).toBe('peer');
      const bc = [0, 1, 2, 3].map((r) => randomFloats(NUMEL, 7 + r));
      await Promise.all(job.clients.map((c, r) => c.broadcast(bc[r]!)));
      for (let r = 1; r < 4; r++) expect(sha(datas[r]!)).toBe(sha(datas[0]!));
      expect(datas[0]![HEAD + 1]).toBe(2 ** -42);
      flat[compression] = { compression, plane: 'hier', mean: sha(datas[0]!), bcast: sha(bc[0]!), metrics: Array.from(metrics[0]!) };
      await stopJob(job);
    }
    expect(flat.none!.mean).not.toBe(flat.fp16!.mean);
    expect(flat.none!.bcast).toBe(sha(randomFloats(NUMEL, 7)));
    for (const [rank, r] of res.entries()) {
      expect(r.signal, `rank ${rank}`).toBeNull();
      expect(r.lines, `rank ${rank}`).toEqual([flat.none, flat.fp16]);
    }
    expect(flat.none!.metrics).toEqual([6, 2]);
    expect([...segments()].filter((f) => !before.has(f))).toEqual([]);
  }, 300_000);

  it('a rank killed with SIGKILL mid-collective fails every other rank with ROUND_ABORTED naming it, and leaves nothing in /dev/shm', async () => {
    const coord = await startCoordinator({ worldSize: 4, dataPlane: 'auto', roundTimeoutMs: 60_000 });
    const before = segments();
    const res = await ranks(coord.url, 'kill=3');
    await coord.close();
    expect(res[3]!.signal).toBe('SIGKILL');
    for (const r of res) expect(r.lines[0]).toEqual({ round: 1, plane: 'hier' });
    // ROUND_ABORTED, not ROUND_TIMEOUT: nobody waited for the 60 s timeouts.
    for (const rank of [0, 1, 2]) {
      expect(res[rank]!.lines[1], `rank ${rank}`).toMatchObject({ code: 'ROUND_ABORTED', failedRank: 3 });
    }
    expect([...segments()].filter((f) => !before.has(f))).toEqual([]);
  }, 300_000);
});
