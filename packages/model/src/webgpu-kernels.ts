/**
 * Our own WGSL kernels for the webgpu backend, run through tfjs-backend-webgpu's program runner. They do what
 * native.ts does for wasm: replace stock kernels that are wrong for us or take many dispatches (a TF.js GPU
 * step is bound by dispatch count: 3,494 per GoogLeNet training step with stock kernels, ~1,100 with these).
 *   maxPoolGrad  the stock MaxPoolGrad sends a window's gradient to its LAST maximum; PyTorch, tfjs-cpu and
 *                our native kernel send it to the FIRST (row-major). GoogLeNet's small deep maps are full of
 *                exact ties (pools of maps smaller than the window repeat values), so the stock kernel changed
 *                trunk gradients by up to 2 %. One dispatch instead of two.
 *   bnStats / bnReluForward / bnReluBackward / bnRunning   BatchNorm+ReLU in training: 8 dispatches a layer
 *                instead of ~30 (channel sums as a matMul by a row vector: no transpose + reduce).
 *   im2col / col2im   conv gradients as one matMul each (the stock filter gradient was three transposes and a
 *                conv whose filter is the whole output map), in batch chunks under the binding limit.
 *   sgdStep      in-place SGD with momentum: one dispatch per 2-3 parameters (weights and momentum), no new tensors.
 * Kernels writing several tensors are dispatched by directDispatch, into tfjs's own compute pass; it tells a step
 * capture (webgpu-replay.ts) which uniforms change from step to step (sgdStep's learning rate).
 * Every function returns null (or false) when webgpu is not the active backend; callers fall back to tfjs ops.
 */
import * as tf from '@tensorflow/tfjs';
import { noteStepScalar } from './webgpu-replay.js';
import { fp32Scope } from './precision.js';

/** The subset of tfjs-backend-webgpu's program interface we use (webgpu_program.ts). */
interface Program {
  variableNames: string[];
  outputShape: number[];
  shaderKey: string;
  dispatchLayout: { x: number[]; y?: number[]; z?: number[] };
  dispatch: [number, number, number];
  workgroupSize: [number, number, number];
  size?: boolean;
  uniforms?: string;
  getUserCode(): string;
}

interface WebGPUBackendLike {
  runWebGPUProgram(p: Program, inputs: tf.TensorInfo[], dtype: tf.DataType, uniforms?: { type: string; data: number[] }[]): tf.TensorInfo;
}

interface WebGPUUtil {
  flatDispatchLayout(shape: number[]): { x: number[] };
  computeDispatch(layout: { x: number[] }, shape: number[], workgroup: [number, number, number]): [number, number, number];
}

let util: WebGPUUtil | undefined;
/** Called by selectBackend once tfjs-backend-webgpu is loaded (it is an optional dependency: never imported statically). */
export function registerWebgpuModule(mod: Record<string, unknown>): void {
  util = mod.webgpu_util as WebGPUUtil;
}

/** GOOGLENET_WEBGPU_KERNELS=0 runs tfjs's stock kernels instead (A/B measurements; max-pool ties then go last). */
const disabled = process.env.GOOGLENET_WEBGPU_KERNELS === '0';
export const webgpuActive = (): boolean => !disabled && util !== undefined && tf.getBackend() === 'webgpu';

/** Dispatch counter: every program run, ours or stock (installed by countDispatches). */
let dispatches = 0;
let counting = false;
/**
 * Counts compute dispatches on the webgpu backend from now on (wraps runWebGPUProgram once; the stock
 * kernels go through it too). Returns a reader; for the bench's "dispatches per step".
 */
export function countDispatches(): () => number {
  if (!counting && util !== undefined && tf.getBackend() === 'webgpu') {
    const be = tf.backend() as unknown as WebGPUBackendLike;
    const run = be.runWebGPUProgram.bind(be);
    be.runWebGPUProgram = (...args) => {
      dispatches++;
      return run(...args);
    };
    counting = true;
  }
  return () => dispatches;
}

const FLAT: [number, number, number] = [64, 1, 1];

