import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { referenceMean } from '../src/reduce.js';
import { shmUnavailable } from '../src/shm-native.js';
import { roundInputs } from './fixtures/shm-inputs.js';

// Ranks of the shared-memory plane in processes of their own (src/shm-plane.test.ts runs them in one thread).
const worker = fileURLToPath(new URL('./fixtures/shm-worker.ts', import.meta.url));
const unavailable = shmUnavailable();
if (unavailable && process.env.GOOGLENET_REQUIRE_NATIVE === '1') throw new Error(`shm addon missing (GOOGLENET_REQUIRE_NATIVE=1): ${unavailable}`);
if (unavailable) console.log(`SKIPPED test/shm.test.ts: needs the shm addon (${unavailable}; apt-get install g++ and run npm ci)`);

interface Line { round: number; sha?: string; code?: string; failedRank?: number; message?: string }

function job(ranks: number, o: { numel: number; rounds: number; chunkElems: number; killRank?: number; killAt?: number; timeoutMs?: number; slots?: boolean }) {
  const path = `/dev/shm/googlenet-test-${randomBytes(6).toString('hex')}`;
  const runs = Array.from({ length: ranks }, (_, rank) => new Promise<{ lines: Line[]; signal: string | null }>((resolve) => {
    const args = [path, rank, ranks, o.numel, o.rounds, o.chunkElems, o.killRank ?? -1, o.killAt ?? -1, o.timeoutMs ?? 30_000, o.slots ? 1 : 0].map(String);
    const p = spawn(process.execPath, ['--import', 'tsx', worker, ...args], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    p.stdout.on('data', (d) => (out += d));
    p.on('exit', (_code, signal) => resolve({ lines: out.trim().split('\n').filter(Boolean).map((l) => JSON.parse(l) as Line), signal }));
  }));
  return { path, done: Promise.all(runs) };
}

// copied: values copied through the segment's chunk buffers; slots: values in each rank's registered slot (zero-copy).
(unavailable ? describe.skip : describe).each(['copied', 'slots'] as const)('shared-memory plane across processes, %s', (mode) => {
  it('3 processes get the reference mean\'s bytes in every one of 6 rounds, with several chunks per round', async () => {
    const numel = 100_003, rounds = 6;
    const { done } = job(3, { numel, rounds, chunkElems: 16_384, slots: mode === 'slots' });
    const res = await done;
    for (let round = 0; round < rounds; round++) {
      const expected = new Float32Array(numel);
      referenceMean([0, 1, 2].map((r) => roundInputs(r, round, numel)), expected);
      const sha = createHash('sha256').update(new Uint8Array(expected.buffer)).digest('hex');
      for (const r of res) expect(r.lines[round]).toEqual({ round, sha });
    }
  }, 60_000);

  it('a process killed with SIGKILL mid-job fails the others at once with ROUND_ABORTED naming it, and leaves nothing in /dev/shm', async () => {
    const t0 = Date.now();
    const { path, done } = job(3, { numel: 50_000, rounds: 5, chunkElems: 8192, killRank: 2, killAt: 3, timeoutMs: 60_000, slots: mode === 'slots' });
    const [a, b, killed] = await done;
    expect(Date.now() - t0).toBeLessThan(30_000); // the round timeout is 60 s: the others did not wait for it
    expect(killed!.signal).toBe('SIGKILL');
    expect(killed!.lines.map((l) => l.round)).toEqual([0, 1, 2]);
    for (const r of [a!, b!]) {
      expect(r.lines.length).toBe(4);
      expect(r.lines[3]).toMatchObject({ round: 3, code: 'ROUND_ABORTED', failedRank: 2 });
      expect(r.lines[3]!.message).toMatch(/rank 2's process exited during the collective \(failed rank 2\)/);
    }
    expect(existsSync(path)).toBe(false);
  }, 60_000);
});
