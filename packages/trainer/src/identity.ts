import { TrainerError } from './errors';

/** Who this process is in the job. Built once from the environment and passed in; never global. */
export interface WorkerIdentity {
  rank: number;
  worldSize: number;
  localRank: number;
  /** Coordinator address, or undefined for a single-process run. */
  coordinatorUrl?: string;
  /** GPU id this process was given (CUDA_VISIBLE_DEVICES), if any. */
  device?: string;
  /** Which launcher restart this process belongs to (0 for the first attempt). */
  attempt: number;
}

/**
 * Reads the environment that a launcher sets: ours (GOOGLENET_COORDINATOR_URL), torchrun's
 * (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT) or Slurm's (SLURM_PROCID, SLURM_NTASKS,
 * SLURM_LOCALID). Returns undefined when none is set: a plain single-process run.
 */
export function identityFromEnv(env: NodeJS.ProcessEnv = process.env): WorkerIdentity | undefined {
  const pick = (...names: string[]) => names.map((n) => env[n]).find((v) => v !== undefined && v !== '');
  const rankS = pick('RANK', 'SLURM_PROCID');
  const worldS = pick('WORLD_SIZE', 'SLURM_NTASKS');
  if (rankS === undefined && worldS === undefined) return undefined;
  const int = (name: string, v: string | undefined, fallback?: number) => {
    if (v === undefined) {
      if (fallback !== undefined) return fallback;
      throw new TrainerError('BAD_ENV', `${name} is not set: a launcher must set RANK and WORLD_SIZE (or SLURM_PROCID and SLURM_NTASKS) together`);
    }
    const n = Number(v);
    if (!Number.isInteger(n) || n < 0) throw new TrainerError('BAD_ENV', `${name}=${v} is not a non-negative integer`);
    return n;
  };
  const rank = int('RANK', rankS);
  const worldSize = int('WORLD_SIZE', worldS);
  if (worldSize < 1 || rank >= worldSize) throw new TrainerError('BAD_ENV', `RANK=${rank} must be below WORLD_SIZE=${worldSize}`);
  const localRank = int('LOCAL_RANK', pick('LOCAL_RANK', 'SLURM_LOCALID'), 0);
  let coordinatorUrl = pick('GOOGLENET_COORDINATOR_URL');
  if (coordinatorUrl === undefined && worldSize > 1) {
    const addr = pick('MASTER_ADDR');
    const port = pick('MASTER_PORT');
    if (addr === undefined || port === undefined) {
      throw new TrainerError(
        'BAD_ENV',
        `WORLD_SIZE=${worldSize} but no coordinator address: set GOOGLENET_COORDINATOR_URL=ws://HOST:PORT, or MASTER_ADDR and MASTER_PORT of a running 'nx run coordinator:serve'`,
      );
    }
    coordinatorUrl = `${pick('GOOGLENET_COORDINATOR_SCHEME') ?? 'ws'}://${addr.includes(':') ? `[${addr}]` : addr}:${port}`;
  }
  return {
    rank,
    worldSize,
    localRank,
    coordinatorUrl: worldSize > 1 ? coordinatorUrl : undefined,
    device: pick('CUDA_VISIBLE_DEVICES'),
    attempt: int('GOOGLENET_ATTEMPT', pick('GOOGLENET_ATTEMPT'), 0),
  };
}
