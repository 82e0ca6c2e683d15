import fs from 'node:fs/promises';
import { createHash } from 'node:crypto';
import path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { GoogLeNet, googlenetLoss, saveWeights, selectBackend, WEBGPU_ADAPTER_ENV, type BackendInfo } from '@googlenet/model';
import { createDataLoader, type DataLoader, type LoaderState } from '@googlenet/dataloader';
import { CoordinatorClient } from '@googlenet/coordinator';
import { publicConfig, type TrainConfig } from './config';
import { configSummary } from './config-summary';
import { TrainerError } from './errors';
import type { WorkerIdentity } from './identity';
import { Sgd } from './optim';
import { learningRate } from './schedule';
import { CoordinatorReducer, LocalReducer, type GradientReducer } from './reducer';
import { correctCounts, TrainStep, type StepTimes } from './step';
import { CHECKPOINT_FORMAT, CHECKPOINT_VERSION, encodeCheckpoint, removeStaleTemps, restoreCheckpoint, writeCheckpoint, type CheckpointMeta, type ResumePoint } from './checkpoint';
import { agreeOnResume, localResumePoint } from './resume';
import { checkResumeConfig } from './resume-check';
import { Progress, formatDuration } from './progress';
import { renderChart } from './chart';
import { readAllInto, readFloats } from './host';
import { runIdOf } from './run-id';
import { deviceNote, GPU_ENV, nvidiaContainerHint, pinThisProcess } from './devices';
import { TensorBoardWriter } from './tensorboard';

/** Where a worker's words go. Rank 0 talks to the user; every rank keeps a log. */
export interface WorkerIo {
  /** User-facing output (rank 0: the terminal). */
  write(s: string): void;
  /** Whether `write` reaches a terminal that can redraw a progress bar. */
  tty: boolean;
}

export interface EvalResult {
  loss: number;
  top1: number;
  top5: number;
  samples: number;
}

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
  /** Total milliseconds per phase over the run (this rank). */
  times: StepTimes;
  /** Tensors alive after the first and after the last step (must be equal). */
  numTensors: { first: number; last: number };
  checkpointFailures: number;
  outDir: string;
}

/**
 * Runs one rank of a training job to the end: backend, data, model, rendezvous and state broadcast,
 * the step loop, evaluation, checkpoints, and (rank 0) metrics, chart and final weights.
 */
