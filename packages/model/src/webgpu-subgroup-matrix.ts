/**
 * The f16 GEMM on subgroup matrices (Dawn's `chromium-experimental-subgroup-matrix`: Vulkan's cooperative matrices,
 * tensor cores on NVIDIA), used where the adapter lists a usable f16 config (precision.ts: pickSubgroupMatrix) AND
 * the kernel passes a check at start-up on this device: its pipeline is created without a validation error, and a
 * ragged 37x45x70 product matches the plain f16 GEMM within the f16 bound. Otherwise the plain f16 kernels run and
 * the backend line says why (chooseF16Gemm). Same numerics as the plain kernel: operands rounded to f16 as they are
 * staged in workgroup memory, products accumulated in the config's result type (f32 preferred).
 *
 * One workgroup is ONE subgroup (workgroup_size = the adapter's subgroupMaxSize, which Dawn requires the x size to
 * be a multiple of): every load offset then depends only on the workgroup id and loop counters, so the calls are
 * in workgroup-uniform control flow as WGSL's uniformity rule for subgroup matrices demands, with no subgroup_id
 * arithmetic. It computes a (TM x M) x (TN x N) tile of C as TM x TN result matrices.
 */
import * as tf from '@tensorflow/tfjs';
import type { SubgroupMatrixConfig } from './precision.js';
import { encodeDispatch } from './webgpu-kernels.js';

/** Result matrices per workgroup along M and N: a 2 x 2 block reuses each staged A and B tile twice. */
const TM = 2;
const TN = 2;
/** K slices of cfg.K staged per barrier. */
const KS = 2;

export interface SubgroupMatrixGemm {
  config: SubgroupMatrixConfig;
  /** Invocations per workgroup: the adapter's subgroupMaxSize. */
  subgroupSize: number;
}

/** Output rows and columns one workgroup computes. */
export const tileOf = (g: SubgroupMatrixGemm): [number, number] => [TM * g.config.M, TN * g.config.N];

/**
 * WGSL of C[b] = op(A[b]) op(B[b]) (transposes as matMulF16's; same bindings and uniforms: M, N, K, strideA,
 * strideB). A and B are f32 in storage (tfjs has no f16 tensors): each slice is converted into row-major f16 tiles
 * in workgroup memory, zero-padded at the edges, then loaded as subgroup matrices; the result matrices go through a
 * workgroup tile so that ragged edges are written with bounds checks.
 */
