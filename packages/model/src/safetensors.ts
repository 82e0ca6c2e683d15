/**
 * The safetensors format (https://huggingface.co/docs/safetensors), written by hand: an 8-byte little-endian
 * header length, a JSON header `{name: {dtype, shape, data_offsets: [begin, end]}, __metadata__?: {str: str}}`,
 * then the raw little-endian data. The header is padded with spaces so the data starts 8-byte aligned, and
 * tensors are laid out widest element first so every tensor stays aligned for a zero-copy typed-array view.
 */
import { SafetensorsError } from './errors.js';

export type Dtype = 'F32' | 'F16' | 'I64' | 'I32' | 'U8';

export interface HostTensor {
  dtype: Dtype;
  shape: number[];
  data: Float32Array | Uint16Array | BigInt64Array | Int32Array | Uint8Array;
}

const ARRAYS = {
  F32: Float32Array, F16: Uint16Array, I64: BigInt64Array, I32: Int32Array, U8: Uint8Array,
} as const;
const BYTES: Record<Dtype, number> = { F32: 4, F16: 2, I64: 8, I32: 4, U8: 1 };

const numel = (shape: number[]): number => shape.reduce((a, b) => a * b, 1);

export function encodeSafetensors(tensors: Map<string, HostTensor>, metadata?: Record<string, string>): Uint8Array {
  const entries = [...tensors.entries()];
  for (const [name, t] of entries) {
    if (name === '__metadata__') throw new SafetensorsError(`"__metadata__" is reserved and cannot name a tensor`);
    if (!(t.dtype in ARRAYS)) throw new SafetensorsError(`${name}: unsupported dtype ${t.dtype}`);
    if (!(t.data instanceof ARRAYS[t.dtype])) {
      throw new SafetensorsError(`${name}: dtype ${t.dtype} needs a ${ARRAYS[t.dtype].name}, got ${t.data.constructor.name}`);
    }
    if (t.data.length !== numel(t.shape)) {
      throw new SafetensorsError(`${name}: ${t.data.length} elements do not fill shape [${t.shape.join(', ')}]`);
    }
  }
  // Widest dtype first (stable), so each tensor's offset is a multiple of its element size.
  const layout = [...entries].sort((a, b) => BYTES[b[1].dtype] - BYTES[a[1].dtype]);
  const offsets = new Map<string, [number, number]>();
  let end = 0;
  for (const [name, t] of layout) {
    offsets.set(name, [end, end + t.data.byteLength]);
    end += t.data.byteLength;
  }
  const header: Record<string, unknown> = {};
  if (metadata && Object.keys(metadata).length > 0) {
    for (const [k, v] of Object.entries(metadata)) {
      if (typeof v !== 'string') throw new SafetensorsError(`metadata ${k}: values must be strings, got ${typeof v}`);
    }
    header.__metadata__ = metadata;
  }
  for (const [name, t] of entries) header[name] = { dtype: t.dtype, shape: t.shape, data_offsets: offsets.get(name) };
  let json = Buffer.from(JSON.stringify(header), 'utf8');
  const padded = Math.ceil(json.length / 8) * 8;
  if (padded !== json.length) json = Buffer.concat([json, Buffer.alloc(padded - json.length, 0x20)]);

  const out = new Uint8Array(8 + json.length + end);
  new DataView(out.buffer).setBigUint64(0, BigInt(json.length), true);
  out.set(json, 8);
  const base = 8 + json.length;
  for (const [name, t] of layout) {
    out.set(new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength), base + offsets.get(name)![0]);
  }
  return out;
}

export function decodeSafetensors(bytes: Uint8Array): { tensors: Map<string, HostTensor>; metadata: Record<string, string> } {
  if (bytes.byteLength < 8) throw new SafetensorsError(`file of ${bytes.byteLength} bytes is too short to be safetensors`);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const headerLen = Number(view.getBigUint64(0, true));
  if (headerLen > bytes.byteLength - 8) {
    throw new SafetensorsError(`header length ${headerLen} exceeds the file (${bytes.byteLength} bytes): not safetensors or truncated`);
  }
  let header: Record<string, unknown>;
  try {
    header = JSON.parse(Buffer.from(bytes.buffer, bytes.byteOffset + 8, headerLen).toString('utf8'));
  } catch (e) {
    throw new SafetensorsError(`header is not valid JSON (${(e as Error).message}): not safetensors or corrupted`);
  }
  if (header === null || typeof header !== 'object' || Array.isArray(header)) {
    throw new SafetensorsError('header must be a JSON object');
  }
  const base = 8 + headerLen;
  const dataLen = bytes.byteLength - base;
  const metadata: Record<string, string> = {};
  const tensors = new Map<string, HostTensor>();
  for (const [name, raw] of Object.entries(header)) {
    if (name === '__metadata__') {
      for (const [k, v] of Object.entries((raw ?? {}) as Record<string, unknown>)) metadata[k] = String(v);
      continue;
    }
    const info = raw as { dtype?: string; shape?: number[]; data_offsets?: [number, number] };
    const dtype = info.dtype as Dtype;
    if (!(dtype in ARRAYS)) {
      throw new SafetensorsError(`${name}: dtype ${info.dtype} is not supported (supported: ${Object.keys(ARRAYS).join(', ')})`);
    }
    const shape = info.shape;
    const off = info.data_offsets;
    if (!Array.isArray(shape) || !shape.every((d) => Number.isInteger(d) && d >= 0) || !Array.isArray(off) || off.length !== 2) {
      throw new SafetensorsError(`${name}: malformed entry ${JSON.stringify(raw)}`);
    }
    const [b, e] = off;
    if (!(Number.isInteger(b) && Number.isInteger(e) && b >= 0 && b <= e && e <= dataLen)) {
      throw new SafetensorsError(`${name}: data_offsets [${b}, ${e}] outside the ${dataLen}-byte data section`);
    }
    if (e - b !== numel(shape) * BYTES[dtype]) {
      throw new SafetensorsError(`${name}: ${e - b} bytes do not hold ${dtype} [${shape.join(', ')}]`);
    }
    const Ctor = ARRAYS[dtype] as unknown as new (buf: ArrayBufferLike, offset?: number, length?: number) => HostTensor['data'];
    const start = bytes.byteOffset + base + b;
    // A view when aligned; else a copy (typed arrays cannot view unaligned memory).
    const data = start % BYTES[dtype] === 0
      ? new Ctor(bytes.buffer, start, numel(shape))
      : new Ctor(bytes.slice(base + b, base + e).buffer);
    tensors.set(name, { dtype, shape: [...shape], data });
  }
  return { tensors, metadata };
}
