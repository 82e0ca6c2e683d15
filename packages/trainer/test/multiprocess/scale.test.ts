import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { shmUnavailable } from '@googlenet/coordinator';
import { tempDir, train } from '../helpers';

// 32 ranks on one machine through the real launcher and coordinator: a small model (fixtures/linear-worker.ts
// stands in for the worker entry) trains 50 rounds on the shared-memory plane within the round timeout.
const worker = path.join(path.dirname(new URL(import.meta.url).pathname), '..', 'fixtures', 'linear-worker.ts');

const noShm = shmUnavailable();
if (noShm && process.env.GOOGLENET_REQUIRE_NATIVE === '1') throw new Error(`shm addon missing (GOOGLENET_REQUIRE_NATIVE=1): ${noShm}`);
if (noShm) console.log(`SKIPPED ${path.basename(new URL(import.meta.url).pathname)}: needs the coordinator's shm addon (${noShm}; apt-get install g++ and run npm ci)`);

describe.skipIf(noShm !== null)('scale', () => {
  it('32 ranks of a small model complete 50 rounds on shared memory, every rank with the same weights', async () => {
    const out = path.join(tempDir('scale'), 'run');
    await train(['--workers=32', '--steps=50', '--round-timeout=30', '--backend=cpu', `--out=${out}`], { GOOGLENET_WORKER_ENTRY: worker });
    const ranks = Array.from({ length: 32 }, (_, r) => JSON.parse(fs.readFileSync(path.join(out, `scale-rank-${r}.json`), 'utf8')) as
      { rounds: number; plane: string; firstLoss: number; lastLoss: number; slowestRoundMs: number; weights: string });
    expect(fs.readFileSync(path.join(out, 'coordinator.log'), 'utf8')).toContain('data plane shm (all 32 ranks on one host)');
    for (const r of ranks) {
      expect(r).toMatchObject({ rounds: 50, plane: 'shm', weights: ranks[0]!.weights });
      expect(r.slowestRoundMs).toBeLessThan(30_000);
    }
    expect(ranks[0]!.lastLoss).toBeLessThan(ranks[0]!.firstLoss / 20); // it learned: the mean gradient is right
    console.log(`scale: 32 ranks, 50 rounds; slowest round ${Math.max(...ranks.map((r) => r.slowestRoundMs))} ms; loss ${ranks[0]!.firstLoss.toFixed(2)} -> ${ranks[0]!.lastLoss.toExponential(2)}`);
  }, 600_000);
});
