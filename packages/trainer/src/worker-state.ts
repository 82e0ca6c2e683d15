import fs from 'node:fs/promises';
import * as tf from '@tensorflow/tfjs';
import { GoogLeNet } from '@googlenet/model';
import { createDataLoader, type DataLoader, type LoaderState } from '@googlenet/dataloader';
import { CoordinatorClient } from '@googlenet/coordinator';
import { publicConfig } from './config';
import { TrainerError } from './errors';
import { Sgd } from './optim';
import { ModelEma } from './ema';
import { CoordinatorReducer, LocalReducer, type GradientReducer } from './reducer';
import { restoreCheckpoint, type ResumePoint } from './checkpoint';
import { agreeOnResume, localResumePoint } from './resume';
import { checkResumeConfig } from './resume-check';
import { readAllInto } from './host';
import { runIdOf } from './run-id';
import type { WorkerContext } from './worker-context';

/** What a rank trains with: data, model, optimizer, its link to the other ranks, and where it resumes. */
export interface TrainState {
  loader: DataLoader;
  model: GoogLeNet;
  sgd: Sgd;
  /** The weights' EMA (--ema-decay > 0). */
  ema?: ModelEma;
  reducer: GradientReducer;
  /** The checkpoint this rank resumes from (after agreeOnResume: rank 0's). */
  resumed?: ResumePoint;
  stepsPerEpoch: number;
  totalSteps: number;
  /** Closes the link and the loader, frees the model and optimizer. */
  close(): Promise<void>;
}

/** Checks a checkpoint's settings against this run's (RESUME_CONFIG_CHANGED), says what it allowed, returns its sampler state. */
function samplerOf({ cfg, id, say }: WorkerContext, p: ResumePoint): LoaderState {
  const check = checkResumeConfig(p.ckpt.meta, publicConfig(cfg), id.worldSize, cfg.resumeOverride ?? [], p.file);
  for (const line of check.overridden) say(`resume: ${line} (allowed by --resume-override)`);
  for (const line of check.notes) say(line);
  say(`resuming from ${p.file} at step ${p.ckpt.meta.step}`);
  return check.sampler;
}

function openLoader({ cfg, id }: WorkerContext, state: LoaderState | undefined): Promise<DataLoader> {
  return createDataLoader({
    dataset: cfg.dataset, dataDir: cfg.dataDir, split: 'train', imageSize: cfg.imageSize, batchSize: cfg.batchSize,
    rank: id.rank, worldSize: id.worldSize, accumulate: cfg.accumulate, seed: cfg.seed,
    shuffle: true, augment: cfg.augment, pad: true, threads: cfg.decodeThreads, onBadSample: 'skip',
    state, syntheticSize: cfg.syntheticSize,
  });
}

/**
 * Resume, part one: this rank's own checkpoint pick, the train loader at its sampler position, the model and
 * optimizer (restored from it), and the rendezvous with the other ranks.
 */
