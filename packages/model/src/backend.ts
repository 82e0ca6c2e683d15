/**
 * Backend selection. `auto` takes the best backend that loads here, in the order
 * tfjs-node-gpu > webgpu (when Dawn finds a hardware GPU adapter) > tfjs-node > wasm > cpu,
 * and reports one line naming the choice (and for webgpu, the adapter) and why each better one was skipped.
 */
import { spawnSync } from 'node:child_process';
import { createRequire } from 'node:module';
import * as tf from '@tensorflow/tfjs';
import { BackendError } from './errors.js';
import { registerWebgpuModule } from './webgpu-kernels.js';
import { installF16Kernels, useSubgroupMatrix } from './webgpu-f16-kernels.js';
import { verifyPinnedDevice } from './device-select.js';
import { choosePrecision, PRECISION_FEATURES, setComputePrecision, shape, type PrecisionChoice, type PrecisionRequest, type SubgroupMatrixConfig } from './precision.js';

export type BackendName = 'auto' | 'tensorflow' | 'webgpu' | 'wasm' | 'cpu';

export interface BackendInfo {
  /** What tf.getBackend() now runs. */
  name: 'tensorflow-gpu' | 'tensorflow' | 'webgpu' | 'wasm' | 'cpu';
  /** e.g. "backend: wasm (tfjs-node-gpu: not installed; tfjs-node: not installed)". */
  line: string;
  skipped: { backend: string; reason: string }[];
  /** webgpu: the adapter Dawn gave us. */
  adapter?: AdapterInfo;
  /** The compute precision resolved from SelectBackendOptions.precision (fp32 when none was asked). */
  precision: PrecisionChoice;
}

/** What Dawn reports about a WebGPU adapter (GPUAdapterInfo), plus whether it is a CPU rasteriser. */
export interface AdapterInfo {
  vendor: string;
  architecture: string;
  device: string;
  description: string;
  /** llvmpipe/lavapipe, SwiftShader, WARP: correct but slower than wasm; `auto` never picks one. */
  software: boolean;
  /** The GPU that DRI_PRIME pinned this process to, as Mesa's device-select layer lists it (device-select.ts). */
  pinned?: { pci: string; name: string };
  /** The adapter's features (shader-f16, chromium-experimental-subgroup-matrix, ...), sorted. */
  features?: string[];
  /** adapter.info.subgroupMatrixConfigs: the cooperative-matrix shapes and types offered ([] when none). */
  subgroupMatrixConfigs?: SubgroupMatrixConfig[];
  /** adapter.info.subgroupMaxSize: the workgroup x size of the subgroup-matrix GEMM (one subgroup per workgroup). */
  subgroupMaxSize?: number;
}

export interface SelectBackendOptions {
  /** Receives the one-line report. Default: none. */
  log?: (line: string) => void;
  /** --precision: f16 where the backend cannot is a PrecisionError (PRECISION_UNSUPPORTED). Default: fp32. */
  precision?: PrecisionRequest;
}

type Candidate = 'tfjs-node-gpu' | 'webgpu' | 'tfjs-node' | 'wasm' | 'cpu';

/**
 * Environment read by the webgpu loader. Dawn's Node binding hands out one adapter per process: the first
 * Vulkan device, or the first whose device name contains GOOGLENET_WEBGPU_ADAPTER (Dawn's `adapter=` flag).
 * It cannot tell two GPUs of the same model apart, so on such machines every worker shares the first one.
 */
export const WEBGPU_ADAPTER_ENV = 'GOOGLENET_WEBGPU_ADAPTER';

/** How to get each backend, for error messages. */
const HOW_TO: Record<Candidate, string> = {
  'tfjs-node-gpu': 'npm install @tensorflow/tfjs-node-gpu@4.22.0 (downloads libtensorflow 2.9.1 at install time: needs ' +
    'internet access, CUDA 11.2 and cuDNN 8.1)',
  webgpu: 'the optional dependencies webgpu@0.6.2 (Dawn\'s Node binding) and @tensorflow/tfjs-backend-webgpu@4.22.0, ' +
    'which npm ci installs on linux-x64, plus a GPU with a Vulkan driver and the loader libvulkan1 (apt-get install ' +
    'libvulkan1; NVIDIA\'s driver also needs libglvnd: libegl1 libgl1 libglx0)',
  'tfjs-node': 'npm install @tensorflow/tfjs-node@4.22.0 (downloads libtensorflow at install time: needs internet access)',
  wasm: 'npm install @tensorflow/tfjs-backend-wasm@4.22.0',
  cpu: 'the cpu backend ships with @tensorflow/tfjs',
};