export async function runWorker(cfg: TrainConfig, id: WorkerIdentity, io: WorkerIo): Promise<RunSummary> {
  const lead = id.rank === 0;
  await fs.mkdir(cfg.out, { recursive: true });
  const logFile = path.join(cfg.out, lead ? 'train.log' : `worker-${id.rank}.log`);
  const logLines: string[] = [];
  const progress = new Progress({ tty: lead && io.tty, logEvery: cfg.logEvery, write: (s) => (lead ? io.write(s) : undefined) });
  const say = (line: string) => {
    logLines.push(line);
    if (lead) progress.line(line);
  };
  const flushLog = () => fs.appendFile(logFile, logLines.splice(0).map((l) => l + '\n').join(''));

  pinThisProcess({ backend: cfg.backend, gpus: cfg.gpus, localRank: id.localRank });
  // In an NVIDIA container without the graphics capability there is no Vulkan driver: say so where webgpu fails.
  const containerHint = nvidiaContainerHint(process.env);
  const backend = await selectBackend(cfg.backend, { log: () => {} }).catch((e: Error) => {
    if (containerHint && (e as { code?: string }).code === 'BACKEND_UNAVAILABLE' && /no WebGPU adapter/.test(e.message)) e.message += `; ${containerHint}`;
    throw e;
  });
  say(`[rank ${id.rank}/${id.worldSize}] ${backend.line}${deviceNote(backend.name, process.env)}`);
  if (containerHint && backend.skipped.some((s) => s.backend === 'webgpu' && /no WebGPU adapter/.test(s.reason))) say(`webgpu: ${containerHint}`);
  const local = Number(process.env.LOCAL_WORLD_SIZE ?? 1);
  if (backend.adapter && local > 1 && id.localRank === 0 && !process.env[WEBGPU_ADAPTER_ENV] && process.env[GPU_ENV.index] === undefined) {
    // Nothing pinned (more workers than NVIDIA GPUs found): Dawn hands every process the first adapter.
    say(`webgpu: the ${local} workers on this machine share this adapter (more workers than NVIDIA GPUs found, so none ` +
      'is pinned; --gpus=0,1,... or --workers=auto gives each worker its own GPU through Mesa\'s device-select layer)');
  }
  if (lead) {
    say(configSummary(cfg, id.worldSize));
    await fs.writeFile(path.join(cfg.out, 'config.json'), JSON.stringify(publicConfig(cfg), null, 2) + '\n');
  }

  if (lead) {
    // Rank 0 is the only checkpoint writer: temp files of dead writers are leftovers of a kill mid-write.
    for (const f of await removeStaleTemps(cfg.out)) say(`removed ${f}, left by a checkpoint writer that died mid-write`);
  }
  // Checks a checkpoint's settings against this run's (RESUME_CONFIG_CHANGED) and says what it allowed.
  const samplerOf = (p: ResumePoint) => {
    const check = checkResumeConfig(p.ckpt.meta, publicConfig(cfg), id.worldSize, cfg.resumeOverride ?? [], p.file);
    for (const line of check.overridden) say(`resume: ${line} (allowed by --resume-override)`);
    for (const line of check.notes) say(line);
    say(`resuming from ${p.file} at step ${p.ckpt.meta.step}`);
    return check.sampler;
  };
  let resumed = await localResumePoint(cfg, id.rank, say);
  let sampler = resumed && samplerOf(resumed);

  const slots = id.worldSize * cfg.accumulate;
  const openLoader = (state: LoaderState | undefined) => createDataLoader({
    dataset: cfg.dataset, dataDir: cfg.dataDir, split: 'train', imageSize: cfg.imageSize, batchSize: cfg.batchSize,
    rank: id.rank, worldSize: id.worldSize, accumulate: cfg.accumulate, seed: cfg.seed,
    shuffle: true, augment: cfg.augment, pad: true, threads: cfg.decodeThreads, onBadSample: 'skip',
    state, syntheticSize: cfg.syntheticSize,
  });
  let loader = await openLoader(sampler);
  const stepsPerEpoch = loader.batchesPerEpoch;
  const totalSteps = cfg.steps ?? (cfg.epochs ?? 2) * stepsPerEpoch;
  say(`data: ${cfg.dataset} ${loader.datasetSize} training samples, ${loader.numClasses} classes; ${slots} slot(s) x batch ${cfg.batchSize} = ${slots * cfg.batchSize} samples/step; ${stepsPerEpoch} steps/epoch; ${totalSteps} steps`);

  if (cfg.numClasses !== undefined && cfg.numClasses < loader.numClasses) {
    throw new TrainerError('BAD_FLAG', `--num-classes=${cfg.numClasses} is below the ${loader.numClasses} classes of ${cfg.dataset}`);
  }
  const model = new GoogLeNet({ numClasses: cfg.numClasses ?? loader.numClasses, aux: true, seed: cfg.seed });
  const sgd = new Sgd(model.params.map((p) => p.variable), { momentum: cfg.momentum, weightDecay: cfg.weightDecay });
  if (resumed) restoreCheckpoint(resumed.ckpt, model, sgd, resumed.file);

  let reducer: GradientReducer = new LocalReducer();
  if (id.worldSize > 1) {
    if (!id.coordinatorUrl) throw new TrainerError('BAD_ENV', `rank ${id.rank} of ${id.worldSize} has no coordinator address`);
    const client = await CoordinatorClient.connect({
      url: id.coordinatorUrl, rank: id.rank, worldSize: id.worldSize, runId: runIdOf(cfg),
      signature: model.signature(), token: cfg.token,
      ca: cfg.tlsCa ? await fs.readFile(cfg.tlsCa, 'utf8') : undefined,
      bucketBytes: Math.round(cfg.bucketMb * 1024 * 1024), gradCompression: cfg.gradCompression,
      timeoutMs: Math.round(cfg.roundTimeout * 1000),
    });
    reducer = new CoordinatorReducer(client, id.worldSize);
    say(`[rank ${id.rank}] joined the coordinator at ${id.coordinatorUrl} (world size ${id.worldSize})`);
  }

  const closeAll = async () => {
    await Promise.allSettled([reducer.close(), loader.close()]);
  };
  try {
    // Every rank resumes from rank 0's checkpoint (its step and sampler position), not its own newest.
    const agreed = await agreeOnResume(reducer, id.rank, resumed, cfg, say);
    if (agreed !== resumed) {
      resumed = agreed;
      sampler = resumed && samplerOf(resumed);
      if (resumed) restoreCheckpoint(resumed.ckpt, model, sgd, resumed.file);
      await loader.close();
      loader = await openLoader(sampler);
    }
    // Every rank starts from rank 0's exact state, whatever it initialised or loaded.
    await broadcastState(reducer, model, sgd);

    const trainStep = new TrainStep(model, sgd, reducer, {
      auxWeight: cfg.auxWeight, accumulate: cfg.accumulate, batchSize: cfg.batchSize, imageSize: cfg.imageSize, seed: cfg.seed, rank: id.rank,
    });
    const history = { steps: [] as { step: number; loss: number; top1: number }[], evals: [] as { step: number; top1: number; top5: number }[] };
    const metricsPath = path.join(cfg.out, 'metrics.jsonl');
    if (lead && resumed) {
      // Keep what happened up to the checkpoint (and chart it); drop records of steps that will be redone.
      const kept = await keepMetricsUpTo(metricsPath, resumed.ckpt.meta.step);
      for (const r of kept) {
        if (r.type === 'step') history.steps.push({ step: r.step as number, loss: r.loss as number, top1: r.top1 as number });
        if (r.type === 'eval') history.evals.push({ step: r.step as number, top1: r.top1 as number, top5: r.top5 as number });
      }
    }
    const metricsFile = lead ? await fs.open(metricsPath, resumed ? 'a' : 'w') : undefined;
    const tensorboard = lead && cfg.tensorboard ? TensorBoardWriter.open(path.join(cfg.out, 'tb')) : undefined;
    const record = async (o: object) => {
      if (metricsFile) await metricsFile.write(JSON.stringify(o) + '\n');
      tensorboard?.add(o as Record<string, unknown>);
    };
    const times: StepTimes = { data: 0, compute: 0, reduce: 0, apply: 0 };
    const schedule = { lr: cfg.lr, schedule: cfg.lrSchedule, warmupSteps: cfg.warmup, totalSteps, stepsPerEpoch, stepEpochs: cfg.stepEpochs, gamma: cfg.gamma };
    const startStep = resumed?.ckpt.meta.step ?? 0;
    const started = performance.now();
    let samples = 0;
    let stepsRun = 0;
    let trainMs = 0;
    let tensorsFirst = -1;
    let lastTrain: { loss: number; top1: number } | undefined;
    let lastEval: EvalResult | undefined;
    let lastEvalStep = -1;
    let checkpointFailures = 0;

    let evalEnabled = cfg.eval;
    const evaluateNow = async (step: number) => {
      if (!evalEnabled) return;
      try {
        lastEval = await evaluate(cfg, id, model, reducer);
      } catch (e) {
        // Every rank reads the same data folder, so every rank takes this branch: no round is left waiting.
        if ((e as { code?: string }).code !== 'DATASET_LAYOUT') throw e;
        evalEnabled = false;
        say(`warning: evaluation disabled: ${(e as Error).message}`);
        return;
      }
      lastEvalStep = step;
      history.evals.push({ step, top1: lastEval.top1, top5: lastEval.top5 });
      say(`eval @ step ${step}: top-1 ${(lastEval.top1 * 100).toFixed(2)}%  top-5 ${(lastEval.top5 * 100).toFixed(2)}%  loss ${lastEval.loss.toFixed(4)}  (${lastEval.samples} samples)`);
      await record({ type: 'eval', step, epoch: step / stepsPerEpoch, ...lastEval });
    };

    for (let step = startStep; step < totalSteps; step++) {
      const lr = learningRate(schedule, step);
      const t0 = performance.now();
      const r = await trainStep.run(step, async () => {
        const b = await loader.next();
        if (!b) throw new TrainerError('DATA_EXHAUSTED', 'the training loader ended; it should cycle epochs');
        return b;
      }, lr, step + 1 === cfg.profileStep);
      const wall = performance.now() - t0;
      trainMs += wall;
      for (const k of Object.keys(times) as (keyof StepTimes)[]) times[k] += r.times[k];
      samples += r.samples;
      stepsRun++;
      const done = step + 1;
      if (tensorsFirst < 0) tensorsFirst = tf.memory().numTensors;
      lastTrain = { loss: r.loss, top1: r.top1 };
      if (!Number.isFinite(r.loss)) {
        throw new TrainerError('LOSS_NOT_FINITE', `loss became ${r.loss} at step ${done}; lower --lr (now ${cfg.lr}) or add --warmup`);
      }
      const epochFloat = done / stepsPerEpoch;
      history.steps.push({ step: done, loss: r.loss, top1: r.top1 });
      const imgPerSec = (r.samples / wall) * 1000;
      await record({ type: 'step', step: done, epoch: epochFloat, lr, loss: r.loss, top1: r.top1, top5: r.top5, samples: r.samples, imgPerSec, ms: { wall, ...r.times }, numTensors: tf.memory().numTensors, rssMB: Math.round(process.memoryUsage().rss / 1e6), ...(r.dispatches !== undefined ? { dispatches: r.dispatches } : {}), ...(r.gpu ? { gpu: { kernelMs: r.gpu.kernelMs, kernels: r.gpu.kernels.slice(0, 15) } } : {}) });
      if (r.gpu) say(`profile step ${done}: ${r.dispatches} dispatches, GPU kernel time ${r.gpu.kernelMs.toFixed(1)} ms (compute phase); busiest: ${r.gpu.kernels.slice(0, 6).map((k) => `${k.name} ${k.ms.toFixed(1)} ms x${k.calls}`).join(', ')}`);
      progress.update({ step: done, total: totalSteps, epoch: Math.ceil(epochFloat - 1e-9), loss: r.loss, top1: r.top1, imgPerSec, lr });

      const epochEnd = done % stepsPerEpoch === 0;
      if (cfg.eval && ((cfg.evalEvery > 0 && done % cfg.evalEvery === 0) || (cfg.evalEvery === 0 && epochEnd) || done === totalSteps)) {
        await evaluateNow(done);
      }
      if ((cfg.checkpointEvery > 0 && done % cfg.checkpointEvery === 0) || epochEnd) {
        if (lead) {
          try {
            const file = await saveCheckpoint(cfg, model, sgd, loader.state(), done, stepsPerEpoch);
            say(`checkpoint: ${file}`);
          } catch (e) {
            checkpointFailures++;
            say(`error: ${(e as Error).message}`);
          }
        }
      }
      if (lead && logLines.length > 50) await flushLog();
    }
    if (cfg.eval && lastEvalStep !== totalSteps && startStep === totalSteps) await evaluateNow(totalSteps);

    const seconds = (performance.now() - started) / 1000;
    // Every rank must hold bit-identical weights; the digest in each rank's log lets anyone check.
    say(`[rank ${id.rank}] weights sha256: ${await weightsDigest(model)}`);
    const summary: RunSummary = {
      steps: totalSteps, stepsRun, startStep, epochs: totalSteps / stepsPerEpoch, backend: backend.name, worldSize: id.worldSize, seconds,
      imgPerSec: (samples / Math.max(1e-9, trainMs)) * 1000, finalTrain: lastTrain, finalEval: lastEval, times,
      numTensors: { first: tensorsFirst, last: tf.memory().numTensors }, checkpointFailures, outDir: cfg.out,
    };
    if (lead) {
      progress.done();
      await saveWeights(model, path.join(cfg.out, 'model.safetensors'));
      await fs.writeFile(path.join(cfg.out, 'chart.svg'), renderChart({
        ...history, epochSteps: Array.from({ length: Math.floor(totalSteps / stepsPerEpoch) }, (_, i) => (i + 1) * stepsPerEpoch),
        title: `GoogLeNet on ${cfg.dataset} ${cfg.imageSize}px, ${id.worldSize} worker(s) x batch ${cfg.batchSize}${cfg.accumulate > 1 ? ` x ${cfg.accumulate}` : ''}, ${backend.name}`,
      }));
      await fs.writeFile(path.join(cfg.out, 'summary.json'), JSON.stringify(summary, null, 2) + '\n');
      await metricsFile?.close();
      for (const line of summaryLines(summary)) say(line);
    }
    await flushLog();
    if (checkpointFailures > 0 && lead) {
      throw new TrainerError('CHECKPOINT_WRITE_FAILED', `${checkpointFailures} checkpoint(s) failed to write during the run (see ${logFile}); the final weights were written`);
    }
    return summary;
  } catch (e) {
    say(`[rank ${id.rank}] error: ${(e as Error).message}`);
    await flushLog().catch(() => {});
    throw e;
  } finally {
    await closeAll();
    model.dispose();
    sgd.dispose();
  }
}

