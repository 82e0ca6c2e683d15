#!/usr/bin/env node
// Builds native/kernels.cc into native/build/googlenet_native.node with the machine's g++ and Node's own
// headers (no download, no node-gyp). Run by `npm install` (the package's install script) and safe to rerun.
// Never fails the install: without a compiler the model runs on plain tfjs-wasm (src/native.ts falls back).
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const out = path.join(here, 'build', 'googlenet_native.node');
const include = [path.resolve(path.dirname(process.execPath), '../include/node'), '/usr/include/node', '/usr/local/include/node']
  .find((d) => fs.existsSync(path.join(d, 'node_api.h')));
const cxx = process.env.CXX || 'g++';
if (!include) {
  console.warn('googlenet native kernels: Node headers (node_api.h) not found; using tfjs-wasm only');
  process.exit(0);
}
fs.mkdirSync(path.dirname(out), { recursive: true });
const args = ['-O3', '-march=native', '-std=c++17', '-shared', '-fPIC', '-DNODE_GYP_MODULE_NAME=googlenet_native',
  `-I${include}`, path.join(here, 'kernels.cc'), '-o', `${out}.tmp`, '-lpthread'];
const r = spawnSync(cxx, args, { encoding: 'utf8' });
if (r.status !== 0) {
  console.warn(`googlenet native kernels: ${cxx} failed (${(r.stderr || r.error?.message || '').trim().split('\n')[0]}); using tfjs-wasm only`);
  process.exit(0);
}
fs.renameSync(`${out}.tmp`, out);
console.log(`googlenet native kernels: built ${path.relative(process.cwd(), out)}`);
