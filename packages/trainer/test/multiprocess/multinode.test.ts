import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { maxRelativeError, rankDigests, readTensors, repoRoot, startScript, startTrain, tempDir, train, waitFor, type Run } from '../helpers';

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer().listen(0, '127.0.0.1', () => {
      const { port } = s.address() as net.AddressInfo;
      s.close(() => resolve(port));
    });
    s.on('error', reject);
  });
}

const common = ['--image-size=32', '--batch-size=4', '--steps=3', '--lr=0.05', '--backend=wasm', '--seed=11', '--no-eval'];

/** Runs one job of two single-worker nodes against a fresh `coordinator:serve`; `args(k)` are node k's flags. */
async function twoNodes(args: (k: number) => string[]): Promise<Run[]> {
  const port = await freePort();
  const serve = startScript(path.join(repoRoot, 'packages/coordinator/src/cli/serve.ts'), [`--port=${port}`, '--workers=2']);
  let serveOut = '';
  serve.child.stdout!.on('data', (d) => (serveOut += d));
  serve.child.stderr!.on('data', (d) => (serveOut += d));
  try {
    await waitFor(() => serveOut.includes(String(port)), 60_000, 'the coordinator to listen');
    return await Promise.all([0, 1].map((k) =>
      startTrain(['--workers=1', '--nnodes=2', `--node-rank=${k}`, `--coordinator=ws://127.0.0.1:${port}`, ...args(k)]).done,
    ));
  } finally {
    serve.child.kill('SIGTERM');
    await serve.done;
  }
}

describe('multi-node launch', () => {
  it('two launchers with --nnodes=2 against `coordinator:serve` train like one launcher with the same world size', async () => {
    const dir = tempDir('nodes');
    const port = await freePort();
    const serve = startScript(path.join(repoRoot, 'packages/coordinator/src/cli/serve.ts'), [`--port=${port}`, '--workers=2']);
    let serveOut = '';
    serve.child.stdout!.on('data', (d) => (serveOut += d));
    serve.child.stderr!.on('data', (d) => (serveOut += d));
    try {
      await waitFor(() => serveOut.includes(String(port)), 60_000, 'the coordinator to listen');
      const url = `ws://127.0.0.1:${port}`;
      const [n0, n1] = await Promise.all([0, 1].map((k) =>
        train([...common, '--workers=1', '--nnodes=2', `--node-rank=${k}`, `--coordinator=${url}`, `--out=${path.join(dir, `node${k}`)}`]),
      ));
      expect(n0.stdout).toMatch(/summary: 3 steps .* on 2 worker\(s\)/);
      expect(n1.code).toBe(0);
    } finally {
      serve.child.kill('SIGTERM');
      await serve.done;
    }
    const single = path.join(dir, 'single');
    await train([...common, '--workers=2', `--out=${single}`]);

    const d0 = rankDigests(path.join(dir, 'node0')).get(0);
    const d1 = rankDigests(path.join(dir, 'node1')).get(1);
    expect(d0).toBeDefined();
    expect(d1).toBe(d0);
    const { err, worst } = maxRelativeError(readTensors(path.join(dir, 'node0', 'model.safetensors')), readTensors(path.join(single, 'model.safetensors')));
    expect(err, worst).toBeLessThanOrEqual(1e-6);
  }, 600_000);
});

describe('multi-node resume', () => {
  // Two machines without shared storage: each node's run folder has the checkpoints it was given.
  const flags = ['--image-size=32', '--batch-size=4', '--lr=0.05', '--backend=wasm', '--seed=12', '--no-eval', '--synthetic-size=48,16'];

  it('every rank resumes from rank 0\'s checkpoint, not its own newest, and a rank that lacks it stops the job naming rank, step and file', async () => {
    const dir = tempDir('nodes-resume');
    const node = (k: number) => path.join(dir, `node${k}`);
    const first = await twoNodes((k) => [...flags, '--steps=4', '--checkpoint-every=2', `--out=${node(k)}`]);
    expect(first.map((r) => r.code), first[0]!.stderr + first[1]!.stderr).toEqual([0, 0]);
    fs.cpSync(path.join(node(0), 'checkpoints'), path.join(node(1), 'checkpoints'), { recursive: true });
    // Node 0's newest is cut short (a kill mid-write), so rank 0 falls back to step 2; node 1's copy of step 4 is whole.
    fs.truncateSync(path.join(node(0), 'checkpoints', 'step-00000004.ckpt'), 1000);

    const resumed = await twoNodes((k) => [...flags, '--steps=6', `--resume=${node(k)}`]);
    expect(resumed.map((r) => r.code), resumed[0]!.stderr + resumed[1]!.stderr).toEqual([0, 0]);
    expect(fs.readFileSync(path.join(node(1), 'worker-1.log'), 'utf8')).toMatch(/\[rank 1\] resuming from rank 0's checkpoint .*node1\/checkpoints\/step-00000002\.ckpt \(step 2\) instead of its own newest, .*step-00000004\.ckpt/);
    const single = path.join(dir, 'single');
    await train([...flags, '--steps=6', '--workers=2', `--out=${single}`]);
    const { err, worst } = maxRelativeError(readTensors(path.join(node(0), 'model.safetensors')), readTensors(path.join(single, 'model.safetensors')));
    expect(err, worst).toBeLessThanOrEqual(1e-6);
    expect(rankDigests(node(1)).get(1)).toBe(rankDigests(node(0)).get(0));

    // Node 1 lacks the checkpoint rank 0 picks (step 6, written only on node 0): both nodes stop, saying why.
    const refused = await twoNodes((k) => [...flags, '--steps=8', `--resume=${node(k)}`]);
    expect(refused.map((r) => r.code)).toEqual([1, 1]);
    expect(refused[1]!.stderr).toMatch(/\[rank 1\] error \[RESUME_DISAGREE\]: rank 1 cannot load the checkpoint rank 0 resumes from: step 6, step-00000006\.ckpt \(sha256 [0-9a-f]{12}\.\.\.\): .*node1\/checkpoints\/step-00000006\.ckpt does not exist/);
    expect(refused[0]!.stderr).toMatch(/\[rank 0\] error \[RESUME_DISAGREE\]: rank\(s\) 1 cannot load the checkpoint rank 0 resumes from: step 6/);
  }, 600_000);
});