/**
 * tf.profile / tf.time name a webgpu program by its constructor: give ours theirs (gnBnReluForward, ...). One
 * prototype per name, made once: a fresh prototype per dispatch would make every program object a new
 * hidden class and the runner's property reads megamorphic (measured: ~8 us per dispatch).
 */
const prototypes = new Map<string, object>();
function named(key: string, p: Program): Program {
  const name = key.split('_')[0]!;
  let proto = prototypes.get(name);
  if (!proto) prototypes.set(name, (proto = { constructor: { name } }));
  return Object.assign(Object.create(proto) as Program, p);
}

function runProgram(p: Omit<Program, 'dispatchLayout' | 'dispatch' | 'workgroupSize' | 'size'>, inputs: tf.Tensor[],
  uniforms: { type: string; data: number[] }[]): tf.Tensor {
  const layout = util!.flatDispatchLayout(p.outputShape);
  const program: Program = named(p.shaderKey, { ...p, dispatchLayout: layout, dispatch: util!.computeDispatch(layout, p.outputShape, FLAT), workgroupSize: FLAT, size: true });
  const info = (tf.backend() as unknown as WebGPUBackendLike).runWebGPUProgram(program, inputs, 'float32', uniforms);
  return tf.engine().makeTensorFromTensorInfo(info);
}

/**
 * dL/dx of a k x k max-pool with stride s over x [N, H, W, C] (`padTop`/`padLeft` virtual -Infinity rows/cols
 * before the map, windows clipped at the far edges), given dy [N, Ho, Wo, C]. Each input element sums dy over
 * the windows whose first maximum (row-major) it is.
 */
export function maxPoolGrad(x: tf.Tensor4D, dy: tf.Tensor4D, k: number, stride: number, padTop: number, padLeft: number): tf.Tensor4D | null {
  if (!webgpuActive()) return null;
  const [, ho, wo] = dy.shape;
  return runProgram({
    variableNames: ['x', 'dy'],
    outputShape: x.shape,
    shaderKey: `gnMaxPoolGrad_${k}_${stride}_${padTop}_${padLeft}`,
    uniforms: 'outH : i32, outW : i32,',
    getUserCode: () => `
      fn firstMax(b : i32, oh : i32, ow : i32, c : i32) -> i32 {
        let H = uniforms.xShape[1];
        let W = uniforms.xShape[2];
        let C = uniforms.xShape[3];
        let r0 = oh * ${stride} - ${padTop};
        let c0 = ow * ${stride} - ${padLeft};
        var best = -uniforms.INFINITY;
        var at = -1;
        for (var r = max(r0, 0); r < min(r0 + ${k}, H); r++) {
          for (var q = max(c0, 0); q < min(c0 + ${k}, W); q++) {
            let i = ((b * H + r) * W + q) * C + c;
            let v = x[i];
            if (v > best || at < 0) { best = v; at = i; }
          }
        }
        return at;
      }
      fn main(index : i32) {
        if (index < uniforms.size) {
          let coords = getCoordsFromIndex(index);
          let b = coords[0];
          let ih = coords[1];
          let iw = coords[2];
          let c = coords[3];
          let C = uniforms.xShape[3];
          // Windows containing row ih: oh*s - padTop <= ih < oh*s - padTop + k.
          let ohLo = max(0, (ih + ${padTop} - ${k} + ${stride}) / ${stride});
          let ohHi = min(uniforms.outH - 1, (ih + ${padTop}) / ${stride});
          let owLo = max(0, (iw + ${padLeft} - ${k} + ${stride}) / ${stride});
          let owHi = min(uniforms.outW - 1, (iw + ${padLeft}) / ${stride});
          var sum = 0.0;
          for (var oh = ohLo; oh <= ohHi; oh++) {
            for (var ow = owLo; ow <= owHi; ow++) {
              if (firstMax(b, oh, ow, c) == index) {
                sum += dy[((b * uniforms.outH + oh) * uniforms.outW + ow) * C + c];
              }
            }
          }
          setOutputAtIndex(index, sum);
        }
      }`,
  }, [x, dy], [{ type: 'int32', data: [ho] }, { type: 'int32', data: [wo] }]) as tf.Tensor4D;
}

