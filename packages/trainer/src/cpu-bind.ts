/**
 * --cpu-bind: each worker process on this machine gets its own cores, as torchrun users get from taskset or
 * numactl. Unbound, the kernel moves a worker's main thread and its helpers (V8's GC threads, the loader's
 * decoders, the exchange's waiters) across the cores the other workers compute on: each move costs the moved
 * thread its L1/L2 contents, and with one compute thread per core the workers then wait on each other at every
 * step's exchange. Measured here (2 workers on 2 cores, 32 px, three alternated pairs of runs): bound 2-8 %
 * more img/s than unbound in every pair.
 *
 * The launcher starts a bound worker as `taskset -c <its cores> node ...`: taskset sets the affinity and then
 * execs node, so every thread node starts later inherits it and the pid is the worker's own.
 */
import fs from 'node:fs';
import path from 'node:path';

export type CpuBindChoice = 'auto' | 'off';

/** Parses a kernel cpu list ("0-3,8,10-11") into core numbers, ascending; throws on anything else. */
export function parseCpuList(s: string): number[] {
  const out = new Set<number>();
  for (const part of s.trim().split(',')) {
    const m = /^(\d+)(?:-(\d+))?$/.exec(part.trim());
    if (!m) throw new Error(`not a cpu list: "${s}"`);
    const [a, b] = [Number(m[1]), Number(m[2] ?? m[1])];
    if (b < a) throw new Error(`not a cpu list: "${s}" (range ${part} runs backwards)`);
    for (let c = a; c <= b; c++) out.add(c);
  }
  return [...out].sort((x, y) => x - y);
}

/** Formats cores as a kernel cpu list: [0,1,2,5] -> "0-2,5". */
export function formatCpuList(cpus: readonly number[]): string {
  const parts: string[] = [];
  for (let i = 0; i < cpus.length; ) {
    let j = i;
    while (j + 1 < cpus.length && cpus[j + 1] === cpus[j]! + 1) j++;
    parts.push(j === i ? String(cpus[i]) : `${cpus[i]}-${cpus[j]}`);
    i = j + 1;
  }
  return parts.join(',');
}

/** The cores this process may run on (Linux: /proc/self/status), or null where that cannot be read. */
export function allowedCpus(status?: string): number[] | null {
  let text = status;
  if (text === undefined) {
    try {
      text = fs.readFileSync('/proc/self/status', 'utf8');
    } catch {
      return null;
    }
  }
  const m = /^Cpus_allowed_list:\s*(\S+)\s*$/m.exec(text);
  if (!m) return null;
  try {
    return parseCpuList(m[1]!);
  } catch {
    return null;
  }
}

/** The first `taskset` on PATH, or null. */
export function findTaskset(envPath = process.env.PATH ?? ''): string | null {
  for (const dir of envPath.split(path.delimiter)) {
    if (!dir) continue;
    const file = path.join(dir, 'taskset');
    try {
      fs.accessSync(file, fs.constants.X_OK);
      return file;
    } catch {
      // next
    }
  }
  return null;
}

export type CpuBinding = { sets: number[][]; taskset: string } | { off: string };

/**
 * Which cores each of this machine's `workers` gets: consecutive equal shares of the launcher's own cores
 * (floor(cores / workers) each; a remainder stays unbound, for the coordinator). Off, with the reason, for one
 * worker (it may use every core), more workers than cores, or no affinity support (not Linux, no taskset).
 */
export function planCpuBinding(o: { choice: CpuBindChoice; workers: number; cpus: readonly number[] | null; taskset: string | null }): CpuBinding {
  if (o.choice === 'off') return { off: '--cpu-bind=off' };
  if (o.workers < 2) return { off: 'one worker: it may use every core' };
  if (!o.cpus) return { off: 'this system does not report which cores a process may use (/proc/self/status)' };
  if (o.cpus.length < o.workers) return { off: `${o.workers} workers share ${o.cpus.length} core(s)` };
  if (!o.taskset) return { off: 'no taskset on PATH (Debian: apt install util-linux)' };
  const per = Math.floor(o.cpus.length / o.workers);
  const sets = Array.from({ length: o.workers }, (_, k) => o.cpus!.slice(k * per, (k + 1) * per));
  return { sets, taskset: o.taskset };
}

/** The launcher's line about the binding ('' when off for a reason nobody asked about). */
export function bindingLine(b: CpuBinding, firstRank: number, choice: CpuBindChoice): string {
  if ('off' in b) return choice === 'auto' && !/^one worker/.test(b.off) ? `cpu binding off: ${b.off}` : '';
  return `cpu binding (--cpu-bind=auto): ${b.sets.map((s, k) => `rank ${firstRank + k} on cpu ${formatCpuList(s)}`).join(', ')}`;
}
