/**
 * fp32 against f16 variants on the same batches from the same seed (precision-compare.ts): held-out top-1, skipped
 * steps, training loss. Prints one line per variant and a JSON line. Needs webgpu with shader-f16 (lavapipe has it).
 *   npx tsx packages/trainer/bench/f16-diagnose.ts fp32 f16 fp32-lr=1.001 fp32-skip=2
 * VARIANT: fp32 | f16 (f16 GEMM operands + GradScaler) | fp32-scaled (GradScaler, fp32 kernels) | f16-noscale |
 *   f16-init=N (GradScaler from N) | fp32-skip=N (the first N steps undone, as f16's overflow skips) |
 *   fp32-lr=F (lr x F: a perturbation of every update the size of f16's rounding, for F = 1.001)
 * Env: STEPS=100 BATCH=8 TRAIN=800 TEST=300 LR=0.005 MOM=0.5 SEED=1 (the README's 100-step comparison).
 *   npx tsx packages/trainer/bench/f16-diagnose.ts grads
 * instead compares ONE step's gradients at the same weights (f16 at loss scales 65536 ... 1 against fp32, relative
 * error per parameter) and lists the f16 matMuls whose operands exceed f16's 65504 at each scale.
 */
import * as tf from '@tensorflow/tfjs';
import { GoogLeNet, computeGradients, computePrecision, fp32Scope, selectBackend } from '@googlenet/model';
import { syntheticData, trainAndEvaluate, type RunOptions } from '../src/precision-compare';

const env = (k: string, d: number) => Number(process.env[k] ?? d);
const [steps, batchSize, seed, lr, momentum] = [env('STEPS', 100), env('BATCH', 8), env('SEED', 1), env('LR', 0.005), env('MOM', 0.5)];
const info = await selectBackend('webgpu', { precision: 'f16' });
console.log(`${info.line}\n${steps} steps, batch ${batchSize}, 32 px, lr ${lr}, momentum ${momentum}, seed ${seed}, synthetic ${env('TRAIN', 800)},${env('TEST', 300)}`);
const data = await syntheticData({ steps, batchSize, imageSize: 32, seed, trainSamples: env('TRAIN', 800), testSamples: env('TEST', 300) });
if (process.argv[2] === 'grads') {
  await gradients();
  process.exit(0);
}
const results = [];
// Every variant's final weights against the first variant's: how far a perturbation has carried the run.
let first: Float32Array[] | undefined;
for (const variant of process.argv.slice(2)) {
  const arg = (name: string) => { const m = new RegExp(`-${name}=([\\d.e+-]+)`).exec(variant); return m ? Number(m[1]) : undefined; };
  await selectBackend('webgpu', { precision: variant.startsWith('f16') ? 'f16' : 'fp32' }); // same device, other kernels
  const o: RunOptions = { lr: lr * (arg('lr') ?? 1), momentum, log: (l) => console.error(`  ${variant} ${l}`) };
  if (variant === 'f16' || variant === 'fp32-scaled') o.lossScale = {};
  if (arg('init') !== undefined) o.lossScale = { init: arg('init') };
  if (arg('skip') !== undefined) o.skipFirst = arg('skip');
  let distance = 0;
  o.inspect = async (model) => {
    const w = await Promise.all(model.params.map(async (p) => Float32Array.from(await p.variable.data())));
    if (!first) { first = w; return; }
    let [num, den] = [0, 0];
    w.forEach((t, i) => t.forEach((v, j) => { num += (v - first![i]![j]!) ** 2; den += first![i]![j]! ** 2; }));
    distance = Math.sqrt(num / den);
  };
  const r = await trainAndEvaluate(data, o);
  const last = r.losses.slice(-20);
  const tail = last.reduce((p, v) => p + v, 0) / last.length;
  console.log(`${variant.padEnd(14)} top-1 ${(r.top1 * 100).toFixed(1)} %  eval loss ${r.evalLoss.toFixed(3)}  skipped ${r.skipped}  ` +
    `train loss (steps ${steps - last.length + 1}-${steps}) ${tail.toFixed(3)}  final scale ${r.scales.at(-1) || '-'}  weights off the first variant's ${distance.toExponential(2)}  ${r.msPerStep.toFixed(0)} ms/step`);
  results.push({ variant, top1: r.top1, weightsOff: distance, evalLoss: r.evalLoss, skipped: r.skipped, lossTail: tail, msPerStep: Math.round(r.msPerStep), scales: [...new Set(r.scales)], losses: r.losses.map((l) => +l.toFixed(3)) });
}
console.log(JSON.stringify({ steps, batchSize, lr, momentum, seed, results }));
process.exit(0);