/** Thrown inside a loader: a reason short enough for the one-line report. */
class Unavailable extends Error {}

const isNotInstalled = (e: unknown, pkg: string): boolean => {
  const err = e as { code?: string; message?: string };
  return (err.code === 'ERR_MODULE_NOT_FOUND' || err.code === 'MODULE_NOT_FOUND') && !!err.message?.includes(pkg);
};

/** import() of an optional package; a variable specifier keeps bundlers and tsc from resolving it. */
async function importOptional(pkg: string): Promise<Record<string, unknown>> {
  try {
    return (await import(pkg)) as Record<string, unknown>;
  } catch (e) {
    if (isNotInstalled(e, pkg)) throw new Unavailable('not installed');
    throw new Unavailable(`failed to load: ${firstLine(e)}`);
  }
}

const firstLine = (e: unknown): string => String((e as Error)?.message ?? e).split('\n')[0];

async function activate(name: string): Promise<void> {
  let ok = false;
  try {
    ok = await tf.setBackend(name);
  } catch (e) {
    throw new Unavailable(`failed to initialise: ${firstLine(e)}`);
  }
  if (!ok) throw new Unavailable(`registered but failed to initialise`);
  await tf.ready();
}

/** The adapter of this process's Dawn instance, once webgpu has been activated. */
let webgpuReady: AdapterInfo | undefined;

interface DawnAdapter {
  info?: { vendor?: string; architecture?: string; device?: string; description?: string; subgroupMatrixConfigs?: SubgroupMatrixConfig[]; subgroupMaxSize?: number };
  isFallbackAdapter?: boolean;
  features?: Iterable<string>;
  limits?: Record<string, number>;
  requestDevice?(descriptor: object): Promise<unknown>;
}

function adapterInfo(a: DawnAdapter): AdapterInfo {
  const i = a.info ?? {};
  const [vendor, architecture, device, description] = [i.vendor ?? '', i.architecture ?? '', i.device ?? '', i.description ?? ''];
  const software = a.isFallbackAdapter === true || architecture === 'software' ||
    /llvmpipe|lavapipe|swiftshader|microsoft basic render/i.test(`${device} ${description}`);
  const features = [...(a.features ?? [])].sort();
  const subgroupMatrixConfigs = [...(i.subgroupMatrixConfigs ?? [])].map(({ componentType, resultComponentType, M, N, K }) =>
    ({ componentType, resultComponentType, M, N, K }));
  return { vendor, architecture, device, description, software, features, subgroupMatrixConfigs, ...(i.subgroupMaxSize ? { subgroupMaxSize: i.subgroupMaxSize } : {}) };
}

/**
 * Dawn toggles every instance gets: vulkan_enable_f16_on_nvidia exposes shader-f16 on NVIDIA's Vulkan driver
 * (Dawn hides it there otherwise), allow_unsafe_apis exposes chromium-experimental-subgroup-matrix (tensor
 * cores). They only make features available; a device uses one only when it requests it. Merged with any
 * enable-dawn-features= of GOOGLENET_DAWN_FLAGS (Dawn keeps one value per key).
 */
export const DAWN_TOGGLES = ['allow_unsafe_apis', 'vulkan_enable_f16_on_nvidia'];

/** Dawn's Node flags: adapter= and GOOGLENET_DAWN_FLAGS as given, with DAWN_TOGGLES merged into enable-dawn-features=. */
export function dawnFlags(env: NodeJS.ProcessEnv = process.env): string[] {
  const raw = [
    ...(env[WEBGPU_ADAPTER_ENV] ? [`adapter=${env[WEBGPU_ADAPTER_ENV]}`] : []),
    // Raw flags for Dawn's Node binding, space-separated (e.g. "enable-dawn-features=skip_validation").
    ...(env.GOOGLENET_DAWN_FLAGS ?? '').split(/\s+/).filter(Boolean),
  ];
  const key = 'enable-dawn-features=';
  const toggles = [...DAWN_TOGGLES];
  for (const f of raw.filter((f) => f.startsWith(key))) {
    for (const t of f.slice(key.length).split(',').filter(Boolean)) if (!toggles.includes(t)) toggles.push(t);
  }
  return [...raw.filter((f) => !f.startsWith(key)), `${key}${toggles.join(',')}`];
}

