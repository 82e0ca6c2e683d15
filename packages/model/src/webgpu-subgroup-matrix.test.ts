/**
 * The subgroup-matrix GEMM's WGSL against Dawn itself. No adapter here runs subgroup matrices (lavapipe lacks
 * chromium-experimental-subgroup-matrix; tools/gpu-adapter.mjs records what a GPU offers), but Dawn's null backend
 * with allow_unsafe_apis offers the feature (with an empty config list, and it executes nothing): there Tint
 * compiles the module and Dawn validates the pipeline (the workgroup x size against maxSubgroupSize), what a GPU's
 * device does first (there also against the listed configs). Numerics are checked at start-up on a GPU that lists a config
 * (useSubgroupMatrix compares with the plain f16 GEMM before any training step uses the kernel).
 */
import { createRequire } from 'node:module';
import { afterAll, describe, expect, it } from 'vitest';
import { buildsSubgroupMatrixGemm, subgroupMatrixGemmCode, type DeviceLike, type SubgroupMatrixGemm } from './webgpu-subgroup-matrix.js';
import type { SubgroupMatrixConfig } from './precision.js';

type NullDevice = DeviceLike & { destroy(): void };
let device: NullDevice | undefined;
let subgroupMaxSize = 0;
let instance: { requestAdapter(): Promise<unknown> } | undefined;
let why = '';
try {
  const dawn = await import(createRequire(import.meta.url).resolve('webgpu')) as { create(flags: string[]): { requestAdapter(): Promise<unknown> }; globals: object };
  Object.assign(globalThis, dawn.globals);
  // Held for the whole file: a Dawn instance collected while its device lives takes the process down.
  instance = dawn.create(['backend=null', 'enable-dawn-features=allow_unsafe_apis']);
  const adapter = await instance.requestAdapter() as
    { features: Set<string>; info: { subgroupMaxSize: number }; requestDevice(d: object): Promise<NullDevice> } | null;
  if (!adapter) why = 'Dawn has no null adapter';
  else if (!adapter.features.has('chromium-experimental-subgroup-matrix')) why = 'Dawn\'s null adapter lacks chromium-experimental-subgroup-matrix';
  else {
    subgroupMaxSize = adapter.info.subgroupMaxSize;
    device = await adapter.requestDevice({ requiredFeatures: ['shader-f16', 'subgroups', 'chromium-experimental-subgroup-matrix'] });
  }
} catch (e) {
  why = `Dawn's webgpu module did not load: ${(e as Error).message}`;
}
if (why) console.warn(`SKIPPED subgroup-matrix GEMM compile tests: ${why}`);

const cfg = (n: number, result = 'f32'): SubgroupMatrixConfig => ({ componentType: 'f16', resultComponentType: result, M: n, N: n, K: n });

describe.skipIf(!!why)('subgroup-matrix GEMM on Dawn (null backend: compile and pipeline validation only)', () => {
  // Dawn's threads are stopped before the worker exits (left to process teardown they sometimes abort it).
  afterAll(() => device?.destroy());

  it.each([[cfg(16)], [cfg(8)], [cfg(16, 'f16')]])('builds for %o in every transpose case, one subgroup per workgroup', async (c) => {
    expect(await buildsSubgroupMatrixGemm(device!, { config: c, subgroupSize: subgroupMaxSize })).toBe('');
  });

  it('says why not, in Dawn\'s words, when the pipeline is invalid (a workgroup narrower than maxSubgroupSize)', async () => {
    const narrow: SubgroupMatrixGemm = { config: cfg(16), subgroupSize: subgroupMaxSize / 2 };
    expect(await buildsSubgroupMatrixGemm(device!, narrow)).toMatch(/multiple of the device maxSubgroupSize/);
  });

  it('says why not when the WGSL does not compile', async () => {
    const d = device!;
    const broken: DeviceLike = {
      features: d.features, createComputePipelineAsync: (p) => d.createComputePipelineAsync(p),
      createShaderModule: (m) => d.createShaderModule({ code: m.code.replace('subgroupMatrixMultiplyAccumulate', 'subgroupMatrixMultiplyAccumulateX') }),
    };
    expect(await buildsSubgroupMatrixGemm(broken, { config: cfg(16), subgroupSize: subgroupMaxSize })).not.toBe('');
  });

  it('stages each operand along its stored layout and writes C with bounds checks', () => {
    const code = (ta: boolean, tb: boolean) => subgroupMatrixGemmCode({ config: cfg(16), subgroupSize: 32 }, ta, tb);
    expect(code(false, false)).toContain('A[baseA + m * u.K + k]');
    expect(code(true, false)).toContain('A[baseA + k * u.M + m]');
    expect(code(false, true)).toContain('B[baseB + n * u.K + k]');
    expect(code(false, false)).toContain('if (e < 1024 && m < u.M && n < u.N)');
  });
});