export async function prepareTraining(ctx: WorkerContext): Promise<TrainState> {
  const { cfg, id, say } = ctx;
  const resumed = await localResumePoint(cfg, id.rank, say);
  const loader = await openLoader(ctx, resumed && samplerOf(ctx, resumed));
  const slots = id.worldSize * cfg.accumulate;
  const stepsPerEpoch = loader.batchesPerEpoch;
  const totalSteps = cfg.steps ?? (cfg.epochs ?? 2) * stepsPerEpoch;
  say(`data: ${cfg.dataset} ${loader.datasetSize} training samples, ${loader.numClasses} classes; ${slots} slot(s) x batch ${cfg.batchSize} = ${slots * cfg.batchSize} samples/step; ${stepsPerEpoch} steps/epoch; ${totalSteps} steps`);

  if (cfg.numClasses !== undefined && cfg.numClasses < loader.numClasses) {
    throw new TrainerError('BAD_FLAG', `--num-classes=${cfg.numClasses} is below the ${loader.numClasses} classes of ${cfg.dataset}`);
  }
  const model = new GoogLeNet({ numClasses: cfg.numClasses ?? loader.numClasses, aux: true, seed: cfg.seed });
  const sgd = new Sgd(model.params.map((p) => p.variable), { momentum: cfg.momentum, weightDecay: cfg.weightDecay, nesterov: cfg.nesterov });
  if (resumed) restoreCheckpoint(resumed.ckpt, model, sgd, resumed.file);
  const ema = cfg.emaDecay > 0 ? startEma(ctx, model, resumed) : undefined;

  let reducer: GradientReducer = new LocalReducer();
  if (id.worldSize > 1) {
    if (!id.coordinatorUrl) throw new TrainerError('BAD_ENV', `rank ${id.rank} of ${id.worldSize} has no coordinator address`);
    const client = await CoordinatorClient.connect({
      url: id.coordinatorUrl, rank: id.rank, worldSize: id.worldSize, runId: runIdOf(cfg),
      signature: model.signature(), token: cfg.token,
      ca: cfg.tlsCa ? await fs.readFile(cfg.tlsCa, 'utf8') : undefined,
      bucketBytes: Math.round(cfg.bucketMb * 1024 * 1024), gradCompression: cfg.gradCompression,
      timeoutMs: Math.round(cfg.roundTimeout * 1000), dataPlane: cfg.dataPlane,
      // The step's gradients and BN statistics (TrainStep.flat) can then live in the shared segment: no copy in or out.
      sharedElems: [...model.params, ...model.buffers].reduce((n, p) => n + p.variable.size, 0),
      // Refused peer connections (wrong key, malformed hello) and plane choices belong in this rank's log.
      log: say,
    });
    reducer = new CoordinatorReducer(client, id.worldSize);
    say(`[rank ${id.rank}] joined the coordinator at ${id.coordinatorUrl} (world size ${id.worldSize})`);
  }
  const st: TrainState = {
    loader, model, sgd, ema, reducer, resumed, stepsPerEpoch, totalSteps,
    close: async () => {
      await Promise.allSettled([st.reducer.close(), st.loader.close()]);
      st.model.dispose();
      st.sgd.dispose();
      st.ema?.dispose();
    },
  };
  return st;
}

/**
 * Resume, part two: every rank takes rank 0's checkpoint (its step and sampler position, not its own newest)
 * and then rank 0's exact weights, statistics and optimizer state, whatever it initialised or loaded.
 */
export async function syncWithRank0(ctx: WorkerContext, st: TrainState): Promise<void> {
  const agreed = await agreeOnResume(st.reducer, ctx.id.rank, st.resumed, ctx.cfg, ctx.say);
  if (agreed !== st.resumed) {
    st.resumed = agreed;
    const sampler = agreed && samplerOf(ctx, agreed);
    if (agreed) restoreCheckpoint(agreed.ckpt, st.model, st.sgd, agreed.file);
    if (st.ema) {
      st.ema.dispose();
      st.ema = startEma(ctx, st.model, agreed);
    }
    await st.loader.close();
    st.loader = await openLoader(ctx, sampler);
  }
  await broadcastState(st.reducer, st.model, st.sgd, st.ema);
}

/** The EMA from a checkpoint's `ema.*` tensors, or from the weights (a fresh run, or a checkpoint without an EMA). */
function startEma({ cfg, say }: WorkerContext, model: GoogLeNet, resumed: ResumePoint | undefined): ModelEma {
  const saved = resumed?.ckpt.ema;
  if (resumed && !saved?.size) say(`resume: ${resumed.file} holds no EMA of the weights; the EMA starts from its weights`);
  return ModelEma.create(model, cfg.emaDecay, saved);
}

/** Rank 0's params, BN statistics, momentum buffers, EMA and counters overwrite every other rank's. */
async function broadcastState(reducer: GradientReducer, model: GoogLeNet, sgd: Sgd, ema: ModelEma | undefined): Promise<void> {
  if (reducer.worldSize === 1) return;
  const vars = [...model.params.map((p) => p.variable), ...model.buffers.map((b) => b.variable), ...sgd.state().buffers, ...(ema?.variables() ?? [])];
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
