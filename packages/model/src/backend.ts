/**
 * Backend selection. `auto` takes the best backend that loads here, in the order
 * tfjs-node-gpu > webgpu (only when the `webgpu` package is installed) > tfjs-node > wasm > cpu,
 * and reports one line naming the choice and why each better one was skipped.
 */
import * as tf from '@tensorflow/tfjs';
import { BackendError } from './errors.js';

export type BackendName = 'auto' | 'tensorflow' | 'webgpu' | 'wasm' | 'cpu';

export interface BackendInfo {
  /** What tf.getBackend() now runs. */
  name: 'tensorflow-gpu' | 'tensorflow' | 'webgpu' | 'wasm' | 'cpu';
  /** e.g. "backend: wasm (tfjs-node-gpu: not installed; tfjs-node: not installed)". */
  line: string;
  skipped: { backend: string; reason: string }[];
}

export interface SelectBackendOptions {
  /** Receives the one-line report. Default: none. */
  log?: (line: string) => void;
}

type Candidate = 'tfjs-node-gpu' | 'webgpu' | 'tfjs-node' | 'wasm' | 'cpu';

/** How to get each backend, for error messages. */
const HOW_TO: Record<Candidate, string> = {
  'tfjs-node-gpu': 'npm install @tensorflow/tfjs-node-gpu@4.22.0 (downloads libtensorflow 2.9.1 at install time: needs ' +
    'internet access, CUDA 11.2 and cuDNN 8.1)',
  webgpu: 'npm install webgpu @tensorflow/tfjs-backend-webgpu@4.22.0 (Dawn\'s Node binding; needs a Vulkan-capable GPU ' +
    'and its loader, libvulkan1)',
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

/** Loads and activates one candidate, or throws Unavailable with the reason. */
const LOADERS: Record<Candidate, () => Promise<void>> = {
  'tfjs-node-gpu': async () => {
    await importOptional('@tensorflow/tfjs-node-gpu');
    await activate('tensorflow');
  },
  'tfjs-node': async () => {
    await importOptional('@tensorflow/tfjs-node');
    await activate('tensorflow');
  },
  webgpu: async () => {
    const dawn = await importOptional('webgpu');
    const create = dawn.create as ((flags: string[]) => unknown) | undefined;
    if (typeof create !== 'function') throw new Unavailable('the `webgpu` package has no create(): expected Dawn\'s Node binding');
    Object.assign(globalThis, dawn.globals as object);
    const gpu = create([]) as { requestAdapter(): Promise<unknown> };
    const adapter = await gpu.requestAdapter().catch(() => null);
    if (!adapter) {
      throw new Unavailable('no WebGPU adapter (no GPU, or no Vulkan loader/driver: install libvulkan1 and the GPU driver)');
    }
    Object.defineProperty(globalThis, 'navigator', { value: { gpu }, configurable: true, writable: true });
    await importOptional('@tensorflow/tfjs-backend-webgpu');
    await activate('webgpu');
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
    try {
      await LOADERS[c]();
    } catch (e) {
      if (!(e instanceof Unavailable)) throw e;
      skipped.push({ backend: c, reason: e.message });
      continue;
    }
    const why = skipped.map((s) => `${s.backend}: ${s.reason}`).join('; ');
    const info: BackendInfo = { name: INFO_NAME[c], line: `backend: ${INFO_NAME[c]}${why ? ` (${why})` : ''}`, skipped };
    opts.log?.(info.line);
    return info;
  }
  const reasons = skipped.map((s) => `${s.backend}: ${s.reason}`).join('; ');
  const how = candidates.map((c) => HOW_TO[c]).join(', or ');
  throw new BackendError('BACKEND_UNAVAILABLE', `backend '${requested}' is unavailable (${reasons}). To get it: ${how}. ` +
    `Or use --backend=wasm, which runs everywhere.`);
}
