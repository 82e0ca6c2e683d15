import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { expect, it } from 'vitest';
import { CoordinatorClient, startCoordinator } from '../src/index.js';
import { SIG, errorOf } from './helpers.js';

const worker = fileURLToPath(new URL('./fixtures/worker.ts', import.meta.url));

it('aborts the surviving ranks long before the round timeout when a worker process is killed with SIGKILL mid-round', async () => {
  const coord = await startCoordinator({ worldSize: 3 }); // default 30 s round timeout: the abort must not wait for it
  const numel = 1 << 20;
  const child = spawn(process.execPath, ['--import', 'tsx', worker, coord.url, '2', '3', String(numel)], { stdio: ['pipe', 'pipe', 'inherit'] });
  const lines: string[] = [];
  child.stdout.on('data', (d: Buffer) => lines.push(...d.toString().trim().split('\n')));
  const clients = await Promise.all([0, 1].map((rank) => CoordinatorClient.connect({ url: coord.url, rank, worldSize: 3, signature: SIG })));
  // one full round with the child first, so the kill lands in a running job
  const datas = [new Float32Array(numel), new Float32Array(numel)];
  child.stdin.write('go\n');
  await Promise.all(clients.map((c, r) => c.allReduce(datas[r]!)));
  // round 2: ranks 0 and 1 have sent; rank 2 is killed before it can
  const pending = clients.map((c, r) => errorOf(c.allReduce(datas[r]!)));
  await new Promise((r) => setTimeout(r, 200));
  expect(coord.status().currentRound?.waitingFor).toEqual([2]);
  const t0 = Date.now();
  child.kill('SIGKILL');
  const errs = await Promise.all(pending);
  expect(Date.now() - t0).toBeLessThan(5000); // far below the 30 s round timeout; loose because the machine is shared
  for (const e of errs) {
    expect(e.code).toBe('ROUND_ABORTED');
    expect(e.failedRank).toBe(2);
    expect(e.message).toMatch(/rank 2's connection closed/);
  }
  expect(lines).toContain('round');
  await Promise.all(clients.map((c) => c.close()));
  await coord.close();
});
