import { createHash } from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import { decodeSafetensors, encodeSafetensors, loadStateDict, stateDict, type GoogLeNet, type HostTensor } from '@googlenet/model';
import type { LoaderState } from '@googlenet/dataloader';
import { TrainerError } from './errors';
import type { LossScaleState } from './loss-scale';
import { readFloats } from './host';
import type { Sgd } from './optim';

export const CHECKPOINT_FORMAT = 'googlenet-dp-checkpoint';
export const CHECKPOINT_VERSION = 1;
const MOMENTUM_PREFIX = 'optimizer.momentum_buffer.';
/** The weights' EMA (--ema-decay), under the seed's names after this prefix. */
const EMA_PREFIX = 'ema.';

/** What a checkpoint says besides its tensors (stored as safetensors __metadata__). */
export interface CheckpointMeta {
  format: typeof CHECKPOINT_FORMAT;
  version: number;
  /** Optimizer steps completed. */
  step: number;
  epoch: number;
  /** The train loader's state after `step` (rank-independent: every rank resumes at the same position). */
  sampler: LoaderState;
  optimizer: { type: 'sgd'; started: boolean; momentum: number; weightDecay: number; layout: 'tfjs' };
  /** The resolved config of the run that wrote it. */
  config: Record<string, unknown>;
  /** Seeds of every random stream; all are stateless functions of (seed, epoch, step, slot). */
  seeds: { seed: number };
  createdAt: string;
  /** --precision=f16: the loss scaler's state after `step` (scale, good steps since the last change, skipped steps). */
  lossScale?: LossScaleState;
}

/**
 * One checkpoint = one safetensors file: the weights under the seed's PyTorch names and layouts (so the
 * file loads into PyTorch after dropping `optimizer.*` and `ema.*`), the SGD momentum buffers in TF.js layout,
 * the EMA of the weights when the run keeps one (`ema.<name>`), and the metadata above.
 */
export async function encodeCheckpoint(model: GoogLeNet, sgd: Sgd, meta: CheckpointMeta, ema?: GoogLeNet): Promise<Uint8Array> {
  const tensors = await stateDict(model);
  if (ema) for (const [name, t] of await stateDict(ema)) tensors.set(EMA_PREFIX + name, t);
  const { buffers } = sgd.state();
  for (const [i, p] of model.params.entries()) {
    const b = buffers[i];
    if (b) tensors.set(MOMENTUM_PREFIX + p.name, { dtype: 'F32', shape: b.shape, data: await readFloats(b) });
  }
  return encodeSafetensors(tensors, { checkpoint: JSON.stringify(meta) });
}

export interface DecodedCheckpoint {
  meta: CheckpointMeta;
  weights: Map<string, HostTensor>;
  momentum: Map<string, HostTensor>;
  /** The EMA's tensors (names without `ema.`); empty when the run kept none. */
  ema: Map<string, HostTensor>;
}