/**
 * Row vectors [1, M] of ones and of 1/M, kept per (M, backend): a channel sum or mean over M rows of an
 * [M, C] map is then one matMul (tfjs's tuned split-K kernels) instead of a transpose plus a reduction.
 */
const rowVectors = new Map<string, tf.Tensor2D>();
function rowVector(m: number, value: 'ones' | 'mean'): tf.Tensor2D {
  const key = `${tf.getBackend()}/${m}/${value}`;
  let v = rowVectors.get(key);
  if (!v) {
    v = tf.keep(tf.fill([1, m], value === 'ones' ? 1 : 1 / m)) as tf.Tensor2D;
    rowVectors.set(key, v);
  }
  return v;
}

/** Per-channel mean and biased variance of x [..., C] (two passes, as the cpu path): 3 dispatches. */
export function bnStats(x: tf.Tensor): [tf.Tensor1D, tf.Tensor1D] | null {
  if (!webgpuActive()) return null;
  const c = x.shape[x.rank - 1]!;
  const m = x.size / c;
  const x2 = x.reshape([m, c]) as tf.Tensor2D;
  // BatchNorm statistics stay f32 under --precision=f16 (as AMP keeps them): these sums never take f16 operands.
  const mean = fp32Scope(() => tf.matMul(rowVector(m, 'mean'), x2));
  const variance = fp32Scope(() => tf.matMul(rowVector(m, 'mean'), tf.squaredDifference(x2, mean) as tf.Tensor2D));
  return [mean.reshape([c]) as tf.Tensor1D, variance.reshape([c]) as tf.Tensor1D];
}

const BN_HELPERS = (eps: number) => `
  fn rstd(c : i32) -> f32 { return inverseSqrt(variance[c] + ${eps.toExponential()}); }
`;

/** y = relu(gamma * (x - mean) / sqrt(var + eps) + beta): one dispatch (tfjs: BatchNorm then Relu). */
export function bnReluForward(x: tf.Tensor4D, mean: tf.Tensor1D, variance: tf.Tensor1D, gamma: tf.Tensor1D, beta: tf.Tensor1D, eps: number): tf.Tensor4D | null {
  if (!webgpuActive()) return null;
  const c = x.shape[3];
  return runProgram({
    variableNames: ['x', 'mean', 'variance', 'gamma', 'beta'],
    outputShape: [x.size / c, c],
    shaderKey: `gnBnReluForward_${eps}`,
    getUserCode: () => `${BN_HELPERS(eps)}
      fn main(index : i32) {
        if (index < uniforms.size) {
          let c = index % uniforms.outShape[1];
          let v = (x[index] - mean[c]) * rstd(c) * gamma[c] + beta[c];
          setOutputAtIndex(index, max(v, 0.0));
        }
      }`,
  }, [x, mean, variance, gamma, beta], []).reshape(x.shape) as tf.Tensor4D;
}

/**
 * Backward of relu(batchNorm(x)) in training: g = dy * (y > 0); dbeta = sum(g); dgamma = sum(g * xhat);
 * dx = gamma * rstd * (g - dbeta / M - xhat * dgamma / M). One kernel writes [g | g * xhat] as [M, 2C], one
 * matMul by a row of ones sums both, one kernel writes dx and one splits dbeta and dgamma out of the sums:
 * 4 dispatches instead of ~18.
 */
