import { CloseCode, ProtocolViolation, encode, type CollMsg, type PeerFailureMsg } from './protocol.js';
import { addMetrics, finishRound, joinRound, metricsComplete, sumMetrics } from './rounds.js';
import type { Conn } from './conn.js';
import type { Job } from './job.js';

/**
 * The coordinator's part in the peer data plane: tensor bytes flow worker to worker (peer.ts), and only each
 * collective's announcement (`coll`) comes here. When every rank has announced the same collective the
 * coordinator answers `go` with the metric sums; a worker whose data connection broke reports it here.
 */

/** Peer data plane: rank announces collective m.seq; when every rank has, consistently, all get go (+ metric sums). */
export function onColl(job: Job, conn: Conn, m: CollMsg): void {
  const rank = conn.rank!;
  const r = joinRound(job, rank, m, true);
  if (!r) return;
  if (r.bucketsPerRank[rank]) throw new ProtocolViolation(CloseCode.UNEXPECTED, `collective ${r.seq} announced twice`);
  if (m.metrics && !addMetrics(job, r, rank, m.metrics)) return;
  r.bucketsPerRank[rank] = 1;
  r.lastArrival = performance.now();
  if (++r.gotPerBucket[0]! < job.opts.worldSize) return;
  if (!metricsComplete(job, r)) return;
  const t = performance.now();
  const go = encode({ v: 1, type: 'go', seq: r.seq, ...(r.metricsLen >= 0 ? { metrics: sumMetrics(r.metrics, r.metricsLen) } : {}) });
  for (const w of job.workers) w!.ws.send(go);
  r.sendMs = performance.now() - t;
  r.bucketsDone = 1;
  finishRound(job, r, performance.now());
}

/**
 * A worker's data connection with `peer` broke or carried garbage. The abort names `peer`; it waits a moment
 * so that a peer process that died is reported by its own WebSocket closing (the more precise reason).
 */
export function onPeerFailure(job: Job, conn: Conn, m: PeerFailureMsg): void {
  const reporter = conn.rank;
  if (reporter === null || job.state !== 'running' || m.peer >= job.opts.worldSize || m.peer === reporter) {
    throw new ProtocolViolation(CloseCode.UNEXPECTED, `peerFailure naming rank ${m.peer} from ${reporter === null ? 'a worker that has not joined' : `rank ${reporter}`}`);
  }
  const generation = job.generation;
  // A peer that said bye closes its data connections; the other ranks see that as a closed connection.
  if (job.workers[m.peer]?.saidBye) return;
  job.log(`coordinator: rank ${reporter} reports its data connection with rank ${m.peer}: ${m.code}: ${m.reason}`);
  setTimeout(() => {
    const w = job.workers[m.peer];
    if (job.generation !== generation || job.closed || !w || w.saidBye) return;
    job.abort(m.peer, m.code === 'PROTOCOL_ERROR' ? 'PROTOCOL_ERROR' : 'CONNECTION_LOST', `rank ${reporter} lost its data connection with rank ${m.peer}: ${m.reason}`);
  }, 250).unref();
}
