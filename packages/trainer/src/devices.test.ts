import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import {
  deviceNote, discoverGpus, driPrimeTag, normalizePciAddress, nvidiaContainerHint, parseNvidiaSmi, pinThisProcess, planWorkerGpus, scanSysfs,
  workerDeviceEnv, type GpuDiscovery,
} from './devices';
import { resolveTrainConfig, type TrainConfig } from './config';
import { launch } from './launcher';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'devices-test-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

// What nvidia-smi --query-gpu=index,pci.bus_id,name --format=csv,noheader prints on a 2-GPU machine: an 8-digit domain.
const SMI_TWO = '0, 00000000:1B:00.0, NVIDIA H200\n1, 00000000:9A:00.0, NVIDIA H200\n';
const two: GpuDiscovery = { gpus: parseNvidiaSmi(SMI_TWO), source: 'nvidia-smi', detail: 'nvidia-smi: 2 GPU(s)' };
const one: GpuDiscovery = { gpus: parseNvidiaSmi('0, 00000000:1B:00.0, NVIDIA H200\n'), source: 'nvidia-smi', detail: 'nvidia-smi: 1 GPU(s)' };
const none: GpuDiscovery = { gpus: [], source: 'none', detail: 'nvidia-smi: not found; /sys/bus/pci/devices: 0 NVIDIA display device(s)' };
const codeOf = (f: () => unknown): [string, string] | undefined => {
  try {
    f();
  } catch (e) {
    return [(e as { code: string }).code, (e as Error).message];
  }
  return undefined;
};

/** A fake /sys/bus/pci/devices: one folder per device with `vendor` and `class` files, as the kernel writes them. */
function fakeSysfs(devices: Record<string, [vendor: string, cls: string]>): string {
  const root = fs.mkdtempSync(path.join(tmp, 'sysfs-'));
  for (const [addr, [vendor, cls]] of Object.entries(devices)) {
    fs.mkdirSync(path.join(root, addr));
    fs.writeFileSync(path.join(root, addr, 'vendor'), `${vendor}\n`);
    fs.writeFileSync(path.join(root, addr, 'class'), `${cls}\n`);
  }
  return root;
}

describe('GPU discovery', () => {
  it('reads index, PCI address and name from nvidia-smi, mapping its 8-digit domain to Linux\'s 4-digit spelling', () => {
    expect(parseNvidiaSmi(SMI_TWO)).toEqual([
      { index: 0, pci: '0000:1b:00.0', name: 'NVIDIA H200' },
      { index: 1, pci: '0000:9a:00.0', name: 'NVIDIA H200' },
    ]);
    // Without the name column, with stray lines, out of order.
    expect(parseNvidiaSmi('No devices were found\n1, 00000000:3B:00.0\n0, 00000000:18:00.0\n')).toEqual([
      { index: 0, pci: '0000:18:00.0' }, { index: 1, pci: '0000:3b:00.0' },
    ]);
  });

  it('writes DRI_PRIME tags as Mesa formats PCI addresses (%04x domain, lowercase), wide domains included', () => {
    expect(driPrimeTag('00000000:1B:00.0')).toBe('pci-0000_1b_00_0');
    expect(driPrimeTag('0000:9a:00.1')).toBe('pci-0000_9a_00_1');
    expect(normalizePciAddress('00010000:01:00.0')).toBe('10000:01:00.0'); // VMD / Hyper-V domains
    expect(driPrimeTag('10000:01:00.0')).toBe('pci-10000_01_00_0');
    expect(codeOf(() => driPrimeTag('GPU-1b'))?.[0]).toBe('BAD_PCI_ADDRESS');
  });

  it('finds NVIDIA display controllers in a sysfs tree, in PCI order, and nothing else NVIDIA makes', () => {
    const root = fakeSysfs({
      '0000:9a:00.0': ['0x10de', '0x030200'], // H200: 3D controller
      '0000:1b:00.0': ['0x10de', '0x030000'], // VGA controller
      '0000:1b:00.1': ['0x10de', '0x040300'], // its HDMI audio
      '0000:05:00.0': ['0x10de', '0x068000'], // NVSwitch
      '0000:00:02.0': ['0x8086', '0x030000'], // Intel graphics
      '0000:00:1f.0': ['0x8086', '0x060100'],
    });
    expect(scanSysfs(root)).toEqual([{ index: 0, pci: '0000:1b:00.0' }, { index: 1, pci: '0000:9a:00.0' }]);
    expect(scanSysfs(path.join(root, 'missing'))).toEqual([]);
  });

  it('takes nvidia-smi\'s list first (a container sees only its own GPUs there), else sysfs, else says what each said', () => {
    const root = fakeSysfs({ '0000:1b:00.0': ['0x10de', '0x030200'], '0000:9a:00.0': ['0x10de', '0x030200'] });
    const smiOne = discoverGpus({ nvidiaSmi: () => ({ stdout: '0, 00000000:9A:00.0, NVIDIA H200\n' }), sysfsRoot: root });
    expect(smiOne).toMatchObject({ source: 'nvidia-smi', gpus: [{ index: 0, pci: '0000:9a:00.0' }] });
    const sys = discoverGpus({ nvidiaSmi: () => ({ error: 'not found' }), sysfsRoot: root });
    expect(sys).toMatchObject({ source: 'sysfs', gpus: [{ index: 0, pci: '0000:1b:00.0' }, { index: 1, pci: '0000:9a:00.0' }] });
    const nothing = discoverGpus({ nvidiaSmi: () => ({ error: 'not found' }), sysfsRoot: fakeSysfs({}) });
    expect(nothing.source).toBe('none');
    expect(nothing.detail).toMatch(/^nvidia-smi: not found; .*: 0 NVIDIA display device\(s\)$/);
  });
});

