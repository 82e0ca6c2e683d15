import type { Job } from './job.js';
import { round2 } from './rounds.js';

/** What GET /status returns (and Coordinator.status()). */
export interface RoundTiming {
  seq: number;
  op: 'mean' | 'bcast';
  dtype: 'f32' | 'f16';
  numel: number;
  buckets: number;
  /** first byte of the round received -> last result handed to the sockets */
  totalMs: number;
  /** first -> last rank's last bucket received */
  receiveMs: number;
  /** copying payloads into the reduction buffers */
  copyMs: number;
  /** the SIMD mean (and fp16 encode of the result) */
  reduceMs: number;
  /** writing headers and handing results to the sockets */
  sendMs: number;
}

export interface WorkerStatus {
  rank: number | null;
  state: 'connected' | 'joined' | 'running' | 'left';
  address: string;
  msSinceHeard: number;
}

export interface StatusReport {
  runId: string | null;
  generation: number;
  state: 'rendezvous' | 'running';
  worldSize: number;
  /** collectives completed in this generation (broadcasts, all-reduces, metric reductions) */
  collectives: number;
  /** all-reduce rounds with data completed in this generation: the trainer's step count */
  step: number;
  workers: WorkerStatus[];
  currentRound: { seq: number; op: string; bucketsDone: number; buckets: number; msRunning: number; waitingFor: number[] } | null;
  recentRounds: RoundTiming[];
  lastAbort: { generation: number; failedRank: number; code: string; reason: string; at: string } | null;
  simd: boolean;
}

/** Keeps the last `capacity` items; status pages show recent rounds, not the whole history. */
export class Ring<T> {
  private readonly items: T[] = [];
  constructor(private readonly capacity: number) {}
  push(x: T): void {
    this.items.push(x);
    if (this.items.length > this.capacity) this.items.shift();
  }
  toArray(): T[] { return [...this.items]; }
}

/** The report of a job's current state (GET /status). */
export function statusOf(job: Job): StatusReport {
  const now = Date.now();
  const r = job.round;
  return {
    runId: job.rdv.runId ?? null,
    generation: job.generation,
    state: job.state,
    worldSize: job.opts.worldSize,
    collectives: job.lastSeq,
    step: job.steps,
    workers: [...job.conns].filter((c) => c.generation === job.generation)
      .map((c) => ({ rank: c.rank, state: c.state, address: c.address, msSinceHeard: now - c.lastHeard }))
      .sort((a, b) => (a.rank ?? 1e9) - (b.rank ?? 1e9)),
    currentRound: r ? {
      seq: r.seq, op: r.op, bucketsDone: r.bucketsDone, buckets: r.nb, msRunning: round2(performance.now() - r.t0),
      waitingFor: job.workers.map((_, k) => k).filter((k) => r.bucketsPerRank[k]! < r.nb),
    } : null,
    recentRounds: job.recent.toArray(),
    lastAbort: job.lastAbort,
    simd: job.arena.simd,
  };
}
