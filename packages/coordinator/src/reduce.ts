import { floatToHalf, halfToFloat } from './fp16.js';
import { instantiate, wasm, type Kernels, type WasmMemory } from './simd.js';

/**
 * The reduction, defined once for every path (SIMD kernel, JavaScript tail, fallback and tests):
 *
 *   mean[i] = fround( (((x_0[i] + x_1[i]) + x_2[i]) + ... + x_{R-1}[i]) / R )
 *
 * with the sum evaluated in float64, left to right in rank order, and one rounding to float32 at the end.
 * A float64 sum of float32 values is exact whenever their exponents span less than 29 binades (always for
 * R <= 2... and for any realistic gradient), and then mean[i] is the correctly rounded exact mean: within
 * 0.5 ulp. Where R is a power of two the division is done as a multiplication by 1/R, which is the same real
 * number, hence the same rounded result. fp16 inputs are widened exactly first; an fp16 result is the
 * float32 mean above rounded to nearest even.
 */
export function referenceMean(inputs: readonly Float32Array[], out: Float32Array): void {
  const r = inputs.length;
  for (let i = 0; i < out.length; i++) {
    let s = inputs[0]![i]!;
    for (let k = 1; k < r; k++) s += inputs[k]![i]!;
    out[i] = s / r;
  }
}

const isPow2 = (n: number): boolean => (n & (n - 1)) === 0;

/**
 * Preallocated working memory shared with the SIMD kernels. Growing replaces the WebAssembly.Memory instead of
 * calling memory.grow(): grow() detaches the old ArrayBuffer, and a socket write still queued from it (a result
 * on its way to a slow worker) must keep its bytes.
 */
export class Arena {
  private memory!: WasmMemory;
  private kernels!: Kernels | null;
  u8!: Uint8Array;
  f32!: Float32Array;
  u16!: Uint16Array;
  bytes = 0;

  constructor(bytes = 1 << 16, private readonly useSimd = true) {
    this.allocate(bytes);
  }

  get simd(): boolean {
    return this.kernels !== null;
  }

  /** Makes at least `bytes` available; returns true when the memory was replaced (old offsets' bytes are gone). */
  ensure(bytes: number): boolean {
    if (bytes <= this.bytes) return false;
    this.allocate(Math.max(bytes, Math.floor(this.bytes * 1.25)));
    return true;
  }

  private allocate(bytes: number): void {
    const pages = Math.ceil(bytes / 65536);
    this.memory = new wasm.Memory({ initial: pages });
    this.kernels = this.useSimd ? instantiate(this.memory) : null;
    this.bytes = pages * 65536;
    this.u8 = new Uint8Array(this.memory.buffer);
    this.f32 = new Float32Array(this.memory.buffer);
    this.u16 = new Uint16Array(this.memory.buffer);
  }

  /** A Buffer over arena bytes (no copy), for socket writes. */
  buffer(offset: number, length: number): Buffer {
    return Buffer.from(this.memory.buffer, offset, length);
  }

  /**
   * out (f32, byte offset) <- mean over `nranks` inputs at `inp + r * stride` (byte offsets), n elements.
   * All offsets must be 4-aligned (f32) or 2-aligned (f16); the arena layouts use 16.
   */
  mean(out: number, inp: number, stride: number, nranks: number, n: number, dtype: 'f32' | 'f16'): void {
    const pow2 = isPow2(nranks);
    const s = pow2 ? 1 / nranks : nranks;
    const head = this.kernels ? n - (n % 4) : 0;
    if (head > 0) {
      const k = this.kernels!;
      if (dtype === 'f32') (pow2 ? k.mean_f32_mul : k.mean_f32_div)(out, inp, stride, nranks, head, s);
      else (pow2 ? k.mean_f16_mul : k.mean_f16_div)(out, inp, stride, nranks, head, s);
    }
    const o = out >> 2;
    if (dtype === 'f32') {
      const f = this.f32, base = inp >> 2, st = stride >> 2;
      for (let i = head; i < n; i++) {
        let acc = f[base + i]!;
        for (let r = 1; r < nranks; r++) acc += f[base + r * st + i]!;
        f[o + i] = pow2 ? acc * s : acc / s;
      }
    } else {
      const h = this.u16, f = this.f32, base = inp >> 1, st = stride >> 1;
      for (let i = head; i < n; i++) {
        let acc = halfToFloat(h[base + i]!);
        for (let r = 1; r < nranks; r++) acc += halfToFloat(h[base + r * st + i]!);
        f[o + i] = pow2 ? acc * s : acc / s;
      }
    }
  }

  /** u16 at out <- binary16(f32 at inp), n elements, round to nearest even. */
  toHalf(out: number, inp: number, n: number): void {
    const head = this.kernels ? n - (n % 8) : 0;
    if (head > 0) this.kernels!.f32_to_f16(out, inp, head);
    const h = this.u16, f = this.f32, o = out >> 1, i0 = inp >> 2;
    for (let i = head; i < n; i++) h[o + i] = floatToHalf(f[i0 + i]!);
  }

  /** f32 at out <- float(u16 at inp), n elements, exact. */
  fromHalf(out: number, inp: number, n: number): void {
    const head = this.kernels ? n - (n % 4) : 0;
    if (head > 0) this.kernels!.f16_to_f32(out, inp, head);
    const h = this.u16, f = this.f32, o = out >> 2, i0 = inp >> 1;
    for (let i = head; i < n; i++) f[o + i] = halfToFloat(h[i0 + i]!);
  }
}

export const align16 = (n: number): number => (n + 15) & ~15;
