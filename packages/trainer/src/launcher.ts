import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs/promises';
import fsSync from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import readline from 'node:readline';
import { fileURLToPath } from 'node:url';
import type { TrainConfig } from './config';
import { latestCheckpointFile } from './checkpoint';
import { runIdOf } from './run-id';
import { EXIT_NO_RESTART, NO_RESTART_CODES } from './exit-codes';
import { discoverGpus, planWorkerGpus, workerDeviceEnv } from './devices';
import { missingNodeFlags } from './node-flags';
import { allowedCpus, bindingLine, findTaskset, formatCpuList, planCpuBinding, type CpuBinding } from './cpu-bind';

/** The entry points the launcher starts. Bundles (the GPU pack) point these elsewhere through env. */
const here = path.dirname(fileURLToPath(import.meta.url));
const entry = (name: string, envName: string) =>
  process.env[envName] ?? path.join(here, 'cli', `${name}${import.meta.url.endsWith('.ts') ? '.ts' : '.mjs'}`);

export interface LaunchIo {
  write(s: string): void;
  error(s: string): void;
  tty: boolean;
}

interface Proc {
  name: string;
  rank?: number;
  /** --cpu-bind: the cores it is bound to, as a cpu list. */
  cpus?: string;
  /** V8 flags the launcher added (node-flags.ts). */
  nodeFlags: string[];
  child: ChildProcess;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

/**
 * torchrun for this trainer: starts the coordinator (unless --coordinator names one) and one worker process
 * per local device, watches them, and when any of them dies stops the rest and restarts the whole group from
 * the last checkpoint, up to --max-restarts. SIGINT/SIGTERM stop every child; none outlives the launcher
 * (workers also exit when their IPC channel to the launcher closes).
 */
export async function launch(cfg: TrainConfig, io: LaunchIo, opts: LaunchOptions = {}): Promise<number> {
  const signals = opts.signals ?? process;
  const graceMs = opts.stopGraceMs ?? 3000;
  const worldSize = cfg.workers * cfg.nnodes;
  await fs.mkdir(cfg.out, { recursive: true });
  let current: Proc[] = [];
  let stopping: NodeJS.Signals | undefined;
  const onSignal = (sig: NodeJS.Signals) => {
    if (stopping) {
      // A second signal means "now": no more grace for children that ignore SIGTERM (torchrun does the same).
      const alive = current.filter(isAlive);
      io.error(`launcher: ${sig} again, killing ${alive.length} process(es)`);
      for (const p of alive) p.child.kill('SIGKILL');
      return;
    }
    stopping = sig;
    io.error(`\nlauncher: ${sig} received, stopping ${current.filter(isAlive).length} process(es)`);
    void stopAll(current, 0, graceMs);
  };
  signals.on('SIGINT', onSignal);
  signals.on('SIGTERM', onSignal);

  const binding = planCpuBinding({ choice: cfg.cpuBind, workers: cfg.workers, cpus: allowedCpus(), taskset: findTaskset() });
  const bindLine = bindingLine(binding, cfg.nodeRank * cfg.workers, cfg.cpuBind);
  if (bindLine) io.write(bindLine + '\n');
  try {
    let resume = cfg.resume;
    for (let attempt = 0; ; attempt++) {
      // A signal that arrived between attempts (while the last one was torn down) stops here.
      if (stopping) return stopping === 'SIGINT' ? 130 : 143;
      const attemptCfg: TrainConfig = { ...cfg, resume };
      const failure = await runAttempt(attemptCfg, worldSize, attempt, io, binding, (procs) => (current = procs), () => stopping !== undefined, graceMs);
      if (stopping) return stopping === 'SIGINT' ? 130 : 143;
      if (!failure) return 0;
      if (attempt >= cfg.maxRestarts || !failure.restartable) {
        const after = attempt > 0 ? ` (after ${attempt} restart(s))` : '';
        io.error(`error: training failed: ${failure.why}${after}${failure.restartable ? '' : '; a restart cannot fix this, so none was tried'}. Logs: ${cfg.out}`);
        return 1;
      }
      // The run folder, not its newest file: the workers then skip a newest checkpoint that is corrupt (a
      // kill mid-write) and take the one before, as --resume=<folder> does.
      const last = await latestCheckpointFile(cfg.out);
      resume = last ? cfg.out : cfg.resume;
      io.error(`launcher: ${failure.why}; restart ${attempt + 1}/${cfg.maxRestarts} from ${last ? `${cfg.out} (newest: ${path.basename(last)})` : resume ?? 'scratch (no checkpoint yet)'}`);
    }
  } finally {
    signals.off('SIGINT', onSignal);
    signals.off('SIGTERM', onSignal);
  }
}

export interface LaunchOptions {
  /** Where SIGINT/SIGTERM come from (default: this process; tests pass an EventEmitter). */
  signals?: Pick<NodeJS.EventEmitter, 'on' | 'off'>;
  /** Milliseconds between SIGTERM and SIGKILL when stopping children (default 3000; a second signal skips it). */
  stopGraceMs?: number;
}

const isAlive = (p: Proc) => p.child.exitCode === null && p.child.signalCode === null;

/** One attempt: start everything, wait for success or the first failure, stop the rest. */
async function runAttempt(
  cfg: TrainConfig, worldSize: number, attempt: number, io: LaunchIo, binding: CpuBinding, track: (p: Proc[]) => void, stopped: () => boolean, graceMs: number,
): Promise<AttemptFailure | undefined> {
  const procs: Proc[] = [];
  track(procs);
  let url = cfg.coordinator;
  try {
    if (worldSize > 1 && !url) {
      const coord = startChild('coordinator', undefined, entry('coordinator', 'GOOGLENET_COORDINATOR_ENTRY'), {
        GOOGLENET_COORDINATOR_OPTIONS: JSON.stringify({
          host: cfg.host, port: cfg.port, worldSize, runId: runIdOf(cfg), token: cfg.token,
          tls: cfg.tlsCert && cfg.tlsKey ? { cert: cfg.tlsCert, key: cfg.tlsKey } : undefined,
          roundTimeoutMs: Math.round(cfg.roundTimeout * 1000), dataPlane: cfg.dataPlane,
        }),
      }, io, 'pipe', cfg.out);
      procs.push(coord);
      url = await readUrl(coord);
      // The signal handler stopped what had started; start no workers after it.
      if (stopped()) return { why: 'stopped by a signal', restartable: false };
    }
    // WebGPU: worker k's own GPU, pinned through Mesa's device-select layer (devices.ts).
    const pins = planWorkerGpus({ backend: cfg.backend, workers: cfg.workers, gpus: cfg.gpus, discover: () => discoverGpus() });
    for (let local = 0; local < cfg.workers; local++) {
      const rank = cfg.nodeRank * cfg.workers + local;
      const cpus = 'sets' in binding ? binding.sets[local]! : undefined;
      procs.push(
        startChild(`rank ${rank}`, rank, entry('worker', 'GOOGLENET_WORKER_ENTRY'), {
          RANK: String(rank), WORLD_SIZE: String(worldSize), LOCAL_RANK: String(local), LOCAL_WORLD_SIZE: String(cfg.workers),
          GROUP_RANK: String(cfg.nodeRank),
          ...(url ? { GOOGLENET_COORDINATOR_URL: url } : {}),
          // tfjs-node-gpu's CUDA_VISIBLE_DEVICES, or for webgpu the device-select pin of this worker's GPU.
          ...workerDeviceEnv({ backend: cfg.backend, gpus: cfg.gpus, local, pin: pins[local] }),
          // The native CPU kernels would start one thread per core in every worker; split the cores instead.
          GOOGLENET_NATIVE_THREADS: process.env.GOOGLENET_NATIVE_THREADS ?? String(cpus?.length ?? Math.max(1, Math.floor(os.availableParallelism() / cfg.workers))),
          // The worker reads its affinity back and names it in its first log line.
          ...(cpus ? { GOOGLENET_CPU_BIND: formatCpuList(cpus) } : {}),
          GOOGLENET_ATTEMPT: String(attempt),
          GOOGLENET_TTY: io.tty && rank === 0 ? '1' : '0',
          GOOGLENET_CONFIG_JSON: JSON.stringify(cfg),
        }, io, rank === 0 ? 'inherit' : 'ignore', cfg.out, cpus && 'sets' in binding ? { taskset: binding.taskset, cpus: formatCpuList(cpus) } : undefined),
      );
    }
    // Where each process of this attempt runs, for operators (and the failure tests that kill one).
    await fs.writeFile(path.join(cfg.out, 'processes.json'), JSON.stringify({
      attempt, launcher: process.pid, coordinatorUrl: url,
      processes: procs.map((p) => ({ name: p.name, rank: p.rank, pid: p.child.pid, ...(p.cpus ? { cpus: p.cpus } : {}), ...(p.nodeFlags.length ? { nodeFlags: p.nodeFlags } : {}) })),
    }, null, 2) + '\n');
    return await firstFailure(procs, cfg.workers);
  } catch (e) {
    // The launcher's own errors (a --gpus id this machine lacks) keep their code for the user and for scripts.
    const code = (e as { code?: unknown }).code;
    const coded = typeof code === 'string' ? `[${code}] ` : '';
    return { why: coded + (e as Error).message, restartable: !(typeof code === 'string' && NO_RESTART_CODES.has(code)) };
  } finally {
    await stopAll(procs, 2000, graceMs);
  }
}

/** `bind`: start it as `taskset -c <cpus> node ...` (taskset execs node: the pid stays the child's). */
function startChild(name: string, rank: number | undefined, file: string, env: Record<string, string | undefined>, io: LaunchIo, stdout: 'inherit' | 'pipe' | 'ignore', outDir: string, bind?: { taskset: string; cpus: string }): Proc {
  // Workers get the training V8 flags (node-flags.ts) that the launcher's own command line did not set.
  const flags = rank === undefined ? [] : missingNodeFlags(process.execArgv, process.env.NODE_OPTIONS);
  const argv = [...(bind ? [bind.taskset, '-c', bind.cpus] : []), process.execPath, ...flags, ...process.execArgv, file];
  const child = spawn(argv[0]!, argv.slice(1), {
    env: { ...process.env, ...env },
    stdio: ['ignore', stdout, 'pipe', 'ipc'],
  });
  // The coordinator narrates every join and round; that goes to its log, and only trouble to the user.
  const logFile = name === 'coordinator' ? fsSync.createWriteStream(path.join(outDir, 'coordinator.log'), { flags: 'a' }) : undefined;
  readline.createInterface({ input: child.stderr! }).on('line', (line) => {
    logFile?.write(line + '\n');
    if (!logFile || /abort|error|fail|timed out|timeout|lost|reject/i.test(line)) io.error(`[${name}] ${line}`);
  });
  child.on('exit', () => logFile?.end());
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    child.on('exit', (code, signal) => resolve({ code, signal }));
    child.on('error', () => resolve({ code: -1, signal: null }));
  });
  return { name, rank, child, exited, nodeFlags: flags, ...(bind ? { cpus: bind.cpus } : {}) };
}

