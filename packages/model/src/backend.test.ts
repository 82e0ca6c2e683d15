import { describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { selectBackend } from './backend.js';

// tfjs-node(-gpu) cannot install on these machines (their install downloads libtensorflow), and the `webgpu`
// package is not installed: auto must fall through to wasm.
describe('selectBackend', () => {
  it('auto picks wasm here and says in one line why each better backend was skipped', async () => {
    const lines: string[] = [];
    const info = await selectBackend('auto', { log: (l) => lines.push(l) });
    expect(info.name).toBe('wasm');
    expect(tf.getBackend()).toBe('wasm');
    expect(lines).toEqual([info.line]);
    expect(info.line).toBe('backend: wasm (tfjs-node-gpu: not installed; webgpu: not installed; tfjs-node: not installed)');
    expect(info.skipped.map((s) => s.backend)).toEqual(['tfjs-node-gpu', 'webgpu', 'tfjs-node']);
  });

  it('fails for tensorflow with BACKEND_UNAVAILABLE and says how to get it', async () => {
    const err = await selectBackend('tensorflow').catch((e) => e);
    expect(err.code).toBe('BACKEND_UNAVAILABLE');
    expect(err.message).toContain('npm install @tensorflow/tfjs-node');
    expect(err.message).toContain('tfjs-node: not installed');
  });

  it('fails for webgpu without the package with BACKEND_UNAVAILABLE', async () => {
    const err = await selectBackend('webgpu').catch((e) => e);
    expect(err.code).toBe('BACKEND_UNAVAILABLE');
    expect(err.message).toContain('npm install webgpu @tensorflow/tfjs-backend-webgpu');
  });

  it('rejects an unknown name with BACKEND_UNKNOWN', async () => {
    const err = await selectBackend('cuda' as never).catch((e) => e);
    expect(err.code).toBe('BACKEND_UNKNOWN');
  });

  it('selects cpu and wasm explicitly', async () => {
    expect((await selectBackend('cpu')).line).toBe('backend: cpu');
    expect(tf.getBackend()).toBe('cpu');
    expect((await selectBackend('wasm')).name).toBe('wasm');
  });
});
