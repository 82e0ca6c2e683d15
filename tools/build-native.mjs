#!/usr/bin/env node
// Builds one N-API addon from a single C++ file with the machine's g++ and Node's own headers (no download,
// no node-gyp): `node tools/build-native.mjs NAME SOURCE.cc OUT.node`, paths relative to the current folder.
// Packages run it from their `install` script. It never fails the install: without a compiler or headers it
// says so and exits 0, and the package falls back to its JavaScript path (each package's src says which).
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';

const [name, source, out] = process.argv.slice(2);
if (!name || !source || !out) {
  console.error('usage: node tools/build-native.mjs NAME SOURCE.cc OUT.node');
  process.exit(2);
}
const include = [path.resolve(path.dirname(process.execPath), '../include/node'), '/usr/include/node', '/usr/local/include/node']
  .find((d) => fs.existsSync(path.join(d, 'node_api.h')));
const cxx = process.env.CXX || 'g++';
if (!include) {
  console.warn(`${name}: Node headers (node_api.h) not found; using the JavaScript path`);
  process.exit(0);
}
fs.mkdirSync(path.dirname(out), { recursive: true });
const args = ['-O3', '-march=native', '-std=c++17', '-shared', '-fPIC', `-DNODE_GYP_MODULE_NAME=${name}`,
  `-I${include}`, source, '-o', `${out}.tmp`, '-lpthread'];
const r = spawnSync(cxx, args, { encoding: 'utf8' });
if (r.status !== 0) {
  console.warn(`${name}: ${cxx} failed (${(r.stderr || r.error?.message || '').trim().split('\n')[0]}); using the JavaScript path`);
  process.exit(0);
}
fs.renameSync(`${out}.tmp`, out);
console.log(`${name}: built ${path.relative(process.cwd(), out)}`);
