#!/usr/bin/env node
// Builds .gpu/, everything the lent GPU machine (NVIDIA H200, no Node.js, no network) needs to run this
// project through WebGPU: `node tools/gpu-pack.mjs`, then on the device `bash tools/gpu-run.sh` with carry
// [".gpu"]. See /work/shared/gpu/README.md for that machine. .gpu/ is rebuilt from scratch and holds only
//   node.xz       this machine's Node binary, xz-compressed (the device has no Node);
//   app.tar.xz    app/: esbuild bundles of the entry points (train.mjs, cli/worker.mjs, cli/coordinator.mjs,
//                 check-gradients.mjs), Dawn's Node binding for linux-x64 (node_modules/webgpu) and the
//                 tfjs-backend-wasm .wasm files;
//   *.deb         the Vulkan and GL loaders from Debian (the NVIDIA Vulkan driver needs libglvnd);
//   device-select.tar.xz  Mesa's device-select Vulkan layer and the libraries it links (gpu-run.sh's devsel stage).
// The uncompressed app is staged in tmp/gpu-pack/app (git-ignored, not carried). Fails when .gpu/ exceeds
// 64 MiB, the most a device command can carry. Plain Node, no dependency beyond the esbuild that tsx ships.
//
// What the bundles do differently from `tsx` (packages/ is not changed for them):
//  - sharp (native, with libvips) stays external and is not shipped: the dataloader loads it only when it
//    decodes a JPEG/PNG, so synthetic, Fashion-MNIST, CIFAR and raw shards work, and image data sets fail with
//    DEPENDENCY_MISSING saying so.
//  - optional backends: packages/model/src/backend.ts loads them with `import(pkg)` (a variable, so bundlers
//    leave it alone) and at run time Node would look for them in app/node_modules. Such imports are routed to
//    a table that imports @tensorflow/tfjs-backend-webgpu and -wasm statically (bundled, sharing the bundle's
//    tfjs-core, evaluated only when called) and hands anything else (webgpu, tfjs-node[-gpu]) to Node.
//  - native addons (*.node through createRequire) stay unresolved: their loaders fall back to JS.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const GPU = path.join(root, '.gpu');
const STAGE = path.join(root, 'tmp', 'gpu-pack');
const APP = path.join(STAGE, 'app');
const LIMIT = 64 * 1024 * 1024;
const DEBS = ['libvulkan1', 'libglvnd0', 'libegl1', 'libgl1', 'libglx0', 'libopengl0', 'libgles2'];
/** Mesa's device-select Vulkan layer (one .so and its manifest out of the 11 MB mesa-vulkan-drivers) and the
 * libraries it links, which a CUDA image without Mesa may lack: gpu-run.sh's devsel stage uses them. */
const LAYER_DEB = 'mesa-vulkan-drivers';
const LAYER_SO = 'libVkLayer_MESA_device_select.so';
const LAYER_JSON = 'VkLayer_MESA_device_select.json';
const LAYER_DEP_DEBS = ['libxcb1', 'libxcb-dri3-0', 'libwayland-client0', 'libdrm2', 'libxau6', 'libxdmcp6', 'libffi8', 'libbsd0', 'libmd0'];

/** Each bundle: output path inside app/ (without .mjs) -> entry. The launcher starts cli/worker.mjs and
 * cli/coordinator.mjs beside its own folder when GOOGLENET_*_ENTRY are unset (launcher.ts `entry()`). */
const ENTRIES = {
  train: 'packages/trainer/src/cli/train.ts',
  'cli/worker': 'packages/trainer/src/cli/worker.ts',
  'cli/coordinator': 'packages/trainer/src/cli/coordinator.ts',
  'check-gradients': 'packages/model/src/cli/check-gradients.ts',
};
/** Packages reached only through a variable `import(pkg)` that the bundles should carry themselves. */
const BUNDLED_OPTIONAL = ['@tensorflow/tfjs-backend-webgpu', '@tensorflow/tfjs-backend-wasm'];
/** Left to Node at run time: shipped beside the bundle (webgpu), or absent and handled by the code. */
const EXTERNAL = ['webgpu', 'sharp', '@tensorflow/tfjs-node', '@tensorflow/tfjs-node-gpu', 'msgpackr-extract', 'bufferutil', 'utf-8-validate', '*.node'];
const BANNER = "import { createRequire as __cr } from 'module'; const require = __cr(import.meta.url);" +
  // tfjs-backend-wasm's Emscripten glue finds its .wasm through __dirname (the .wasm files sit beside the bundles).
  " import { fileURLToPath as __fu } from 'url'; import { dirname as __dn } from 'path';" +
  ' const __filename = __fu(import.meta.url); const __dirname = __dn(__filename);';