export function bnReluBackward(x: tf.Tensor4D, y: tf.Tensor4D, dy: tf.Tensor4D, mean: tf.Tensor1D, variance: tf.Tensor1D,
  gamma: tf.Tensor1D, eps: number): [tf.Tensor4D, tf.Tensor1D, tf.Tensor1D] | null {
  if (!webgpuActive()) return null;
  const c = x.shape[3];
  const m = x.size / c;
  const prep = runProgram({
    variableNames: ['x', 'y', 'dy', 'mean', 'variance'],
    outputShape: [m, 2 * c],
    shaderKey: `gnBnReluGradPrep_${eps}`,
    getUserCode: () => `${BN_HELPERS(eps)}
      fn main(index : i32) {
        if (index < uniforms.size) {
          let C2 = uniforms.outShape[1];
          let C = C2 / 2;
          let row = index / C2;
          let j = index % C2;
          let c = select(j, j - C, j >= C);
          let i = row * C + c;
          let g = select(0.0, dy[i], y[i] > 0.0);
          setOutputAtIndex(index, select(g, g * (x[i] - mean[c]) * rstd(c), j >= C));
        }
      }`,
  }, [x, y, dy, mean, variance], []) as tf.Tensor2D;
  const sums = fp32Scope(() => tf.matMul(rowVector(m, 'ones'), prep)); // [1, 2C]: dbeta | dgamma, f32 at any precision
  const dx = runProgram({
    variableNames: ['x', 'y', 'dy', 'mean', 'variance', 'gamma', 'sums'],
    outputShape: [m, c],
    shaderKey: `gnBnReluGradInput_${eps}`,
    uniforms: 'count : f32,',
    getUserCode: () => `${BN_HELPERS(eps)}
      fn main(index : i32) {
        if (index < uniforms.size) {
          let C = uniforms.outShape[1];
          let c = index % C;
          let g = select(0.0, dy[index], y[index] > 0.0);
          let xhat = (x[index] - mean[c]) * rstd(c);
          let v = gamma[c] * rstd(c) * (g - sums[c] / uniforms.count - xhat * sums[C + c] / uniforms.count);
          setOutputAtIndex(index, v);
        }
      }`,
  }, [x, y, dy, mean, variance, gamma, sums], [{ type: 'float32', data: [m] }]);
  // dbeta and dgamma out of [1, 2C] in one dispatch (two slices otherwise).
  const dbeta = output([c]) as tf.Tensor1D;
  const dgamma = output([c]) as tf.Tensor1D;
  directDispatch('gnBnSplitSums', () => `
    @group(0) @binding(0) var<storage, read> sums : array<f32>;
    @group(0) @binding(1) var<storage, read_write> dbeta : array<f32>;
    @group(0) @binding(2) var<storage, read_write> dgamma : array<f32>;
    struct U { c : i32, };
    @group(0) @binding(3) var<uniform> u : U;
    ${DIRECT_MAIN}
      if (i < u.c) { dbeta[i] = sums[i]; dgamma[i] = sums[u.c + i]; }
    }`, [sums, dbeta, dgamma], [{ type: 'int32', data: [c] }], c);
  return [dx.reshape(x.shape) as tf.Tensor4D, dgamma, dbeta];
}

/**
 * BatchNorm's running statistics after a training batch, both in one dispatch: mean' = keep * mean + m * batch
 * mean, var' = keep * var + u * batch variance (u: momentum with the unbiasing factor). Null off webgpu.
 */
export function bnRunning(runMean: tf.Tensor1D, runVar: tf.Tensor1D, mean: tf.Tensor1D, variance: tf.Tensor1D,
  keep: number, m: number, u: number): [tf.Tensor1D, tf.Tensor1D] | null {
  if (!webgpuActive()) return null;
  const c = mean.size;
  const newMean = output([c]) as tf.Tensor1D;
  const newVar = output([c]) as tf.Tensor1D;
  directDispatch('gnBnRunning', () => `
    @group(0) @binding(0) var<storage, read> rm : array<f32>;
    @group(0) @binding(1) var<storage, read> rv : array<f32>;
    @group(0) @binding(2) var<storage, read> bm : array<f32>;
    @group(0) @binding(3) var<storage, read> bv : array<f32>;
    @group(0) @binding(4) var<storage, read_write> om : array<f32>;
    @group(0) @binding(5) var<storage, read_write> ov : array<f32>;
    struct U { c : i32, keep : f32, m : f32, u : f32, };
    @group(0) @binding(6) var<uniform> u : U;
    ${DIRECT_MAIN}
      if (i < u.c) { om[i] = rm[i] * u.keep + bm[i] * u.m; ov[i] = rv[i] * u.keep + bv[i] * u.u; }
    }`, [runMean, runVar, mean, variance, newMean, newVar],
  [{ type: 'int32', data: [c] }, { type: 'float32', data: [keep] }, { type: 'float32', data: [m] }, { type: 'float32', data: [u] }], c);
  return [newMean, newVar];
}

