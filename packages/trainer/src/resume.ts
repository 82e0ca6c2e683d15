import fs from 'node:fs/promises';
import path from 'node:path';
import { checkpointDir, checkpointName, findResumeCheckpoint, readCheckpointFile, type ResumePoint } from './checkpoint';
import { runFolderOf, type TrainConfig } from './config';
import { TrainerError } from './errors';
import type { GradientReducer } from './reducer';

/**
 * This rank's own pick for `--resume` (the newest valid checkpoint of its run folder). Rank 0 decides for
 * everyone (agreeOnResume), so another rank that finds nothing here is not yet wrong: it says why and waits
 * for rank 0's choice.
 */
export async function localResumePoint(cfg: TrainConfig, rank: number, warn: (line: string) => void): Promise<ResumePoint | undefined> {
  if (!cfg.resume) return undefined;
  if (rank === 0) return findResumeCheckpoint(cfg.resume, warn);
  try {
    return await findResumeCheckpoint(cfg.resume, warn);
  } catch (e) {
    warn(`[rank ${rank}] no checkpoint of its own to resume from (${(e as Error).message}); taking rank 0's`);
    return undefined;
  }
}

/** Rank 0's choice on the wire: [present, step div 2^16, step mod 2^16, 32 sha256 bytes], each exact in float32. */
const CHOICE_FLOATS = 3 + 32;

function encodeChoice(p: ResumePoint | undefined): Float32Array {
  const f = new Float32Array(CHOICE_FLOATS);
  if (!p) return f;
  f[0] = 1;
  f[1] = Math.floor(p.ckpt.meta.step / 65536);
  f[2] = p.ckpt.meta.step % 65536;
  f.set(Buffer.from(p.sha256, 'hex'), 3);
  return f;
}

function decodeChoice(f: Float32Array): { step: number; sha256: string } | undefined {
  if (f[0] !== 1) return undefined;
  return { step: f[1]! * 65536 + f[2]!, sha256: Buffer.from(Array.from(f.subarray(3), Number)).toString('hex') };
}

/** Where a rank looks for rank 0's checkpoint: the --resume file, then the run folders of --resume and --out. */
function searchFiles(cfg: TrainConfig, step: number): string[] {
  const files: string[] = [];
  if (cfg.resume?.endsWith('.ckpt')) files.push(cfg.resume);
  for (const dir of [cfg.resume && runFolderOf(cfg.resume), cfg.out]) {
    if (dir) files.push(path.join(checkpointDir(dir), checkpointName(step)));
  }
  return [...new Set(files)];
}

async function findChosen(cfg: TrainConfig, chosen: { step: number; sha256: string }): Promise<ResumePoint> {
  const why: string[] = [];
  for (const file of searchFiles(cfg, chosen.step)) {
    if (!(await fs.stat(file).catch(() => undefined))) {
      why.push(`${file} does not exist`);
      continue;
    }
    try {
      const p = await readCheckpointFile(file);
      if (p.sha256 === chosen.sha256) return p;
      why.push(`${file} differs from it (sha256 ${p.sha256.slice(0, 12)}...)`);
    } catch (e) {
      why.push((e as Error).message);
    }
  }
  throw new Error(why.join('; '));
}

/**
 * Every rank resumes from rank 0's checkpoint: rank 0 broadcasts its step and the file's sha256, every other
 * rank loads the same file from its own run folder (shared storage, or a copy), and all ranks learn who
 * could not, so that they abort together with RESUME_DISAGREE instead of training at different steps.
 * Returns the checkpoint this rank must resume from (undefined: from scratch, as rank 0 does).
 */
export async function agreeOnResume(
  reducer: GradientReducer,
  rank: number,
  local: ResumePoint | undefined,
  cfg: TrainConfig,
  warn: (line: string) => void,
): Promise<ResumePoint | undefined> {
  if (reducer.worldSize === 1) return local;
  const wire = encodeChoice(rank === 0 ? local : undefined);
  await reducer.broadcast(wire);
  const chosen = decodeChoice(wire);
  let agreed = local;
  let failure: string | undefined;
  if (!chosen) {
    if (local) warn(`[rank ${rank}] rank 0 starts from scratch, so this rank does too (ignoring ${local.file})`);
    agreed = undefined;
  } else if (!local || local.ckpt.meta.step !== chosen.step || local.sha256 !== chosen.sha256) {
    try {
      agreed = await findChosen(cfg, chosen);
      warn(`[rank ${rank}] resuming from rank 0's checkpoint ${agreed.file} (step ${chosen.step})${local ? ` instead of its own newest, ${local.file}` : ''}`);
    } catch (e) {
      failure = (e as Error).message;
    }
  }
  const failed = new Float64Array(reducer.worldSize);
  if (failure !== undefined) failed[rank] = 1;
  await reducer.reduceMetrics(failed);
  const ranks = [...failed.keys()].filter((r) => failed[r]! > 0);
  if (!ranks.length) return agreed;
  const what = `the checkpoint rank 0 resumes from: step ${chosen!.step}, ${checkpointName(chosen!.step)} (sha256 ${chosen!.sha256.slice(0, 12)}...)`;
  const fix = 'put the run folder on storage that every machine shares (or copy rank 0\'s checkpoints/ folder to each) and start again';
  throw new TrainerError(
    'RESUME_DISAGREE',
    failure !== undefined
      ? `rank ${rank} cannot load ${what}: ${failure}; ${fix}`
      : `rank(s) ${ranks.join(', ')} cannot load ${what} (their logs say why); ${fix}`,
  );
}