const fail = (msg) => {
  console.error(`gpu-pack: ${msg}`);
  process.exit(1);
};
const run = (cmd, args, opts = {}) => {
  const r = spawnSync(cmd, args, { stdio: ['ignore', 'inherit', 'inherit'], ...opts });
  if (r.status !== 0) fail(`${cmd} ${args.join(' ')} failed (${r.error?.message ?? `exit ${r.status}`})`);
  return r;
};
const mib = (n) => `${(n / 1048576).toFixed(2)} MiB`;
const step = (s) => console.log(`\n== ${s}`);

const OPTIONAL_TABLE = `
export function __gpuPackImport(p) {
  switch (p) {
${BUNDLED_OPTIONAL.map((p) => `    case ${JSON.stringify(p)}: return import(${JSON.stringify(p)});`).join('\n')}
    default: return import(p);
  }
}
`;

/** `import(name)` with an identifier (not a literal): the only kind esbuild leaves to run time. */
const VARIABLE_IMPORT = /\bimport\(\s*(?:\/\*[\s\S]*?\*\/\s*)?([A-Za-z_][\w$]*)\s*\)/g;

function packPlugin(rewritten) {
  return {
    name: 'gpu-pack',
    setup(build) {
      build.onResolve({ filter: /^gpu-pack:optional$/ }, () => ({ path: 'optional', namespace: 'gpu-pack' }));
      build.onLoad({ filter: /.*/, namespace: 'gpu-pack' }, () => ({ contents: OPTIONAL_TABLE, loader: 'js', resolveDir: root }));
      build.onLoad({ filter: /[\\/]packages[\\/][^\\/]+[\\/]src[\\/].*\.[cm]?ts$/ }, async (a) => {
        const text = await fs.promises.readFile(a.path, 'utf8');
        if (!VARIABLE_IMPORT.test(text)) return undefined;
        VARIABLE_IMPORT.lastIndex = 0;
        rewritten.add(path.relative(root, a.path));
        return { contents: `import { __gpuPackImport } from 'gpu-pack:optional';\n${text.replace(VARIABLE_IMPORT, '__gpuPackImport($1)')}`, loader: 'ts' };
      });
    },
  };
}

async function bundle() {
  let esbuild;
  try {
    esbuild = await import('esbuild');
  } catch {
    fail('esbuild not found: it ships with tsx (npm ci installs it)');
  }
  const rewritten = new Set();
  const entryPoints = Object.fromEntries(Object.entries(ENTRIES).map(([out, src]) => [out, path.join(root, src)]));
  const r = await esbuild.build({
    entryPoints, outdir: APP, outExtension: { '.js': '.mjs' }, bundle: true, platform: 'node', format: 'esm',
    target: 'node20', banner: { js: BANNER }, external: EXTERNAL, plugins: [packPlugin(rewritten)],
    metafile: true, logLevel: 'warning', legalComments: 'none', absWorkingDir: root,
  });
  for (const f of rewritten) console.log(`routed variable import() in ${f} through the bundled-optional table`);
  // The webgpu backend must be inside the bundles that select backends, or the device has no webgpu.
  for (const [file, out] of Object.entries(r.metafile.outputs)) {
    const inputs = Object.keys(out.inputs);
    const has = (p) => inputs.some((i) => i.includes(`node_modules/${p}/`));
    console.log(`${path.relative(root, file)}: ${mib(out.bytes)}, ${inputs.length} modules${BUNDLED_OPTIONAL.filter(has).map((p) => `, ${p}`).join('')}`);
    if (/(train|worker|check-gradients)\.mjs$/.test(file) && !has('@tensorflow/tfjs-backend-webgpu')) {
      fail(`${path.relative(root, file)} does not contain @tensorflow/tfjs-backend-webgpu: the variable import() in ` +
        'packages/model/src/backend.ts was not routed (see VARIABLE_IMPORT in tools/gpu-pack.mjs)');
    }
  }
}

function copyInto(src, destDir) {
  fs.mkdirSync(destDir, { recursive: true });
  fs.copyFileSync(path.join(root, src), path.join(destDir, path.basename(src)));
}

