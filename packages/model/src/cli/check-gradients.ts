/**
 * `nx run model:check-gradients [--backend=webgpu]`: the layer gradient checks of the test suite, run on a
 * backend against cpu autodiff, as a table; plus the whole model's agreement with cpu. Made for machines
 * without the test toolchain (the GPU machine runs it from the bundle in .gpu/). Exit 1 when a layer fails.
 */
import { GRADIENT_CASES, MODEL_SHAPE_CASES, modelGradientAgreement, runGradientChecks } from '../gradient-check.js';
import { selectBackend } from '../backend.js';
import { runCli, type FlagSpec } from './args.js';

const FLAGS: FlagSpec[] = [
  { name: 'backend', type: 'backend', default: 'webgpu', help: 'backend to check (webgpu, wasm, cpu)' },
  { name: 'tolerance', type: 'string', default: '1e-4', help: 'largest relative error a layer may have' },
  { name: 'model-image-size', type: 'int', default: 64, min: 0, help: 'image size of the whole-model comparison (0 skips it)' },
];

await runCli('nx run model:check-gradients', 'Layer gradients on a backend vs cpu autodiff.', FLAGS, async (f) => {
  const backend = f.backend as 'webgpu' | 'wasm' | 'cpu';
  const tol = Number(f.tolerance);
  console.log((await selectBackend(backend)).line);
  const rows = await runGradientChecks(backend, [...GRADIENT_CASES, ...MODEL_SHAPE_CASES]);
  const w = Math.max(...rows.map((r) => r.name.length));
  let failed = 0;
  for (const r of rows) {
    const ok = r.exact ? r.worst === 0 : r.worst <= tol;
    if (!ok) failed++;
    console.log(`${r.name.padEnd(w)} | ${r.worst.toExponential(2).padStart(9)} | ${ok ? 'ok' : `FAIL (> ${r.exact ? 0 : tol})`}`);
  }
  const size = f['model-image-size'] as number;
  const model = backend === 'cpu' || size === 0 ? null : await modelGradientAgreement(backend, { batchSize: 4, imageSize: size });
  if (model) console.log(`whole model (batch 4, ${size} px): loss rel diff ${model.lossRel.toExponential(2)}, all-gradient rel err ${model.gradRel.toExponential(2)}, running stats rel err ${model.statsRel.toExponential(2)}`);
  console.log(JSON.stringify({ check: 'gradients', backend, tolerance: tol, failed, rows, model }));
  if (failed > 0) process.exitCode = 1;
});
