import os from 'node:os';
import path from 'node:path';
import { defaultAugment, type AugmentMode } from '@googlenet/dataloader';
import { TrainerError } from './errors';
import { parseFlags, helpText, type FlagSpec } from './flags';
import { discoverGpus } from './devices';
import type { LrScheduleName } from './schedule';
import { parseResumeOverride } from './resume-check';
import { loadRecipe, recipeArg, recipeArgv } from './recipe';

/** The train command's flags. The table is the single source for parsing, validation and --help. */
export const TRAIN_FLAGS = {
  recipe: { type: 'string', help: 'defaults from a recipe file (packages/trainer/recipes/<name>.json, or a path), e.g. fashion-mnist; flags given here override it' },
  dataset: { type: 'enum', values: ['synthetic', 'fashion-mnist', 'cifar10', 'imagefolder', 'shards'], default: 'synthetic', help: 'data set' },
  'synthetic-size': { type: 'string', default: '3000,1000', help: 'synthetic data set: training,test samples' },
  'data-dir': { type: 'string', help: 'data folder (fashion-mnist defaults to /usr/share/datasets/fashion-mnist)' },
  'num-classes': { type: 'int', min: 1, help: 'classifier width (default: the data set\'s class count)' },
  'image-size': { type: 'int', min: 28, max: 512, default: 32, help: 'training crop size in pixels (the seed uses 224)' },
  'batch-size': { type: 'int', min: 1, default: 32, help: 'samples per micro-batch, per worker' },
  epochs: { type: 'int', min: 1, help: 'epochs to train (default 2 unless --steps is given)' },
  steps: { type: 'int', min: 1, help: 'optimizer steps to train (overrides --epochs)' },
  lr: { type: 'number', min: 0, default: 0.004, help: 'base learning rate (GoogLeNet diverges at 32 px with 0.01 x momentum 0.9 at small batches)' },
  momentum: { type: 'number', min: 0, max: 1, default: 0.9, help: 'SGD momentum (PyTorch semantics)' },
  'weight-decay': { type: 'number', min: 0, default: 1e-4, help: 'L2 weight decay added to the gradient' },
  'lr-schedule': { type: 'enum', values: ['paper', 'step', 'cosine', 'constant'], default: 'paper', help: 'paper: x0.96 every 8 epochs; step: x gamma every --step-epochs; cosine: to 0 at the end' },
  warmup: { type: 'int', min: 0, default: 0, help: 'linear warm-up steps' },
  'step-epochs': { type: 'int', min: 1, default: 30, help: 'step schedule: epochs between decays' },
  gamma: { type: 'number', min: 0, max: 1, default: 0.1, help: 'step schedule: decay factor' },
  'aux-weight': { type: 'number', min: 0, default: 0.3, help: 'weight of each auxiliary head loss' },
  'label-smoothing': { type: 'number', min: 0, max: 1, default: 0, help: 'label smoothing of the main and both aux losses, as nn.CrossEntropyLoss(label_smoothing=...); 0: off' },
  'clip-grad-norm': { type: 'number', min: 0, default: 0, help: 'clip the averaged gradient to this global L2 norm (all parameters, as torch.nn.utils.clip_grad_norm_); 0: off' },
  nesterov: { type: 'boolean', default: false, help: 'Nesterov momentum, as torch.optim.SGD(nesterov=True) (needs --momentum > 0)' },
  'ema-decay': { type: 'number', min: 0, max: 1, default: 0, help: 'keep an EMA of the weights and BN statistics (ema = d*ema + (1-d)*w after each step), evaluated and saved beside the raw ones; 0: off' },
  augment: { type: 'enum', values: ['auto', 'inception', 'pad-crop', 'flip', 'none'], default: 'auto', help: 'training augmentation; auto: pad-crop for fashion-mnist, cifar10, synthetic, inception for imagefolder, shards (evaluation never augments)' },
  accumulate: { type: 'int', min: 1, default: 1, help: 'micro-batches accumulated per optimizer step' },
  backend: { type: 'enum', values: ['auto', 'tensorflow', 'webgpu', 'wasm', 'cpu'], default: 'auto', help: 'TensorFlow.js backend' },
  precision: { type: 'enum', values: ['fp32', 'f16', 'auto'], default: 'fp32', help: 'compute precision: f16 (webgpu with shader-f16: f16 GEMM operands, f32 accumulation, fp32 master weights, dynamic loss scaling), auto (f16 where the adapter has shader-f16)' },
  seed: { type: 'int', min: 0, default: 0, help: 'seed for initialisation, sampling, augmentation and dropout' },
  out: { type: 'string', help: 'run folder (default runs/<date>-<time>)' },
  'eval-every': { type: 'int', min: 0, default: 0, help: 'evaluate every N steps (0: at each epoch end and at the end)' },
  eval: { type: 'boolean', default: true, help: 'evaluate on the test split (--no-eval: never)' },
  tensorboard: { type: 'boolean', default: true, help: 'write the metrics as TensorBoard scalars to <out>/tb/ (--tensorboard=false: do not)' },
  'log-every': { type: 'int', min: 1, default: 10, help: 'log a line every N steps when not on a terminal' },
  'profile-step': { type: 'int', min: 0, default: 0, help: 'webgpu: time every kernel of step N on the GPU (timestamp queries; that step runs slower) and log the busiest' },
  'grad-compression': { type: 'enum', values: ['none', 'fp16'], default: 'none', help: 'gradient wire format' },
  'bucket-mb': { type: 'number', min: 0.001, default: 25, help: 'gradient bucket size in MB' },
  overlap: { type: 'enum', values: ['auto', 'on', 'off'], default: 'auto', help: 'exchange gradient buckets on a thread while the backward runs: auto (where it applies: several workers on the shm plane, wasm or cpu, --accumulate=1, fp32 wire), on (the same, refusing settings that exclude it), off' },
  'cpu-bind': { type: 'enum', values: ['auto', 'off'], default: 'auto', help: 'bind each worker process to its own share of this machine\'s cores (taskset), as torchrun users do with taskset/numactl: auto (2+ workers, Linux), off' },
  'data-plane': { type: 'enum', values: ['auto', 'shm', 'peer', 'coordinator'], default: 'auto', help: 'how gradient bytes move: auto (shared memory between workers on one machine, else worker-to-worker TCP), shm, peer (TCP), coordinator (through its WebSocket)' },
  workers: { type: 'string', default: 'auto', help: 'worker processes on this machine (auto: one per NVIDIA GPU, else one per core up to 8)' },
  gpus: { type: 'string', help: 'comma-separated GPU ids (nvidia-smi\'s) for the workers, e.g. 0,1,2,3; webgpu pins each worker to its GPU' },
  'checkpoint-every': { type: 'int', min: 0, default: 0, help: 'checkpoint every N steps (always at each epoch end; 0: epoch ends only)' },
  keep: { type: 'int', min: 1, default: 3, help: 'checkpoints to keep' },
  resume: { type: 'string', help: 'resume from a run folder or a checkpoint file' },
  'resume-override': { type: 'string', help: 'settings a --resume may change (comma-separated flag names, or all); others must match the checkpoint' },
  'max-restarts': { type: 'int', min: 0, default: 0, help: 'restarts from the last checkpoint after a worker failure' },
  'round-timeout': { type: 'number', min: 0.1, default: 30, help: 'seconds a gradient round may wait for the slowest worker' },
  coordinator: { type: 'string', help: 'ws[s]://HOST:PORT of a running coordinator (multi-node); default: start one' },
  nnodes: { type: 'int', min: 1, default: 1, help: 'machines in the job' },
  'node-rank': { type: 'int', min: 0, default: 0, help: 'this machine\'s index among --nnodes' },
  host: { type: 'string', default: '127.0.0.1', help: 'address the started coordinator binds' },
  port: { type: 'int', min: 0, max: 65535, default: 0, help: 'port of the started coordinator (0: any free port)' },
  token: { type: 'string', help: 'shared coordinator token (or env GOOGLENET_COORDINATOR_TOKEN)' },
  'tls-cert': { type: 'string', help: 'PEM certificate: the started coordinator serves wss' },
  'tls-key': { type: 'string', help: 'PEM private key for --tls-cert' },
  'tls-ca': { type: 'string', help: 'PEM CA that workers trust for a wss coordinator' },
  'decode-threads': { type: 'int', min: 0, default: 1, help: 'data decoding threads per worker' },
  help: { type: 'boolean', default: false, help: 'print this help' },
} satisfies Record<string, FlagSpec>;