function downloadDebs() {
  const tryDownload = () => spawnSync('apt-get', ['download', ...DEBS], { cwd: GPU, encoding: 'utf8' });
  let r = tryDownload();
  if (r.status !== 0) {
    console.log(`apt-get download failed (${(r.stderr || r.error?.message || '').trim().split('\n').pop()}); apt-get update -qq and retry`);
    run('apt-get', ['update', '-qq']);
    r = tryDownload();
  }
  if (r.status !== 0) fail(`apt-get download ${DEBS.join(' ')} failed: ${(r.stderr || r.error?.message || '').trim()}`);
  const got = fs.readdirSync(GPU).filter((f) => f.endsWith('.deb'));
  for (const d of DEBS) if (!got.some((f) => f.startsWith(`${d}_`))) fail(`no ${d}_*.deb after apt-get download`);
}

/** NEEDED entries of an ELF file (objdump -p). */
function needed(file) {
  const r = spawnSync('objdump', ['-p', file], { encoding: 'utf8' });
  if (r.status !== 0) fail(`objdump -p ${file} failed (binutils, which g++ brings): ${r.stderr || r.error?.message}`);
  return [...r.stdout.matchAll(/^\s*NEEDED\s+(\S+)/gm)].map((m) => m[1]);
}

/**
 * .gpu/device-select.tar.xz: device-select/ with share/vulkan/implicit_layer.d/<manifest> (library_path made
 * relative to the manifest, so the tree works wherever it is unpacked and XDG_DATA_DIRS names its share/), lib/<layer>
 * and lib/deps/ (every library the layer needs, transitively, except glibc's; gpu-run.sh links only those the
 * device lacks). From apt-get download: the installed mesa-vulkan-drivers version, the one this machine's tests use.
 */
function packDeviceSelect() {
  const debs = path.join(STAGE, 'device-select-debs');
  const root = path.join(STAGE, 'device-select-root');
  const out = path.join(STAGE, 'device-select');
  for (const d of [debs, root, path.join(out, 'lib', 'deps'), path.join(out, 'share', 'vulkan', 'implicit_layer.d')]) fs.mkdirSync(d, { recursive: true });
  const installed = spawnSync('dpkg-query', ['-W', '-f=${Version}', LAYER_DEB], { encoding: 'utf8' });
  const layerDeb = installed.status === 0 && installed.stdout.trim() ? `${LAYER_DEB}=${installed.stdout.trim()}` : LAYER_DEB;
  const r = spawnSync('apt-get', ['download', layerDeb, ...LAYER_DEP_DEBS], { cwd: debs, encoding: 'utf8' });
  if (r.status !== 0) fail(`apt-get download ${layerDeb} ${LAYER_DEP_DEBS.join(' ')} failed: ${(r.stderr || r.error?.message || '').trim()}`);
  for (const f of fs.readdirSync(debs).filter((f) => f.endsWith('.deb'))) run('dpkg-deb', ['-x', path.join(debs, f), root]);
  const libDirs = ['usr/lib/x86_64-linux-gnu', 'lib/x86_64-linux-gnu'].map((d) => path.join(root, d));
  const find = (name) => libDirs.map((d) => path.join(d, name)).find((f) => fs.existsSync(f));
  const so = find(LAYER_SO);
  const manifest = path.join(root, 'usr/share/vulkan/implicit_layer.d', LAYER_JSON);
  if (!so || !fs.existsSync(manifest)) fail(`${LAYER_DEB}'s .deb has no ${LAYER_SO} or ${LAYER_JSON}: the layer moved; update tools/gpu-pack.mjs`);
  fs.copyFileSync(so, path.join(out, 'lib', LAYER_SO));
  const json = JSON.parse(fs.readFileSync(manifest, 'utf8'));
  json.layer.library_path = `../../../lib/${LAYER_SO}`; // the loader resolves a path with a slash from the manifest's folder
  fs.writeFileSync(path.join(out, 'share', 'vulkan', 'implicit_layer.d', LAYER_JSON), JSON.stringify(json, null, 2) + '\n');
  // The closure of NEEDED libraries, glibc's own excepted (the device has a glibc; the layer needs GLIBC_2.33).
  const glibc = /^(libc|libm|libdl|libpthread|librt|ld-linux-x86-64)\.so/;
  const todo = needed(so);
  const shipped = new Set();
  while (todo.length) {
    const lib = todo.shift();
    if (glibc.test(lib) || shipped.has(lib)) continue;
    const f = find(lib);
    if (!f) fail(`${LAYER_SO} needs ${lib}, which none of ${LAYER_DEP_DEBS.join(', ')} ships: add its package to LAYER_DEP_DEBS`);
    fs.copyFileSync(fs.realpathSync(f), path.join(out, 'lib', 'deps', lib));
    shipped.add(lib);
    todo.push(...needed(f));
  }
  console.log(`${LAYER_SO} (${layerDeb}) with ${[...shipped].join(', ')}`);
  run('tar', ['cf', path.join(GPU, 'device-select.tar.xz'), '-I', 'xz -T2 -6', '-C', STAGE, 'device-select']);
  // The packed layer must load and list this machine's devices (lavapipe here) with only its own libraries.
  const probe = "const { create } = await import('webgpu'); await create([]).requestAdapter();";
  // Only the packed layer's folder on the loader's search path, so the drivers are named directly.
  const icds = ['/usr/share/vulkan/icd.d', '/etc/vulkan/icd.d'].flatMap((d) => (fs.existsSync(d) ? fs.readdirSync(d).map((f) => path.join(d, f)) : []));
  const env = { ...process.env, MESA_VK_DEVICE_SELECT: 'list', XDG_DATA_DIRS: path.join(out, 'share'), XDG_CONFIG_DIRS: '/nonexistent',
    LD_LIBRARY_PATH: path.join(out, 'lib', 'deps'), VK_DRIVER_FILES: process.env.VK_DRIVER_FILES ?? icds.join(':') };
  const p = spawnSync(process.execPath, ['--input-type=module', '-e', probe], { cwd: APP, env, encoding: 'utf8', timeout: 60_000 });
  const listing = (p.stderr || '').split('\n').filter((l) => /^selectable devices:|^\s+GPU \d+:/.test(l));
  if (!listing.length) console.log(`note: the packed layer listed nothing here (no Vulkan device, or it did not load): ${(p.stderr || '').trim().split('\n').slice(0, 3).join(' | ')}`);
  else console.log(`packed layer, MESA_VK_DEVICE_SELECT=list here: ${listing.map((l) => l.trim()).join(' ')}`);
}