/** e.g. `nvidia, "NVIDIA: 580.159.04", "NVIDIA H200" at PCI 0000:1b:00.0` or `mesa, "llvmpipe: Mesa 25.0.7", software`. */
export function describeAdapter(a: AdapterInfo): string {
  const pinned = a.pinned ? `${JSON.stringify(a.pinned.name)} at PCI ${a.pinned.pci}` : '';
  return [a.vendor || 'unknown vendor', JSON.stringify(a.description || a.device), pinned, a.software ? 'software' : ''].filter(Boolean).join(', ');
}

/** What a Dawn instance in a child process found: its adapter, or why none (Dawn's and the loader's words). */
interface DawnProbe {
  adapter: DawnAdapter | null;
  /** Dawn rejected the request (it does, listing the adapters it has, when adapter= matches none). */
  rejected?: string;
  /** Everything Dawn and the Vulkan loader printed, in one line. */
  said: string;
}

/**
 * Asks Dawn for an adapter in a child process. Dawn and the Vulkan loader print their warnings (with C++
 * source paths) straight to the process's stderr, once per process, and requestAdapter() only resolves null:
 * probing in a child keeps those lines out of every rank's output and puts them in the backend line instead.
 * So this process creates its own Dawn instance only once the child has found an adapter it will use.
 */
function probeDawn(entry: string, flags: string[]): DawnProbe {
  const MARK = 'GOOGLENET_DAWN_PROBE ';
  const code = `const { create } = await import(${JSON.stringify(entry)});` +
    `const out = await create(${JSON.stringify(flags)}).requestAdapter({ powerPreference: 'high-performance' }).then(` +
    '(a) => ({ adapter: a && { info: { vendor: a.info.vendor, architecture: a.info.architecture, ' +
    'device: a.info.device, description: a.info.description }, isFallbackAdapter: a.isFallbackAdapter } }),' +
    '(e) => ({ adapter: null, rejected: String(e?.message ?? e) }));' +
    `console.log(${JSON.stringify(MARK)} + JSON.stringify(out)); process.exit(0);`;
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', code], { encoding: 'utf8', timeout: 30_000 });
  const lines = `${r.stderr ?? ''}\n${r.stdout ?? ''}`.split('\n').map((l) => l.trim());
  const result = lines.find((l) => l.startsWith(MARK));
  const said = lines.filter((l) => l && !l.startsWith(MARK) && !/^at |^- While/.test(l)).slice(0, 4)
    .map((l) => l.replace(/^Warning: /, '')).join(' | ');
  if (!result) return { adapter: null, said: said || `the probe failed (${r.error?.message ?? `status ${r.status}`})` };
  return { ...(JSON.parse(result.slice(MARK.length)) as Omit<DawnProbe, 'said'>), said };
}

const NO_ADAPTER_HINT = '(a GPU with a Vulkan driver and the loader libvulkan1 are needed; VK_DRIVER_FILES may point at the driver\'s ICD json)';

