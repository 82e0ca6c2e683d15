/**
 * Hand-assembled WebAssembly SIMD kernels for the hot loops (mean over ranks, fp16 encode/decode).
 * A JavaScript loop sums two 13.4M-float vectors in ~30 ms here; gloo's whole all-reduce takes ~45 ms,
 * so the reduction has to run at memory speed. No toolchain is needed: the module is built from bytes below.
 *
 * Exported functions (all pointers are byte offsets into the imported memory, n a count of elements):
 *   mean_f32_mul(out, in, stride, nranks, n, scale)  out[i] = f32((in_0[i] + ... + in_{R-1}[i]) * scale)  (f64 sum)
 *   mean_f32_div(out, in, stride, nranks, n, div)    out[i] = f32((in_0[i] + ... + in_{R-1}[i]) / div)
 *   mean_f16_mul / mean_f16_div                      same with binary16 inputs
 *   f32_to_f16(out, in, n)                           round to nearest even   (n % 8 == 0)
 *   f16_to_f32(out, in, n)                           exact                   (n % 4 == 0)
 * mean_*: n % 4 == 0; in_r = in + r * stride.
 */

const I32 = 0x7f, F64 = 0x7c, V128 = 0x7b;

function uleb(n: number): number[] {
  const out: number[] = [];
  do {
    let b = n & 0x7f;
    n >>>= 7;
    if (n !== 0) b |= 0x80;
    out.push(b);
  } while (n !== 0);
  return out;
}

function sleb(n: number): number[] {
  const out: number[] = [];
  for (;;) {
    const b = n & 0x7f;
    n >>= 7;
    if ((n === 0 && (b & 0x40) === 0) || (n === -1 && (b & 0x40) !== 0)) return [...out, b];
    out.push(b | 0x80);
  }
}

const vec = (items: number[][]): number[] => [...uleb(items.length), ...items.flat()];
const str = (s: string): number[] => [...uleb(s.length), ...Buffer.from(s)];
const section = (id: number, body: number[]): number[] => [id, ...uleb(body.length), ...body];

// Instructions.
const get = (i: number) => [0x20, ...uleb(i)];
const set = (i: number) => [0x21, ...uleb(i)];
const tee = (i: number) => [0x22, ...uleb(i)];
const i32c = (n: number) => [0x41, ...sleb(n)];
const I32_ADD = [0x6a], I32_SHL = [0x74], I32_LT_U = [0x49], I32_GE_U = [0x4f], I32_EQZ = [0x45];
const BLOCK = [0x02, 0x40], LOOP = [0x03, 0x40], END = [0x0b];
const br = (d: number) => [0x0c, ...uleb(d)];
const brIf = (d: number) => [0x0d, ...uleb(d)];
const fd = (op: number, ...imm: number[]) => [0xfd, ...uleb(op), ...imm];
const MEM0 = [0, 0]; // align hint 1 byte (no alignment promise), offset 0
const V_LOAD = fd(0x00, ...MEM0), V_STORE = fd(0x0b, ...MEM0), LOAD16X4_U = fd(0x04, ...MEM0);
const shuffle = (lanes: number[]) => fd(0x0d, ...lanes);
const F64X2_SPLAT = fd(0x14);
const V_AND = fd(0x4e), V_OR = fd(0x50), V_XOR = fd(0x51), BITSELECT = fd(0x52);
const I32X4_LT_U = fd(0x3a), I32X4_GT_U = fd(0x3c);
const F32X4_GE = fd(0x46);
const I32X4_SHL = fd(0xab), I32X4_SHR_U = fd(0xad), I32X4_ADD = fd(0xae), I32X4_SUB = fd(0xb1);
const F32X4_ADD = fd(0xe4), F32X4_MUL = fd(0xe6);
const F64X2_ADD = fd(0xf0), F64X2_MUL = fd(0xf2), F64X2_DIV = fd(0xf3);
const DEMOTE = fd(0x5e), PROMOTE = fd(0x5f), NARROW_U = fd(0x86);

function vconst(lanes: Int32Array | Float32Array): number[] {
  return fd(0x0c, ...new Uint8Array(lanes.buffer, lanes.byteOffset, 16));
}
const ci = (x: number) => vconst(new Int32Array([x, x, x, x]));
const cf = (x: number) => vconst(new Float32Array([x, x, x, x]));
const HIGH_TO_LOW = shuffle([8, 9, 10, 11, 12, 13, 14, 15, 8, 9, 10, 11, 12, 13, 14, 15]);
const JOIN_LOWS = shuffle([0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23]);

/** binary16 in the low half of each i32 lane (local h) -> f32x4 on the stack; tmp is a scratch v128 local. */
function halfToFloatV(h: number, tmp: number): number[] {
  return [
    // Shifting the 15 magnitude bits into float position and scaling by 2^112 rebiases the exponent and turns
    // half subnormals into the right float normals, exactly.
    ...get(h), ...ci(0x7fff), ...V_AND, ...i32c(13), ...I32X4_SHL, ...cf(2 ** 112), ...F32X4_MUL, ...tee(tmp),
    // Anything that scaled to >= 65536 was Inf/NaN: force the exponent to all ones, keeping NaN payloads.
    ...get(tmp), ...cf(65536), ...F32X4_GE, ...ci(0x7f800000), ...V_AND, ...V_OR,
    ...get(h), ...ci(0x8000), ...V_AND, ...i32c(16), ...I32X4_SHL, ...V_OR,
  ];
}

