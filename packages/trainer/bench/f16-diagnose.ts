/**
 * fp32 against f16 variants on the same batches from the same seed (precision-compare.ts): held-out top-1, skipped
 * steps, training loss. Prints one line per variant and a JSON line. Needs webgpu with shader-f16 (lavapipe has it).
 *   npx tsx packages/trainer/bench/f16-diagnose.ts fp32 f16 fp32-lr=1.001 fp32-skip=2
 * VARIANT: fp32 | f16 (f16 GEMM operands + GradScaler) | fp32-scaled (GradScaler, fp32 kernels) | f16-noscale |
 *   f16-init=N (GradScaler from N) | fp32-skip=N (the first N steps undone, as f16's overflow skips) |
 *   fp32-lr=F (lr x F: a perturbation of every update the size of f16's rounding, for F = 1.001)
 * Env: STEPS=100 BATCH=8 TRAIN=800 TEST=300 LR=0.005 MOM=0.5 SEED=1 (the README's 100-step comparison).
 */
import { selectBackend } from '@googlenet/model';
import { syntheticData, trainAndEvaluate, type RunOptions } from '../src/precision-compare';

const env = (k: string, d: number) => Number(process.env[k] ?? d);
const [steps, batchSize, seed, lr, momentum] = [env('STEPS', 100), env('BATCH', 8), env('SEED', 1), env('LR', 0.005), env('MOM', 0.5)];
const info = await selectBackend('webgpu', { precision: 'f16' });
console.log(`${info.line}\n${steps} steps, batch ${batchSize}, 32 px, lr ${lr}, momentum ${momentum}, seed ${seed}, synthetic ${env('TRAIN', 800)},${env('TEST', 300)}`);
const data = await syntheticData({ steps, batchSize, imageSize: 32, seed, trainSamples: env('TRAIN', 800), testSamples: env('TEST', 300) });
const results = [];
for (const variant of process.argv.slice(2)) {
  const arg = (name: string) => { const m = new RegExp(`-${name}=([\\d.e+-]+)`).exec(variant); return m ? Number(m[1]) : undefined; };
  await selectBackend('webgpu', { precision: variant.startsWith('f16') ? 'f16' : 'fp32' }); // same device, other kernels
  const o: RunOptions = { lr: lr * (arg('lr') ?? 1), momentum, log: (l) => console.error(`  ${variant} ${l}`) };
  if (variant === 'f16' || variant === 'fp32-scaled') o.lossScale = {};
  if (arg('init') !== undefined) o.lossScale = { init: arg('init') };
  if (arg('skip') !== undefined) o.skipFirst = arg('skip');
  const r = await trainAndEvaluate(data, o);
  const tail = r.losses.slice(-20).reduce((p, v) => p + v, 0) / 20;
  console.log(`${variant.padEnd(14)} top-1 ${(r.top1 * 100).toFixed(1)} %  eval loss ${r.evalLoss.toFixed(3)}  skipped ${r.skipped}  ` +
    `train loss (steps ${steps - 19}-${steps}) ${tail.toFixed(3)}  final scale ${r.scales.at(-1) || '-'}  ${r.msPerStep.toFixed(0)} ms/step`);
  results.push({ variant, top1: r.top1, evalLoss: r.evalLoss, skipped: r.skipped, lossTail: tail, msPerStep: Math.round(r.msPerStep), scales: [...new Set(r.scales)], losses: r.losses.map((l) => +l.toFixed(3)) });
}
console.log(JSON.stringify({ steps, batchSize, lr, momentum, seed, results }));
process.exit(0);
