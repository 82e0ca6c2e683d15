import { describe, expect, it } from 'vitest';
import { choosePrecision, pickSubgroupMatrix, PrecisionError, type SubgroupMatrixConfig } from './precision.js';
import { DAWN_TOGGLES, dawnFlags } from './backend.js';

const F16 = ['shader-f16', 'timestamp-query'];
const SM = [...F16, 'chromium-experimental-subgroup-matrix'];
const cfg = (componentType: string, resultComponentType: string, M: number, N = M, K = M): SubgroupMatrixConfig =>
  ({ componentType, resultComponentType, M, N, K });

const codeOf = (f: () => unknown): string | undefined => {
  try {
    f();
  } catch (e) {
    expect(e).toBeInstanceOf(PrecisionError);
    return (e as PrecisionError).code;
  }
  return undefined;
};

describe('choosePrecision', () => {
  it('keeps fp32 on every backend with nothing to say in the backend line', () => {
    for (const backend of ['webgpu', 'wasm', 'cpu']) expect(choosePrecision('fp32', { backend })).toEqual({ precision: 'fp32', note: '' });
  });

  it('refuses f16 on wasm and cpu with PRECISION_UNSUPPORTED, naming why and the fix', () => {
    for (const backend of ['wasm', 'cpu', 'tensorflow']) {
      expect(codeOf(() => choosePrecision('f16', { backend }))).toBe('PRECISION_UNSUPPORTED');
      expect(() => choosePrecision('f16', { backend })).toThrow(/webgpu only.*--precision=fp32/);
    }
  });

  it('refuses f16 on a webgpu adapter without shader-f16, naming the feature and the NVIDIA toggle', () => {
    expect(codeOf(() => choosePrecision('f16', { backend: 'webgpu', features: ['timestamp-query'] }))).toBe('PRECISION_UNSUPPORTED');
    expect(() => choosePrecision('f16', { backend: 'webgpu', features: [] })).toThrow(/lacks the feature shader-f16.*vulkan_enable_f16_on_nvidia/);
  });

  it('resolves auto to f16 exactly where shader-f16 is offered, and to fp32 with the reason elsewhere', () => {
    expect(choosePrecision('auto', { backend: 'webgpu', features: F16 }).precision).toBe('f16');
    const wasm = choosePrecision('auto', { backend: 'wasm' });
    expect(wasm.precision).toBe('fp32');
    expect(wasm.note).toMatch(/^fp32 \(precision auto: the wasm backend has no f16 kernels/);
    expect(choosePrecision('auto', { backend: 'webgpu', features: ['subgroups'] }).note).toMatch(/lacks the feature shader-f16/);
  });

  it('names the usable subgroup-matrix shape the adapter lists (the GEMM to check on the device), or why there is none', () => {
    const sm = choosePrecision('f16', { backend: 'webgpu', features: SM, subgroupMatrixConfigs: [cfg('f16', 'f32', 16)] });
    expect(sm).toEqual({ precision: 'f16', subgroupMatrix: cfg('f16', 'f32', 16), note: 'f16, subgroup-matrix 16x16x16' });
    const none = choosePrecision('f16', { backend: 'webgpu', features: F16, subgroupMatrixConfigs: [] });
    expect(none.subgroupMatrix).toBeUndefined();
    expect(none.note).toBe('f16 (no subgroup matrix: the adapter lacks chromium-experimental-subgroup-matrix (needs Vulkan\'s ' +
      'VK_KHR_cooperative_matrix and Dawn\'s allow_unsafe_apis toggle); plain f16 kernels)');
  });

  it('rejects an unknown precision with PRECISION_UNKNOWN', () => {
    expect(codeOf(() => choosePrecision('bf16' as 'f16', { backend: 'webgpu', features: F16 }))).toBe('PRECISION_UNKNOWN');
  });
});

describe('pickSubgroupMatrix', () => {
  it('prefers f16 operands with f32 accumulation, then 16x16x16, then the largest tile', () => {
    const configs = [cfg('f32', 'f32', 8), cfg('f16', 'f16', 16), cfg('f16', 'f32', 8), cfg('f16', 'f32', 32, 8, 16), cfg('f16', 'f32', 16)];
    expect(pickSubgroupMatrix(SM, configs).config).toEqual(cfg('f16', 'f32', 16));
    expect(pickSubgroupMatrix(SM, configs.slice(0, 4)).config).toEqual(cfg('f16', 'f32', 32, 8, 16));
    expect(pickSubgroupMatrix(SM, configs.slice(0, 2)).config).toEqual(cfg('f16', 'f16', 16));
  });

  it('finds none usable among integer or f32-only configs and lists what was offered', () => {
    expect(pickSubgroupMatrix(SM, [cfg('i8', 'i32', 8), cfg('f32', 'f32', 8)]).why)
      .toBe('the adapter lists no f16 subgroup-matrix config (listed: 8x8x8 i8->i32 8x8x8 f32->f32)');
    expect(pickSubgroupMatrix(F16, [cfg('f16', 'f32', 16)]).why).toMatch(/lacks chromium-experimental-subgroup-matrix/);
  });
});

describe('dawnFlags', () => {
  it('turns on the f16 and unsafe-API toggles, merged with GOOGLENET_DAWN_FLAGS\' own toggles and adapter=', () => {
    expect(dawnFlags({})).toEqual([`enable-dawn-features=${DAWN_TOGGLES.join(',')}`]);
    expect(dawnFlags({ GOOGLENET_WEBGPU_ADAPTER: 'H200', GOOGLENET_DAWN_FLAGS: 'enable-dawn-features=skip_validation,allow_unsafe_apis backend=vulkan' }))
      .toEqual(['adapter=H200', 'backend=vulkan', 'enable-dawn-features=allow_unsafe_apis,vulkan_enable_f16_on_nvidia,skip_validation']);
  });
});
