/**
 * `nx run trainer:eval --weights=<run folder|.safetensors|.ckpt> [--dataset=...] [--workers=N]`: loss, top-1
 * and top-5 of trained weights on a data set's test split, written to eval.json with a confusion-matrix SVG.
 * With --workers=N it starts a coordinator and N processes of itself, each evaluating its shard (the training
 * loader's sharding, every sample counted once), as a launched training job does; started by a scheduler
 * (RANK/WORLD_SIZE set) it runs as that one rank.
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs/promises';
import path from 'node:path';
import readline from 'node:readline';
import { fileURLToPath } from 'node:url';
import { inferenceModel, readWeightsFile, selectBackend, type BackendName } from '@googlenet/model';
import { CoordinatorClient, startCoordinator } from '@googlenet/coordinator';
import { exitWith } from '@googlenet/flags';
import type { DatasetName } from '@googlenet/dataloader';
import { runFolderOf } from '../config';
import { renderConfusion } from '../confusion-svg';
import { TrainerError } from '../errors';
import { evaluateSplit, type EvalDataOptions } from '../eval';
import { helpText, parseFlags, type FlagSpec } from '../flags';
import { identityFromEnv, type WorkerIdentity } from '../identity';
import { CoordinatorReducer, LocalReducer, type GradientReducer } from '../reducer';

const DATASETS = ['synthetic', 'fashion-mnist', 'cifar10', 'imagefolder', 'shards'] as const;
const EVAL_FLAGS = {
  weights: { type: 'string', required: true, help: 'run folder (its model.safetensors), .safetensors state_dict or .ckpt checkpoint' },
  dataset: { type: 'enum', values: DATASETS, help: 'data set whose test split to evaluate (default: the run\'s, else synthetic)' },
  'data-dir': { type: 'string', help: 'data folder (default: the run\'s)' },
  'synthetic-size': { type: 'string', help: 'synthetic data set: training,test samples (default: the run\'s, else 3000,1000)' },
  'image-size': { type: 'int', min: 28, max: 512, help: 'input size (default: the run\'s, else 32)' },
  'batch-size': { type: 'int', min: 1, default: 64, help: 'images per forward pass, per worker' },
  workers: { type: 'int', min: 1, max: 256, default: 1, help: 'worker processes, each evaluating its shard of the split' },
  backend: { type: 'enum', values: ['auto', 'tensorflow', 'webgpu', 'wasm', 'cpu'], default: 'auto', help: 'TensorFlow.js backend' },
  out: { type: 'string', help: 'folder for eval.json and confusion.svg (default: the run folder, else the weights\' folder)' },
  'decode-threads': { type: 'int', min: 0, default: 1, help: 'data decoding threads per worker' },
  help: { type: 'boolean', default: false, help: 'print this help' },
} satisfies Record<string, FlagSpec>;

interface EvalConfig extends EvalDataOptions {
  weights: string;
  workers: number;
  backend: BackendName;
  out: string;
}

/** Flags, with defaults from the config.json of the run the weights come from. */
async function resolve(argv: string[]): Promise<EvalConfig | 'help'> {
  const f = parseFlags(argv, EVAL_FLAGS);
  if (f.help) return 'help';
  const weights = path.resolve(String(f.weights));
  const stat = await fs.stat(weights).catch(() => undefined);
  const runDir = stat?.isDirectory() ? weights : runFolderOf(weights);
  const run = await fs.readFile(path.join(runDir, 'config.json'), 'utf8').then((t) => JSON.parse(t) as Record<string, unknown>, () => undefined);
  const fromRun = run && (f.dataset === undefined || f.dataset === run.dataset) ? run : undefined;
  const synthetic = String(f.syntheticSize ?? '') || undefined;
  const m = synthetic === undefined ? undefined : /^(\d+),(\d+)$/.exec(synthetic);
  if (synthetic !== undefined && !m) throw new TrainerError('BAD_FLAG', `--synthetic-size=${synthetic} is invalid: expected TRAIN,TEST sample counts such as 3000,1000`);
  const dataset = (f.dataset ?? run?.dataset ?? 'synthetic') as DatasetName;
  const dataDir = (f.dataDir as string | undefined) ?? (fromRun?.dataDir as string | undefined);
  if ((dataset === 'imagefolder' || dataset === 'shards' || dataset === 'cifar10') && !dataDir) {
    throw new TrainerError('BAD_FLAG', `--dataset=${dataset} needs --data-dir=<folder>`);
  }
  return {
    weights,
    dataset,
    dataDir,
    syntheticSize: m ? { train: Number(m[1]), test: Number(m[2]) } : (fromRun?.syntheticSize as EvalConfig['syntheticSize']) ?? { train: 3000, test: 1000 },
    imageSize: (f.imageSize as number | undefined) ?? (run?.imageSize as number | undefined) ?? 32,
    batchSize: f.batchSize as number,
    decodeThreads: f.decodeThreads as number,
    workers: f.workers as number,
    backend: f.backend as BackendName,
    out: path.resolve((f.out as string | undefined) ?? (run ? runDir : stat?.isDirectory() ? weights : path.dirname(weights))),
  };
}