/** Checkpoint writing, with the metadata that makes a resume exact. */
async function saveCheckpoint(cfg: TrainConfig, model: GoogLeNet, sgd: Sgd, sampler: LoaderState, step: number, stepsPerEpoch: number): Promise<string> {
  const meta: CheckpointMeta = {
    format: CHECKPOINT_FORMAT, version: CHECKPOINT_VERSION, step, epoch: Math.floor(step / stepsPerEpoch), sampler,
    optimizer: { type: 'sgd', started: sgd.state().started, momentum: cfg.momentum, weightDecay: cfg.weightDecay, layout: 'tfjs' },
    config: publicConfig(cfg), seeds: { seed: cfg.seed }, createdAt: new Date().toISOString(),
  };
  return writeCheckpoint(cfg.out, step, await encodeCheckpoint(model, sgd, meta), { keep: cfg.keep });
}

/** Rewrites metrics.jsonl without records after `step`; returns the records kept. */
async function keepMetricsUpTo(file: string, step: number): Promise<Record<string, unknown>[]> {
  let text: string;
  try {
    text = await fs.readFile(file, 'utf8');
  } catch {
    return [];
  }
  const kept = text.split('\n').filter(Boolean).map((l) => JSON.parse(l) as Record<string, unknown>).filter((r) => (r.step as number) <= step);
  await fs.writeFile(file, kept.map((r) => JSON.stringify(r) + '\n').join(''));
  return kept;
}

