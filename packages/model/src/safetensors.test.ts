import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { decodeSafetensors, encodeSafetensors, type HostTensor } from './safetensors.js';
import { GoogLeNet } from './googlenet.js';
import { loadWeights, saveWeights, stateDict } from './state-dict.js';
import { useBackend } from './test-utils.js';

const bits = (t: HostTensor) => Buffer.from(t.data.buffer, t.data.byteOffset, t.data.byteLength);

describe('safetensors', () => {
  it('round-trips every dtype bit-exactly, with metadata, keeping data 8-byte aligned', () => {
    const f32 = new Float32Array([0, -0, 1.5, NaN, Infinity, -Infinity, 1e-45, 3.4e38]);
    new Uint32Array(f32.buffer)[3] = 0x7fc00123; // a NaN with a payload
    const tensors = new Map<string, HostTensor>([
      ['u8', { dtype: 'U8', shape: [3], data: Uint8Array.of(1, 2, 255) }],
      ['a.f32', { dtype: 'F32', shape: [2, 4], data: f32 }],
      ['f16', { dtype: 'F16', shape: [1], data: Uint16Array.of(0x3c00) }],
      ['i64', { dtype: 'I64', shape: [], data: BigInt64Array.of(-(2n ** 62n)) }],
      ['i32', { dtype: 'I32', shape: [2], data: Int32Array.of(-7, 2 ** 31 - 1) }],
      ['empty', { dtype: 'F32', shape: [0, 3], data: new Float32Array(0) }],
    ]);
    const bytes = encodeSafetensors(tensors, { format: 'pt', note: 'é' });
    const headerLen = Number(new DataView(bytes.buffer).getBigUint64(0, true));
    expect((8 + headerLen) % 8).toBe(0);
    const { tensors: back, metadata } = decodeSafetensors(bytes);
    expect(metadata).toEqual({ format: 'pt', note: 'é' });
    expect([...back.keys()]).toEqual([...tensors.keys()]);
    for (const [name, t] of tensors) {
      const b = back.get(name)!;
      expect([b.dtype, b.shape]).toEqual([t.dtype, t.shape]);
      expect(bits(b).equals(bits(t))).toBe(true);
    }
    expect(encodeSafetensors(back, metadata)).toEqual(bytes);
  });

  it('rejects truncated or malformed files with SAFETENSORS_INVALID', () => {
    const bytes = encodeSafetensors(new Map([['x', { dtype: 'F32', shape: [4], data: new Float32Array(4) } as HostTensor]]));
    for (const bad of [bytes.slice(0, 5), bytes.slice(0, bytes.length - 4), Uint8Array.of(255, 0, 0, 0, 0, 0, 0, 0, 1)]) {
      expect(() => decodeSafetensors(bad)).toThrow(expect.objectContaining({ code: 'SAFETENSORS_INVALID' }));
    }
  });

  it('saves and loads a model\'s weights bit-exactly (atomically, in the seed\'s layout)', async () => {
    await useBackend('cpu');
    const dir = mkdtempSync(join(tmpdir(), 'googlenet-st-'));
    try {
      const a = new GoogLeNet({ numClasses: 7, seed: 4 });
      a.numBatchesTracked = 42;
      const path = join(dir, 'w.safetensors');
      await saveWeights(a, path);
      const b = new GoogLeNet({ numClasses: 7, seed: 5 });
      await loadWeights(b, path);
      expect(b.numBatchesTracked).toBe(42);
      const da = await stateDict(a);
      const db = await stateDict(b);
      expect([...db.keys()]).toEqual([...da.keys()]);
      for (const [k, t] of da) expect(bits(db.get(k)!).equals(bits(t)), k).toBe(true);
      const { metadata, tensors } = decodeSafetensors(readFileSync(path));
      expect(metadata).toMatchObject({ format: 'pt', num_classes: '7' });
      expect(tensors.get('conv1.conv.0.weight')!.shape).toEqual([64, 3, 7, 7]);
      expect(tensors.get('aux1.clf_.0.weight')!.shape).toEqual([1024, 2048]);
      expect(tensors.get('conv1.conv.1.num_batches_tracked')).toMatchObject({ dtype: 'I64', shape: [] });
      a.dispose();
      b.dispose();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
