import * as tf from '@tensorflow/tfjs';
import path from 'node:path';
import { computePrecision, saveWeights, type GoogLeNet } from '@googlenet/model';
import type { LoaderState } from '@googlenet/dataloader';
import { publicConfig, type TrainConfig } from './config';
import { TrainerError } from './errors';
import type { Sgd } from './optim';
import { learningRate } from './schedule';
import { TrainStep, type StepTimes } from './step';
import { spareCores } from './overlap';
import { LossScaler, type LossScaleState } from './loss-scale';
import { CHECKPOINT_FORMAT, CHECKPOINT_VERSION, encodeCheckpoint, writeCheckpoint, type CheckpointMeta } from './checkpoint';
import { evaluate, type EvalResult } from './evaluate';
import type { RunRecord } from './run-record';
import type { TrainState } from './worker-state';
import type { WorkerContext } from './worker-context';

/** What the step loop measured, for the summary. */
export interface LoopResult {
  startStep: number;
  /** Optimizer steps run (counted). */
  stepsRun: number;
  samples: number;
  /** Wall milliseconds inside the steps. */
  trainMs: number;
  seconds: number;
  times: StepTimes;
  /** Tensors alive after the first step (-1: no step ran). */
  tensorsFirst: number;
  lastTrain?: { loss: number; top1: number };
  lastEval?: EvalResult;
  /** The EMA's figures at the same evaluation (--ema-decay). */
  lastEmaEval?: EvalResult;
  checkpointFailures: number;
}

/**
 * The loop: from the resumed step to the last, one optimizer step each (TrainStep: load, forward/backward,
 * reduce, apply), then its metrics record and progress, evaluation when due, and rank 0's checkpoints.
 */
