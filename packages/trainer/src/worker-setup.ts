import fs from 'node:fs/promises';
import path from 'node:path';
import { selectBackend, WEBGPU_ADAPTER_ENV, type BackendInfo } from '@googlenet/model';
import { publicConfig } from './config';
import { configSummary } from './config-summary';
import { removeStaleTemps } from './checkpoint';
import { deviceNote, GPU_ENV, nvidiaContainerHint, pinThisProcess } from './devices';
import { allowedCpus, formatCpuList } from './cpu-bind';
import type { WorkerContext } from './worker-context';

/**
 * Setup: pins the device, picks the backend and says which (and why), and on rank 0 shows the config,
 * writes config.json and removes checkpoint temp files left by writers that died mid-write.
 */
export async function setupWorker({ cfg, id, lead, say }: WorkerContext): Promise<BackendInfo> {
  pinThisProcess({ backend: cfg.backend, gpus: cfg.gpus, localRank: id.localRank });
  // In an NVIDIA container without the graphics capability there is no Vulkan driver: say so where webgpu fails.
  const containerHint = nvidiaContainerHint(process.env);
  const backend = await selectBackend(cfg.backend, { log: () => {}, precision: cfg.precision }).catch((e: Error) => {
    if (containerHint && (e as { code?: string }).code === 'BACKEND_UNAVAILABLE' && /no WebGPU adapter/.test(e.message)) e.message += `; ${containerHint}`;
    throw e;
  });
  say(`[rank ${id.rank}/${id.worldSize}] ${backend.line}${deviceNote(backend.name, process.env)}${cpuNote(process.env)}`);
  if (containerHint && backend.skipped.some((s) => s.backend === 'webgpu' && /no WebGPU adapter/.test(s.reason))) say(`webgpu: ${containerHint}`);
  const local = Number(process.env.LOCAL_WORLD_SIZE ?? 1);
  if (backend.adapter && local > 1 && id.localRank === 0 && !process.env[WEBGPU_ADAPTER_ENV] && process.env[GPU_ENV.index] === undefined) {
    // Nothing pinned (more workers than NVIDIA GPUs found): Dawn hands every process the first adapter.
    say(`webgpu: the ${local} workers on this machine share this adapter (more workers than NVIDIA GPUs found, so none ` +
      'is pinned; --gpus=0,1,... or --workers=auto gives each worker its own GPU through Mesa\'s device-select layer)');
  }
  if (lead) {
    say(configSummary(cfg, id.worldSize));
    await fs.writeFile(path.join(cfg.out, 'config.json'), JSON.stringify(publicConfig(cfg), null, 2) + '\n');
    // Rank 0 is the only checkpoint writer: temp files of dead writers are leftovers of a kill mid-write.
    for (const f of await removeStaleTemps(cfg.out)) say(`removed ${f}, left by a checkpoint writer that died mid-write`);
  }
  return backend;
}

/** --cpu-bind: the cores this process may use, read back from the kernel (not the launcher's plan). */
function cpuNote(env: NodeJS.ProcessEnv): string {
  if (env.GOOGLENET_CPU_BIND === undefined) return '';
  const cpus = allowedCpus();
  return cpus ? ` (bound to cpu ${formatCpuList(cpus)})` : '';
}