/** A new float32 tensor whose GPU buffer our own dispatches write (tfjs allocates it on first binding). */
export function output(shape: number[]): tf.Tensor {
  const be = tf.backend() as unknown as { makeTensorInfo(shape: number[], dtype: tf.DataType): tf.TensorInfo };
  return tf.engine().makeTensorFromTensorInfo(be.makeTensorInfo(shape, 'float32'));
}

/**
 * NHWC im2col: x [N, H, W, C] -> [N*Ho*Wo, k*k*C], columns in (kh, kw, C) order (as native.ts), zero padding.
 * With it a conv's filter gradient is ONE matMul (transposed A inside the kernel): the stock path was three
 * transposes plus a conv whose "filter" is the whole output map.
 */
export function im2col(x: tf.Tensor4D, k: number, stride: number, pad: number, ho: number, wo: number): tf.Tensor2D | null {
  if (!webgpuActive()) return null;
  const [n, , , c] = x.shape;
  return runProgram({
    variableNames: ['x'],
    outputShape: [n * ho * wo, k * k * c],
    shaderKey: `gnIm2col_${k}_${stride}_${pad}`,
    uniforms: 'ho : i32, wo : i32,',
    getUserCode: () => `
      fn main(index : i32) {
        if (index < uniforms.size) {
          let H = uniforms.xShape[1];
          let W = uniforms.xShape[2];
          let C = uniforms.xShape[3];
          let KC = ${k} * C;
          let row = index / (${k} * KC);
          let col = index % (${k} * KC);
          let kh = col / KC;
          let kw = (col % KC) / C;
          let c = col % C;
          let b = row / (uniforms.ho * uniforms.wo);
          let oh = (row / uniforms.wo) % uniforms.ho;
          let ow = row % uniforms.wo;
          let h = oh * ${stride} - ${pad} + kh;
          let w = ow * ${stride} - ${pad} + kw;
          var v = 0.0;
          if (h >= 0 && h < H && w >= 0 && w < W) { v = x[((b * H + h) * W + w) * C + c]; }
          setOutputAtIndex(index, v);
        }
      }`,
  }, [x], [{ type: 'int32', data: [ho] }, { type: 'int32', data: [wo] }]) as tf.Tensor2D;
}

/** The adjoint of im2col: dcols [N*Ho*Wo, k*k*C] -> dx [N, H, W, C], each pixel gathering its k*k taps (no atomics). */
export function col2im(dcols: tf.Tensor2D, xShape: [number, number, number, number], k: number, stride: number, pad: number,
  ho: number, wo: number): tf.Tensor4D | null {
  if (!webgpuActive()) return null;
  return runProgram({
    variableNames: ['dcols'],
    outputShape: xShape,
    shaderKey: `gnCol2im_${k}_${stride}_${pad}`,
    uniforms: 'ho : i32, wo : i32,',
    getUserCode: () => `
      fn main(index : i32) {
        if (index < uniforms.size) {
          let coords = getCoordsFromIndex(index);
          let b = coords[0];
          let h = coords[1];
          let w = coords[2];
          let c = coords[3];
          let C = uniforms.outShape[3];
          let KKC = ${k * k} * C;
          var sum = 0.0;
          for (var kh = 0; kh < ${k}; kh++) {
            let th = h + ${pad} - kh;
            if (th < 0 || th % ${stride} != 0) { continue; }
            let oh = th / ${stride};
            if (oh >= uniforms.ho) { continue; }
            for (var kw = 0; kw < ${k}; kw++) {
              let tw = w + ${pad} - kw;
              if (tw < 0 || tw % ${stride} != 0) { continue; }
              let ow = tw / ${stride};
              if (ow >= uniforms.wo) { continue; }
              sum += dcols[((b * uniforms.ho + oh) * uniforms.wo + ow) * KKC + (kh * ${k} + kw) * C + c];
            }
          }
          setOutputAtIndex(index, sum);
        }
      }`,
  }, [dcols], [{ type: 'int32', data: [ho] }, { type: 'int32', data: [wo] }]) as tf.Tensor4D;
}