describe('GPU per worker on webgpu', () => {
  it('--gpus=0,1 gives worker k the device-select pin of GPU k, no software driver and no DISPLAY', () => {
    const pins = planWorkerGpus({ backend: 'webgpu', workers: 2, gpus: [0, 1], discover: () => two });
    const env = pins.map((pin, local) => workerDeviceEnv({ backend: 'webgpu', gpus: [0, 1], local, pin }, {}));
    expect(env).toEqual([0, 1].map((k) => ({
      DRI_PRIME: ['pci-0000_1b_00_0', 'pci-0000_9a_00_0'][k],
      MESA_VK_DEVICE_SELECT_FORCE_DEFAULT_DEVICE: '1',
      VK_LOADER_DRIVERS_SELECT: 'nvidia*',
      DISPLAY: undefined,
      GOOGLENET_GPU: String(k),
      GOOGLENET_GPU_PCI: ['0000:1b:00.0', '0000:9a:00.0'][k],
    })));
    // --gpus=1,0 swaps them; a user's own driver filter is kept.
    const swapped = planWorkerGpus({ backend: 'webgpu', workers: 2, gpus: [1, 0], discover: () => two });
    expect(workerDeviceEnv({ backend: 'webgpu', local: 0, pin: swapped[0] }, { VK_LOADER_DRIVERS_SELECT: 'nvidia_icd*' }))
      .toMatchObject({ DRI_PRIME: 'pci-0000_9a_00_0', GOOGLENET_GPU: '1', VK_LOADER_DRIVERS_SELECT: 'nvidia_icd*' });
  });

  it('--workers=auto is one worker per GPU, each pinned to its own; backend auto also keeps CUDA_VISIBLE_DEVICES', () => {
    const cfg = resolveTrainConfig(['--workers=auto'], { env: {}, gpuCount: 2 }) as TrainConfig;
    expect(cfg.workers).toBe(2);
    const pins = planWorkerGpus({ backend: cfg.backend, workers: cfg.workers, gpus: cfg.gpus, discover: () => two });
    expect(pins.map((p) => p?.pci)).toEqual(['0000:1b:00.0', '0000:9a:00.0']);
    expect(workerDeviceEnv({ backend: 'auto', local: 1, pin: pins[1] }, {}))
      .toMatchObject({ CUDA_VISIBLE_DEVICES: '1', TF_FORCE_GPU_ALLOW_GROWTH: 'true', DRI_PRIME: 'pci-0000_9a_00_0', GOOGLENET_GPU: '1' });
    // wasm and cpu never count GPUs for auto.
    expect((resolveTrainConfig(['--backend=wasm'], { env: {} }) as TrainConfig).workers).toBe(Math.max(1, Math.min(8, os.availableParallelism())));
  });

  it('the only GPU of a machine or container needs no device-select layer: only the driver filter and no DISPLAY', () => {
    const [pin] = planWorkerGpus({ backend: 'webgpu', workers: 1, gpus: [0], discover: () => one });
    expect(pin).toEqual({ index: 0, pci: '0000:1b:00.0', name: 'NVIDIA H200', only: true });
    expect(workerDeviceEnv({ backend: 'webgpu', local: 0, pin }, {}))
      .toEqual({ VK_LOADER_DRIVERS_SELECT: 'nvidia*', DISPLAY: undefined, GOOGLENET_GPU: '0', GOOGLENET_GPU_PCI: '0000:1b:00.0' });
    expect(deviceNote('webgpu', { GOOGLENET_GPU: '0', GOOGLENET_GPU_PCI: '0000:1b:00.0' })).toBe(' (GPU 0, the only NVIDIA GPU here, 0000:1b:00.0)');
  });

  it('more workers than GPUs without --gpus pins nobody (they share GPU 0, as --workers=2 on one GPU asks)', () => {
    expect(planWorkerGpus({ backend: 'webgpu', workers: 2, discover: () => one })).toEqual([undefined, undefined]);
    expect(planWorkerGpus({ backend: 'webgpu', workers: 1, discover: () => none })).toEqual([undefined]);
    expect(workerDeviceEnv({ backend: 'webgpu', local: 1 }, {})).toEqual({});
  });

  it('a requested GPU this machine does not have is GPU_NOT_FOUND naming it and the GPUs there are', () => {
    const [code, msg] = codeOf(() => planWorkerGpus({ backend: 'webgpu', workers: 2, gpus: [0, 1], discover: () => one }))!;
    expect(code).toBe('GPU_NOT_FOUND');
    expect(msg).toContain('--gpus asks for GPU 1, but this machine has GPU 0 (NVIDIA H200) at 0000:1b:00.0');
    const [code2, msg2] = codeOf(() => planWorkerGpus({ backend: 'webgpu', workers: 1, gpus: [0], discover: () => none }))!;
    expect(code2).toBe('GPU_NOT_FOUND');
    expect(msg2).toContain('this machine shows no NVIDIA GPU (nvidia-smi: not found;');
  });

  it('tfjs-node-gpu, wasm and cpu runs pin nothing and never look for GPUs', () => {
    const discover = () => {
      throw new Error('discovery must not run');
    };
    expect(planWorkerGpus({ backend: 'tensorflow', workers: 2, gpus: [0, 1], discover })).toEqual([undefined, undefined]);
    expect(planWorkerGpus({ backend: 'wasm', workers: 1, discover })).toEqual([undefined]);
    expect(workerDeviceEnv({ backend: 'tensorflow', gpus: [3, 5], local: 1 }, {})).toEqual({ CUDA_VISIBLE_DEVICES: '5', TF_FORCE_GPU_ALLOW_GROWTH: 'true' });
  });

  it('a single process given --gpus pins itself to gpus[LOCAL_RANK], and leaves a launcher\'s pin alone', () => {
    const env: NodeJS.ProcessEnv = { DISPLAY: ':0' };
    expect(pinThisProcess({ backend: 'webgpu', gpus: [1], localRank: 0, discover: () => two }, env)?.pci).toBe('0000:9a:00.0');
    expect(env).toEqual({ DRI_PRIME: 'pci-0000_9a_00_0', MESA_VK_DEVICE_SELECT_FORCE_DEFAULT_DEVICE: '1', VK_LOADER_DRIVERS_SELECT: 'nvidia*', GOOGLENET_GPU: '1', GOOGLENET_GPU_PCI: '0000:9a:00.0' });
    const pinned: NodeJS.ProcessEnv = { GOOGLENET_GPU: '0' };
    expect(pinThisProcess({ backend: 'webgpu', gpus: [1], localRank: 0, discover: () => two }, pinned)).toBeUndefined();
    expect(pinned).toEqual({ GOOGLENET_GPU: '0' });
    expect(pinThisProcess({ backend: 'webgpu', localRank: 0, discover: () => two }, {})).toBeUndefined();
    expect(codeOf(() => pinThisProcess({ backend: 'webgpu', gpus: [0], localRank: 1, discover: () => two }, {}))?.[0]).toBe('GPU_NOT_FOUND');
  });

  it('the backend line names CUDA_VISIBLE_DEVICES only for tfjs-node-gpu, and the pinned GPU for webgpu', () => {
    const env = { CUDA_VISIBLE_DEVICES: '1' };
    expect(deviceNote('wasm', env)).toBe('');
    expect(deviceNote('tensorflow', env)).toBe('');
    expect(deviceNote('tensorflow-gpu', env)).toBe(' (CUDA_VISIBLE_DEVICES=1)');
    expect(deviceNote('webgpu', { ...env, GOOGLENET_GPU: '1', DRI_PRIME: 'pci-0000_9a_00_0' })).toBe(' (GPU 1, pinned by DRI_PRIME=pci-0000_9a_00_0)');
    expect(deviceNote('webgpu', env)).toBe('');
  });
});