/** One step's gradients under f16 at several loss scales against fp32, per parameter; the f16 matMuls with an operand over 65504. */
async function gradients(): Promise<void> {
  const model = new GoogLeNet({ numClasses: 10, seed });
  const b = data.train[0]!;
  const x = tf.tensor4d(b.images, [batchSize, 32, 32, 3]);
  const y = tf.tensor1d(b.labels, 'int32');
  const run = (scale: number) => tf.tidy(() => computeGradients(model, x, y, { auxWeight: 0.3, dropoutSeed: 7, lossScale: scale }).grads.map((g) => g.div(scale)));
  const ref = fp32Scope(() => run(1));
  // Wraps the installed f16 BatchMatMul to record max|A| and max|B| of every call.
  const f16MatMul = tf.getKernel('BatchMatMul', 'webgpu')!;
  type Args = { inputs: { a: tf.TensorInfo; b: tf.TensorInfo }; attrs: Record<string, unknown>; backend: { incRef(id: unknown): void } };
  const seen: { a: number[]; b: number[]; max: tf.Tensor }[] = [];
  tf.unregisterKernel('BatchMatMul', 'webgpu');
  tf.registerKernel({ ...f16MatMul, kernelFunc: ((args: Args) => {
    const out = (f16MatMul.kernelFunc as unknown as (a: Args) => tf.TensorInfo)(args);
    if (computePrecision().precision === 'f16') {
      const wrap = (t: tf.TensorInfo) => { args.backend.incRef(t.dataId); return tf.engine().makeTensorFromTensorInfo(t); };
      const [ta, tb] = [wrap(args.inputs.a), wrap(args.inputs.b)];
      seen.push({ a: args.inputs.a.shape, b: args.inputs.b.shape, max: tf.keep(fp32Scope(() => tf.tidy(() => tf.stack([tf.max(tf.abs(ta)), tf.max(tf.abs(tb))])))) });
      tf.dispose([ta, tb]);
    }
    return out;
  }) as unknown as tf.KernelFunc });
  for (const scale of [65536, 16384, 1024, 1]) {
    seen.length = 0;
    const half = run(scale);
    const rel: { name: string; rel: number }[] = [];
    let nonFinite = 0;
    for (let i = 0; i < ref.length; i++) {
      const [r, h] = [await ref[i]!.data(), await half[i]!.data()];
      if (h.some((v) => !Number.isFinite(v))) { nonFinite++; continue; }
      let [num, den] = [0, 0];
      r.forEach((v, j) => { num += (v - h[j]!) ** 2; den += v * v; });
      rel.push({ name: model.params[i]!.name, rel: Math.sqrt(num / Math.max(den, 1e-300)) });
    }
    const over: string[] = [];
    for (const s of seen) {
      const [ma, mb] = await s.max.data();
      if (!(ma! <= 65504 && mb! <= 65504)) over.push(`A[${s.a}] max ${ma!.toExponential(2)} x B[${s.b}] max ${mb!.toExponential(2)}`);
      s.max.dispose();
    }
    const sorted = rel.map((r) => r.rel).sort((p, q) => p - q);
    const worst = [...rel].sort((p, q) => q.rel - p.rel)[0];
    console.log(`scale ${scale}: ${seen.length} f16 matMuls, ${over.length} with an operand over 65504; ${nonFinite}/${ref.length} gradients non-finite; ` +
      `relative error median ${sorted[sorted.length >> 1]?.toExponential(2)}, p90 ${sorted[Math.floor(sorted.length * 0.9)]?.toExponential(2)}, ` +
      `max ${worst?.rel.toExponential(2)} (${worst?.name})`);
    for (const o of over) console.log(`  overflow: ${o}`);
    tf.dispose(half);
  }
  tf.dispose([...ref, x, y]);
  model.dispose();
}
