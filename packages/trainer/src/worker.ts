import type { TrainConfig } from './config';
import type { WorkerIdentity } from './identity';
import { RunRecord } from './run-record';
import { openWorkerContext, type WorkerIo } from './worker-context';
import { finishRun, type RunSummary } from './worker-finish';
import { trainLoop } from './worker-loop';
import { setupWorker } from './worker-setup';
import { prepareTraining, syncWithRank0 } from './worker-state';

export type { WorkerIo } from './worker-context';
export { evaluate, type EvalResult } from './evaluate';
export { summaryLines, weightsDigest, type RunSummary } from './worker-finish';

/**
 * Runs one rank of a training job to the end, in four phases: setup (log, backend, config), resume (this
 * rank's checkpoint pick, data, model, rendezvous, then rank 0's checkpoint and state), the step loop
 * (steps, metrics, evaluation, checkpoints), and finish (rank 0: final weights, chart, summary).
 */
export async function runWorker(cfg: TrainConfig, id: WorkerIdentity, io: WorkerIo): Promise<RunSummary> {
  const ctx = await openWorkerContext(cfg, id, io);
  const backend = await setupWorker(ctx);
  const st = await prepareTraining(ctx);
  try {
    await syncWithRank0(ctx, st);
    const rec = await RunRecord.open(ctx, st.resumed?.ckpt.meta.step);
    const loop = await trainLoop(ctx, st, rec);
    return await finishRun(ctx, st, backend, loop, rec);
  } catch (e) {
    ctx.say(`[rank ${id.rank}] error: ${(e as Error).message}`);
    await ctx.flushLog().catch(() => {});
    throw e;
  } finally {
    await st.close();
  }
}
