/**
 * Compute precision (--precision=fp32|f16|auto): which one a backend and adapter allow, and which subgroup-matrix
 * (cooperative matrix, tensor core) shape the f16 GEMM would use. Pure choice logic; backend.ts feeds it what
 * Dawn reported and records the choice, the f16 kernels read it through computePrecision().
 * f16 needs WGSL's `enable f16;`, i.e. the adapter feature `shader-f16` (Dawn hides it on NVIDIA's Vulkan driver
 * unless the toggle vulkan_enable_f16_on_nvidia is on; backend.ts turns it on). Never falls back silently:
 * `f16` where it cannot run is a PrecisionError, `auto` says in the backend line why it stayed fp32.
 */

export type PrecisionRequest = 'fp32' | 'f16' | 'auto';
export type Precision = 'fp32' | 'f16';
export const PRECISIONS: readonly PrecisionRequest[] = ['fp32', 'f16', 'auto'];

/** One entry of Dawn's `adapter.info.subgroupMatrixConfigs` (GPUSubgroupMatrixConfig). */
export interface SubgroupMatrixConfig {
  /** Operand type: 'f16', 'f32', 'i8', ... */
  componentType: string;
  /** Accumulator/result type. */
  resultComponentType: string;
  M: number;
  N: number;
  K: number;
}

/** What the choice needs to know about the active backend. */
export interface PrecisionTarget {
  /** tfjs backend now active ('webgpu', 'wasm', ...). */
  backend: string;
  /** webgpu: the adapter's features (GPUSupportedFeatures) and subgroup-matrix configs. */
  features?: readonly string[];
  subgroupMatrixConfigs?: readonly SubgroupMatrixConfig[];
}

export interface PrecisionChoice {
  precision: Precision;
  /** f16: the usable subgroup-matrix config the adapter lists; the GEMM runs on it once selectBackend has checked it on the device. */
  subgroupMatrix?: SubgroupMatrixConfig;
  /**
   * For the backend line, e.g. `f16, subgroup-matrix 16x16x16` (selectBackend replaces it with `f16 (subgroup-matrix
   * 16x16x16 offered, unusable: ...; plain f16 kernels)` when the device fails the check) or `f16 (no subgroup matrix:
   * ...; plain f16 kernels)`; '' for fp32.
   */
  note: string;
}

export type PrecisionErrorCode = 'PRECISION_UNSUPPORTED' | 'PRECISION_UNKNOWN';

/** --precision asks for something this backend or adapter cannot do; the message names the missing feature and the fix. */
export class PrecisionError extends Error {
  readonly code: PrecisionErrorCode;
  constructor(code: PrecisionErrorCode, message: string) {
    super(message);
    this.name = 'PrecisionError';
    this.code = code;
  }
}

const SHADER_F16 = 'shader-f16';
const SUBGROUP_MATRIX = 'chromium-experimental-subgroup-matrix';
/** Device features the webgpu backend requests where the adapter offers them (beside tfjs's own). */
export const PRECISION_FEATURES: readonly string[] = [SHADER_F16, SUBGROUP_MATRIX];

/**
 * A usable subgroup-matrix config for an f16 GEMM, or why none: f16 operands, f32 accumulation preferred (f16
 * accumulation loses digits over a K of thousands), then the 16x16x16 shape ONNX Runtime uses on NVIDIA, then the
 * largest tile. Configs of other operand types (i8, f32) are not usable for f16 compute.
 */