describe('containers with one GPU each', () => {
  it('says when NVIDIA\'s container runtime left the Vulkan driver out (no graphics capability)', () => {
    expect(nvidiaContainerHint({ NVIDIA_VISIBLE_DEVICES: 'GPU-5b1c' })).toMatch(/NVIDIA_DRIVER_CAPABILITIES=\(unset, so compute,utility\).*compute,utility,graphics/);
    expect(nvidiaContainerHint({ NVIDIA_VISIBLE_DEVICES: '0', NVIDIA_DRIVER_CAPABILITIES: 'compute' })).toContain('NVIDIA_DRIVER_CAPABILITIES=compute,');
    expect(nvidiaContainerHint({ NVIDIA_VISIBLE_DEVICES: '0', NVIDIA_DRIVER_CAPABILITIES: 'compute,utility,graphics' })).toBeUndefined();
    expect(nvidiaContainerHint({ NVIDIA_VISIBLE_DEVICES: 'all', NVIDIA_DRIVER_CAPABILITIES: 'all' })).toBeUndefined();
    expect(nvidiaContainerHint({})).toBeUndefined();
  });
});

describe('the launcher', () => {
  it('starts worker k of --gpus=0,1 --backend=webgpu with GPU k\'s pin (nvidia-smi faked on PATH)', async () => {
    const bin = fs.mkdtempSync(path.join(tmp, 'bin-'));
    fs.writeFileSync(path.join(bin, 'nvidia-smi'), `#!/bin/sh\nprintf '${SMI_TWO.replace(/\n/g, '\\n')}'\n`, { mode: 0o755 });
    const out = fs.mkdtempSync(path.join(tmp, 'run-'));
    // A stand-in worker that writes the variables it was started with.
    const worker = path.join(tmp, 'env-worker.mjs');
    fs.writeFileSync(worker, `import fs from 'node:fs';
const keys = ['DRI_PRIME', 'MESA_VK_DEVICE_SELECT_FORCE_DEFAULT_DEVICE', 'VK_LOADER_DRIVERS_SELECT', 'DISPLAY', 'GOOGLENET_GPU', 'GOOGLENET_GPU_PCI', 'CUDA_VISIBLE_DEVICES'];
fs.writeFileSync(${JSON.stringify(out)} + '/env-' + process.env.LOCAL_RANK + '.json', JSON.stringify(Object.fromEntries(keys.map((k) => [k, process.env[k] ?? null]))));
process.exit(0);
`);
    const saved = { PATH: process.env.PATH, DISPLAY: process.env.DISPLAY, GOOGLENET_WORKER_ENTRY: process.env.GOOGLENET_WORKER_ENTRY };
    Object.assign(process.env, { PATH: `${bin}:${process.env.PATH}`, DISPLAY: ':7', GOOGLENET_WORKER_ENTRY: worker });
    try {
      const cfg = resolveTrainConfig(['--backend=webgpu', '--workers=2', '--gpus=0,1', `--out=${out}`, '--coordinator=ws://127.0.0.1:9'], { env: {} }) as TrainConfig;
      const said: string[] = [];
      const code = await launch(cfg, { write: () => {}, error: (s) => said.push(s), tty: false });
      expect(said).toEqual([]);
      expect(code).toBe(0);
    } finally {
      for (const [k, v] of Object.entries(saved)) {
        if (v === undefined) delete process.env[k];
        else process.env[k] = v;
      }
    }
    const got = [0, 1].map((k) => JSON.parse(fs.readFileSync(path.join(out, `env-${k}.json`), 'utf8')));
    expect(got).toEqual([['0', '0000:1b:00.0'], ['1', '0000:9a:00.0']].map(([gpu, pci]) => ({
      DRI_PRIME: `pci-${pci!.replace(/[:.]/g, '_')}`, MESA_VK_DEVICE_SELECT_FORCE_DEFAULT_DEVICE: '1', VK_LOADER_DRIVERS_SELECT: 'nvidia*',
      DISPLAY: null, GOOGLENET_GPU: gpu, GOOGLENET_GPU_PCI: pci, CUDA_VISIBLE_DEVICES: process.env.CUDA_VISIBLE_DEVICES ?? null,
    })));
  }, 30_000);

  it('fails at once with GPU_NOT_FOUND and no restart when --gpus names a GPU the machine lacks', async () => {
    const bin = fs.mkdtempSync(path.join(tmp, 'bin-'));
    fs.writeFileSync(path.join(bin, 'nvidia-smi'), `#!/bin/sh\nprintf '${SMI_TWO.replace(/\n/g, '\\n')}'\n`, { mode: 0o755 });
    const out = fs.mkdtempSync(path.join(tmp, 'run-'));
    const saved = process.env.PATH;
    process.env.PATH = `${bin}:${saved}`;
    try {
      const cfg = resolveTrainConfig(['--backend=webgpu', '--workers=1', '--gpus=5', '--max-restarts=3', `--out=${out}`], { env: {} }) as TrainConfig;
      const said: string[] = [];
      const code = await launch(cfg, { write: () => {}, error: (s) => said.push(s), tty: false });
      expect(code).toBe(1);
      expect(said.filter((l) => l.startsWith('launcher:'))).toEqual([]); // no restart attempted
      expect(said.join('\n')).toMatch(/error: training failed: \[GPU_NOT_FOUND\] .*; a restart cannot fix this/);
    } finally {
      process.env.PATH = saved;
    }
  }, 30_000);
});
