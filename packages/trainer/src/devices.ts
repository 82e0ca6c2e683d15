/**
 * Which NVIDIA GPU each worker of this machine gets, and the environment that pins it.
 *
 * tfjs-node-gpu takes CUDA_VISIBLE_DEVICES. WebGPU cannot: Dawn's Node binding hands a process the first Vulkan
 * adapter (or the first whose name matches), and identical GPUs have identical names. Mesa's device-select Vulkan
 * layer (an implicit layer in Debian's mesa-vulkan-drivers) can: with DRI_PRIME=pci-DDDD_BB_DD_F and
 * MESA_VK_DEVICE_SELECT_FORCE_DEFAULT_DEVICE=1 it shows the process only the device at that PCI address. The
 * layer falls back to its default device, silently, when the address matches nothing, so the model's backend
 * loader checks the address against the layer's own device list before Dawn starts (model: device-select.ts).
 *
 * Discovery needs no tfjs and no Vulkan: `nvidia-smi`, else /sys/bus/pci/devices. In a container with one GPU
 * (Kubernetes nvidia.com/gpu: 1) nvidia-smi sees only that GPU while sysfs shows every GPU of the host, which is
 * why nvidia-smi comes first.
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { TrainerError } from './errors';

/** An NVIDIA GPU of this machine. */
export interface GpuDevice {
  /** nvidia-smi's index (PCI bus order; sysfs: position in that order). */
  index: number;
  /** PCI address as Linux writes it: lowercase, 4-digit domain (more where the domain needs it), e.g. 0000:1b:00.0. */
  pci: string;
  /** nvidia-smi's name, e.g. "NVIDIA H200"; absent from sysfs. */
  name?: string;
}

export interface GpuDiscovery {
  gpus: GpuDevice[];
  /** Where the list came from: 'none' when neither source lists an NVIDIA GPU. */
  source: 'nvidia-smi' | 'sysfs' | 'none';
  /** What each source said, for error messages ("nvidia-smi: not found; sysfs: 0 NVIDIA display devices"). */
  detail: string;
}

/** The nvidia-smi arguments whose output parseNvidiaSmi reads. */
export const NVIDIA_SMI_ARGS = ['--query-gpu=index,pci.bus_id,name', '--format=csv,noheader'] as const;

const NVIDIA_VENDOR = 0x10de;
/** PCI base class 0x03: display controllers (VGA 0x0300, 3D 0x0302). NVIDIA's NVSwitches (0x0680) and HDMI audio (0x0403) are not GPUs. */
const DISPLAY_CLASS = 0x03;

/**
 * A PCI address in Linux's spelling. nvidia-smi prints the domain with 8 digits (00000000:1B:00.0), sysfs and
 * Mesa with at least 4 (0000:1b:00.0; Mesa formats it with %04x): the domain is a number, not a string prefix.
 */
export function normalizePciAddress(s: string): string | undefined {
  const m = /^(?:([0-9a-f]{1,8}):)?([0-9a-f]{1,2}):([0-9a-f]{1,2})\.([0-7])$/i.exec(s.trim());
  if (!m) return undefined;
  const hex = (v: string, w: number) => parseInt(v, 16).toString(16).padStart(w, '0');
  return `${hex(m[1] ?? '0', 4)}:${hex(m[2]!, 2)}:${hex(m[3]!, 2)}.${m[4]}`;
}

/** Mesa's DRI_PRIME tag of a PCI address: 0000:1b:00.0 -> pci-0000_1b_00_0. */
export function driPrimeTag(pci: string): string {
  const norm = normalizePciAddress(pci);
  if (!norm) throw new TrainerError('BAD_PCI_ADDRESS', `'${pci}' is not a PCI address: expected DOMAIN:BUS:DEVICE.FUNCTION such as 0000:1b:00.0`);
  return `pci-${norm.replace(/[:.]/g, '_')}`;
}

