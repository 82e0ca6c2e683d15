import net from 'node:net';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { maxRelativeError, rankDigests, readTensors, repoRoot, startScript, tempDir, train, waitFor } from '../helpers';

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
