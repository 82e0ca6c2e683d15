import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { selectBackend } from './backend.js';

// tfjs-node(-gpu) cannot install on these machines (their install downloads libtensorflow); `webgpu` is installed
// but finds no hardware GPU (none at all, or only Mesa's lavapipe, which auto must not pick): auto falls to wasm.
describe('selectBackend', () => {
  it('auto picks wasm here and says in one line why each better backend was skipped', async () => {
    const lines: string[] = [];
    const info = await selectBackend('auto', { log: (l) => lines.push(l) });
    expect(info.name).toBe('wasm');
    expect(tf.getBackend()).toBe('wasm');
    expect(lines).toEqual([info.line]);
    expect(info.skipped.map((s) => s.backend)).toEqual(['tfjs-node-gpu', 'webgpu', 'tfjs-node']);
    expect(info.skipped[1]!.reason).toMatch(/^(only a software adapter \(.+\), slower than wasm|no WebGPU adapter: .+)/);
    expect(info.line).toBe(`backend: wasm (tfjs-node-gpu: not installed; webgpu: ${info.skipped[1]!.reason}; tfjs-node: not installed)`);
  });

  it('without any Vulkan driver, --backend=webgpu fails with BACKEND_UNAVAILABLE, the Vulkan loader\'s words and how to fix it', () => {
    // A child process: the driver list is read once per process, and this one may already hold a Dawn instance.
    const code = `import { selectBackend } from ${JSON.stringify(fileURLToPath(new URL('./backend.ts', import.meta.url)))};` +
      'selectBackend("webgpu").then(() => console.log("SELECTED"), (e) => console.log(e.code + " " + e.message));';
    const r = spawnSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', code],
      { encoding: 'utf8', env: { ...process.env, VK_DRIVER_FILES: '/nonexistent/icd.json', VK_ICD_FILENAMES: '/nonexistent/icd.json' } });
    expect(r.stdout).toMatch(/^BACKEND_UNAVAILABLE backend 'webgpu' is unavailable \(webgpu: no WebGPU adapter: /);
    // What Dawn and the loader said, captured from the probe's stderr: with the loader (libvulkan1) installed it
    // finds no driver at vkCreateInstance; without the loader Dawn cannot load libvulkan.so.1 at all.
    expect(r.stdout).toMatch(/vkCreateInstance|Couldn't load Vulkan/);
    expect(r.stdout).toContain('libvulkan1');
    expect(r.stdout).toContain('--backend=wasm');
  });

  it('keeps Dawn\'s and the loader\'s raw warnings (C++ source paths) out of the output: their words are in the backend line only', () => {
    const code = `import { selectBackend } from ${JSON.stringify(fileURLToPath(new URL('./backend.ts', import.meta.url)))};` +
      'selectBackend("auto").then((i) => console.log(i.line));';
    const r = spawnSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', code],
      { encoding: 'utf8', env: { ...process.env, VK_DRIVER_FILES: '/nonexistent/icd.json', VK_ICD_FILENAMES: '/nonexistent/icd.json' } });
    expect(r.status, r.stderr).toBe(0);
    expect(r.stderr).not.toMatch(/Warning:|\.cpp:\d+/);
    expect(r.stdout).toMatch(/^backend: wasm \(tfjs-node-gpu: not installed; webgpu: no WebGPU adapter: .*(vkCreateInstance|Couldn't load Vulkan).*; tfjs-node: not installed\)\n$/);
  });

  it('an adapter name that matches nothing is Dawn\'s error listing the adapters it has', () => {
    const code = `import { selectBackend } from ${JSON.stringify(fileURLToPath(new URL('./backend.ts', import.meta.url)))};` +
      'selectBackend("webgpu").then(() => console.log("SELECTED"), (e) => console.log(e.code + " " + e.message));';
    const r = spawnSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', code],
      { encoding: 'utf8', env: { ...process.env, GOOGLENET_WEBGPU_ADAPTER: 'no-such-gpu-xyz' } });
    expect(r.stdout).toMatch(/^BACKEND_UNAVAILABLE /);
    expect(r.stdout).toMatch(/webgpu: (Dawn: no suitable backends found|no WebGPU adapter)/);
  });

  it('fails for tensorflow with BACKEND_UNAVAILABLE and says how to get it', async () => {
    const err = await selectBackend('tensorflow').catch((e) => e);
    expect(err.code).toBe('BACKEND_UNAVAILABLE');
    expect(err.message).toContain('npm install @tensorflow/tfjs-node');
    expect(err.message).toContain('tfjs-node: not installed');
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