export const TRAIN_USAGE = 'Usage: nx run trainer:train [options]   (or: npx tsx packages/trainer/src/cli/train.ts [options])';

/** Everything a run needs, resolved once, validated, frozen, printed at start and saved in every checkpoint. */
export interface TrainConfig {
  /** The --recipe whose values are this config's defaults (its resolved values are the fields below). */
  recipe?: string;
  dataset: 'synthetic' | 'fashion-mnist' | 'cifar10' | 'imagefolder' | 'shards';
  dataDir?: string;
  syntheticSize: { train: number; test: number };
  numClasses?: number;
  imageSize: number;
  batchSize: number;
  epochs?: number;
  steps?: number;
  lr: number;
  momentum: number;
  weightDecay: number;
  lrSchedule: LrScheduleName;
  warmup: number;
  stepEpochs: number;
  gamma: number;
  auxWeight: number;
  /** Label smoothing of every head's cross-entropy (0: off). */
  labelSmoothing: number;
  /** Global L2 norm the averaged gradient is clipped to (0: off). */
  clipGradNorm: number;
  /** Nesterov momentum (torch.optim.SGD semantics). */
  nesterov: boolean;
  /** Decay of the weights' EMA (0: no EMA). */
  emaDecay: number;
  /** Training augmentation, resolved (--augment=auto becomes the data set's default). */
  augment: AugmentMode;
  accumulate: number;
  backend: 'auto' | 'tensorflow' | 'webgpu' | 'wasm' | 'cpu';
  /** --precision as asked; each worker resolves auto against its adapter (BackendInfo.precision). */
  precision: 'fp32' | 'f16' | 'auto';
  seed: number;
  out: string;
  evalEvery: number;
  eval: boolean;
  /** Rank 0 writes metrics.jsonl's scalars to <out>/tb/ as TensorBoard events. */
  tensorboard: boolean;
  logEvery: number;
  profileStep: number;
  gradCompression: 'none' | 'fp16';
  bucketMb: number;
  /** Data plane the workers offer and the started coordinator prefers (@googlenet/coordinator plane-select.ts). */
  dataPlane: 'auto' | 'shm' | 'peer' | 'coordinator';
  /** --overlap (overlap.ts): the gradient exchange overlaps the backward where it applies. */
  overlap: 'auto' | 'on' | 'off';
  /** --cpu-bind (cpu-bind.ts): each local worker on its own share of the cores. */
  cpuBind: 'auto' | 'off';
  /** Worker processes on this machine. */
  workers: number;
  gpus?: number[];
  checkpointEvery: number;
  keep: number;
  resume?: string;
  /** Settings (flag names, or 'all') that a resume may change from the checkpoint's run (resume-check.ts). */
  resumeOverride: string[];
  maxRestarts: number;
  roundTimeout: number;
  coordinator?: string;
  nnodes: number;
  nodeRank: number;
  host: string;
  port: number;
  token?: string;
  tlsCert?: string;
  tlsKey?: string;
  tlsCa?: string;
  decodeThreads: number;
}