/** sha256 of every param and BN buffer, in signature order. */
export async function weightsDigest(model: GoogLeNet): Promise<string> {
  const vars = [...model.params, ...model.buffers].map((v) => v.variable);
  const flat = new Float32Array(vars.reduce((n, v) => n + v.size, 0));
  await readAllInto(vars, flat);
  return createHash('sha256').update(new Uint8Array(flat.buffer)).digest('hex');
}

/** Rank 0's params, BN statistics, momentum buffers and counters overwrite every other rank's. */
async function broadcastState(reducer: GradientReducer, model: GoogLeNet, sgd: Sgd): Promise<void> {
  if (reducer.worldSize === 1) return;
  const vars = [...model.params.map((p) => p.variable), ...model.buffers.map((b) => b.variable), ...sgd.state().buffers];
  const size = vars.reduce((n, v) => n + v.size, 0);
  const flat = new Float32Array(size + 2);
  let off = await readAllInto(vars, flat);
  flat[off] = model.numBatchesTracked;
  flat[off + 1] = sgd.state().started ? 1 : 0;
  await reducer.broadcast(flat);
  off = 0;
  tf.tidy(() => {
    for (const v of vars) {
      v.assign(tf.tensor(flat.slice(off, off + v.size), v.shape));
      off += v.size;
    }
  });
  model.numBatchesTracked = flat[off]!;
  sgd.markStarted(flat[off + 1] === 1);
}