/** Whether `t` alone owns its GPU buffer (writing it in place changes no other tensor). */
function ownsBuffer(t: tf.Tensor): boolean {
  const map = (tf.backend() as unknown as { tensorMap: { get(id: unknown): { refCount?: number } | undefined } }).tensorMap;
  return (map.get(t.dataId)?.refCount ?? 1) === 1;
}

/** The parts of tfjs-backend-webgpu's backend that a dispatch outside its program runner must go through. */
interface BackendInternals {
  device: GPUDevice;
  commandEncoder: GPUCommandEncoder | null;
  computePassEncoder: GPUComputePassEncoder | null;
  dispatchCountInPass: number;
  commandQueueOwnedIds: WeakSet<object>;
  tensorMap: { get(id: unknown): { resource?: unknown } | undefined };
  uploadToGPU(dataId: unknown): void;
  ensureCommandEncoderReady(): void;
  endComputePassEncoder(): void;
  submitQueue(): void;
  makeUniforms(u: { type: string; data: number[] }[]): GPUBufferBinding;
  /** Set inside tf.time (a profiled step): each timed dispatch gets its own pass with timestamp writes. */
  activeTimers: { name: string; query: Promise<number> }[] | null;
  supportTimestampQuery: boolean;
  querySet: GPUQuerySet | null;
  querySetCount: number;
  getQueryTime(): Promise<number>;
}

const pipelines = new Map<string, GPUComputePipeline>();
const WG = 256;
/** The entry of every directDispatch kernel, up to its body: `i` is the thread's flat index in directDispatch's 2-D grid. */
const DIRECT_MAIN = `@compute @workgroup_size(${WG})
  fn main(@builtin(global_invocation_id) gid : vec3<u32>, @builtin(num_workgroups) nwg : vec3<u32>) {
    let i = i32(gid.y * nwg.x * ${WG}u + gid.x);`;

/**
 * One dispatch of our own WGSL, recorded into tfjs's current compute pass so that it runs in order with the
 * kernels around it; for kernels that write several tensors (tfjs's runner binds one output). `tensors` are
 * bindings 0..n-1 (storage, read or read_write as the code declares), the uniforms binding n (scalars only,
 * in order: tfjs's packing). Every tensor is marked as used by the pending commands, so tfjs defers freeing it
 * until they are submitted, as it does for its own. `threads` invocations, in a 2-D grid of WG-wide groups.
 */
function directDispatch(key: string, code: () => string, tensors: tf.Tensor[], uniforms: { type: string; data: number[] }[], threads: number,
  stepScalars?: Record<number, string>): void {
  const groups = Math.ceil(threads / WG);
  const x = Math.min(groups, 32768);
  encodeDispatch(key, code, tensors.map((t) => t.dataId), uniforms, [x, Math.ceil(groups / x), 1], stepScalars);
}

/**
 * directDispatch's core, for kernels with their own workgroup shape (the f16 GEMM's tiles): `code` is the whole
 * module (it may start with `enable f16;`, which tfjs's program runner cannot emit), entry point `main`;
 * `dataIds` are tensors' or TensorInfos' data, bindings 0..n-1; `groups` the workgroup grid.
 */