export async function trainLoop(ctx: WorkerContext, st: TrainState, rec: RunRecord): Promise<LoopResult> {
  const { cfg, id, lead, say, progress } = ctx;
  const { model, sgd, reducer, stepsPerEpoch, totalSteps } = st;
  // f16 compute scales the loss (GradScaler's rule); its state resumes from rank 0's checkpoint like the weights.
  const lossScaler = computePrecision().precision === 'f16' ? new LossScaler({}, st.resumed?.ckpt.meta.lossScale) : undefined;
  const trainStep = new TrainStep(model, sgd, reducer, {
    auxWeight: cfg.auxWeight, accumulate: cfg.accumulate, batchSize: cfg.batchSize, imageSize: cfg.imageSize, seed: cfg.seed, rank: id.rank,
    labelSmoothing: cfg.labelSmoothing, clipGradNorm: cfg.clipGradNorm, ...(replayBlocker(cfg) ? { replay: false } : {}),
    ...(lossScaler ? { lossScaler } : {}),
    overlap: { choice: cfg.overlap, bucketBytes: Math.round(cfg.bucketMb * 1024 * 1024), gradCompression: cfg.gradCompression, spareCores: spareCores(cfg.workers) },
  });
  if (trainStep.inSharedSegment && lead) say('gradients are kept in the shared-memory segment, where the other ranks read them (nothing copied in or out)');
  // One webgpu worker would replay captured steps: say why it does not.
  if (replayBlocker(cfg) && tf.getBackend() === 'webgpu' && reducer.worldSize === 1) say(`webgpu replay off, steps run through tfjs: ${replayBlocker(cfg)}`);
  const schedule = { lr: cfg.lr, schedule: cfg.lrSchedule, warmupSteps: cfg.warmup, totalSteps, stepsPerEpoch, stepEpochs: cfg.stepEpochs, gamma: cfg.gamma };
  const startStep = st.resumed?.ckpt.meta.step ?? 0;
  const started = performance.now();
  const out: LoopResult = {
    startStep, stepsRun: 0, samples: 0, trainMs: 0, seconds: 0, times: { data: 0, compute: 0, reduce: 0, apply: 0 }, tensorsFirst: -1, checkpointFailures: 0,
  };
  let lastEvalStep = -1;
  // best.safetensors holds the weights of the best evaluation so far (a resumed run counts the kept records).
  let bestTop1 = Math.max(-1, ...rec.history.evals.map((e) => e.top1));

  let evalEnabled = cfg.eval;
  const evaluateNow = async (step: number) => {
    if (!evalEnabled) return;
    let result: EvalResult;
    let emaResult: EvalResult | undefined;
    try {
      result = await evaluate(cfg, id, model, reducer);
      if (st.ema) emaResult = await evaluate(cfg, id, st.ema.model, reducer);
    } catch (e) {
      // Every rank reads the same data folder, so every rank takes this branch: no round is left waiting.
      if ((e as { code?: string }).code !== 'DATASET_LAYOUT') throw e;
      evalEnabled = false;
      say(`warning: evaluation disabled: ${(e as Error).message}`);
      return;
    }
    out.lastEval = result;
    out.lastEmaEval = emaResult;
    lastEvalStep = step;
    rec.history.evals.push({ step, top1: result.top1, top5: result.top5 });
    const figures = (r: EvalResult) => `top-1 ${(r.top1 * 100).toFixed(2)}%  top-5 ${(r.top5 * 100).toFixed(2)}%  loss ${r.loss.toFixed(4)}`;
    say(`eval @ step ${step}: ${figures(result)}  (${result.samples} samples)${emaResult ? `  | EMA: ${figures(emaResult)}` : ''}`);
    await rec.record({ type: 'eval', step, epoch: step / stepsPerEpoch, ...result, ...(emaResult ? { ema: emaResult } : {}) });
    if (lead && result.top1 > bestTop1) {
      await saveWeights(model, path.join(cfg.out, 'best.safetensors'), { step: String(step), top1: String(result.top1) });
      say(`best.safetensors: step ${step}, top-1 ${(result.top1 * 100).toFixed(2)}%${bestTop1 >= 0 ? ` (was ${(bestTop1 * 100).toFixed(2)}%)` : ''}`);
    }
    bestTop1 = Math.max(bestTop1, result.top1);
  };

  for (let step = startStep; step < totalSteps; step++) {
    const lr = learningRate(schedule, step);
    const t0 = performance.now();
    const r = await trainStep.run(step, async () => {
      const b = await st.loader.next();
      if (!b) throw new TrainerError('DATA_EXHAUSTED', 'the training loader ended; it should cycle epochs');
      return b;
    }, lr, step + 1 === cfg.profileStep);
    const wall = performance.now() - t0;
    out.trainMs += wall;
    for (const k of Object.keys(out.times) as (keyof StepTimes)[]) out.times[k] += r.times[k];
    out.samples += r.samples;
    out.stepsRun++;
    st.ema?.update();
    const done = step + 1;
    if (out.tensorsFirst < 0) out.tensorsFirst = tf.memory().numTensors;
    out.lastTrain = { loss: r.loss, top1: r.top1 };
    if (!Number.isFinite(r.loss)) {
      throw new TrainerError('LOSS_NOT_FINITE', `loss became ${r.loss} at step ${done}; lower --lr (now ${cfg.lr}) or add --warmup`);
    }
    const epochFloat = done / stepsPerEpoch;
    rec.history.steps.push({ step: done, loss: r.loss, top1: r.top1 });
    const imgPerSec = (r.samples / wall) * 1000;
    await rec.record({ type: 'step', step: done, epoch: epochFloat, lr, loss: r.loss, top1: r.top1, top5: r.top5, samples: r.samples, imgPerSec, ms: { wall, ...r.times, cpu: r.cpuMs }, numTensors: tf.memory().numTensors, rssMB: Math.round(process.memoryUsage().rss / 1e6), ...(r.dispatches !== undefined ? { dispatches: r.dispatches } : {}), ...(r.replayed ? { replayed: true } : {}), ...(r.lossScale !== undefined ? { lossScale: r.lossScale, skippedSteps: lossScaler!.state().skippedSteps } : {}), ...(r.skipped ? { skipped: true } : {}), ...(r.overlap ? { overlap: r.overlap } : {}), ...(r.gpu ? { gpu: { kernelMs: r.gpu.kernelMs, kernels: r.gpu.kernels.slice(0, 15) } } : {}) });
    if (r.note) say(r.note);
    if (r.gpu) say(`profile step ${done}: ${r.dispatches} dispatches, GPU kernel time ${r.gpu.kernelMs.toFixed(1)} ms (compute phase); busiest: ${r.gpu.kernels.slice(0, 6).map((k) => `${k.name} ${k.ms.toFixed(1)} ms x${k.calls}`).join(', ')}`);
    progress.update({ step: done, total: totalSteps, epoch: Math.ceil(epochFloat - 1e-9), loss: r.loss, top1: r.top1, imgPerSec, lr });

    const epochEnd = done % stepsPerEpoch === 0;
    if (cfg.eval && ((cfg.evalEvery > 0 && done % cfg.evalEvery === 0) || (cfg.evalEvery === 0 && epochEnd) || done === totalSteps)) {
      await evaluateNow(done);
    }
    if (((cfg.checkpointEvery > 0 && done % cfg.checkpointEvery === 0) || epochEnd) && lead) {
      try {
        const file = await saveCheckpoint(cfg, model, sgd, st.loader.state(), done, stepsPerEpoch, st.ema?.model, lossScaler?.state());
        say(`checkpoint: ${file}`);
      } catch (e) {
        out.checkpointFailures++;
        say(`error: ${(e as Error).message}`);
      }
    }
    if (lead && ctx.unflushed() > 50) await ctx.flushLog();
  }
  if (cfg.eval && lastEvalStep !== totalSteps && startStep === totalSteps) await evaluateNow(totalSteps);
  out.seconds = (performance.now() - started) / 1000;
  return out;
}

/**
 * Why one webgpu worker cannot replay captured steps with these settings (undefined: it can). Clipping reads the
 * norm of all gradients and Nesterov is not in the in-place SGD kernel: both run as tfjs ops, outside the graph.
 */
export function replayBlocker(cfg: Pick<TrainConfig, 'clipGradNorm' | 'nesterov'>): string | undefined {
  const why = [cfg.clipGradNorm > 0 ? '--clip-grad-norm' : '', cfg.nesterov ? '--nesterov' : ''].filter(Boolean);
  return why.length ? `${why.join(' and ')} run as tfjs ops that the captured graph does not hold` : undefined;
}

/** Checkpoint writing, with the metadata that makes a resume exact. */
async function saveCheckpoint(cfg: TrainConfig, model: GoogLeNet, sgd: Sgd, sampler: LoaderState, step: number, stepsPerEpoch: number, ema?: GoogLeNet,
  lossScale?: LossScaleState): Promise<string> {
  const meta: CheckpointMeta = {
    format: CHECKPOINT_FORMAT, version: CHECKPOINT_VERSION, step, epoch: Math.floor(step / stepsPerEpoch), sampler,
    optimizer: { type: 'sgd', started: sgd.state().started, momentum: cfg.momentum, weightDecay: cfg.weightDecay, layout: 'tfjs' },
    config: publicConfig(cfg), seeds: { seed: cfg.seed }, createdAt: new Date().toISOString(), ...(lossScale ? { lossScale } : {}),
  };
  return writeCheckpoint(cfg.out, step, await encodeCheckpoint(model, sgd, meta, ema), { keep: cfg.keep });
}
