/**
 * Our own WGSL kernels for the webgpu backend, run through tfjs-backend-webgpu's program runner. They do what
 * native.ts does for wasm: replace stock kernels that are wrong for us or take many dispatches.
 *   maxPoolGrad: the stock MaxPoolGrad sends a window's gradient to its LAST maximum; PyTorch, tfjs-cpu and
 *   our native kernel send it to the FIRST (row-major). GoogLeNet's small deep maps are full of exact ties
 *   (pools of maps smaller than the window repeat values), so the stock kernel changed trunk gradients by
 *   up to 2 %. One dispatch instead of two.
 * Every function returns null when webgpu is not the active backend; callers fall back to tfjs ops.
 */
import * as tf from '@tensorflow/tfjs';

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

export const webgpuActive = (): boolean => util !== undefined && tf.getBackend() === 'webgpu';

/** Dispatch counter: every program run, ours or stock (installed by countDispatches). */
let dispatches = 0;
let counting = false;
/**
 * Counts compute dispatches on the webgpu backend from now on (wraps runWebGPUProgram once; the stock
 * kernels go through it too). Returns a reader; for the bench's "dispatches per step".
 */
export function countDispatches(): () => number {
  if (!counting && webgpuActive()) {
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

function runProgram(p: Omit<Program, 'dispatchLayout' | 'dispatch' | 'workgroupSize' | 'size'>, inputs: tf.Tensor[],
  uniforms: { type: string; data: number[] }[]): tf.Tensor {
  const layout = util!.flatDispatchLayout(p.outputShape);
  const program: Program = { ...p, dispatchLayout: layout, dispatch: util!.computeDispatch(layout, p.outputShape, FLAT), workgroupSize: FLAT, size: true };
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
      ${'fn main(index : i32)'} {
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