/** Rows of `nvidia-smi --query-gpu=index,pci.bus_id[,name] --format=csv,noheader`; lines that are not rows are skipped. */
export function parseNvidiaSmi(text: string): GpuDevice[] {
  const gpus: GpuDevice[] = [];
  for (const line of text.split('\n')) {
    const [idx, bus, ...rest] = line.split(',').map((c) => c.trim());
    const pci = bus === undefined ? undefined : normalizePciAddress(bus);
    if (!idx || !/^\d+$/.test(idx) || !pci) continue;
    const name = rest.join(',').trim();
    gpus.push({ index: Number(idx), pci, ...(name ? { name } : {}) });
  }
  return gpus.sort((a, b) => a.index - b.index);
}

/** NVIDIA display controllers under a sysfs PCI device folder, in PCI address order (nvidia-smi's order). */
export function scanSysfs(root = '/sys/bus/pci/devices'): GpuDevice[] {
  let entries: string[];
  try {
    entries = fs.readdirSync(root);
  } catch {
    return [];
  }
  const read = (dir: string, file: string) => {
    try {
      return parseInt(fs.readFileSync(path.join(root, dir, file), 'utf8').trim(), 16);
    } catch {
      return NaN;
    }
  };
  const found: string[] = [];
  for (const dir of entries) {
    const pci = normalizePciAddress(dir);
    if (pci && read(dir, 'vendor') === NVIDIA_VENDOR && read(dir, 'class') >> 16 === DISPLAY_CLASS) found.push(pci);
  }
  const key = (a: string) => a.split(/[:.]/).map((p) => parseInt(p, 16));
  found.sort((a, b) => {
    const [ka, kb] = [key(a), key(b)];
    const i = ka.findIndex((v, j) => v !== kb[j]);
    return i < 0 ? 0 : ka[i]! - kb[i]!;
  });
  return found.map((pci, index) => ({ index, pci }));
}

export interface DiscoverOptions {
  /** Runs nvidia-smi with NVIDIA_SMI_ARGS: its stdout, or undefined with why not. Default: spawnSync. */
  nvidiaSmi?: () => { stdout?: string; error?: string };
  /** Default /sys/bus/pci/devices. */
  sysfsRoot?: string;
}

function runNvidiaSmi(): { stdout?: string; error?: string } {
  const r = spawnSync('nvidia-smi', [...NVIDIA_SMI_ARGS], { encoding: 'utf8', timeout: 15_000 });
  if (r.error) return { error: (r.error as NodeJS.ErrnoException).code === 'ENOENT' ? 'not found' : r.error.message };
  if (r.status !== 0) return { error: `exit ${r.status}: ${(r.stdout + r.stderr).trim().split('\n')[0]}` };
  return { stdout: r.stdout };
}

/** This machine's NVIDIA GPUs: nvidia-smi's list, else sysfs's. */
export function discoverGpus(opts: DiscoverOptions = {}): GpuDiscovery {
  const smi = (opts.nvidiaSmi ?? runNvidiaSmi)();
  const fromSmi = smi.stdout === undefined ? [] : parseNvidiaSmi(smi.stdout);
  const smiSaid = smi.stdout === undefined ? `nvidia-smi: ${smi.error}` : `nvidia-smi: ${fromSmi.length} GPU(s)`;
  if (fromSmi.length > 0) return { gpus: fromSmi, source: 'nvidia-smi', detail: smiSaid };
  const root = opts.sysfsRoot ?? '/sys/bus/pci/devices';
  const fromSys = scanSysfs(root);
  const detail = `${smiSaid}; ${root}: ${fromSys.length} NVIDIA display device(s)`;
  return fromSys.length > 0 ? { gpus: fromSys, source: 'sysfs', detail } : { gpus: [], source: 'none', detail };
}

export const describeGpu = (g: GpuDevice): string => `GPU ${g.index}${g.name ? ` (${g.name})` : ''} at ${g.pci}`;