export function encodeDispatch(key: string, code: () => string, dataIds: unknown[], uniforms: { type: string; data: number[] }[],
  groups: [number, number, number], stepScalars?: Record<number, string>): void {
  const be = tf.backend() as unknown as BackendInternals;
  let pipe = pipelines.get(key);
  if (!pipe) {
    pipe = be.device.createComputePipeline({ layout: 'auto', compute: { module: be.device.createShaderModule({ code: code() }), entryPoint: 'main' } });
    pipelines.set(key, pipe);
  }
  const entries: GPUBindGroupEntry[] = dataIds.map((id, i) => {
    be.uploadToGPU(id);
    return { binding: i, resource: { buffer: be.tensorMap.get(id)!.resource as GPUBuffer } };
  });
  const u = be.makeUniforms(uniforms) as { buffer: GPUBuffer };
  entries.push({ binding: dataIds.length, resource: u });
  // Scalars only, so uniform i is at byte 4 * i (tfjs's packing): a step capture rewrites these at each replay.
  for (const [i, name] of Object.entries(stepScalars ?? {})) noteStepScalar(name, u.buffer, 4 * Number(i));
  const bindGroup = be.device.createBindGroup({ layout: pipe.getBindGroupLayout(0), entries });
  be.ensureCommandEncoderReady();
  // In a profiled step, time this dispatch as tfjs times its own programs (recordAndSubmit): a pass of its own
  // with timestamp writes, named by the key's prefix (gnMatMulF16, gnSgd, ...), so GPU kernel time counts ours too.
  const timed = be.activeTimers != null && be.supportTimestampQuery;
  if (timed) {
    be.endComputePassEncoder();
    be.querySet ??= be.device.createQuerySet({ type: 'timestamp', count: be.querySetCount });
    be.computePassEncoder = be.commandEncoder!.beginComputePass({ timestampWrites: { querySet: be.querySet, beginningOfPassWriteIndex: 0, endOfPassWriteIndex: 1 } });
  }
  be.computePassEncoder ??= be.commandEncoder!.beginComputePass({});
  be.computePassEncoder.setPipeline(pipe);
  be.computePassEncoder.setBindGroup(0, bindGroup);
  be.computePassEncoder.dispatchWorkgroups(...groups);
  be.dispatchCountInPass++;
  dispatches++;
  for (const id of dataIds) be.commandQueueOwnedIds.add(id as object);
  if (timed) {
    be.endComputePassEncoder();
    be.activeTimers!.push({ name: key.split('_')[0]!, query: be.getQueryTime() });
    return;
  }
  if (be.dispatchCountInPass >= tf.env().getNumber('WEBGPU_DEFERRED_SUBMIT_BATCH_SIZE')) {
    be.endComputePassEncoder();
    be.submitQueue();
  }
}

/** Parameters per SGD dispatch: weight + momentum (+ gradient) bindings within WebGPU's default 8 storage buffers. */
const SGD_GROUP = { flat: 3, tensors: 2 };

/**
 * SGD with momentum and weight decay as torch.optim.SGD (see trainer's optim.ts), on the GPU, in place: each
 * dispatch updates the weights AND momentum buffers of 2-3 parameters (of similar sizes) inside their own
 * buffers: 39-58 dispatches a step instead of 232 with one-output kernels (and ~700 with tfjs ops). The
 * averaged gradients arrive either as one host array, uploaded once, or (a single worker) as the gradient
 * tensors themselves. False (nothing done) when webgpu is not active or a buffer is shared.
 */