export function pickSubgroupMatrix(features: readonly string[], configs: readonly SubgroupMatrixConfig[]):
  { config: SubgroupMatrixConfig; why?: undefined } | { config?: undefined; why: string } {
  if (!features.includes(SUBGROUP_MATRIX)) return { why: `the adapter lacks ${SUBGROUP_MATRIX} (needs Vulkan's VK_KHR_cooperative_matrix and Dawn's allow_unsafe_apis toggle)` };
  const f16 = configs.filter((c) => c.componentType === 'f16' && (c.resultComponentType === 'f32' || c.resultComponentType === 'f16'));
  if (f16.length === 0) {
    const listed = configs.map((c) => shape(c, true)).join(' ') || 'none';
    return { why: `the adapter lists no f16 subgroup-matrix config (listed: ${listed})` };
  }
  const rank = (c: SubgroupMatrixConfig) => [c.resultComponentType === 'f32' ? 1 : 0, c.M === 16 && c.N === 16 && c.K === 16 ? 1 : 0, c.M * c.N * c.K];
  const best = [...f16].sort((a, b) => {
    const [ra, rb] = [rank(a), rank(b)];
    for (let i = 0; i < ra.length; i++) if (ra[i] !== rb[i]) return rb[i]! - ra[i]!;
    return 0;
  })[0]!;
  return { config: best };
}

/** e.g. `16x16x16` or `16x16x16 f16->f32`. */
export function shape(c: SubgroupMatrixConfig, types = false): string {
  const s = `${c.M}x${c.N}x${c.K}`;
  return types ? `${s} ${c.componentType}->${c.resultComponentType}` : s;
}

/**
 * Resolves --precision for the active backend. fp32 always works; f16 only on webgpu with shader-f16 (else
 * PRECISION_UNSUPPORTED naming the feature and the fix); auto is f16 exactly where f16 would work.
 */
export function choosePrecision(requested: PrecisionRequest, target: PrecisionTarget): PrecisionChoice {
  if (!PRECISIONS.includes(requested)) {
    throw new PrecisionError('PRECISION_UNKNOWN', `unknown precision '${String(requested)}': use one of ${PRECISIONS.join(', ')}`);
  }
  if (requested === 'fp32') return { precision: 'fp32', note: '' };
  const features = target.features ?? [];
  let missing: string | undefined;
  if (target.backend !== 'webgpu') {
    missing = `the ${target.backend} backend has no f16 kernels (f16 compute is implemented for webgpu only)`;
  } else if (!features.includes(SHADER_F16)) {
    missing = `the WebGPU adapter lacks the feature ${SHADER_F16} (on NVIDIA's Vulkan driver Dawn exposes it with the toggle ` +
      'vulkan_enable_f16_on_nvidia, which this project turns on: the driver or Dawn build here does not offer it)';
  }
  if (missing !== undefined) {
    if (requested === 'auto') return { precision: 'fp32', note: `fp32 (precision auto: ${missing})` };
    throw new PrecisionError('PRECISION_UNSUPPORTED', `--precision=f16 cannot run: ${missing}. ` +
      'Use --precision=fp32 (or auto, which picks f16 only where the adapter has shader-f16), or --backend=webgpu on a GPU whose adapter lists shader-f16.');
  }
  const sm = pickSubgroupMatrix(features, target.subgroupMatrixConfigs ?? []);
  // Listed is not yet usable: selectBackend builds and checks the kernel on the device and rewrites the note if not.
  if (sm.config) return { precision: 'f16', subgroupMatrix: sm.config, note: `f16, subgroup-matrix ${shape(sm.config)}` };
  return { precision: 'f16', note: `f16 (no subgroup matrix: ${sm.why}; plain f16 kernels)` };
}

/** The precision this process computes in; set once by selectBackend, read by the kernels. */
let active: PrecisionChoice = { precision: 'fp32', note: '' };
export const computePrecision = (): PrecisionChoice => active;
/** For selectBackend and tests: the choice the kernels follow from now on. */
export function setComputePrecision(choice: PrecisionChoice): void {
  active = choice;
}

/** Depth of fp32Scope calls: inside one, the f16 kernels step aside (BatchNorm statistics, the loss's reductions). */
let fp32Depth = 0;
/** Runs `fn` with the f16 GEMM off: for sums that must stay f32 whatever --precision says (BatchNorm statistics). */
export function fp32Scope<T>(fn: () => T): T {
  fp32Depth++;
  try {
    return fn();
  } finally {
    fp32Depth--;
  }
}
/** Whether a GEMM issued now may take f16 operands. */
export const f16Wanted = (): boolean => active.precision === 'f16' && fp32Depth === 0;