/** Parses and validates a checkpoint's bytes; names the file in every error. */
export function decodeCheckpoint(bytes: Uint8Array, file: string): DecodedCheckpoint {
  let decoded: ReturnType<typeof decodeSafetensors>;
  try {
    decoded = decodeSafetensors(bytes);
  } catch (e) {
    throw new TrainerError('CHECKPOINT_CORRUPT', `${file} is not a readable checkpoint: ${(e as Error).message}`, { cause: e });
  }
  let meta: CheckpointMeta;
  try {
    meta = JSON.parse(decoded.metadata.checkpoint ?? 'null');
  } catch {
    throw new TrainerError('CHECKPOINT_CORRUPT', `${file}: its checkpoint metadata is not valid JSON`);
  }
  if (!meta || meta.format !== CHECKPOINT_FORMAT) {
    throw new TrainerError('CHECKPOINT_CORRUPT', `${file} is a safetensors file but not a ${CHECKPOINT_FORMAT} (a weights file? use it with model:infer, not --resume)`);
  }
  if (meta.version !== CHECKPOINT_VERSION) {
    throw new TrainerError('CHECKPOINT_VERSION', `${file} has checkpoint version ${meta.version}; this trainer reads version ${CHECKPOINT_VERSION}`);
  }
  if (!Number.isInteger(meta.step) || meta.step < 0 || !meta.sampler) {
    throw new TrainerError('CHECKPOINT_CORRUPT', `${file}: metadata lacks a valid step or sampler state`);
  }
  // Restoring reads these fields; a file without them must fail here, as a checkpoint error, not later as a TypeError.
  const opt = meta.optimizer as Partial<CheckpointMeta['optimizer']> | undefined;
  if (!opt || typeof opt !== 'object' || opt.type !== 'sgd' || typeof opt.started !== 'boolean') {
    throw new TrainerError('CHECKPOINT_CORRUPT', `${file}: metadata lacks the optimizer state (optimizer.type "sgd", optimizer.started); it was not written by this trainer: resume from another checkpoint or start a fresh run`);
  }
  if (!meta.config || typeof meta.config !== 'object' || !meta.seeds || !Number.isInteger(meta.seeds.seed)) {
    throw new TrainerError('CHECKPOINT_CORRUPT', `${file}: metadata lacks the run's config or seeds; resume from another checkpoint or start a fresh run`);
  }
  const weights = new Map<string, HostTensor>();
  const momentum = new Map<string, HostTensor>();
  const ema = new Map<string, HostTensor>();
  for (const [name, t] of decoded.tensors) {
    if (name.startsWith(MOMENTUM_PREFIX)) momentum.set(name.slice(MOMENTUM_PREFIX.length), t);
    else if (name.startsWith(EMA_PREFIX)) ema.set(name.slice(EMA_PREFIX.length), t);
    else weights.set(name, t);
  }
  return { meta, weights, momentum, ema };
}

/** Loads weights, BN statistics and optimizer state into a freshly built model and optimizer. */
export function restoreCheckpoint(ckpt: DecodedCheckpoint, model: GoogLeNet, sgd: Sgd, file: string): void {
  try {
    loadStateDict(model, ckpt.weights);
  } catch (e) {
    throw new TrainerError('CHECKPOINT_MISMATCH', `${file} does not fit this model: ${(e as Error).message}`, { cause: e });
  }
  if (!ckpt.meta.optimizer.started) return;
  const values = model.params.map((p) => {
    const m = ckpt.momentum.get(p.name);
    if (!m || m.dtype !== 'F32' || m.data.length !== p.variable.size) {
      throw new TrainerError('CHECKPOINT_MISMATCH', `${file}: momentum buffer for ${p.name} is missing or mis-shaped`);
    }
    return m.data as Float32Array;
  });
  if (sgd.state().buffers.length) sgd.load(true, values);
}

/** Where checkpoints of a run folder live. */
export const checkpointDir = (runDir: string) => path.join(runDir, 'checkpoints');
/** The file name of step `step`'s checkpoint: the same on every machine, so ranks can name it to each other. */
export const checkpointName = (step: number) => `step-${String(step).padStart(8, '0')}.ckpt`;
const fileFor = (dir: string, step: number) => path.join(dir, checkpointName(step));
const TEMP = /^step-\d+\.ckpt\.tmp-(\d+)$/;

/** Hooks for the file system calls, so tests can inject a full disk without one. */
export interface CheckpointFs {
  writeFile(handle: fs.FileHandle, bytes: Uint8Array): Promise<void>;
}
const realFs: CheckpointFs = {
  async writeFile(handle, bytes) {
    let off = 0;
    while (off < bytes.length) {
      const { bytesWritten } = await handle.write(bytes, off, bytes.length - off);
      off += bytesWritten;
    }
  },
};

/**
 * Writes atomically: a temp file in the same folder, fsync, rename over the final name, fsync the folder.
 * A failure (full disk, read-only or unwritable folder) removes the temp file, leaves every earlier
 * checkpoint untouched and throws CHECKPOINT_WRITE_FAILED. Keeps the newest `keep` checkpoints.
 */