/** Unpacks app.tar.xz outside the repository (so no node_modules above it helps) and starts each bundle. */
function smokeTest() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'gpu-pack-smoke-'));
  try {
    run('tar', ['xJf', path.join(GPU, 'app.tar.xz'), '-C', dir]);
    const app = path.join(dir, 'app');
    const env = { ...process.env, GOOGLENET_NATIVE: '0', NODE_PATH: '' };
    for (const f of ['train.mjs', 'check-gradients.mjs']) {
      const r = spawnSync(process.execPath, [f, '--help'], { cwd: app, env, encoding: 'utf8', timeout: 60_000 });
      if (r.status !== 0) fail(`smoke test: node ${f} --help exited ${r.status}:\n${(r.stderr || r.stdout).slice(-2000)}`);
      console.log(`node ${f} --help: ok (${r.stdout.split('\n')[0]})`);
    }
    // worker.mjs without its env must fail with its own message (proving that it loaded), not a missing module.
    const w = spawnSync(process.execPath, ['cli/worker.mjs'], { cwd: app, env, encoding: 'utf8', timeout: 60_000 });
    if (!/GOOGLENET_CONFIG_JSON is not set/.test(w.stderr)) fail(`smoke test: cli/worker.mjs did not load:\n${w.stderr.slice(-2000)}`);
    console.log('node cli/worker.mjs: ok (loads, asks for its launcher env)');
    const probe = "const { create } = await import('webgpu'); console.log(typeof create === 'function' ? 'ok' : 'no create()');";
    const d = spawnSync(process.execPath, ['--input-type=module', '-e', probe], { cwd: app, env, encoding: 'utf8', timeout: 60_000 });
    if (d.stdout.trim() !== 'ok') fail(`smoke test: node_modules/webgpu does not load:\n${d.stderr.slice(-2000)}`);
    console.log("import('webgpu') from app/: ok (dawn.node loads)");
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

async function main() {
  const t0 = Date.now();
  fs.rmSync(GPU, { recursive: true, force: true });
  fs.rmSync(STAGE, { recursive: true, force: true });
  fs.mkdirSync(GPU, { recursive: true });
  fs.mkdirSync(APP, { recursive: true });

  step('bundles (esbuild)');
  await bundle();

  step('Dawn (node_modules/webgpu, linux-x64) and the tfjs-backend-wasm binaries');
  const webgpu = path.join(APP, 'node_modules', 'webgpu');
  copyInto('node_modules/webgpu/index.js', webgpu);
  copyInto('node_modules/webgpu/package.json', webgpu);
  copyInto('node_modules/webgpu/dist/linux-x64/dawn.node', path.join(webgpu, 'dist', 'linux-x64'));
  // webgpu/index.js imports only node builtins and dawn.node; its dependencies (debug, @webgpu/types) are not used at run time.
  const index = fs.readFileSync(path.join(webgpu, 'index.js'), 'utf8');
  const imports = [...index.matchAll(/(?:from\s+|import\(|require\()\s*['"]([^'"]+)['"]/g)].map((m) => m[1]).filter((s) => !/^(node:|module$|path$|url$|fs$)/.test(s));
  if (imports.length) fail(`node_modules/webgpu/index.js now imports ${imports.join(', ')}: ship those too`);
  const wasmDir = 'node_modules/@tensorflow/tfjs-backend-wasm/dist';
  for (const f of fs.readdirSync(path.join(root, wasmDir)).filter((f) => f.endsWith('.wasm'))) copyInto(`${wasmDir}/${f}`, APP);
  fs.writeFileSync(path.join(APP, 'package.json'), JSON.stringify({ name: 'googlenet-gpu-app', private: true, type: 'module' }, null, 2) + '\n');

  step('app.tar.xz');
  run('tar', ['cf', path.join(GPU, 'app.tar.xz'), '-I', 'xz -T2 -6', '-C', STAGE, 'app']);

  step('node.xz');
  const node = fs.realpathSync(process.execPath);
  console.log(`${node} (${process.version}, ${mib(fs.statSync(node).size)})`);
  const out = fs.openSync(path.join(GPU, 'node.xz'), 'w');
  run('xz', ['-T2', '-6', '-c', node], { stdio: ['ignore', out, 'inherit'] });
  fs.closeSync(out);

  step('Vulkan and GL loaders (apt-get download)');
  downloadDebs();

  step('Mesa device-select layer (apt-get download; for the devsel stage)');
  packDeviceSelect();

  step('smoke test (app.tar.xz unpacked outside the repository)');
  smokeTest();

  step('.gpu/');
  let total = 0;
  const files = fs.readdirSync(GPU, { recursive: true }).map(String).filter((f) => fs.statSync(path.join(GPU, f)).isFile()).sort();
  for (const f of files) {
    const n = fs.statSync(path.join(GPU, f)).size;
    total += n;
    console.log(`${String(n).padStart(10)}  ${mib(n).padStart(10)}  .gpu/${f}`);
  }
  console.log(`${String(total).padStart(10)}  ${mib(total).padStart(10)}  total (limit ${LIMIT} bytes = 64 MiB), built in ${((Date.now() - t0) / 1000).toFixed(0)} s`);
  if (total > LIMIT) fail(`.gpu/ is ${total} bytes, over the 64 MiB a device command can carry`);
  // The limit holds for everything that travels: the working tree git does not ignore, plus .gpu/.
  const listed = spawnSync('git', ['ls-files', '-z', '--cached', '--others', '--exclude-standard'], { cwd: root, encoding: 'utf8' });
  if (listed.status === 0) {
    let tree = 0;
    for (const f of listed.stdout.split('\0').filter(Boolean)) {
      try {
        tree += fs.statSync(path.join(root, f)).size;
      } catch {
        /* deleted in the working tree */
      }
    }
    console.log(`${String(tree).padStart(10)}  ${mib(tree).padStart(10)}  the working tree that travels beside it (tracked and untracked, not ignored)`);
    console.log(`${String(tree + total).padStart(10)}  ${mib(tree + total).padStart(10)}  carried in all`);
    if (tree + total > LIMIT) fail(`the working tree and .gpu/ together are ${tree + total} bytes, over the 64 MiB a device command can carry`);
  }
  console.log('\nOn the device: run command `bash tools/gpu-run.sh` with carry [".gpu"] (timeout_s 600).');
  console.log('Only some stages: STAGES="devsel adapter check bench bench-f16 host train" bash tools/gpu-run.sh (any subset). $OUT gets 8 files (8 come back at most):');
  console.log('gpu-run.log, stages.txt, check-gradients.txt, bench.json, f16.json (the adapter\'s f16/subgroup-matrix offer and the f16 bench), host.json, train.json, runs.tar.xz (run folders without weights).');
  console.log('Dry run here on lavapipe (~2 min): GPU_RUN_LOCAL=1 OUT=tmp/gpu-out BENCH_SIZE=32 BENCH_BATCH=4 BENCH_CLASSES=10 ' +
    'CHECK_ARGS=--model-image-size=32 TRAIN_ARGS="--epochs=1 --batch-size=8 --synthetic-size=64,32" bash tools/gpu-run.sh');
}

await main();