export function subgroupMatrixGemmCode(g: SubgroupMatrixGemm, ta: boolean, tb: boolean): string {
  const { M, N, K, resultComponentType: acc } = g.config;
  const [BM, BN] = tileOf(g);
  const BK = KS * K;
  const sg = g.subgroupSize;
  const perA = Math.ceil((BM * BK) / sg);
  const perB = Math.ceil((BK * BN) / sg);
  const perC = Math.ceil((BM * BN) / sg);
  const aAt = ta ? 'k * u.M + m' : 'm * u.K + k';
  const bAt = tb ? 'n * u.K + k' : 'k * u.N + n';
  return `enable f16;
  enable chromium_experimental_subgroup_matrix;
  @group(0) @binding(0) var<storage, read> A : array<f32>;
  @group(0) @binding(1) var<storage, read> B : array<f32>;
  @group(0) @binding(2) var<storage, read_write> C : array<f32>;
  struct U { M : i32, N : i32, K : i32, strideA : i32, strideB : i32, };
  @group(0) @binding(3) var<uniform> u : U;
  var<workgroup> As : array<f16, ${BM * BK}>; // [BM][BK] row-major
  var<workgroup> Bs : array<f16, ${BK * BN}>; // [BK][BN] row-major
  var<workgroup> Cs : array<${acc}, ${BM * BN}>; // [BM][BN] row-major
  @compute @workgroup_size(${sg}, 1, 1)
  fn main(@builtin(local_invocation_index) lid : u32, @builtin(workgroup_id) wid : vec3<u32>) {
    let t = i32(lid);
    let m0 = i32(wid.y) * ${BM};
    let n0 = i32(wid.x) * ${BN};
    let baseA = i32(wid.z) * u.strideA;
    let baseB = i32(wid.z) * u.strideB;
    var acc : array<subgroup_matrix_result<${acc}, ${N}, ${M}>, ${TM * TN}>;
    for (var k0 = 0; k0 < u.K; k0 += ${BK}) {
      for (var j = 0; j < ${perA}; j++) {
        let e = t + j * ${sg};
        if (e < ${BM * BK}) {
          let m = m0 + e / ${BK};
          let k = k0 + e % ${BK};
          var v = 0.0;
          if (m < u.M && k < u.K) { v = A[baseA + ${aAt}]; }
          As[e] = f16(v);
        }
      }
      for (var j = 0; j < ${perB}; j++) {
        let e = t + j * ${sg};
        if (e < ${BK * BN}) {
          let k = k0 + e / ${BN};
          let n = n0 + e % ${BN};
          var v = 0.0;
          if (n < u.N && k < u.K) { v = B[baseB + ${bAt}]; }
          Bs[e] = f16(v);
        }
      }
      workgroupBarrier();
      for (var ks = 0u; ks < ${BK}u; ks += ${K}u) {
        for (var i = 0u; i < ${TM}u; i++) {
          let a = subgroupMatrixLoad<subgroup_matrix_left<f16, ${K}, ${M}>, row_major>(&As, i * ${M * BK}u + ks, ${BK}u);
          for (var jn = 0u; jn < ${TN}u; jn++) {
            let b = subgroupMatrixLoad<subgroup_matrix_right<f16, ${N}, ${K}>, row_major>(&Bs, ks * ${BN}u + jn * ${N}u, ${BN}u);
            acc[i * ${TN}u + jn] = subgroupMatrixMultiplyAccumulate(a, b, acc[i * ${TN}u + jn]);
          }
        }
      }
      workgroupBarrier();
    }
    for (var i = 0u; i < ${TM}u; i++) {
      for (var jn = 0u; jn < ${TN}u; jn++) {
        subgroupMatrixStore<row_major>(&Cs, i * ${M * BN}u + jn * ${N}u, acc[i * ${TN}u + jn], ${BN}u);
      }
    }
    workgroupBarrier();
    let base = i32(wid.z) * u.M * u.N;
    for (var j = 0; j < ${perC}; j++) {
      let e = t + j * ${sg};
      let m = m0 + e / ${BN};
      let n = n0 + e % ${BN};
      if (e < ${BM * BN} && m < u.M && n < u.N) { C[base + m * u.N + n] = f32(Cs[e]); }
    }
  }`;
}

/** matMulF16's dispatch with the subgroup-matrix module: same operands, same output. */
export function dispatchSubgroupMatrixGemm(g: SubgroupMatrixGemm, dataIds: unknown[], uniforms: { type: string; data: number[] }[],
  m: number, n: number, batch: number, ta: boolean, tb: boolean): void {
  const [BM, BN] = tileOf(g);
  const { M, N, K } = g.config;
  encodeDispatch(`gnMatMulSgm${M}x${N}x${K}_${ta ? 1 : 0}${tb ? 1 : 0}`, () => subgroupMatrixGemmCode(g, ta, tb), dataIds, uniforms,
    [Math.ceil(n / BN), Math.ceil(m / BM), batch]);
}

export interface DeviceLike {
  features: { has(f: string): boolean };
  createShaderModule(d: { code: string }): unknown;
  createComputePipelineAsync(d: object): Promise<unknown>;
}

/**
 * Whether this device builds the subgroup-matrix GEMM: '' when its pipeline is created in every transpose case
 * (Tint compiles the module; Dawn checks that the matrix types are a listed config and that the workgroup x size is
 * a multiple of subgroupMaxSize), else Dawn's first line on why not (a GPUPipelineError's message).
 */
export async function buildsSubgroupMatrixGemm(device: DeviceLike, g: SubgroupMatrixGemm): Promise<string> {
  if (!device.features.has('chromium-experimental-subgroup-matrix')) return 'the device was created without chromium-experimental-subgroup-matrix';
  for (const [ta, tb] of [[false, false], [true, false], [false, true]] as const) {
    const module = device.createShaderModule({ code: subgroupMatrixGemmCode(g, ta, tb) });
    try {
      await device.createComputePipelineAsync({ layout: 'auto', compute: { module, entryPoint: 'main' } });
    } catch (e) {
      return String((e as Error).message ?? e).split('\n')[0]!.trim();
    }
  }
  return '';
}

/** Handle on the active tfjs webgpu backend's device. */
export const webgpuDevice = (): DeviceLike => (tf.backend() as unknown as { device: DeviceLike }).device;