export async function writeCheckpoint(
  runDir: string,
  step: number,
  bytes: Uint8Array,
  opts: { keep: number; fs?: CheckpointFs },
): Promise<string> {
  const dir = checkpointDir(runDir);
  const final = fileFor(dir, step);
  const tmp = `${final}.tmp-${process.pid}`;
  try {
    await fs.mkdir(dir, { recursive: true });
    const handle = await fs.open(tmp, 'w');
    try {
      await (opts.fs ?? realFs).writeFile(handle, bytes);
      await handle.sync();
    } finally {
      await handle.close();
    }
    await fs.rename(tmp, final);
    const dh = await fs.open(dir, 'r');
    try {
      await dh.sync();
    } finally {
      await dh.close();
    }
  } catch (e) {
    await fs.rm(tmp, { force: true }).catch(() => {});
    const err = e as NodeJS.ErrnoException;
    const why =
      err.code === 'ENOSPC' ? 'the disk is full' :
      err.code === 'EROFS' ? 'the file system is read-only' :
      err.code === 'EACCES' || err.code === 'EPERM' ? 'the folder is not writable' : err.message;
    throw new TrainerError(
      'CHECKPOINT_WRITE_FAILED',
      `checkpoint for step ${step} could not be written to ${dir}: ${why} (${err.code ?? 'error'}); the previous checkpoint is intact. Free space or choose another --out.`,
      { cause: e },
    );
  }
  await pruneCheckpoints(dir, opts.keep);
  return final;
}

async function listCheckpoints(dir: string): Promise<{ step: number; file: string }[]> {
  let names: string[];
  try {
    names = await fs.readdir(dir);
  } catch {
    return [];
  }
  return names
    .map((n) => /^step-(\d+)\.ckpt$/.exec(n))
    .filter((m): m is RegExpExecArray => m !== null)
    .map((m) => ({ step: Number(m[1]), file: path.join(dir, m[0]) }))
    .sort((a, b) => a.step - b.step);
}

async function pruneCheckpoints(dir: string, keep: number): Promise<void> {
  const all = await listCheckpoints(dir);
  for (const c of all.slice(0, Math.max(0, all.length - keep))) await fs.rm(c.file, { force: true });
}

/** A checkpoint chosen for resuming, with the sha256 of its bytes (how ranks check they hold the same one). */
export interface ResumePoint {
  file: string;
  ckpt: DecodedCheckpoint;
  sha256: string;
}

/** Reads, hashes and validates one checkpoint file. */
export async function readCheckpointFile(file: string): Promise<ResumePoint> {
  const bytes = new Uint8Array(await fs.readFile(file));
  return { file, ckpt: decodeCheckpoint(bytes, file), sha256: createHash('sha256').update(bytes).digest('hex') };
}

/**
 * Resolves `--resume` (a run folder or a .ckpt file) to the newest checkpoint that validates; a corrupt
 * newest file is reported through `warn` and the one before it is used.
 */
export async function findResumeCheckpoint(resume: string, warn: (line: string) => void): Promise<ResumePoint> {
  const stat = await fs.stat(resume).catch(() => undefined);
  if (!stat) throw new TrainerError('RESUME_NOT_FOUND', `--resume=${resume} does not exist: give a run folder or a .ckpt file`);
  const candidates = stat.isDirectory() ? (await listCheckpoints(checkpointDir(resume))).reverse().map((c) => c.file) : [resume];
  if (candidates.length === 0) throw new TrainerError('RESUME_NOT_FOUND', `${resume} holds no checkpoints (looked in ${checkpointDir(resume)})`);
  let lastError: unknown;
  for (const file of candidates) {
    try {
      return await readCheckpointFile(file);
    } catch (e) {
      lastError = e;
      if (!stat.isDirectory()) break;
      warn(`warning: skipping ${file}: ${(e as Error).message}`);
    }
  }
  throw lastError;
}

/** The newest checkpoint file of a run folder, if any (for the launcher's restarts). */
export async function latestCheckpointFile(runDir: string): Promise<string | undefined> {
  return (await listCheckpoints(checkpointDir(runDir))).at(-1)?.file;
}

/** Whether a process with this id runs on this machine (EPERM: it does, under another user). */
function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * Removes the `*.tmp-PID` files that checkpoint writers killed mid-write leave behind: those whose PID is no
 * longer alive on this machine. A live PID may be a writer still at work, so its file stays. Returns the
 * removed paths.
 */
export async function removeStaleTemps(runDir: string, isAlive: (pid: number) => boolean = pidAlive): Promise<string[]> {
  const dir = checkpointDir(runDir);
  const names = await fs.readdir(dir).catch(() => [] as string[]);
  const removed: string[] = [];
  for (const name of names) {
    const m = TEMP.exec(name);
    if (!m || isAlive(Number(m[1]))) continue;
    await fs.rm(path.join(dir, name), { force: true });
    removed.push(path.join(dir, name));
  }
  return removed;
}
