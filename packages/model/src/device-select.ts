/**
 * Checks, before Dawn starts, that a process pinned to one GPU by Mesa's device-select Vulkan layer
 * (DRI_PRIME=pci-DDDD_BB_DD_F, set by the trainer's launcher) really gets that GPU.
 *
 * Dawn's adapter info has no PCI address, and the layer, asked for an address that matches no device, silently
 * falls back to its default device (GPU 0, or lavapipe). So a child process creates a Vulkan instance through
 * Dawn with MESA_VK_DEVICE_SELECT=list: the layer prints every device it can choose from, with its PCI address,
 * and exits. The pin holds when the layer is loaded and lists a device at the address; with
 * MESA_VK_DEVICE_SELECT_FORCE_DEFAULT_DEVICE=1 that device is then the only one Dawn sees.
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import { BackendError } from './errors.js';

/** One Vulkan physical device as the device-select layer lists it. */
export interface VulkanDevice {
  index: number;
  vendorId: number;
  deviceId: number;
  /** VkPhysicalDeviceProperties.deviceName, e.g. "NVIDIA H200". */
  name: string;
  /** "discrete GPU", "CPU", ... */
  type: string;
  /** PCI address (0000:1b:00.0) where the driver reports VK_EXT_pci_bus_info; lavapipe does not. */
  pci?: string;
}

const LAYER_NAME = 'VK_LAYER_MESA_device_select';
const INSTALL = 'apt-get install mesa-vulkan-drivers';

/**
 * The layer's listing (stderr of a process run with MESA_VK_DEVICE_SELECT=list), e.g.
 * `selectable devices:\n  GPU 0: 10de:2335 "NVIDIA H200" discrete GPU 0000:1b:00.0`. Undefined when the
 * text has no listing, i.e. the layer did not run.
 */
export function parseDeviceSelectList(text: string): VulkanDevice[] | undefined {
  if (!/^selectable devices:/m.test(text)) return undefined;
  const devices = new Map<number, VulkanDevice>(); // the layer lists once per Vulkan instance; Dawn may make two
  for (const line of text.split('\n')) {
    const m = /^\s*GPU (\d+): ([0-9a-f]+):([0-9a-f]+) "(.*)" (.+?)(?: ([0-9a-f]{4,8}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]))?\s*$/i.exec(line);
    if (!m) continue;
    const d: VulkanDevice = { index: Number(m[1]), vendorId: parseInt(m[2]!, 16), deviceId: parseInt(m[3]!, 16), name: m[4]!, type: m[5]! };
    if (m[6]) d.pci = m[6].toLowerCase();
    devices.set(d.index, d);
  }
  return [...devices.values()];
}

/** The PCI address a DRI_PRIME tag names (pci-0000_1b_00_0 -> 0000:1b:00.0), or undefined for other values. */
export function pciOfDriPrime(value: string | undefined): string | undefined {
  const m = /^pci-([0-9a-f]{4,8})_([0-9a-f]{2})_([0-9a-f]{2})_([0-7])!?$/i.exec(value ?? '');
  return m ? `${m[1]}:${m[2]}:${m[3]}.${m[4]}`.toLowerCase() : undefined;
}

/** Where the Vulkan loader looks for implicit layers on Linux (its XDG rules), for the error message. */
function implicitLayerDirs(env: NodeJS.ProcessEnv): string[] {
  const split = (v: string | undefined, dflt: string) => (v || dflt).split(':').filter(Boolean);
  return [
    ...split(env.XDG_CONFIG_DIRS, '/etc/xdg').map((d) => path.join(d, 'vulkan/implicit_layer.d')),
    '/etc/vulkan/implicit_layer.d',
    ...split(env.XDG_DATA_HOME, path.join(env.HOME ?? os.homedir(), '.local/share')).map((d) => path.join(d, 'vulkan/implicit_layer.d')),
    ...split(env.XDG_DATA_DIRS, '/usr/local/share:/usr/share').map((d) => path.join(d, 'vulkan/implicit_layer.d')),
  ];
}

/** The manifest (json) of the device-select layer that the loader would find, or undefined. */
export function findDeviceSelectLayer(env: NodeJS.ProcessEnv = process.env): string | undefined {
  for (const dir of implicitLayerDirs(env)) {
    let names: string[];
    try {
      names = fs.readdirSync(dir).filter((f) => f.endsWith('.json'));
    } catch {
      continue;
    }
    for (const f of names) {
      try {
        if (fs.readFileSync(path.join(dir, f), 'utf8').includes(LAYER_NAME)) return path.join(dir, f);
      } catch {
        /* unreadable manifest: the loader skips it too */
      }
    }
  }
  return undefined;
}

