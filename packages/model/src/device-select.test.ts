import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { findDeviceSelectLayer, parseDeviceSelectList, pciOfDriPrime, probeDeviceSelect, verifyPinnedDevice, type DeviceSelectProbe } from './device-select.js';
import { describeAdapter } from './backend.js';
import { hasSystemPrerequisite } from './test-prereqs.js';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'device-select-test-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

// What Mesa 25's layer prints with MESA_VK_DEVICE_SELECT=list on a 2-GPU machine; Dawn makes two instances.
const TWO_H200 = 'selectable devices:\n  GPU 0: 10de:2335 "NVIDIA H200" discrete GPU 0000:1b:00.0\n' +
  '  GPU 1: 10de:2335 "NVIDIA H200" discrete GPU 0000:9a:00.0\n' +
  'selectable devices:\n  GPU 0: 10de:2335 "NVIDIA H200" discrete GPU 0000:1b:00.0\n  GPU 1: 10de:2335 "NVIDIA H200" discrete GPU 0000:9a:00.0\n';
const listing = (text: string) => (): DeviceSelectProbe => ({ listed: parseDeviceSelectList(text), said: 'adapter found' });
const codeOf = (f: () => unknown): [string, string] | undefined => {
  try {
    f();
  } catch (e) {
    return [(e as { code: string }).code, (e as Error).message];
  }
  return undefined;
};
/** Loader search paths that hold exactly the given manifests. */
function layerDirs(withLayer: boolean): NodeJS.ProcessEnv {
  const share = fs.mkdtempSync(path.join(tmp, 'share-'));
  fs.mkdirSync(path.join(share, 'vulkan/implicit_layer.d'), { recursive: true });
  if (withLayer) {
    fs.writeFileSync(path.join(share, 'vulkan/implicit_layer.d/VkLayer_MESA_device_select.json'),
      JSON.stringify({ file_format_version: '1.0.0', layer: { name: 'VK_LAYER_MESA_device_select', library_path: 'libVkLayer_MESA_device_select.so' } }));
  }
  return { XDG_DATA_DIRS: share, XDG_CONFIG_DIRS: path.join(tmp, 'none'), XDG_DATA_HOME: path.join(tmp, 'none'), HOME: tmp };
}

describe('device-select listing', () => {
  it('reads each device once, with its PCI address where the driver reports one', () => {
    expect(parseDeviceSelectList(TWO_H200)).toEqual([
      { index: 0, vendorId: 0x10de, deviceId: 0x2335, name: 'NVIDIA H200', type: 'discrete GPU', pci: '0000:1b:00.0' },
      { index: 1, vendorId: 0x10de, deviceId: 0x2335, name: 'NVIDIA H200', type: 'discrete GPU', pci: '0000:9a:00.0' },
    ]);
    expect(parseDeviceSelectList('selectable devices:\n  GPU 0: 10005:0 "llvmpipe (LLVM 15.0.6, 256 bits)" CPU\n'))
      .toEqual([{ index: 0, vendorId: 0x10005, deviceId: 0, name: 'llvmpipe (LLVM 15.0.6, 256 bits)', type: 'CPU' }]);
    expect(parseDeviceSelectList('no adapter\n')).toBeUndefined();
  });

  it('reads the address of a DRI_PRIME tag, and nothing from other DRI_PRIME values', () => {
    expect(pciOfDriPrime('pci-0000_9a_00_0')).toBe('0000:9a:00.0');
    expect(pciOfDriPrime('pci-10000_01_00_0')).toBe('10000:01:00.0');
    expect(pciOfDriPrime('1')).toBeUndefined();
    expect(pciOfDriPrime(undefined)).toBeUndefined();
  });
});