/** Loads and activates one candidate, or throws Unavailable with the reason. */
const LOADERS: Record<Candidate, (mode: BackendName) => Promise<AdapterInfo | void>> = {
  'tfjs-node-gpu': async () => {
    await importOptional('@tensorflow/tfjs-node-gpu');
    await activate('tensorflow');
  },
  'tfjs-node': async () => {
    await importOptional('@tensorflow/tfjs-node');
    await activate('tensorflow');
  },
  webgpu: async (mode) => {
    // One Dawn instance per process: tfjs keeps its backend (and GPU device) once created, and a second
    // instance replacing the first would be garbage-collected under it (a segfault, seen on lavapipe).
    if (webgpuReady) {
      if (webgpuReady.software && mode === 'auto') throw new Unavailable(`only a software adapter (${describeAdapter(webgpuReady)})`);
      await activate('webgpu');
      return webgpuReady;
    }
    const dawn = await importOptional('webgpu');
    const create = dawn.create as ((flags: string[]) => unknown) | undefined;
    if (typeof create !== 'function') throw new Unavailable('the `webgpu` package has no create(): expected Dawn\'s Node binding');
    Object.assign(globalThis, dawn.globals as object);
    // A process pinned to one GPU gets it or fails here (GPU_NOT_ISOLATED), never falls back to another GPU.
    const pinned = verifyPinnedDevice();
    const flags = dawnFlags();
    const probe = probeDawn(createRequire(import.meta.url).resolve('webgpu'), flags);
    if (probe.rejected !== undefined) throw new Unavailable(`Dawn: ${probe.rejected.replace(/\n/g, ' ')}`);
    if (!probe.adapter) throw new Unavailable(`no WebGPU adapter: ${probe.said || 'Dawn said nothing'} ${NO_ADAPTER_HINT}`);
    if (adapterInfo(probe.adapter).software && mode === 'auto') {
      const info: AdapterInfo = { ...adapterInfo(probe.adapter), ...(pinned ? { pinned: { pci: pinned.pci!, name: pinned.name } } : {}) };
      throw new Unavailable(`only a software adapter (${describeAdapter(info)}), slower than wasm; --backend=webgpu uses it anyway`);
    }
    const gpu = create(flags) as { requestAdapter(o?: object): Promise<DawnAdapter | null> };
    let adapter: DawnAdapter | null;
    try {
      adapter = await gpu.requestAdapter({ powerPreference: 'high-performance' });
    } catch (e) {
      // Dawn rejects (listing the adapters it has) when adapter= matches none of them.
      throw new Unavailable(`Dawn: ${String((e as Error)?.message ?? e).replace(/\n/g, ' ')}`);
    }
    if (!adapter) throw new Unavailable(`no WebGPU adapter in this process, though a probe found ${describeAdapter(adapterInfo(probe.adapter))}: ${probe.said} ${NO_ADAPTER_HINT}`);
    const info: AdapterInfo = { ...adapterInfo(adapter), ...(pinned ? { pinned: { pci: pinned.pci!, name: pinned.name } } : {}) };
    if (info.software && mode === 'auto') {
      throw new Unavailable(`only a software adapter (${describeAdapter(info)}), slower than wasm; --backend=webgpu uses it anyway`);
    }
    Object.defineProperty(globalThis, 'navigator', { value: { gpu }, configurable: true, writable: true });
    const mod = await importOptional('@tensorflow/tfjs-backend-webgpu');
    registerWebgpuModule(mod);
    registerWebgpuOnAdapter(mod, adapter);
    await activate('webgpu');
    webgpuReady = info;
    return info;
  },
  wasm: async () => {
    await importOptional('@tensorflow/tfjs-backend-wasm');
    await activate('wasm');
    shareDataInWasmIdentity();
  },
  cpu: async () => activate('cpu'),
};

/**
 * tfjs-wasm's Identity (tf.clone, and every tensor a custom gradient saves) copies the data; the cpu and
 * webgl backends share it, which is safe because tensors are immutable (variables swap their data on
 * assign). Sharing removes ~1,300 full-size copies from a training step. Idempotent.
 */
function shareDataInWasmIdentity(): void {
  const kernel = tf.getKernel('Identity', 'wasm');
  if (!kernel || (kernel.kernelFunc as { shares?: boolean }).shares) return;
  const kernelFunc = Object.assign(({ inputs, backend }: { inputs: tf.NamedTensorInfoMap; backend: unknown }) => {
    const x = inputs.x as tf.TensorInfo;
    (backend as { incRef(id: unknown): void }).incRef(x.dataId);
    return { dataId: x.dataId, shape: x.shape, dtype: x.dtype };
  }, { shares: true });
  tf.unregisterKernel('Identity', 'wasm');
  tf.registerKernel({ ...kernel, kernelFunc: kernelFunc as unknown as tf.KernelFunc });
}

/**
 * tfjs-backend-webgpu's own factory requests a device with timestamp-query and bgra8unorm-storage only; f16 and
 * subgroup-matrix kernels need the device to have shader-f16 and chromium-experimental-subgroup-matrix. So the
 * factory is replaced by one that asks the same adapter for the same limits plus those features where offered.
 */