/** Top-1/top-5 and loss over this rank's slice of the test split, summed over ranks as (sum, count) pairs. */
export async function evaluate(cfg: TrainConfig, id: WorkerIdentity, model: GoogLeNet, reducer: GradientReducer): Promise<EvalResult> {
  const loader: DataLoader = await createDataLoader({
    dataset: cfg.dataset, dataDir: cfg.dataDir, split: 'test', imageSize: cfg.imageSize, batchSize: cfg.batchSize,
    rank: id.rank, worldSize: id.worldSize, seed: cfg.seed, shuffle: false, augment: 'none', pad: false, dropLast: false,
    threads: cfg.decodeThreads, onBadSample: 'skip', syntheticSize: cfg.syntheticSize,
  });
  const m = new Float64Array(4);
  const k = Math.min(5, model.numClasses);
  const px = cfg.imageSize * cfg.imageSize * 3;
  try {
    for (;;) {
      const b = (await loader.next()) as Awaited<ReturnType<DataLoader['next']>> | null;
      if (!b || b.size === 0) break;
      const figures = tf.tidy(() => {
        const x = tf.tensor4d(b.images.subarray(0, b.size * px), [b.size, cfg.imageSize, cfg.imageSize, 3]);
        const y = tf.tensor1d(b.labels.subarray(0, b.size), 'int32');
        const out = model.forward(x, { training: false });
        const loss = googlenetLoss({ main: out.main }, y, 0);
        return tf.stack([tf.mul(loss, b.size), ...correctCounts(out.main, y, k)]);
      });
      const f = await readFloats(figures).finally(() => figures.dispose());
      m[0] += f[0]!;
      m[1] += f[1]!;
      m[2] += f[2]!;
      m[3] += b.size;
    }
  } finally {
    await loader.close();
  }
  await reducer.reduceMetrics(m);
  const n = Math.max(1, m[3]!);
  return { loss: m[0]! / n, top1: m[1]! / n, top5: m[2]! / n, samples: m[3]! };
}

