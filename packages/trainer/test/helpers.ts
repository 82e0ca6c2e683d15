import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { decodeSafetensors, encodeSafetensors } from '@googlenet/model';
import { CHECKPOINT_FORMAT, CHECKPOINT_VERSION, type CheckpointMeta } from '../src/checkpoint';

export const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
const tsx = path.join(repoRoot, 'node_modules', '.bin', 'tsx');
export const trainEntry = path.join(repoRoot, 'packages/trainer/src/cli/train.ts');

export interface Run {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  ms: number;
}

export interface Started {
  child: ChildProcess;
  done: Promise<Run>;
}

/** Starts `tsx packages/trainer/src/cli/train.ts ...args` as a user would, capturing its output. */
export function startTrain(args: string[], env: NodeJS.ProcessEnv = {}): Started {
  return startScript(trainEntry, args, env);
}

export function startScript(file: string, args: string[], env: NodeJS.ProcessEnv = {}): Started {
  const t0 = Date.now();
  const child = spawn(tsx, [file, ...args], {
    cwd: repoRoot,
    env: { ...process.env, FORCE_COLOR: '0', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout!.on('data', (d) => (stdout += d));
  child.stderr!.on('data', (d) => (stderr += d));
  const done = new Promise<Run>((resolve) =>
    child.on('exit', (code, signal) => resolve({ code, signal, stdout, stderr, ms: Date.now() - t0 })),
  );
  return { child, done };
}

export async function train(args: string[], env: NodeJS.ProcessEnv = {}): Promise<Run> {
  const r = await startTrain(args, env).done;
  if (r.code !== 0) {
    throw new Error(`train ${args.join(' ')} exited ${r.code ?? r.signal}\n--- stdout\n${r.stdout.slice(-3000)}\n--- stderr\n${r.stderr.slice(-3000)}`);
  }
  return r;
}

export function tempDir(prefix: string): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), `googlenet-${prefix}-`));
}

/** The float32 tensors of a safetensors file, by name. */
export function readTensors(file: string): Map<string, Float32Array> {
  const { tensors } = decodeSafetensors(new Uint8Array(fs.readFileSync(file)));
  const out = new Map<string, Float32Array>();
  for (const [name, t] of tensors) if (t.dtype === 'F32') out.set(name, t.data as Float32Array);
  return out;
}

/** The int64 tensors of a safetensors file (the BatchNorm layers' num_batches_tracked), by name. */
export function readCounters(file: string): Map<string, bigint> {
  const { tensors } = decodeSafetensors(new Uint8Array(fs.readFileSync(file)));
  const out = new Map<string, bigint>();
  for (const [name, t] of tensors) if (t.dtype === 'I64') out.set(name, (t.data as BigInt64Array)[0]!);
  return out;
}

/** The step numbers of metrics.jsonl's step records, in file order (a resumed run's redone steps appear once). */
export function loggedSteps(runDir: string): number[] {
  const f = path.join(runDir, 'metrics.jsonl');
  if (!fs.existsSync(f)) return [];
  // A running trainer may be part-way through writing its last line: read the complete ones.
  const records = fs.readFileSync(f, 'utf8').split('\n').flatMap((l) => {
    try {
      return [JSON.parse(l) as Record<string, unknown>];
    } catch {
      return [];
    }
  });
  return records.filter((r) => r.type === 'step').map((r) => r.step as number);
}

export const range = (from: number, to: number) => Array.from({ length: to - from + 1 }, (_, i) => from + i);

/** max over tensors of ||a - b||_inf / ||b||_inf. */
export function maxRelativeError(a: Map<string, Float32Array>, b: Map<string, Float32Array>): { err: number; worst: string } {
  if (a.size !== b.size) throw new Error(`tensor counts differ: ${a.size} vs ${b.size}`);
  let err = 0;
  let worst = '';
  for (const [name, x] of a) {
    const y = b.get(name);
    if (!y || y.length !== x.length) throw new Error(`${name} missing or mis-sized`);
    let d = 0;
    let m = 0;
    for (let i = 0; i < x.length; i++) {
      d = Math.max(d, Math.abs(x[i]! - y[i]!));
      m = Math.max(m, Math.abs(y[i]!));
    }
    const e = d / Math.max(m, 1e-12);
    if (e > err) {
      err = e;
      worst = name;
    }
  }
  return { err, worst };
}

/** `weights sha256: <hex>` lines of every rank's log in a run folder, by rank. */
export function rankDigests(runDir: string): Map<number, string> {
  const out = new Map<number, string>();
  for (const f of fs.readdirSync(runDir)) {
    if (f !== 'train.log' && !/^worker-\d+\.log$/.test(f)) continue;
    const text = fs.readFileSync(path.join(runDir, f), 'utf8');
    for (const m of text.matchAll(/\[rank (\d+)\] weights sha256: ([0-9a-f]{64})/g)) out.set(Number(m[1]), m[2]!);
  }
  return out;
}

export function readJsonl(file: string): Record<string, unknown>[] {
  return fs.readFileSync(file, 'utf8').trim().split('\n').filter(Boolean).map((l) => JSON.parse(l));
}

/** Waits until `cond()` holds, polling; fails after `ms`. */
export async function waitFor(cond: () => boolean, ms: number, what: string): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/**
 * Writes `<runDir>/checkpoints/step-N.ckpt` holding only metadata, which is all that choosing and validating a
 * checkpoint reads (restoring would need tensors). `tag` makes files of the same step differ.
 */
export function writeMetaOnlyCheckpoint(runDir: string, step: number, tag = ''): string {
  const meta: CheckpointMeta = {
    format: CHECKPOINT_FORMAT, version: CHECKPOINT_VERSION, step, epoch: 0,
    sampler: { version: 1, seed: 0, epoch: 0, position: step, worldSize: 1, accumulate: 1, dataset: 'synthetic' },
    optimizer: { type: 'sgd', started: true, momentum: 0.9, weightDecay: 0, layout: 'tfjs' }, config: {}, seeds: { seed: 0 }, createdAt: `then${tag}`,
  };
  const file = path.join(runDir, 'checkpoints', `step-${String(step).padStart(8, '0')}.ckpt`);
  fs.mkdirSync(path.dirname(file), { recursive: true });
  fs.writeFileSync(file, encodeSafetensors(new Map(), { checkpoint: JSON.stringify(meta) }));
  return file;
}