function registerWebgpuOnAdapter(mod: Record<string, unknown>, adapter: DawnAdapter): void {
  const WebGPUBackend = mod.WebGPUBackend as (new (device: unknown, info?: unknown) => tf.KernelBackend) | undefined;
  if (typeof WebGPUBackend !== 'function' || typeof adapter.requestDevice !== 'function') {
    throw new Unavailable('@tensorflow/tfjs-backend-webgpu exports no WebGPUBackend, or the adapter cannot request a device');
  }
  const offered = new Set(adapter.features ?? []);
  // Subgroup matrices need the subgroups feature on the device too (Dawn's feature dependency).
  const requiredFeatures = ['timestamp-query', 'bgra8unorm-storage', ...PRECISION_FEATURES,
    ...(offered.has('chromium-experimental-subgroup-matrix') ? ['subgroups'] : [])].filter((f) => offered.has(f));
  const l = adapter.limits ?? {};
  const requiredLimits = Object.fromEntries(['maxComputeWorkgroupStorageSize', 'maxComputeWorkgroupsPerDimension', 'maxStorageBufferBindingSize',
    'maxBufferSize', 'maxComputeWorkgroupSizeX', 'maxComputeInvocationsPerWorkgroup'].filter((k) => l[k] !== undefined).map((k) => [k, l[k]]));
  if (tf.findBackendFactory('webgpu')) tf.removeBackend('webgpu');
  tf.registerBackend('webgpu', async () => new WebGPUBackend(await adapter.requestDevice!({ requiredFeatures, requiredLimits }), adapter.info), 3);
}

const INFO_NAME: Record<Candidate, BackendInfo['name']> = {
  'tfjs-node-gpu': 'tensorflow-gpu', webgpu: 'webgpu', 'tfjs-node': 'tensorflow', wasm: 'wasm', cpu: 'cpu',
};

/**
 * Makes `requested` the active tfjs backend. Explicit names fail with BACKEND_UNAVAILABLE (and how to get the
 * backend) when it cannot load; 'tensorflow' means tfjs-node-gpu if installed, else tfjs-node.
 */
export async function selectBackend(requested: BackendName, opts: SelectBackendOptions = {}): Promise<BackendInfo> {
  const order: Record<BackendName, Candidate[]> = {
    auto: ['tfjs-node-gpu', 'webgpu', 'tfjs-node', 'wasm', 'cpu'],
    tensorflow: ['tfjs-node-gpu', 'tfjs-node'],
    webgpu: ['webgpu'],
    wasm: ['wasm'],
    cpu: ['cpu'],
  };
  if (!Object.hasOwn(order, requested)) {
    throw new BackendError('BACKEND_UNKNOWN', `unknown backend '${requested}': use one of ${Object.keys(order).join(', ')}`);
  }
  // webgpu's loader imports the `webgpu` package before probing for a GPU, so where the package is not
  // installed it is skipped at the cost of a failed import.
  const candidates = order[requested];
  const skipped: BackendInfo['skipped'] = [];
  for (const c of candidates) {
    let adapter: AdapterInfo | void;
    try {
      adapter = await LOADERS[c](requested);
    } catch (e) {
      if (!(e instanceof Unavailable)) throw e;
      skipped.push({ backend: c, reason: e.message });
      continue;
    }
    const why = skipped.map((s) => `${s.backend}: ${s.reason}`).join('; ');
    const on = adapter ? ` on ${describeAdapter(adapter)}` : '';
    let precision = choosePrecision(opts.precision ?? 'fp32', {
      backend: INFO_NAME[c], features: adapter?.features, subgroupMatrixConfigs: adapter?.subgroupMatrixConfigs,
    });
    setComputePrecision(precision);
    if (precision.precision === 'f16') {
      installF16Kernels();
      // The adapter lists a usable config: the GEMM runs on it only if this device builds it and it computes right.
      if (precision.subgroupMatrix) {
        const why = await useSubgroupMatrix(precision.subgroupMatrix, adapter?.subgroupMaxSize);
        if (why) {
          precision = { ...precision, note: `f16 (subgroup-matrix ${shape(precision.subgroupMatrix)} offered, unusable: ${why}; plain f16 kernels)` };
          setComputePrecision(precision);
        }
      }
    }
    const p = precision.note ? ` ${precision.note}` : '';
    const info: BackendInfo = { name: INFO_NAME[c], line: `backend: ${INFO_NAME[c]}${p}${on}${why ? ` (${why})` : ''}`, skipped, precision };
    if (adapter) info.adapter = adapter;
    opts.log?.(info.line);
    return info;
  }
  const reasons = skipped.map((s) => `${s.backend}: ${s.reason}`).join('; ');
  const how = candidates.map((c) => HOW_TO[c]).join(', or ');
  throw new BackendError('BACKEND_UNAVAILABLE', `backend '${requested}' is unavailable (${reasons}). To get it: ${how}. ` +
    `Or use --backend=wasm, which runs everywhere.`);
}