export function summaryLines(s: RunSummary): string[] {
  const total = s.times.data + s.times.compute + s.times.reduce + s.times.apply;
  const pct = (v: number) => `${((100 * v) / Math.max(1e-9, total)).toFixed(0)}%`;
  return [
    '',
    `summary: ${s.steps} steps (${s.epochs.toFixed(2)} epochs) on ${s.worldSize} worker(s), backend ${s.backend}, ${formatDuration(s.seconds)}, ${s.imgPerSec.toFixed(1)} img/s`,
    s.finalTrain ? `  final train: loss ${s.finalTrain.loss.toFixed(4)}, top-1 ${(s.finalTrain.top1 * 100).toFixed(2)}% (last batch)` : '',
    s.finalEval ? `  final eval:  top-1 ${(s.finalEval.top1 * 100).toFixed(2)}%, top-5 ${(s.finalEval.top5 * 100).toFixed(2)}%, loss ${s.finalEval.loss.toFixed(4)} on ${s.finalEval.samples} samples` : '',
    `  time went to: data ${pct(s.times.data)}, compute ${pct(s.times.compute)}, reduce ${pct(s.times.reduce)}, apply ${pct(s.times.apply)}`,
    `  run folder: ${s.outDir} (config.json, train.log, metrics.jsonl, chart.svg, model.safetensors, checkpoints/)`,
  ].filter((l) => l !== '');
}
