import * as tf from '@tensorflow/tfjs';

interface WasmBackendLike {
  dataIdMap: { get(id: unknown): { memoryOffset: number } | undefined };
  wasm: { HEAPU8: Uint8Array };
}

/**
 * Copies a float32 tensor's values into `target` at `offset`, without allocating.
 * tensor.dataSync() returns a fresh array on every call (on wasm, a slice of the heap), and a fresh
 * multi-megabyte allocation per tensor per step costs more than the copy on these machines; on wasm we
 * read the heap in place instead.
 */
export function readInto(t: tf.Tensor, target: Float32Array, offset: number): void {
  const size = t.size;
  if (offset + size > target.length) throw new RangeError(`readInto: ${size} values at ${offset} overflow ${target.length}`);
  if (t.dtype === 'float32' && tf.getBackend() === 'wasm') {
    const backend = tf.backend() as unknown as WasmBackendLike;
    const entry = backend.dataIdMap.get(t.dataId);
    if (entry && entry.memoryOffset != null) {
      const heap = backend.wasm.HEAPU8;
      target.set(new Float32Array(heap.buffer, heap.byteOffset + entry.memoryOffset, size), offset);
      return;
    }
  }
  target.set(t.dataSync() as Float32Array, offset);
}

/**
 * Copies float32 tensors into `target` end to end from `start` and returns where the last one ends. On wasm
 * each is read in place (readInto). Elsewhere, and on GPUs in particular, the parts are joined on the device
 * and read back in one transfer: per-tensor reads cost one round trip each, and webgpu in Node has no
 * synchronous read at all (tfjs-backend-webgpu's readSync needs OffscreenCanvas).
 */
export async function readAllInto(parts: readonly tf.Tensor[], target: Float32Array, start = 0): Promise<number> {
  const end = parts.reduce((off, p) => off + p.size, start);
  if (end > target.length) throw new RangeError(`readAllInto: ${end - start} values at ${start} overflow ${target.length}`);
  if (parts.length === 0) return end;
  if (tf.getBackend() === 'wasm') {
    let off = start;
    for (const p of parts) {
      readInto(p, target, off);
      off += p.size;
    }
    return end;
  }
  const joined = tf.tidy(() => tf.concat(parts.map((p) => p.reshape([-1]))));
  try {
    target.set((await joined.data()) as Float32Array, start);
  } finally {
    joined.dispose();
  }
  return end;
}

/** A tensor's values as a fresh Float32Array, by an asynchronous read (works on every backend, webgpu too). */
export async function readFloats(t: tf.Tensor): Promise<Float32Array> {
  return Float32Array.from((await t.data()) as Float32Array);
}

/**
 * A float32 view of a tensor's own memory on the wasm heap, for in-place updates; undefined on other
 * backends or when the memory is shared with another tensor (writing it would change that tensor too).
 */
export function wasmView(t: tf.Tensor): Float32Array | undefined {
  if (t.dtype !== 'float32' || tf.getBackend() !== 'wasm') return undefined;
  const backend = tf.backend() as unknown as WasmBackendLike;
  const entry = backend.dataIdMap.get(t.dataId) as ({ memoryOffset: number; refCount?: number } | undefined);
  if (!entry || entry.memoryOffset == null || (entry.refCount ?? 1) !== 1) return undefined;
  const heap = backend.wasm.HEAPU8;
  return new Float32Array(heap.buffer, heap.byteOffset + entry.memoryOffset, t.size);
}

/** Total element count of a list of shapes. */
export function totalSize(shapes: readonly (readonly number[])[]): number {
  return shapes.reduce((n, s) => n + s.reduce((a, b) => a * b, 1), 0);
}