/** One rank: its shard of the test split; rank 0 prints the figures and writes eval.json and confusion.svg. */
async function evalRank(cfg: EvalConfig, id: WorkerIdentity): Promise<void> {
  const backend = await selectBackend(cfg.backend, { log: () => {} });
  if (id.rank === 0) process.stderr.write(`${backend.line}\n`);
  const weights = await readWeightsFile(cfg.weights);
  const model = inferenceModel(weights);
  let reducer: GradientReducer = new LocalReducer();
  try {
    if (id.worldSize > 1) {
      if (!id.coordinatorUrl) throw new TrainerError('BAD_ENV', `rank ${id.rank} of ${id.worldSize} has no coordinator address`);
      const client = await CoordinatorClient.connect({ url: id.coordinatorUrl, rank: id.rank, worldSize: id.worldSize, runId: 'eval', signature: model.signature() });
      reducer = new CoordinatorReducer(client, id.worldSize);
    }
    const t0 = performance.now();
    const r = await evaluateSplit(cfg, id.rank, model, reducer);
    const seconds = (performance.now() - t0) / 1000;
    if (id.rank !== 0) return;
    const perClass = r.confusion.map((row, i) => {
      const samples = row.reduce((a, b) => a + b, 0);
      return { class: i, name: r.classNames[i] ?? String(i), samples, correct: row[i]!, recall: samples > 0 ? row[i]! / samples : null };
    });
    const report = {
      weights: weights.file, dataset: cfg.dataset, dataDir: cfg.dataDir, split: 'test', imageSize: cfg.imageSize,
      samples: r.samples, loss: r.loss, top1: r.top1, top5: r.top5, workers: id.worldSize, backend: backend.name, seconds,
      perClass, classNames: r.classNames, confusion: r.confusion, createdAt: new Date().toISOString(),
    };
    await fs.mkdir(cfg.out, { recursive: true });
    await fs.writeFile(path.join(cfg.out, 'eval.json'), JSON.stringify(report, null, 2) + '\n');
    await fs.writeFile(path.join(cfg.out, 'confusion.svg'), renderConfusion({
      confusion: r.confusion, classNames: r.classNames,
      title: `${cfg.dataset} test split (${r.samples} images): top-1 ${(r.top1 * 100).toFixed(2)}%, ${path.basename(weights.file)}`,
    }));
    process.stdout.write(`eval: top-1 ${(r.top1 * 100).toFixed(2)}%  top-5 ${(r.top5 * 100).toFixed(2)}%  loss ${r.loss.toFixed(4)}  ` +
      `on ${r.samples} test images of ${cfg.dataset} (${id.worldSize} worker(s), ${backend.name}, ${seconds.toFixed(1)} s)\n` +
      `wrote ${path.join(cfg.out, 'eval.json')} and ${path.join(cfg.out, 'confusion.svg')}\n`);
  } finally {
    await reducer.close().catch(() => {});
    model.dispose();
  }
}

/** --workers=N on this machine: a coordinator here and N processes of this script, one per rank. */
async function launchRanks(cfg: EvalConfig, argv: string[]): Promise<number> {
  // A missing or truncated file fails here, once, before any process starts.
  await readWeightsFile(cfg.weights);
  const coord = await startCoordinator({ worldSize: cfg.workers, port: 0, runId: 'eval', log: () => {} });
  const self = fileURLToPath(import.meta.url);
  const errors: string[] = [];
  try {
    const children = Array.from({ length: cfg.workers }, (_, rank) => {
      const child = spawn(process.execPath, [...process.execArgv, self, ...argv], {
        env: { ...process.env, RANK: String(rank), WORLD_SIZE: String(cfg.workers), LOCAL_RANK: String(rank), GOOGLENET_COORDINATOR_URL: coord.url, GOOGLENET_EVAL_CHILD: '1' },
        stdio: ['ignore', 'inherit', 'pipe', 'ipc'],
      });
      readline.createInterface({ input: child.stderr! }).on('line', (line) => {
        if (/^error/.test(line)) errors.push(line);
        else if (rank === 0) process.stderr.write(line + '\n');
      });
      return new Promise<number>((done) => child.on('exit', (code) => done(code ?? 1)));
    });
    const codes = await Promise.all(children);
    if (codes.every((c) => c === 0)) return 0;
    // Every rank meets the same bad data or weights: say it once.
    process.stderr.write(`${errors[0] ?? `error: an evaluation worker exited with status ${codes.find((c) => c !== 0)}`}\n`);
    return 1;
  } finally {
    await coord.close();
  }
}

async function main(argv: string[]): Promise<number> {
  const cfg = await resolve(argv);
  if (cfg === 'help') {
    process.stdout.write(helpText('Usage: nx run trainer:eval --weights=<run folder|.safetensors|.ckpt> [options]', EVAL_FLAGS) + '\n');
    return 0;
  }
  if (process.env.GOOGLENET_EVAL_CHILD === '1') process.on('disconnect', () => process.exit(1));
  const scheduled = identityFromEnv();
  if (scheduled) {
    await evalRank(cfg, scheduled);
    return 0;
  }
  if (cfg.workers === 1) {
    await evalRank(cfg, { rank: 0, worldSize: 1, localRank: 0, attempt: 0 });
    return 0;
  }
  return launchRanks(cfg, argv);
}

exitWith(main(process.argv.slice(2)));