export function sgdStep(params: readonly tf.Variable[], buffers: readonly tf.Variable[] | null, grads: Float32Array | readonly tf.Tensor[],
  offsets: readonly number[] | null, o: { momentum: number; weightDecay: number; lr: number; started: boolean }): boolean {
  if (!webgpuActive()) return false;
  if (![...params, ...(buffers ?? [])].every(ownsBuffer)) return false;
  // A host array is uploaded once, when the first dispatch binds it (before this function returns, so `grads`
  // may change after); device tensors (a single worker's own gradients) are read where they are.
  const flat = grads instanceof Float32Array ? tf.tensor1d(grads) : null;
  const per = flat ? SGD_GROUP.flat : SGD_GROUP.tensors;
  const mom = buffers !== null;
  const order = sizeOrder(params);
  try {
    for (let start = 0; start < order.length; start += per) {
      const group = order.slice(start, start + per);
      const n = group.length;
      const tensors: tf.Tensor[] = [];
      if (flat) tensors.push(flat);
      for (const i of group) {
        if (!flat) tensors.push((grads as readonly tf.Tensor[])[i]!);
        tensors.push(params[i]!);
        if (mom) tensors.push(buffers[i]!);
      }
      const uniforms = [
        ...group.map((i) => ({ type: 'int32', data: [params[i]!.size] })),
        ...group.map((i) => ({ type: 'int32', data: [flat ? offsets![i]! : 0] })),
        { type: 'float32', data: [o.momentum] }, { type: 'float32', data: [o.weightDecay] }, { type: 'float32', data: [o.lr] },
        { type: 'int32', data: [o.started ? 1 : 0] },
      ];
      const threads = Math.max(...group.map((i) => params[i]!.size));
      directDispatch(`gnSgd_${flat ? 'flat' : 'tensors'}_${mom}_${n}`, () => sgdCode(n, !!flat, mom), tensors, uniforms, threads, { [2 * n + 2]: 'lr' });
    }
  } finally {
    flat?.dispose();
  }
  return true;
}

/** Parameter indices by size, so that similar sizes share a dispatch and few threads idle; once per parameter list. */
const sizeOrders = new WeakMap<readonly tf.Variable[], number[]>();
function sizeOrder(params: readonly tf.Variable[]): number[] {
  let order = sizeOrders.get(params);
  if (!order) {
    order = params.map((_, i) => i).sort((a, b) => params[a]!.size - params[b]!.size);
    sizeOrders.set(params, order);
  }
  return order;
}

/** WGSL of one grouped SGD dispatch for `n` parameters. */
function sgdCode(n: number, flat: boolean, mom: boolean): string {
  const ids = [...Array(n).keys()];
  let b = 0;
  const decl: string[] = [];
  if (flat) decl.push(`@group(0) @binding(${b++}) var<storage, read> g : array<f32>;`);
  for (const j of ids) {
    if (!flat) decl.push(`@group(0) @binding(${b++}) var<storage, read> g${j} : array<f32>;`);
    decl.push(`@group(0) @binding(${b++}) var<storage, read_write> w${j} : array<f32>;`);
    if (mom) decl.push(`@group(0) @binding(${b++}) var<storage, read_write> m${j} : array<f32>;`);
  }
  const fields = [...ids.map((j) => `n${j} : i32,`), ...ids.map((j) => `off${j} : i32,`), 'mom : f32, wd : f32, lr : f32, started : i32,'];
  const body = ids.map((j) => `
    if (i < u.n${j}) {
      let d = ${flat ? `g[u.off${j} + i]` : `g${j}[i]`} + w${j}[i] * u.wd;
      ${mom ? `let v = select(d, m${j}[i] * u.mom + d, u.started != 0);
      m${j}[i] = v;
      w${j}[i] = w${j}[i] - v * u.lr;` : `w${j}[i] = w${j}[i] - d * u.lr;`}
    }`).join('');
  return `${decl.join('\n')}
  struct U { ${fields.join(' ')} };
  @group(0) @binding(${b}) var<uniform> u : U;
  ${DIRECT_MAIN}${body}
  }`;
}

/** The device's largest storage-buffer binding, in bytes (what one tensor a kernel reads or writes may hold). */
export function maxBindingBytes(): number {
  const forced = Number(process.env.GOOGLENET_WEBGPU_MAX_BINDING); // tests: force the batch-chunked paths
  if (forced > 0) return forced;
  const device = (tf.backend() as unknown as { device?: { limits?: { maxStorageBufferBindingSize?: number } } }).device;
  return device?.limits?.maxStorageBufferBindingSize ?? 128 * 2 ** 20;
}

/**
 * How many images of a batch fit one im2col matrix of `bytesPerImage` under the binding limit: at 224 px,
 * batch 64, conv1's columns are 472 MB and conv2's 462 MB, above the WebGPU default of 128 MiB.
 */
export function imagesPerChunk(bytesPerImage: number): number {
  return Math.max(1, Math.floor(maxBindingBytes() / bytesPerImage));
}
