/**
 * The same-batches comparison with PyTorch at full length (issue 16): Fashion-MNIST 32 px, batch 64, SGD lr 0.05
 * constant, momentum 0.9, weight decay 1e-4, aux weight 0.3, the same initial weights, batches and dropout masks.
 *   npx tsx packages/trainer/bench/torch-parity.ts [--steps=150] [--batch=64] [--size=32] [--lr=0.05] [--record=1,10,50,150] [--threads=1] [--float64=true] [--init=project|pytorch]
 * Prints a table of the losses every 10 steps, the weight differences at the recorded steps, and one JSON line.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { selectBackend } from '@googlenet/model';
import { runParity, torchAvailable, type Distance } from '../test/torch-parity';

const arg = (name: string, dflt: string) => process.argv.find((a) => a.startsWith(`--${name}=`))?.split('=')[1] ?? dflt;

async function main(): Promise<void> {
  const t = torchAvailable();
  if (!t.ok) throw new Error(`/usr/bin/python3 cannot import torch (${t.why}); apt-get install python3-torch`);
  await selectBackend((arg('backend', 'wasm')) as 'wasm');
  const steps = Number(arg('steps', '150'));
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'googlenet-parity-'));
  const o = {
    steps, batchSize: Number(arg('batch', '64')), imageSize: Number(arg('size', '32')), lr: Number(arg('lr', '0.05')),
    momentum: 0.9, weightDecay: 1e-4, auxWeight: 0.3, seed: Number(arg('seed', '0')),
    record: arg('record', `1,10,50,${steps}`).split(',').map(Number).filter((k) => k <= steps), dir,
    float64: arg('float64', 'false') === 'true', threads: Number(arg('threads', '1')), progress: true,
    init: arg('init', 'project') as 'project' | 'pytorch',
  };
  const r = await runParity(o);
  fs.rmSync(dir, { recursive: true, force: true });
  console.log(`step   ours     pytorch${r.theirs64 ? '  pytorch-f64' : ''}`);
  for (let k = 0; k < steps; k++) {
    if (k < 5 || (k + 1) % 10 === 0) console.log(`${String(k + 1).padStart(4)}  ${r.ours[k]!.toFixed(4).padStart(7)}  ${r.theirs[k]!.toFixed(4).padStart(7)}${r.theirs64 ? `  ${r.theirs64[k]!.toFixed(4).padStart(7)}` : ''}`);
  }
  const show = (what: string, list: typeof r.weights) => {
    for (const w of list) {
      const top = [...w.perTensor].sort((a, b) => b[1] - a[1]).slice(0, 4).map(([n, e]) => `${n} ${e.toExponential(2)}`).join(', ');
      console.log(`${what} after step ${w.step}: params ${w.params.toExponential(2)}, update ${w.update.toExponential(2)}, worst tensor ${w.err.toExponential(2)}; largest: ${top}`);
    }
  };
  show('ours vs pytorch', r.weights);
  if (r.weights64) show('ours vs pytorch-f64', r.weights64);
  if (r.rounding) show('pytorch vs pytorch-f64', r.rounding);
  const brief = (w: Distance) => ({ step: w.step, params: w.params, update: w.update, err: w.err, worst: w.worst });
  const med = (a: number[]) => [...a].sort((x, y) => x - y)[Math.floor(a.length / 2)]!;
  const tail = (a: number[]) => a.slice(Math.max(0, steps - 25));
  console.log(JSON.stringify({
    ...o, dir: undefined, medianLast25: { ours: med(tail(r.ours)), theirs: med(tail(r.theirs)) },
    maxLast25: { ours: Math.max(...tail(r.ours)), theirs: Math.max(...tail(r.theirs)) },
    weights: r.weights.map(brief), seconds: r.seconds,
    ...(r.weights64 ? { weights64: r.weights64.map(brief) } : {}),
    ...(r.rounding ? { rounding: r.rounding.map(brief) } : {}),
    ours: r.ours.map((v) => +v.toFixed(4)), theirs: r.theirs.map((v) => +v.toFixed(4)),
  }));
}

main().catch((e) => {
  console.error(e instanceof Error ? e.message : e);
  process.exit(1);
});
