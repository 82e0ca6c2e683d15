#!/usr/bin/env node
// What the WebGPU adapter offers for --precision (plain Node + Dawn's `webgpu` module, no other dependency: it runs
// on the GPU machine from tools/gpu-run.sh). Creates a Dawn instance with the toggles the trainer uses
// (packages/model/src/backend.ts: allow_unsafe_apis,vulkan_enable_f16_on_nvidia), and prints one JSON object:
// the adapter's info, its sorted features, whether shader-f16 and chromium-experimental-subgroup-matrix are there,
// and adapter.info.subgroupMatrixConfigs (the tensor-core shapes and types); and the same without the toggles, to
// show what they change.
//   node tools/gpu-adapter.mjs [--json=FILE]   (from a folder whose node_modules holds `webgpu`, e.g. the app's)
import fs from 'node:fs';
import { createRequire } from 'node:module';
import { pathToFileURL } from 'node:url';

const flags = Object.fromEntries(process.argv.slice(2).map((a) => a.replace(/^--/, '').split('=')));
const entry = createRequire(`${process.cwd()}/`).resolve('webgpu');
const { create, globals } = await import(pathToFileURL(entry).href);
Object.assign(globalThis, globals);

async function probe(dawnFlags) {
  const adapter = await create(dawnFlags).requestAdapter({ powerPreference: 'high-performance' });
  if (!adapter) return { flags: dawnFlags, adapter: null };
  const i = adapter.info;
  const features = [...adapter.features].sort();
  return {
    flags: dawnFlags,
    adapter: { vendor: i.vendor, architecture: i.architecture, device: i.device, description: i.description },
    shaderF16: features.includes('shader-f16'),
    subgroupMatrix: features.includes('chromium-experimental-subgroup-matrix'),
    subgroupMatrixConfigs: [...(i.subgroupMatrixConfigs ?? [])].map(({ componentType, resultComponentType, M, N, K }) => ({ componentType, resultComponentType, M, N, K })),
    features,
  };
}

const out = {
  date: new Date().toISOString(),
  withToggles: await probe(['enable-dawn-features=allow_unsafe_apis,vulkan_enable_f16_on_nvidia']),
  withoutToggles: await probe([]),
};
const text = JSON.stringify(out, null, 2);
if (flags.json) fs.writeFileSync(flags.json, text + '\n');
console.log(text);
process.exit(0);
