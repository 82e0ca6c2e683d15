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