export interface DeviceSelectProbe {
  /** The layer's list, or undefined when it printed none (not loaded, disabled, or Vulkan found no device). */
  listed?: VulkanDevice[];
  /** What else the child said (the loader's and Dawn's words), trimmed, for error messages. */
  said: string;
}

/** Runs Dawn in a child process with MESA_VK_DEVICE_SELECT=list and `env`, and reads the layer's list. */
export function probeDeviceSelect(env: NodeJS.ProcessEnv = process.env): DeviceSelectProbe {
  let entry: string;
  try {
    entry = createRequire(import.meta.url).resolve('webgpu');
  } catch {
    return { said: 'the webgpu package cannot be resolved for a probe' };
  }
  const code = `const { create } = await import(${JSON.stringify(entry)});` +
    'const a = await create([]).requestAdapter(); console.log(a ? "adapter found" : "no adapter");';
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', code],
    { encoding: 'utf8', timeout: 30_000, env: { ...env, MESA_VK_DEVICE_SELECT: 'list' } });
  const text = `${r.stderr ?? ''}\n${r.stdout ?? ''}`;
  const said = text.split('\n').map((l) => l.trim())
    .filter((l) => l && !/^at |^- While|^selectable devices:|^GPU \d+:|^Warning: max/.test(l)).slice(0, 4).join(' | ');
  return { listed: parseDeviceSelectList(text), said: said || (r.error ? r.error.message : 'nothing') };
}

const describeDevice = (d: VulkanDevice) => `GPU ${d.index}: "${d.name}" (${d.type}${d.pci ? ` at ${d.pci}` : ', no PCI address'})`;

/**
 * Where DRI_PRIME pins this process to a PCI address: the Vulkan device there, checked with the layer itself.
 * Undefined where nothing is pinned. Throws BackendError GPU_NOT_ISOLATED, naming the GPU and the fix, when the
 * pin cannot hold: no layer (`apt-get install mesa-vulkan-drivers`), the layer disabled, or no device at that
 * address (the layer would pick another one without a word).
 */
export function verifyPinnedDevice(env: NodeJS.ProcessEnv = process.env, probe: (env: NodeJS.ProcessEnv) => DeviceSelectProbe = probeDeviceSelect): VulkanDevice | undefined {
  const pci = pciOfDriPrime(env.DRI_PRIME);
  if (!pci) return undefined;
  const ask = `DRI_PRIME=${env.DRI_PRIME} pins this process to the GPU at ${pci}`;
  const { listed, said } = probe(env);
  if (!listed) {
    const layer = findDeviceSelectLayer(env);
    const why = !layer
      ? `Mesa's device-select Vulkan layer (${LAYER_NAME}) is not installed, so Vulkan would hand Dawn its first GPU: ${INSTALL} ` +
        '(or give each worker a container with its one GPU and leave --gpus out)'
      : env.NODEVICE_SELECT === '1'
        ? `the device-select layer (${layer}) is disabled by NODEVICE_SELECT=1: unset it`
        : `the device-select layer (${layer}) listed no device: either its library did not load (check ldd on the ` +
          `library its manifest names, or reinstall: ${INSTALL}) or Vulkan found no driver for this GPU (NVIDIA's ` +
          'driver and libvulkan1; VK_DRIVER_FILES may name nvidia_icd.json; in a container NVIDIA_DRIVER_CAPABILITIES must ' +
          `include graphics${env.VK_LOADER_DRIVERS_SELECT ? `; VK_LOADER_DRIVERS_SELECT=${env.VK_LOADER_DRIVERS_SELECT} keeps only drivers whose manifest matches` : ''})`;
    throw new BackendError('GPU_NOT_ISOLATED', `${ask}, but ${why}. The probe said: ${said}`);
  }
  const hit = listed.find((d) => d.pci === pci);
  if (!hit) {
    throw new BackendError('GPU_NOT_ISOLATED', `${ask}, but no Vulkan device is at that address, and the device-select ` +
      `layer would quietly take another: it lists ${listed.length ? listed.map(describeDevice).join('; ') : 'no device'}. ` +
      'Give a GPU that nvidia-smi lists (--gpus=<its index>), and check that NVIDIA\'s Vulkan driver sees it');
  }
  return hit;
}
