import { ProtocolViolation, CloseCode, type DType, type Op } from './protocol.js';
import { roundLayout, type RoundLayout } from './layout.js';
import type { Job } from './job.js';

/** One collective in flight: its layout in the arena and who has delivered which bucket. */
export interface Round extends RoundLayout {
  seq: number; op: Op; dtype: DType; numel: number; bucketElems: number;
  /** the float32 remainder of the preceding fp16 all-reduce (not a step of its own) */
  tail: boolean;
  got: Uint8Array; gotPerBucket: Int32Array; bucketsPerRank: Int32Array; bucketsDone: number;
  metrics: (number[] | undefined)[]; metricsLen: number; metricsRanks: number;
  /** peer data plane: a `coll` round (no data here; nb is 1, one announcement per rank) */
  peer: boolean;
  t0: number; lastArrival: number; copyMs: number; reduceMs: number; sendMs: number;
  timer: NodeJS.Timeout;
}

/** What every rank must agree on for one collective. */
export interface RoundHeader { seq: number; op: Op; dtype: DType; numel: number; bucketElems: number; tail?: boolean }

export function newRound(job: Job, m: RoundHeader, peer: boolean): Round {
  const n = job.opts.worldSize;
  const layout = roundLayout(n, m, peer);
  if (!peer) job.arena.ensure(layout.bytes);
  const seq = m.seq;
  return {
    ...layout, seq, op: m.op, dtype: m.dtype, numel: m.numel, bucketElems: m.bucketElems, tail: m.tail === true,
    got: new Uint8Array(layout.nb * n), gotPerBucket: new Int32Array(layout.nb), bucketsPerRank: new Int32Array(n), bucketsDone: 0,
    metrics: new Array(n).fill(undefined), metricsLen: -1, metricsRanks: 0, peer,
    t0: performance.now(), lastArrival: 0, copyMs: 0, reduceMs: 0, sendMs: 0,
    timer: setTimeout(() => roundTimeout(job, seq), job.opts.roundTimeoutMs),
  };
}

/**
 * Starts collective m.seq (with `open`) or joins the one in progress, for both data planes: the sequence
 * must be the next one, every rank still in the job, and op, dtype, length and buckets equal on every rank.
 * Returns undefined after aborting the job.
 */
export function joinRound(job: Job, rank: number, m: RoundHeader, peer: boolean): Round | undefined {
  if (m.op === 'bcast' && m.dtype !== 'f32') throw new ProtocolViolation(CloseCode.MALFORMED, 'broadcasts are always f32');
  let r = job.round;
  if (!r) {
    if (m.seq !== job.lastSeq + 1) throw new ProtocolViolation(CloseCode.UNEXPECTED, `collective ${m.seq} while ${job.lastSeq + 1} is next`);
    const gone = job.workers.findIndex((w) => !w || w.state === 'left');
    if (gone >= 0) {
      job.abort(gone, 'CONNECTION_LOST', `rank ${gone} left the job before collective ${m.seq}`);
      return undefined;
    }
    r = job.round = newRound(job, m, peer);
  } else if (m.seq !== r.seq) {
    throw new ProtocolViolation(CloseCode.UNEXPECTED, `collective ${m.seq} while ${r.seq} is in progress`);
  }
  if (m.op !== r.op || m.dtype !== r.dtype || m.numel !== r.numel || m.bucketElems !== r.bucketElems || (m.tail === true) !== r.tail) {
    const first = job.workers.findIndex((_, k) => r!.bucketsPerRank[k]! > 0 && k !== rank);
    const tail = (t: boolean | undefined) => (t ? ' (fp32 tail)' : '');
    job.abort(rank, 'SIZE_MISMATCH', `rank ${rank} sent ${m.op} of ${m.numel} ${m.dtype} values${tail(m.tail)} (buckets of ${m.bucketElems}) ` +
      `but rank ${first} sent ${r.op} of ${r.numel} ${r.dtype}${tail(r.tail)} (buckets of ${r.bucketElems}); every rank must call the same collectives with equal-length buffers and options`);
    return undefined;
  }
  return r;
}

/** Records a rank's metrics for the round; false after aborting the job on a length that differs from the others'. */
export function addMetrics(job: Job, r: Round, rank: number, metrics: number[]): boolean {
  if (r.metricsLen >= 0 && metrics.length !== r.metricsLen) {
    job.abort(rank, 'SIZE_MISMATCH', `rank ${rank} sent ${metrics.length} metrics, others ${r.metricsLen}; pass equal-length metrics on every rank`);
    return false;
  }
  r.metricsLen = metrics.length;
  r.metrics[rank] = metrics;
  r.metricsRanks++;
  return true;
}

/** Every rank is in: false after aborting the job when some ranks sent metrics and others did not. */
export function metricsComplete(job: Job, r: Round): boolean {
  if (r.metricsRanks === 0 || r.metricsRanks === job.opts.worldSize) return true;
  const without = r.metrics.findIndex((x) => x === undefined);
  job.abort(without, 'SIZE_MISMATCH', `rank ${without} sent no metrics with collective ${r.seq} but other ranks did; pass metrics on every rank or on none`);
  return false;
}

export function sumMetrics(perRank: (number[] | undefined)[], len: number): number[] {
  // Rank order, float64: the same sums whichever rank arrived first.
  const out = new Array<number>(len).fill(0);
  for (const m of perRank) {
    if (!m) continue;
    for (let j = 0; j < len; j++) out[j] += m[j]!;
  }
  return out;
}

export function finishRound(job: Job, r: Round, now: number): void {
  clearTimeout(r.timer);
  job.round = null;
  job.lastSeq = r.seq;
  if (r.op === 'mean' && r.numel > 0 && !r.tail) job.steps++;
  job.recent.push({
    seq: r.seq, op: r.op, dtype: r.dtype, numel: r.numel, buckets: r.peer ? Math.max(1, Math.ceil(r.numel / r.bucketElems)) : r.nb,
    totalMs: round2(now - r.t0), receiveMs: round2(r.lastArrival - r.t0), copyMs: round2(r.copyMs), reduceMs: round2(r.reduceMs), sendMs: round2(r.sendMs),
  });
}

function roundTimeout(job: Job, seq: number): void {
  const r = job.round;
  if (!r || r.seq !== seq) return;
  const late = job.workers.map((_, k) => k).filter((k) => r.bucketsPerRank[k]! < r.nb);
  const failed = late[0] ?? 0;
  job.abort(failed, 'ROUND_TIMEOUT', `rank${late.length > 1 ? 's' : ''} ${late.join(',')} did not deliver collective ${seq} (${r.op}) within ${job.opts.roundTimeoutMs / 1000} s`);
}

export const round2 = (x: number): number => Math.round(x * 100) / 100;
