/**
 * --precision on the webgpu backend of this machine's adapter (Mesa's lavapipe in CI: it offers shader-f16 and no
 * subgroup matrices). Without any adapter it says that it skipped, and fails where GOOGLENET_REQUIRE_WEBGPU=1.
 */
import { describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { selectBackend, type BackendInfo } from './backend.js';
import { computePrecision } from './precision.js';

let info: BackendInfo | undefined;
let why = '';
try {
  info = await selectBackend('webgpu', { precision: 'auto' });
} catch (e) {
  why = (e as Error).message;
}
if (!info) {
  if (process.env.GOOGLENET_REQUIRE_WEBGPU === '1') throw new Error(`GOOGLENET_REQUIRE_WEBGPU=1 but webgpu is unavailable: ${why}`);
  console.warn(`SKIPPED webgpu precision tests: ${why}`);
}
const hasF16 = info?.adapter?.features?.includes('shader-f16') ?? false;
if (info && !hasF16) console.warn(`SKIPPED webgpu f16 tests: the adapter (${info.line}) lacks shader-f16`);

interface DeviceLike { features: Set<string>; createShaderModule(d: { code: string }): { getCompilationInfo(): Promise<{ messages: { type: string; message: string }[] }> } }
const device = (): DeviceLike => (tf.backend() as unknown as { device: DeviceLike }).device;

describe.skipIf(!info || !hasF16)('webgpu precision on an adapter with shader-f16', () => {
  it('auto picks f16, reads the subgroup-matrix configs, and the backend line says f16 and which GEMM', () => {
    expect(info!.precision.precision).toBe('f16');
    expect(computePrecision()).toBe(info!.precision);
    expect(Array.isArray(info!.adapter!.subgroupMatrixConfigs)).toBe(true);
    if (info!.precision.subgroupMatrix) {
      // Used where this device builds and checks the kernel; else the line says why not.
      expect(info!.line).toMatch(/^backend: webgpu f16(, subgroup-matrix \d+x\d+x\d+| \(subgroup-matrix \d+x\d+x\d+ offered, unusable: .+; plain f16 kernels\)) on /);
    } else {
      expect(info!.line).toMatch(/^backend: webgpu f16 \(no subgroup matrix: .+; plain f16 kernels\) on /);
    }
  });

  it('runs tfjs on a device that has shader-f16 (our factory, not tfjs\'s), where `enable f16;` WGSL compiles', async () => {
    expect(device().features.has('shader-f16')).toBe(true);
    const m = device().createShaderModule({ code: 'enable f16;\n@compute @workgroup_size(1) fn main() { let h: f16 = 1.5h; _ = h * h; }' });
    const errors = (await m.getCompilationInfo()).messages.filter((x) => x.type === 'error');
    expect(errors).toEqual([]);
    expect(await tf.add(tf.ones([4]), 1).data()).toEqual(new Float32Array([2, 2, 2, 2]));
  });

  it('--precision=f16 is refused with PRECISION_UNSUPPORTED on wasm, the backend already chosen staying usable', async () => {
    await expect(selectBackend('wasm', { precision: 'f16' })).rejects.toMatchObject({ code: 'PRECISION_UNSUPPORTED' });
    const again = await selectBackend('webgpu', { precision: 'f16' });
    expect(again.precision.precision).toBe('f16');
  });
});