export interface ResolveContext {
  env?: NodeJS.ProcessEnv;
  /** NVIDIA GPUs of this machine, for --workers=auto. Default: discoverGpus() (nvidia-smi, else sysfs). */
  gpuCount?: number;
  now?: Date;
}

/** Parses and validates the train flags. Throws TrainerError('BAD_FLAG', ...) on anything wrong. */
export function resolveTrainConfig(argv: readonly string[], ctx: ResolveContext = {}): TrainConfig | 'help' {
  const recipeName = recipeArg(argv);
  const recipe = recipeName === undefined ? undefined : loadRecipe(recipeName, TRAIN_FLAGS);
  const f = parseFlags(recipe ? [...recipeArgv(recipe, argv), ...argv] : argv, TRAIN_FLAGS);
  if (f.help) return 'help';
  const env = ctx.env ?? process.env;
  const bad = (msg: string) => new TrainerError('BAD_FLAG', msg);

  const gpus = f.gpus === undefined ? undefined : parseGpuList(String(f.gpus));
  let workers: number;
  if (f.workers === 'auto') {
    // One worker per NVIDIA GPU (each pinned to its own: devices.ts); wasm and cpu never use one, so never ask.
    const gpuCount = gpus ? 0 : ctx.gpuCount ?? (f.backend === 'wasm' || f.backend === 'cpu' ? 0 : discoverGpus().gpus.length);
    workers = gpus?.length ?? (gpuCount > 0 ? gpuCount : Math.max(1, Math.min(8, os.availableParallelism())));
  } else {
    workers = Number(f.workers);
    if (!Number.isInteger(workers) || workers < 1 || workers > 256) throw bad(`--workers=${f.workers} is invalid: expected auto or an integer from 1 to 256`);
  }
  if (gpus && gpus.length < workers) throw bad(`--gpus lists ${gpus.length} device(s) but --workers=${workers}: give one GPU id per worker`);
  if (f.epochs !== undefined && f.steps !== undefined) throw bad('give --epochs or --steps, not both');
  if ((f.nodeRank as number) >= (f.nnodes as number)) throw bad(`--node-rank=${f.nodeRank} must be below --nnodes=${f.nnodes}`);
  if ((f.nnodes as number) > 1 && f.coordinator === undefined) {
    throw bad(`--nnodes=${f.nnodes} needs --coordinator=ws://HOST:PORT of a coordinator started with: nx run coordinator:serve --workers=<total> --host=<addr>`);
  }
  if (f.coordinator !== undefined && !/^wss?:\/\/[^/]+/.test(String(f.coordinator))) throw bad(`--coordinator=${f.coordinator} is invalid: expected ws://HOST:PORT or wss://HOST:PORT`);
  if ((f.tlsCert === undefined) !== (f.tlsKey === undefined)) throw bad('--tls-cert and --tls-key go together');
  const token = (f.token as string | undefined) ?? env.GOOGLENET_COORDINATOR_TOKEN;
  if (f.host !== '127.0.0.1' && f.host !== 'localhost' && f.host !== '::1' && !token) {
    throw bad(`--host=${f.host} exposes the coordinator beyond this machine: give --token=<secret> (or env GOOGLENET_COORDINATOR_TOKEN)`);
  }
  if (f.dataset === 'imagefolder' || f.dataset === 'shards' || f.dataset === 'cifar10') {
    if (f.dataDir === undefined) throw bad(`--dataset=${f.dataset} needs --data-dir=<folder>`);
  }
  if (f.nesterov && (f.momentum as number) === 0) throw bad('--nesterov needs a momentum: give --momentum > 0 (torch.optim.SGD refuses Nesterov without one too)');
  if ((f.labelSmoothing as number) >= 1) throw bad(`--label-smoothing=${f.labelSmoothing} leaves no weight on the true class: expected a value in [0, 1), e.g. 0.1`);
  if (f.precision === 'f16' && ['wasm', 'cpu', 'tensorflow'].includes(f.backend as string)) {
    throw bad(`--precision=f16 needs the webgpu backend with the adapter feature shader-f16; --backend=${f.backend} has no f16 kernels: use --backend=webgpu, or --precision=fp32`);
  }
  if (f.overlap === 'on') {
    const why = f.gradCompression !== 'none' ? '--grad-compression=fp16' : (f.accumulate as number) > 1 ? '--accumulate > 1'
      : f.dataPlane === 'peer' || f.dataPlane === 'coordinator' ? `--data-plane=${f.dataPlane}` : ['webgpu', 'tensorflow'].includes(f.backend as string) ? `--backend=${f.backend}` : '';
    if (why) throw bad(`--overlap=on needs the shm data plane, the wasm or cpu backend, --accumulate=1 and an fp32 wire; ${why} excludes it: drop it, or use --overlap=auto`);
  }
  if ((f.emaDecay as number) >= 1) throw bad(`--ema-decay=${f.emaDecay} would never move the EMA: expected a value in [0, 1), e.g. 0.999 (0 turns the EMA off)`);
  const now = ctx.now ?? new Date();
  const stamp = now.toISOString().replace(/[-:]/g, '').replace('T', '-').slice(0, 15);
  const cfg: TrainConfig = {
    recipe: recipe?.name,
    dataset: f.dataset as TrainConfig['dataset'],
    dataDir: f.dataDir as string | undefined,
    syntheticSize: parseSyntheticSize(String(f.syntheticSize)),
    numClasses: f.numClasses as number | undefined,
    imageSize: f.imageSize as number,
    batchSize: f.batchSize as number,
    epochs: f.epochs as number | undefined,
    steps: f.steps as number | undefined,
    lr: f.lr as number,
    momentum: f.momentum as number,
    weightDecay: f.weightDecay as number,
    lrSchedule: f.lrSchedule as LrScheduleName,
    warmup: f.warmup as number,
    stepEpochs: f.stepEpochs as number,
    gamma: f.gamma as number,
    auxWeight: f.auxWeight as number,
    labelSmoothing: f.labelSmoothing as number,
    clipGradNorm: f.clipGradNorm as number,
    nesterov: f.nesterov as boolean,
    emaDecay: f.emaDecay as number,
    augment: f.augment === 'auto' ? defaultAugment(f.dataset as TrainConfig['dataset']) : f.augment as AugmentMode,
    accumulate: f.accumulate as number,
    backend: f.backend as TrainConfig['backend'],
    precision: f.precision as TrainConfig['precision'],
    seed: f.seed as number,
    out: path.resolve((f.out as string | undefined) ?? (f.resume ? runFolderOf(String(f.resume)) : path.join('runs', stamp))),
    evalEvery: f.evalEvery as number,
    eval: f.eval as boolean,
    tensorboard: f.tensorboard as boolean,
    logEvery: f.logEvery as number,
    profileStep: f.profileStep as number,
    gradCompression: f.gradCompression as 'none' | 'fp16',
    bucketMb: f.bucketMb as number,
    dataPlane: f.dataPlane as TrainConfig['dataPlane'],
    overlap: f.overlap as TrainConfig['overlap'],
    cpuBind: f.cpuBind as TrainConfig['cpuBind'],
    workers,
    gpus,
    checkpointEvery: f.checkpointEvery as number,
    keep: f.keep as number,
    resume: f.resume === undefined ? undefined : path.resolve(String(f.resume)),
    resumeOverride: parseResumeOverride(f.resumeOverride as string | undefined),
    maxRestarts: f.maxRestarts as number,
    roundTimeout: f.roundTimeout as number,
    coordinator: f.coordinator as string | undefined,
    nnodes: f.nnodes as number,
    nodeRank: f.nodeRank as number,
    host: f.host as string,
    port: f.port as number,
    token,
    tlsCert: f.tlsCert as string | undefined,
    tlsKey: f.tlsKey as string | undefined,
    tlsCa: f.tlsCa as string | undefined,
    decodeThreads: f.decodeThreads as number,
  };
  return Object.freeze(cfg);
}

