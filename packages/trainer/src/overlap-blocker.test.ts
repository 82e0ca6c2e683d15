import { describe, expect, it } from 'vitest';
import { overlapBlocker, spareCores } from './overlap';

const ok = { worldSize: 2, backend: 'wasm', accumulate: 1, gradCompression: 'none' as const, lossScaling: false };

describe('overlapBlocker', () => {
  it('lets a step overlap where it applies, and says why not elsewhere', () => {
    expect(overlapBlocker(ok)).toBeNull();
    expect(overlapBlocker({ ...ok, worldSize: 1 })).toMatch(/one worker/);
    expect(overlapBlocker({ ...ok, backend: 'webgpu' })).toMatch(/webgpu backend cannot read/);
    expect(overlapBlocker({ ...ok, accumulate: 2 })).toMatch(/--accumulate/);
    expect(overlapBlocker({ ...ok, gradCompression: 'fp16' })).toMatch(/fp16/);
    expect(overlapBlocker({ ...ok, lossScaling: true })).toMatch(/loss scaling/);
  });

  it('auto (spareCores given) needs a core the compute threads leave free', () => {
    expect(overlapBlocker({ ...ok, spareCores: 0 })).toMatch(/no core is free.*--overlap=on forces it/);
    expect(overlapBlocker({ ...ok, spareCores: 1 })).toBeNull();
  });

  it('counts the cores the launcher\'s threads leave', () => {
    const saved = process.env.GOOGLENET_NATIVE_THREADS;
    try {
      process.env.GOOGLENET_NATIVE_THREADS = '1';
      const cores = spareCores(0);
      expect(spareCores(1)).toBe(cores - 1);
      expect(spareCores(cores)).toBe(0);
    } finally {
      if (saved === undefined) delete process.env.GOOGLENET_NATIVE_THREADS;
      else process.env.GOOGLENET_NATIVE_THREADS = saved;
    }
  });
});