/** f32 bits (local u) -> binary16 in the low half of each i32 lane, round to nearest even (see fp16.ts). */
function floatToHalfV(u: number, sg: number, a: number): number[] {
  return [
    ...get(u), ...ci(0x80000000 | 0), ...V_AND, ...set(sg),
    ...get(u), ...get(sg), ...V_XOR, ...set(a),
    // subnormal result: float add of 0.5 rounds at the half's subnormal step
    ...get(a), ...cf(0.5), ...F32X4_ADD, ...ci(0x3f000000), ...I32X4_SUB,
    // normal result: rebias, add 0xfff + lowest kept bit, shift
    ...get(a), ...ci(0xc8000fff | 0), ...I32X4_ADD, ...get(a), ...i32c(13), ...I32X4_SHR_U, ...ci(1), ...V_AND, ...I32X4_ADD,
    ...i32c(13), ...I32X4_SHR_U,
    ...get(a), ...ci(0x38800000), ...I32X4_LT_U, ...BITSELECT,
    // >= 65536 -> Inf, NaN -> quiet NaN (bitselect keeps its first operand where the mask is set)
    ...ci(0x7e00), ...ci(0x7c00), ...get(a), ...ci(0x7f800000), ...I32X4_GT_U, ...BITSELECT,
    ...get(a), ...ci(0x47800000), ...I32X4_LT_U, ...BITSELECT,
    ...get(sg), ...i32c(16), ...I32X4_SHR_U, ...V_OR,
  ];
}

/**
 * mean kernel. params: out 0, in 1, stride 2, nranks 3, n 4, s 5 (f64). locals: k 6, p 7, r 8 (i32),
 * lo 9, hi 10, v 11, t 12 (v128). Four elements per iteration, summed in f64 in rank order.
 */
function meanBody(src: 'f32' | 'f16', mode: 'mul' | 'div'): number[] {
  const [OUT, IN, STRIDE, NR, N, S, K, P, R, LO, HI, V, T] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12];
  const shift = src === 'f32' ? 2 : 1;
  const loadV = src === 'f32'
    ? [...get(P), ...V_LOAD]
    : [...get(P), ...LOAD16X4_U, ...set(V), ...halfToFloatV(V, T)];
  const accumulate = [
    ...loadV, ...tee(V), ...PROMOTE, ...get(LO), ...F64X2_ADD, ...set(LO),
    ...get(V), ...get(V), ...HIGH_TO_LOW, ...PROMOTE, ...get(HI), ...F64X2_ADD, ...set(HI),
  ];
  const scale = mode === 'mul' ? F64X2_MUL : F64X2_DIV;
  return [
    ...get(N), ...I32_EQZ, 0x04, 0x40, 0x0f, ...END, // if (n == 0) return
    ...i32c(0), ...set(K),
    ...LOOP,
    /**/ ...get(IN), ...get(K), ...i32c(shift), ...I32_SHL, ...I32_ADD, ...set(P),
    /**/ ...loadV, ...tee(V), ...PROMOTE, ...set(LO), ...get(V), ...get(V), ...HIGH_TO_LOW, ...PROMOTE, ...set(HI),
    /**/ ...i32c(1), ...set(R),
    /**/ ...BLOCK, ...LOOP,
    /*    */ ...get(R), ...get(NR), ...I32_GE_U, ...brIf(1),
    /*    */ ...get(P), ...get(STRIDE), ...I32_ADD, ...set(P),
    /*    */ ...accumulate,
    /*    */ ...get(R), ...i32c(1), ...I32_ADD, ...set(R), ...br(0),
    /**/ ...END, ...END,
    /**/ ...get(OUT), ...get(K), ...i32c(2), ...I32_SHL, ...I32_ADD,
    /**/ ...get(LO), ...get(S), ...F64X2_SPLAT, ...scale, ...DEMOTE,
    /**/ ...get(HI), ...get(S), ...F64X2_SPLAT, ...scale, ...DEMOTE,
    /**/ ...JOIN_LOWS, ...V_STORE,
    /**/ ...get(K), ...i32c(4), ...I32_ADD, ...tee(K), ...get(N), ...I32_LT_U, ...brIf(0),
    ...END,
  ];
}

