#!/usr/bin/env node
// The versions below are known to install and work together on Node 20; nx and @nx/* must match exactly.
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

// Read package.json files directly: some packages do not export ./package.json.
const root = fileURLToPath(new URL('..', import.meta.url));
const pinned = {
  nx: '23.3.1', '@nx/js': '23.3.1', '@nx/vitest': '23.3.1', typescript: '5.9.3', vitest: '4.1.12', vite: '8.3.8',
  tsx: '4.23.15', ws: '8.23.0', msgpackr: '2.1.4', sharp: '0.35.5',
  '@tensorflow/tfjs': '4.22.0', '@tensorflow/tfjs-backend-wasm': '4.22.0',
};
const bad = [];
for (const [name, want] of Object.entries(pinned)) {
  let got;
  try {
    got = JSON.parse(readFileSync(`${root}node_modules/${name}/package.json`, 'utf8')).version;
  } catch {
    got = 'not installed';
  }
  if (got !== want) bad.push(`${name}: installed ${got}, pinned ${want}`);
}
// Every workspace package must be linked into node_modules: a checkout that gained a package since the last
// `npm ci` (e.g. @googlenet/flags) otherwise fails deep inside a test with "Cannot find package".
for (const dir of readdirSync(`${root}packages`, { withFileTypes: true })) {
  if (!dir.isDirectory() || !existsSync(`${root}packages/${dir.name}/package.json`)) continue;
  const { name } = JSON.parse(readFileSync(`${root}packages/${dir.name}/package.json`, 'utf8'));
  if (!existsSync(`${root}node_modules/${name}/package.json`)) bad.push(`${name}: workspace package packages/${dir.name} is not linked`);
}
if (bad.length) {
  console.error(`toolchain drift (run \`npm ci\`):\n  ${bad.join('\n  ')}`);
  process.exit(1);
}
console.log(`toolchain: ${Object.keys(pinned).length} pinned packages at their pinned versions, workspace packages linked`);