/** A worker's GPU. `only`: the machine (or container) shows no other NVIDIA GPU, so no device-select pin is needed. */
export interface GpuPin extends GpuDevice {
  only: boolean;
}

/**
 * The GPU each local worker is pinned to on WebGPU (undefined: not pinned, Dawn's first adapter).
 *  - --gpus=i,j,...: worker k gets GPU gpus[k]; a GPU this machine does not have is GPU_NOT_FOUND.
 *  - otherwise, with at least as many GPUs as workers (--workers=auto is one per GPU): worker k gets GPU k;
 *  - with more workers than GPUs and no --gpus, nobody is pinned: they share the first GPU, as asked.
 * Backends other than webgpu and auto pin nothing here (tfjs-node-gpu's CUDA_VISIBLE_DEVICES is the launcher's).
 */
export function planWorkerGpus(o: {
  backend: string;
  workers: number;
  gpus?: readonly number[];
  discover: () => GpuDiscovery;
}): (GpuPin | undefined)[] {
  const none = Array.from({ length: o.workers }, () => undefined);
  if (o.backend !== 'webgpu' && o.backend !== 'auto') return none;
  const found = o.discover();
  const only = found.gpus.length === 1;
  if (o.gpus) {
    return o.gpus.slice(0, o.workers).map((id) => {
      const g = found.gpus.find((x) => x.index === id);
      if (g) return { ...g, only };
      const have = found.gpus.length ? `this machine has ${found.gpus.map(describeGpu).join(', ')}` : 'this machine shows no NVIDIA GPU';
      throw new TrainerError('GPU_NOT_FOUND',
        `--gpus asks for GPU ${id}, but ${have} (${found.detail}): give ids from that list, or leave --gpus out to let ` +
        'several workers share one GPU');
    });
  }
  if (found.gpus.length === 0 || o.workers > found.gpus.length) return none;
  return none.map((_, k) => ({ ...found.gpus[k]!, only }));
}

/** Environment variables that carry the pin to a worker (undefined: remove the variable). */
export const GPU_ENV = { index: 'GOOGLENET_GPU', pci: 'GOOGLENET_GPU_PCI' } as const;

/**
 * What a worker pinned to `gpu` runs with: the device-select layer restricted to the GPU's PCI address, only
 * NVIDIA's Vulkan driver (so no software driver such as lavapipe can stand in), and no DISPLAY: the workers draw
 * nothing, and an X server on another GPU would steer both the layer and NVIDIA's driver towards that GPU.
 * The machine's only GPU needs no layer (a container given one GPU, Kubernetes nvidia.com/gpu: 1): there the
 * driver filter alone keeps a software adapter out, and Mesa need not be installed.
 */
export function webgpuPinEnv(gpu: GpuPin, env: NodeJS.ProcessEnv = process.env): Record<string, string | undefined> {
  return {
    ...(gpu.only ? {} : { DRI_PRIME: driPrimeTag(gpu.pci), MESA_VK_DEVICE_SELECT_FORCE_DEFAULT_DEVICE: '1' }),
    VK_LOADER_DRIVERS_SELECT: env.VK_LOADER_DRIVERS_SELECT ?? 'nvidia*',
    DISPLAY: undefined,
    [GPU_ENV.index]: String(gpu.index),
    [GPU_ENV.pci]: gpu.pci,
  };
}

/**
 * The device variables of local worker `local`: tfjs-node-gpu's CUDA_VISIBLE_DEVICES (not for an explicit webgpu
 * run: NVIDIA's driver could hide the one GPU from a worker told CUDA_VISIBLE_DEVICES=1), and the pin of its GPU.
 */