/** params: out 0, in 1, n 2. locals: k 3 (i32), u 4, sg 5, a 6, lo 7 (v128). Eight elements per iteration. */
function f32ToF16Body(): number[] {
  const [OUT, IN, N, K, U, SG, A, LO] = [0, 1, 2, 3, 4, 5, 6, 7];
  const convertAt = (byteOff: number) => [
    ...get(IN), ...get(K), ...i32c(2), ...I32_SHL, ...I32_ADD, ...i32c(byteOff), ...I32_ADD, ...V_LOAD, ...set(U),
    ...floatToHalfV(U, SG, A),
  ];
  return [
    ...get(N), ...I32_EQZ, 0x04, 0x40, 0x0f, ...END,
    ...i32c(0), ...set(K),
    ...LOOP,
    ...convertAt(0), ...set(LO),
    ...get(OUT), ...get(K), ...i32c(1), ...I32_SHL, ...I32_ADD,
    ...get(LO), ...convertAt(16), ...NARROW_U, ...V_STORE,
    ...get(K), ...i32c(8), ...I32_ADD, ...tee(K), ...get(N), ...I32_LT_U, ...brIf(0),
    ...END,
  ];
}

/** params: out 0, in 1, n 2. locals: k 3 (i32), h 4, t 5 (v128). Four elements per iteration. */
function f16ToF32Body(): number[] {
  const [OUT, IN, N, K, H, T] = [0, 1, 2, 3, 4, 5];
  return [
    ...get(N), ...I32_EQZ, 0x04, 0x40, 0x0f, ...END,
    ...i32c(0), ...set(K),
    ...LOOP,
    ...get(OUT), ...get(K), ...i32c(2), ...I32_SHL, ...I32_ADD,
    ...get(IN), ...get(K), ...i32c(1), ...I32_SHL, ...I32_ADD, ...LOAD16X4_U, ...set(H),
    ...halfToFloatV(H, T), ...V_STORE,
    ...get(K), ...i32c(4), ...I32_ADD, ...tee(K), ...get(N), ...I32_LT_U, ...brIf(0),
    ...END,
  ];
}

function code(locals: [number, number][], body: number[]): number[] {
  const b = [...vec(locals.map(([n, t]) => [...uleb(n), t])), ...body, ...END];
  return [...uleb(b.length), ...b];
}

function buildModule(): Uint8Array {
  const tMean = [0x60, ...vec([[I32], [I32], [I32], [I32], [I32], [F64]]), 0];
  const tConv = [0x60, ...vec([[I32], [I32], [I32]]), 0];
  const meanLocals: [number, number][] = [[3, I32], [4, V128]];
  const funcs: [string, number, number[]][] = [
    ['mean_f32_mul', 0, code(meanLocals, meanBody('f32', 'mul'))],
    ['mean_f32_div', 0, code(meanLocals, meanBody('f32', 'div'))],
    ['mean_f16_mul', 0, code(meanLocals, meanBody('f16', 'mul'))],
    ['mean_f16_div', 0, code(meanLocals, meanBody('f16', 'div'))],
    ['f32_to_f16', 1, code([[1, I32], [4, V128]], f32ToF16Body())],
    ['f16_to_f32', 1, code([[1, I32], [2, V128]], f16ToF32Body())],
  ];
  const bytes = [
    0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00,
    ...section(1, vec([tMean, tConv])),
    ...section(2, vec([[...str('env'), ...str('mem'), 0x02, 0x00, 0x01]])), // memory import, min 1 page
    ...section(3, vec(funcs.map(([, t]) => [t]))),
    ...section(7, vec(funcs.map(([name], i) => [...str(name), 0x00, i]))),
    ...section(10, vec(funcs.map(([, , c]) => c))),
  ];
  return new Uint8Array(bytes);
}

export interface Kernels {
  mean_f32_mul(out: number, inp: number, stride: number, nranks: number, n: number, scale: number): void;
  mean_f32_div(out: number, inp: number, stride: number, nranks: number, n: number, div: number): void;
  mean_f16_mul(out: number, inp: number, stride: number, nranks: number, n: number, scale: number): void;
  mean_f16_div(out: number, inp: number, stride: number, nranks: number, n: number, div: number): void;
  f32_to_f16(out: number, inp: number, n: number): void;
  f16_to_f32(out: number, inp: number, n: number): void;
}

/**
 * The WebAssembly API as far as we use it. The workspace compiles against lib ES2023 without DOM, where the
 * global has no type; a local interface avoids a global declaration that could clash with a DOM lib elsewhere.
 */
export interface WasmMemory { readonly buffer: ArrayBuffer }
interface WasmModule { readonly __module: true }
interface WasmApi {
  Memory: new (d: { initial: number; maximum?: number }) => WasmMemory;
  Module: new (bytes: Uint8Array) => WasmModule;
  Instance: new (m: WasmModule, imports: object) => { exports: unknown };
}
export const wasm = (globalThis as unknown as { WebAssembly: WasmApi }).WebAssembly;

let compiled: WasmModule | null | undefined;

/** The compiled module, or null where WebAssembly SIMD is unavailable (callers fall back to JavaScript). */
export function simdModule(): WasmModule | null {
  if (compiled === undefined) {
    try {
      compiled = new wasm.Module(buildModule());
    } catch {
      compiled = null;
    }
  }
  return compiled;
}

export function instantiate(memory: WasmMemory): Kernels | null {
  const mod = simdModule();
  if (!mod) return null;
  return new wasm.Instance(mod, { env: { mem: memory } }).exports as unknown as Kernels;
}
