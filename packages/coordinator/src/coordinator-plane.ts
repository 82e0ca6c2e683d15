import { CloseCode, HEADER_ROOM, ProtocolViolation, writeHeader, type DataMsg, type Message } from './protocol.js';
import { addMetrics, finishRound, joinRound, metricsComplete, sumMetrics, type Round } from './rounds.js';
import type { Conn } from './conn.js';
import type { Job } from './job.js';

/**
 * The coordinator data plane: every bucket comes here as `data`, is copied to its place in the arena (layout.ts)
 * and, once every rank's bucket k is in, reduced and sent back as one `result` buffer to every worker, while
 * bucket k+1 is still arriving. (The peer data plane's side of the coordinator is peer-control.ts.)
 */

export function onData(job: Job, conn: Conn, m: DataMsg, payload: Buffer): void {
  const rank = conn.rank;
  if (rank === null || job.state !== 'running') {
    throw new ProtocolViolation(CloseCode.UNEXPECTED, 'data before the rendezvous completed');
  }
  const r = joinRound(job, rank, m, false);
  if (!r) return;
  const b = m.bucket;
  const count = b === r.nb - 1 ? r.numel - b * r.bucketElems : r.bucketElems;
  if (b >= r.nb || m.count !== count || payload.length !== count * r.esize) {
    throw new ProtocolViolation(CloseCode.WRONG_SIZE, `bucket ${b}: ${payload.length} payload bytes for count ${m.count}, expected ${count} ${r.dtype} values of ${r.nb} bucket(s)`);
  }
  const slot = b * job.opts.worldSize + rank;
  if (r.got[slot]) throw new ProtocolViolation(CloseCode.UNEXPECTED, `bucket ${b} of collective ${r.seq} sent twice`);
  // In order, so that buckets complete (and results go out) in order: clients treat a gap as a lost result.
  if (b !== r.bucketsPerRank[rank]) throw new ProtocolViolation(CloseCode.UNEXPECTED, `bucket ${b} of collective ${r.seq} sent before bucket ${r.bucketsPerRank[rank]}`);
  if (b === 0 && m.metrics && !addMetrics(job, r, rank, m.metrics)) return;
  const t = performance.now();
  job.arena.u8.set(payload, r.inBase + rank * r.stride + b * r.bucketElems * r.esize);
  r.copyMs += performance.now() - t;
  r.got[slot] = 1;
  r.bucketsPerRank[rank]!++;
  r.lastArrival = t;
  if (++r.gotPerBucket[b]! === job.opts.worldSize) finishBucket(job, r, b, count);
}

/** Every rank's bucket b is in: reduce it and send one result buffer to every worker. */
function finishBucket(job: Job, r: Round, b: number, count: number): void {
  const a = job.arena;
  if (b === 0 && !metricsComplete(job, r)) return;
  const t0 = performance.now();
  const slot = r.outBase + b * r.slotBytes;
  const out = slot + HEADER_ROOM;
  const inp = r.inBase + b * r.bucketElems * r.esize;
  if (r.op === 'bcast') a.u8.copyWithin(out, inp, inp + count * r.esize);
  else if (r.dtype === 'f32') a.mean(out, inp, r.stride, job.opts.worldSize, count, 'f32');
  else {
    a.mean(r.scratch, inp, r.stride, job.opts.worldSize, count, 'f16');
    a.toHalf(out, r.scratch, count);
  }
  const t1 = performance.now();
  const header: Message = { v: 1, type: 'result', seq: r.seq, dtype: r.dtype, bucket: b, count };
  if (b === 0 && r.metricsLen >= 0) header.metrics = sumMetrics(r.metrics, r.metricsLen);
  writeHeader(a.u8.subarray(slot, out), header, HEADER_ROOM);
  const msg = a.buffer(slot, HEADER_ROOM + count * r.esize);
  for (const w of job.workers) w!.ws.send(msg);
  const t2 = performance.now();
  r.reduceMs += t1 - t0;
  r.sendMs += t2 - t1;
  if (++r.bucketsDone === r.nb) finishRound(job, r, t2);
}
