import fs from 'node:fs/promises';
import { createHash } from 'node:crypto';
import path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { saveWeights, type BackendInfo, type GoogLeNet } from '@googlenet/model';
import { TrainerError } from './errors';
import type { StepTimes } from './step';
import type { EvalResult } from './evaluate';
import { formatDuration } from './progress';
import { renderChart } from './chart';
import { readAllInto } from './host';
import type { RunRecord } from './run-record';
import type { LoopResult } from './worker-loop';
import type { TrainState } from './worker-state';
import type { WorkerContext } from './worker-context';

export interface RunSummary {
  /** The run's last step (its target, from --steps or --epochs). */
  steps: number;
  /** Optimizer steps this process actually ran, counted (fewer than `steps` after a resume). */
  stepsRun: number;
  /** The checkpoint step this process resumed from (0: from scratch). */
  startStep: number;
  epochs: number;
  backend: BackendInfo['name'];
  worldSize: number;
  seconds: number;
  imgPerSec: number;
  finalTrain?: { loss: number; top1: number };
  finalEval?: EvalResult;
  /** The EMA's figures at the last evaluation (--ema-decay). */
  finalEmaEval?: EvalResult;
  /** Total milliseconds per phase over the run (this rank). */
  times: StepTimes;
  /** Tensors alive after the first and after the last step (must be equal). */
  numTensors: { first: number; last: number };
  checkpointFailures: number;
  outDir: string;
  /** Whether the run wrote TensorBoard events to <outDir>/tb/. */
  tensorboard?: boolean;
}

/**
 * Finish: every rank logs its weights' digest; rank 0 writes model.safetensors, chart.svg and summary.json
 * and prints the summary. Checkpoints that failed during the run fail it here, after the weights are safe.
 */
export async function finishRun(ctx: WorkerContext, st: TrainState, backend: BackendInfo, loop: LoopResult, rec: RunRecord): Promise<RunSummary> {
  const { cfg, id, lead, say } = ctx;
  const { model, stepsPerEpoch, totalSteps } = st;
  // Every rank must hold bit-identical weights; the digest in each rank's log lets anyone check.
  say(`[rank ${id.rank}] weights sha256: ${await weightsDigest(model)}`);
  const summary: RunSummary = {
    steps: totalSteps, stepsRun: loop.stepsRun, startStep: loop.startStep, epochs: totalSteps / stepsPerEpoch, backend: backend.name, worldSize: id.worldSize,
    seconds: loop.seconds, imgPerSec: (loop.samples / Math.max(1e-9, loop.trainMs)) * 1000, finalTrain: loop.lastTrain, finalEval: loop.lastEval, finalEmaEval: loop.lastEmaEval, times: loop.times,
    numTensors: { first: loop.tensorsFirst, last: tf.memory().numTensors }, checkpointFailures: loop.checkpointFailures, outDir: cfg.out,
    tensorboard: cfg.tensorboard,
  };
  if (lead) {
    ctx.progress.done();
    await saveWeights(model, path.join(cfg.out, 'model.safetensors'));
    if (st.ema) await saveWeights(st.ema.model, path.join(cfg.out, 'model-ema.safetensors'), { ema_decay: String(st.ema.decay) });
    await fs.writeFile(path.join(cfg.out, 'chart.svg'), renderChart({
      ...rec.history, epochSteps: Array.from({ length: Math.floor(totalSteps / stepsPerEpoch) }, (_, i) => (i + 1) * stepsPerEpoch),
      title: `GoogLeNet on ${cfg.dataset} ${cfg.imageSize}px, ${id.worldSize} worker(s) x batch ${cfg.batchSize}${cfg.accumulate > 1 ? ` x ${cfg.accumulate}` : ''}, ${backend.name}`,
    }));
    await fs.writeFile(path.join(cfg.out, 'summary.json'), JSON.stringify(summary, null, 2) + '\n');
    await rec.close();
    for (const line of summaryLines(summary)) say(line);
  }
  await ctx.flushLog();
  if (loop.checkpointFailures > 0 && lead) {
    throw new TrainerError('CHECKPOINT_WRITE_FAILED', `${loop.checkpointFailures} checkpoint(s) failed to write during the run (see ${ctx.logFile}); the final weights were written`);
  }
  return summary;
}

/** sha256 of every param and BN buffer, in signature order. */
export async function weightsDigest(model: GoogLeNet): Promise<string> {
  const vars = [...model.params, ...model.buffers].map((v) => v.variable);
  const flat = new Float32Array(vars.reduce((n, v) => n + v.size, 0));
  await readAllInto(vars, flat);
  return createHash('sha256').update(new Uint8Array(flat.buffer)).digest('hex');
}

export function summaryLines(s: RunSummary): string[] {
  const total = s.times.data + s.times.compute + s.times.reduce + s.times.apply;
  const pct = (v: number) => `${((100 * v) / Math.max(1e-9, total)).toFixed(0)}%`;
  return [
    '',
    `summary: ${s.steps} steps (${s.epochs.toFixed(2)} epochs) on ${s.worldSize} worker(s), backend ${s.backend}, ${formatDuration(s.seconds)}, ${s.imgPerSec.toFixed(1)} img/s`,
    s.finalTrain ? `  final train: loss ${s.finalTrain.loss.toFixed(4)}, top-1 ${(s.finalTrain.top1 * 100).toFixed(2)}% (last batch)` : '',
    s.finalEval ? `  final eval:  top-1 ${(s.finalEval.top1 * 100).toFixed(2)}%, top-5 ${(s.finalEval.top5 * 100).toFixed(2)}%, loss ${s.finalEval.loss.toFixed(4)} on ${s.finalEval.samples} samples` : '',
    s.finalEmaEval ? `  final EMA:   top-1 ${(s.finalEmaEval.top1 * 100).toFixed(2)}%, top-5 ${(s.finalEmaEval.top5 * 100).toFixed(2)}%, loss ${s.finalEmaEval.loss.toFixed(4)} (model-ema.safetensors)` : '',
    `  time went to: data ${pct(s.times.data)}, compute ${pct(s.times.compute)}, reduce ${pct(s.times.reduce)}, apply ${pct(s.times.apply)}`,
    `  run folder: ${s.outDir} (config.json, train.log, metrics.jsonl, chart.svg, model.safetensors${s.finalEmaEval ? ', model-ema.safetensors' : ''}${s.finalEval ? ', best.safetensors' : ''}, checkpoints/${s.tensorboard ? ', tb/' : ''})`,
  ].filter((l) => l !== '');
}
