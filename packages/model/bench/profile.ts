/**
 * `nx run model:bench`: one training micro-batch (computeGradients) on the active backend, timed and
 * profiled per kernel, beside PyTorch's training step on the same shape in the same invocation.
 * Prints a table and one JSON line. Numbers only.
 *   tsx packages/model/bench/profile.ts [--size=32] [--batch=32] [--classes=10] [--steps=5] [--profile] [--torch]
 */
import { execFileSync } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import * as tf from '@tensorflow/tfjs';
import { computeGradients, GoogLeNet, selectBackend } from '../src/index.js';
import { nativeProfile } from '../src/native.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const args = Object.fromEntries(process.argv.slice(2).map((a) => {
  const [k, v] = a.replace(/^--/, '').split('=');
  return [k, v ?? 'true'];
}));
const size = Number(args.size ?? 32);
const batch = Number(args.batch ?? 32);
const classes = Number(args.classes ?? (size >= 224 ? 1000 : 10));
const steps = Number(args.steps ?? 5);
const backend = (args.backend ?? 'wasm') as 'wasm' | 'cpu';

function torchRef(): number | undefined {
  try {
    const out = execFileSync('/usr/bin/python3', [path.join(here, '../../trainer/bench/torch_reference.py'), `--size=${size}`,
      `--batch=${batch}`, `--classes=${classes}`, '--threads=2', '--warmup=2', `--iters=${size >= 224 ? 4 : 6}`], { encoding: 'utf8' });
    const line = out.split('\n').find((l) => l.startsWith('RESULT '));
    return line ? JSON.parse(line.slice(7)).imgPerSec : undefined;
  } catch { return undefined; }
}

async function main() {
  await selectBackend(backend);
  const model = new GoogLeNet({ numClasses: classes });
  const xs = new Float32Array(batch * size * size * 3).map((_, i) => Math.sin(i));
  const ls = new Int32Array(batch).map((_, i) => i % classes);
  const step = () => tf.tidy(() => {
    const x = tf.tensor4d(xs, [batch, size, size, 3]);
    const y = tf.tensor1d(ls, 'int32');
    const r = computeGradients(model, x, y, { auxWeight: 0.3, dropoutSeed: 1 });
    r.loss.dataSync();
  });
  step(); step();
  const times: number[] = [];
  for (let i = 0; i < steps; i++) {
    const t = performance.now();
    step();
    times.push(performance.now() - t);
  }
  times.sort((a, b) => a - b);
  const med = times[times.length >> 1];
  const ours = (batch / med) * 1000;
  let kernels: { name: string; ms: number; n: number }[] = [];
  if (args.profile) {
    nativeProfile(true);
    const prof = await tf.profile(() => { step(); });
    const by = new Map<string, { ms: number; n: number }>();
    for (const k of prof.kernels) {
      const e = by.get(k.name) ?? { ms: 0, n: 0 };
      e.ms += k.kernelTimeMs as number; e.n++;
      by.set(k.name, e);
    }
    for (const r of nativeProfile()) by.set(r.name, { ms: r.ms, n: r.calls });
    by.delete('unnamed scope'); // custom ops: their inner kernels are listed on their own
    kernels = [...by].map(([name, v]) => ({ name, ...v })).sort((a, b) => b.ms - a.ms);
    const total = kernels.reduce((s, k) => s + k.ms, 0);
    console.log(`| kernel | calls | ms | % |\n|---|---|---|---|`);
    for (const k of kernels.slice(0, 25)) console.log(`| ${k.name} | ${k.n} | ${k.ms.toFixed(1)} | ${(100 * k.ms / total).toFixed(1)} |`);
    console.log(`total kernel ms ${total.toFixed(1)} over ${prof.kernels.length} kernels`);
  }
  const torch = args.torch === 'false' ? undefined : torchRef();
  console.log(`${size}x${size} b${batch}: ours ${ours.toFixed(2)} img/s (median ${med.toFixed(0)} ms, min ${times[0].toFixed(0)}), ` +
    `pytorch ${torch?.toFixed(2) ?? '-'} img/s, ratio ${torch ? (ours / torch).toFixed(2) : '-'}`);
  console.log(JSON.stringify({ bench: 'model', size, batch, classes, backend, ours, torch, medMs: med, kernels: kernels.slice(0, 40) }));
}
main();