/** The coordinator child prints one JSON line with its address when it listens. */
async function readUrl(p: Proc): Promise<string> {
  const lines = readline.createInterface({ input: p.child.stdout! });
  const got = new Promise<string>((resolve, reject) => {
    lines.on('line', (line) => {
      try {
        const m = JSON.parse(line) as { url?: string };
        if (m.url) resolve(m.url);
      } catch {
        /* other output */
      }
    });
    void p.exited.then((x) => reject(new Error(`the coordinator exited before listening (${describeExit(x)})`)));
  });
  return got;
}

/** Why an attempt failed, and whether restarting it could help (not when a worker exited EXIT_NO_RESTART). */
interface AttemptFailure {
  why: string;
  restartable: boolean;
}

/** Resolves with undefined when every worker exited 0, or with the first failure. */
async function firstFailure(procs: Proc[], workers: number): Promise<AttemptFailure | undefined> {
  let succeeded = 0;
  return new Promise((resolve) => {
    for (const p of procs) {
      void p.exited.then((x) => {
        if (p.rank !== undefined && x.code === 0) {
          if (++succeeded === workers) resolve(undefined);
          return;
        }
        if (p.rank === undefined && succeeded === workers) return;
        resolve({ why: `${p.name} ${describeExit(x)}`, restartable: !(p.rank !== undefined && x.code === EXIT_NO_RESTART) });
      });
    }
  });
}

function describeExit(x: { code: number | null; signal: NodeJS.Signals | null }): string {
  return x.signal ? `was killed by ${x.signal}` : `exited with code ${x.code}`;
}

/**
 * Stops an attempt's processes: after a failure the survivors first get `waitMs` to notice it themselves
 * (the coordinator aborts their round; they print why and exit), then SIGTERM, then SIGKILL.
 */
async function stopAll(procs: Proc[], waitMs: number, graceMs: number): Promise<void> {
  if (waitMs > 0 && procs.some(isAlive)) {
    await Promise.race([Promise.all(procs.filter(isAlive).map((p) => p.exited)), new Promise((r) => setTimeout(r, waitMs))]);
  }
  const alive = procs.filter(isAlive);
  for (const p of alive) p.child.kill('SIGTERM');
  const timer = setTimeout(() => alive.forEach((p) => p.child.kill('SIGKILL')), graceMs);
  await Promise.all(alive.map((p) => p.exited));
  clearTimeout(timer);
}