export function workerDeviceEnv(o: { backend: string; gpus?: readonly number[]; local: number; pin?: GpuPin }, env: NodeJS.ProcessEnv = process.env): Record<string, string | undefined> {
  return {
    ...(o.backend === 'webgpu' ? {} : { CUDA_VISIBLE_DEVICES: String(o.gpus?.[o.local] ?? o.local), TF_FORCE_GPU_ALLOW_GROWTH: 'true' }),
    ...(o.pin ? webgpuPinEnv(o.pin, env) : {}),
  };
}

/**
 * Pins this process itself, before any Vulkan instance exists, where no launcher did: a single-process run or a
 * scheduler's rank (torchrun, Slurm) given --gpus takes gpus[LOCAL_RANK]. Returns the GPU, or undefined when the
 * launcher already pinned this process or nothing asks for a GPU. The Vulkan loader and Mesa's layer read
 * the variables with getenv() when Dawn creates its instance, so setting them in process.env works.
 */
export function pinThisProcess(o: { backend: string; gpus?: readonly number[]; localRank: number; discover?: () => GpuDiscovery },
  env: NodeJS.ProcessEnv = process.env): GpuPin | undefined {
  if (env[GPU_ENV.index] !== undefined || !o.gpus) return undefined;
  const id = o.gpus[o.localRank];
  if (id === undefined) {
    throw new TrainerError('GPU_NOT_FOUND', `--gpus=${o.gpus.join(',')} has no entry for LOCAL_RANK=${o.localRank}: give one GPU id per process of this machine`);
  }
  const pin = planWorkerGpus({ backend: o.backend, workers: 1, gpus: [id], discover: o.discover ?? (() => discoverGpus()) })[0];
  if (!pin) return undefined;
  for (const [k, v] of Object.entries(webgpuPinEnv(pin, env))) {
    if (v === undefined) delete env[k];
    else env[k] = v;
  }
  return pin;
}

/**
 * A likely reason for "no WebGPU adapter" inside a container started by NVIDIA's runtime (NVIDIA_VISIBLE_DEVICES
 * set): the runtime mounts NVIDIA's Vulkan driver only when NVIDIA_DRIVER_CAPABILITIES includes graphics (or
 * all), and its default is compute,utility. Undefined outside such containers or where graphics is included.
 */
export function nvidiaContainerHint(env: NodeJS.ProcessEnv): string | undefined {
  const visible = env.NVIDIA_VISIBLE_DEVICES;
  if (!visible || visible === 'void' || visible === 'none') return undefined;
  const caps = (env.NVIDIA_DRIVER_CAPABILITIES || 'compute,utility').split(',').map((c) => c.trim());
  if (caps.includes('all') || caps.includes('graphics')) return undefined;
  return `this is an NVIDIA container with NVIDIA_DRIVER_CAPABILITIES=${env.NVIDIA_DRIVER_CAPABILITIES || '(unset, so compute,utility)'}, ` +
    'and NVIDIA\'s container runtime mounts the Vulkan driver only with graphics: start it with ' +
    'NVIDIA_DRIVER_CAPABILITIES=compute,utility,graphics (or all)';
}

/**
 * The part of a worker's backend line that names its device: tfjs-node-gpu's CUDA_VISIBLE_DEVICES (only there:
 * other backends ignore it), or the GPU the launcher pinned for webgpu. Empty elsewhere.
 */
export function deviceNote(backend: string, env: NodeJS.ProcessEnv): string {
  if (backend === 'tensorflow-gpu' && env.CUDA_VISIBLE_DEVICES !== undefined) return ` (CUDA_VISIBLE_DEVICES=${env.CUDA_VISIBLE_DEVICES})`;
  if (backend === 'webgpu' && env[GPU_ENV.index] !== undefined) {
    return ` (GPU ${env[GPU_ENV.index]}, ${env.DRI_PRIME ? `pinned by DRI_PRIME=${env.DRI_PRIME}` : `the only NVIDIA GPU here, ${env[GPU_ENV.pci]}`})`;
  }
  return '';
}
