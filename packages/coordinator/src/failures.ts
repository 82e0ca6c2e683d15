import type { Conn } from './conn.js';
import type { Job } from './job.js';
import { CloseCode, encode } from './protocol.js';

/**
 * How a generation ends. A joined worker's socket closing is either an orderly finish (it said bye, outside a
 * collective) or a failure; a failure, like a round timeout, a size mismatch or a protocol violation, aborts the
 * job: every surviving worker gets `abort { failedRank, code, reason }` and its socket is closed.
 */
export function onClose(job: Job, conn: Conn, code: number, reason: string): void {
  job.conns.delete(conn);
  if (conn.helloTimer) clearTimeout(conn.helloTimer);
  if (conn.generation !== job.generation || conn.rank === null || job.closed) return;
  const rank = conn.rank;
  if (job.workers[rank] !== conn) return;
  if (job.state === 'rendezvous') {
    job.rdv.leave(rank);
    job.workers[rank] = null;
    job.log(`coordinator: rank ${rank} left during rendezvous (${code})`);
    if (job.rdv.size === 0 && job.rdvTimer) { clearTimeout(job.rdvTimer); job.rdvTimer = null; }
    return;
  }
  const failure = job.failure?.rank === rank ? job.failure : null;
  job.failure = null;
  if (failure) return abort(job, rank, failure.code, failure.reason);
  if (conn.saidBye) {
    conn.state = 'left';
    job.log(`coordinator: rank ${rank} finished`);
    if (job.round && job.round.bucketsPerRank[rank]! < job.round.nb) {
      return abort(job, rank, 'CONNECTION_LOST', `rank ${rank} closed its connection during collective ${job.round.seq}`);
    }
    if (job.workers.every((w) => w!.state === 'left')) {
      job.log(`coordinator: job of generation ${job.generation} finished; accepting a new rendezvous`);
      job.newGeneration();
    }
    return;
  }
  abort(job, rank, 'CONNECTION_LOST', `rank ${rank}'s connection closed (code ${code}${reason ? `: ${reason}` : ''})`);
}

/**
 * Ends the generation: every surviving worker gets an abort naming the failed rank, then its socket is closed.
 * The coordinator goes back to rendezvous, so a restarted job (new worker processes) can join again.
 */
export function abort(job: Job, failedRank: number, code: string, reason: string): void {
  const generation = job.generation;
  job.log(`coordinator: ABORT generation ${generation}: ${code}: ${reason}`);
  const msg = encode({ v: 1, type: 'abort', generation, failedRank, code, reason });
  for (const w of job.workers) {
    if (!w || w.ws.readyState !== w.ws.OPEN) continue;
    w.ws.send(msg);
    w.ws.close(CloseCode.ABORTED, `aborted: ${code}`);
  }
  job.lastAbort = { generation, failedRank, code, reason, at: new Date().toISOString() };
  job.newGeneration();
  job.opts.onAbort?.({ generation, failedRank, code, reason });
}