describe('verifyPinnedDevice', () => {
  it('returns the device the layer lists at the pinned address, and names it in the adapter description', () => {
    const d = verifyPinnedDevice({ DRI_PRIME: 'pci-0000_9a_00_0' }, listing(TWO_H200));
    expect(d).toMatchObject({ index: 1, name: 'NVIDIA H200', pci: '0000:9a:00.0' });
    expect(describeAdapter({ vendor: 'nvidia', architecture: '', device: '', description: 'NVIDIA: 580.159.04', software: false, pinned: { pci: d!.pci!, name: d!.name } }))
      .toBe('nvidia, "NVIDIA: 580.159.04", "NVIDIA H200" at PCI 0000:9a:00.0');
  });

  it('probes nothing when no PCI address is pinned', () => {
    const probe = () => {
      throw new Error('must not probe');
    };
    expect(verifyPinnedDevice({}, probe)).toBeUndefined();
    expect(verifyPinnedDevice({ DRI_PRIME: '1' }, probe)).toBeUndefined();
  });

  it('an address that matches no device is GPU_NOT_ISOLATED naming the GPU and what the layer lists', () => {
    const [code, msg] = codeOf(() => verifyPinnedDevice({ DRI_PRIME: 'pci-0000_3b_00_0' }, listing(TWO_H200)))!;
    expect(code).toBe('GPU_NOT_ISOLATED');
    expect(msg).toContain('DRI_PRIME=pci-0000_3b_00_0 pins this process to the GPU at 0000:3b:00.0, but no Vulkan device is at that address');
    expect(msg).toContain('GPU 1: "NVIDIA H200" (discrete GPU at 0000:9a:00.0)');
  });

  it('without the device-select layer it is GPU_NOT_ISOLATED saying apt-get install mesa-vulkan-drivers', () => {
    const noList = () => ({ said: 'adapter found' });
    const [code, msg] = codeOf(() => verifyPinnedDevice({ DRI_PRIME: 'pci-0000_1b_00_0', ...layerDirs(false) }, noList))!;
    expect(code).toBe('GPU_NOT_ISOLATED');
    expect(msg).toMatch(/GPU at 0000:1b:00\.0, but Mesa's device-select Vulkan layer .* is not installed.*apt-get install mesa-vulkan-drivers/);
    const disabled = codeOf(() => verifyPinnedDevice({ DRI_PRIME: 'pci-0000_1b_00_0', NODEVICE_SELECT: '1', ...layerDirs(true) }, noList))!;
    expect(disabled[1]).toContain('disabled by NODEVICE_SELECT=1');
    const silent = codeOf(() => verifyPinnedDevice({ DRI_PRIME: 'pci-0000_1b_00_0', VK_LOADER_DRIVERS_SELECT: 'nvidia*', ...layerDirs(true) }, noList))!;
    expect(silent[1]).toMatch(/listed no device: .*NVIDIA_DRIVER_CAPABILITIES must include graphics; VK_LOADER_DRIVERS_SELECT=nvidia\*/);
  });

  it('finds the layer\'s manifest where the Vulkan loader looks', () => {
    const env = layerDirs(true);
    expect(findDeviceSelectLayer(env)).toBe(path.join(env.XDG_DATA_DIRS!, 'vulkan/implicit_layer.d/VkLayer_MESA_device_select.json'));
    expect(findDeviceSelectLayer(layerDirs(false))).toBeUndefined();
  });
});

// The real layer on this machine's Vulkan devices (CI: mesa-vulkan-drivers' lavapipe, which has no PCI address).
const here = probeDeviceSelect(process.env);
const layerHere = hasSystemPrerequisite({
  test: 'device-select on this machine', pkg: 'mesa-vulkan-drivers', require: 'GOOGLENET_REQUIRE_WEBGPU',
  missing: here.listed?.length ? undefined : `the device-select layer listed no Vulkan device (${here.said})`,
});

describe.skipIf(!layerHere)('device-select on this machine', () => {
  it('lists this machine\'s Vulkan devices', () => {
    expect(here.listed!.length).toBeGreaterThan(0);
  });

  it('an address that matches no device fails --backend=webgpu with GPU_NOT_ISOLATED instead of taking another device', () => {
    const code = `import { selectBackend } from ${JSON.stringify(fileURLToPath(new URL('./backend.ts', import.meta.url)))};` +
      'selectBackend("webgpu").then((i) => console.log("SELECTED " + i.line), (e) => console.log(e.code + " " + e.message));';
    const run = (env: NodeJS.ProcessEnv) => spawnSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', code],
      { encoding: 'utf8', env: { ...process.env, ...env } }).stdout;
    // Without the pin the same process gets an adapter (so the failure below is the pin's).
    expect(run({})).toMatch(/^SELECTED backend: webgpu on /);
    const out = run({ DRI_PRIME: 'pci-0000_fe_1f_7', MESA_VK_DEVICE_SELECT_FORCE_DEFAULT_DEVICE: '1' });
    expect(out).toMatch(/^GPU_NOT_ISOLATED DRI_PRIME=pci-0000_fe_1f_7 pins this process to the GPU at 0000:fe:1f\.7, but no Vulkan device is at that address/);
    expect(out).toContain(`GPU 0: "${here.listed![0]!.name}"`);
  }, 60_000);
});