/** `--resume=runs/x/checkpoints/step-100.ckpt` continues writing into runs/x. */
export function runFolderOf(resume: string): string {
  const abs = path.resolve(resume);
  if (abs.endsWith('.ckpt')) return path.dirname(path.dirname(abs));
  return abs;
}

function parseSyntheticSize(s: string): { train: number; test: number } {
  const m = /^(\d+),(\d+)$/.exec(s);
  if (!m || Number(m[1]) < 1 || Number(m[2]) < 1) throw new TrainerError('BAD_FLAG', `--synthetic-size=${s} is invalid: expected TRAIN,TEST sample counts such as 3000,1000`);
  return { train: Number(m[1]), test: Number(m[2]) };
}

function parseGpuList(s: string): number[] {
  const ids = s.split(',').map((x) => x.trim());
  if (ids.some((x) => !/^\d+$/.test(x))) throw new TrainerError('BAD_FLAG', `--gpus=${s} is invalid: expected comma-separated device ids such as 0,1,2,3`);
  const nums = ids.map(Number);
  if (new Set(nums).size !== nums.length) throw new TrainerError('BAD_FLAG', `--gpus=${s} lists a device twice`);
  return nums;
}

export function trainHelp(): string {
  return helpText(TRAIN_USAGE, TRAIN_FLAGS);
}

/** The config without secrets, as printed at start and stored in the run folder and checkpoints. */
export function publicConfig(cfg: TrainConfig): Record<string, unknown> {
  const { token, ...rest } = cfg;
  return { ...rest, token: token ? '<set>' : undefined };
}
