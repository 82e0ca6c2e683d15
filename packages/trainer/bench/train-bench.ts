/**
 * `nx run trainer:bench`: training throughput of this trainer beside PyTorch's, in one invocation.
 * For each shape (32x32 batch 32 at 10 classes; 224x224 batch 4 at 1000 classes) it runs the real train
 * command with --workers=1 and --workers=2 on synthetic data, reads the per-step figures from metrics.jsonl
 * (median after warm-up), and runs bench/torch_reference.py with 2 threads on the same model, loss and
 * optimizer. Prints a table and one JSON line. Numbers only: no assertion on speed anywhere.
 * --precision=f16 (webgpu) runs every shape and worker count in fp32 and then f16, so the img/s and the profiled
 * step's GPU kernel time of both sit side by side in one table.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseFlags, helpText, type FlagSpec } from '../src/flags';
import { TRAIN_NODE_FLAGS } from '../src/node-flags';
import { allowedCpus, findTaskset, formatCpuList, planCpuBinding } from '../src/cpu-bind';

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, '../../..');

const FLAGS = {
  backend: { type: 'enum', values: ['auto', 'tensorflow', 'webgpu', 'wasm', 'cpu'], default: 'auto', help: 'backend of our runs' },
  workers: { type: 'string', default: '1,2', help: 'worker counts to measure' },
  precision: { type: 'string', default: 'fp32', help: 'compute precisions to measure (fp32, f16, or both: fp32,f16); f16 is always measured beside fp32 in the same invocation' },
  shapes: { type: 'string', default: '32x32,224x4', help: 'SIZExBATCH list' },
  steps: { type: 'int', min: 1, default: 20, help: 'measured steps per run (after the warm-up)' },
  warmup: { type: 'string', default: 'auto', help: 'steps per run before the measured ones; auto: 30 up to 64 px (two workers started together take ~20-30 steps at 32 px to reach their steady pace here, one alone ~10), 10 above' },
  repeat: { type: 'int', min: 1, default: 3, help: 'cpu/wasm: rounds of every run, one after the other (1 worker, 2 workers, ...; again); figures are medians over rounds, ratios taken within each round' },
  torch: { type: 'boolean', default: true, help: 'run the PyTorch reference (/usr/bin/python3 with torch)' },
  'torch-threads': { type: 'int', min: 1, default: 2, help: 'PyTorch threads' },
  overlap: { type: 'enum', values: ['auto', 'on', 'off'], default: 'auto', help: 'passed to the train runs (--overlap: the exchange during the backward, shm plane + wasm/cpu)' },
  scaling: { type: 'boolean', default: true, help: 'cpu/wasm: also run 1 worker with 1 thread, the baseline of scaling2 (2 workers get 1 thread each on 2 cores)' },
  host: { type: 'boolean', default: true, help: 'webgpu: host ms per step on Dawn\'s null backend: stock tfjs kernels, ours, ours replayed' },
  'host-shape': { type: 'string', default: '32x4', help: 'SIZExBATCH of the null-backend runs (the null backend holds 512 MiB: no 224 px step fits)' },
  'host-steps': { type: 'int', min: 6, default: 12, help: 'steps per null-backend run (replay starts at step 4; medians of steps 6 on)' },
  'estimate-shape': { type: 'string', default: '224x64', help: 'SIZExBATCH whose host cost is estimated: us per dispatch x its dispatch count (counted on this machine\'s adapter) + its input upload' },
  help: { type: 'boolean', default: false, help: 'print this help' },
} satisfies Record<string, FlagSpec>;

interface Row {
  shape: string;
  workers: number;
  /** Compute threads per worker (the native kernels'); the launcher gives each worker cores / workers. */
  threads: number;
  precision: string;
  imgPerSec: number;
  ms: { wall: number; data: number; compute: number; reduce: number; apply: number };
  /** webgpu: median compute dispatches per step, and the profiled step's GPU kernel time and busiest kernels. */
  dispatches?: number;
  gpu?: { kernelMs: number; kernels: { name: string; ms: number; calls: number }[] };
}

/**
 * PyTorch on the GPU the webgpu runs are measured on (../shared/ANCHORS.md: NVIDIA H200, PyTorch 2.11, fp32/TF32,
 * the seed's model, SGD momentum, 224x224), quoted rather than run: that machine has no Node.js, and this one no GPU.
 */
const PYTORCH_H200 = { 64: 2105, 256: 3684 } as Record<number, number>;

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length ? (s[(s.length - 1) >> 1]! + s[s.length >> 1]!) / 2 : NaN;
};

/** --warmup: a count, or auto (30 steps up to 64 px, where 2 workers take 20-30 steps to settle; 10 above). */
function warmupSteps(v: string, size: number): number {
  if (v === 'auto') return size <= 64 ? 30 : 10;
  const n = Number(v);
  if (!Number.isInteger(n) || n < 0) throw new Error(`--warmup=${v}: expected auto or a whole number of steps >= 0`);
  return n;
}

/** Steps of each train run: the warm-up, then the measured ones (webgpu: one more, profiled). */
function runSteps(f: Record<string, unknown>): number {
  return (f.warmup as number) + (f.steps as number) + (f.backend === 'webgpu' ? 1 : 0);
}

/**
 * --synthetic-size for a run of `workers` x `batch`: one sample more than the run reads, so that no run reaches an
 * epoch end, where rank 0 writes a checkpoint (~110 MB at 10 classes) and the other ranks wait for it. With the
 * default 3,000 images a 2-worker run at 32 px batch 32 ended its epoch at step 47 of 50, inside the measured steps,
 * and 1 worker never did: the steps after the checkpoint took 20-70 ms longer and counted against 2 workers only.
 * Small enough to be drawn once and kept in memory at every bench shape (the dataloader's synthetic source), as the
 * in-memory data sets are: at 224 px, 248 images instead of 3,000 drawn at every read (~1.5 ms each).
 */
function syntheticSize(workers: number, batch: number, f: Record<string, unknown>): string {
  return `--synthetic-size=${workers * batch * (runSteps(f) + 1)},1000`;
}

/** The step records of a run folder's metrics.jsonl; the folder is removed. */
function stepRecords(out: string): any[] {
  const all = fs.readFileSync(path.join(out, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l)).filter((x) => x.type === 'step');
  fs.rmSync(out, { recursive: true, force: true });
  return all;
}

/** Two independent 1-worker runs at once: img/s summed, and the median compute and apply ms of their steps. */
interface Pair { imgPerSec: number; compute: number; apply: number }

/**
 * What this machine gives two processes at once with no exchange at all: two independent --workers=1 runs with one
 * thread each, started together; img/s summed. scaling2 can reach at most ceiling2 = this / one such run alone
 * (shared caches, memory bandwidth, and whatever else runs here): the exchange's share of the loss is what is left.
 * Each is bound to the cores the launcher would give that rank of a 2-worker run (--cpu-bind=auto), where it binds.
 */
function independentPair(size: number, batch: number, classes: number, f: Record<string, unknown>): Pair {
  const outs = [0, 1].map(() => fs.mkdtempSync(path.join(os.tmpdir(), 'googlenet-bench-')));
  const bind = planCpuBinding({ choice: 'auto', workers: 2, cpus: allowedCpus(), taskset: findTaskset() });
  const cmd = outs.map((out, k) => [...('sets' in bind ? [bind.taskset, '-c', formatCpuList(bind.sets[k]!)] : []), tsx, ...TRAIN_NODE_FLAGS, path.join(root, 'packages/trainer/src/cli/train.ts'), `--image-size=${size}`, `--batch-size=${batch}`,
    `--num-classes=${classes}`, `--steps=${runSteps(f)}`, '--workers=1', syntheticSize(1, batch, f), `--backend=${f.backend}`, '--no-eval', `--out=${out}`, '--log-every=1000',
    '--tensorboard=false'].map((a) => `'${a}'`).join(' ') + ' >/dev/null &').join(' ') + ' wait';
  const r = spawnSync('bash', ['-c', cmd], { cwd: root, encoding: 'utf8', env: { ...process.env, GOOGLENET_NATIVE_THREADS: '1' } });
  if (r.status !== 0) throw new Error(`independent pair failed:\n${r.stderr.slice(-2000)}`);
  const runs = outs.map((out) => stepRecords(out).filter((x) => x.step > (f.warmup as number)));
  const both = runs.flat();
  return {
    imgPerSec: runs.map((steps) => median(steps.map((x) => x.imgPerSec as number))).reduce((a, b) => a + b, 0),
    compute: median(both.map((x) => x.ms.compute as number)), apply: median(both.map((x) => x.ms.apply as number)),
  };
}

function ours(size: number, batch: number, classes: number, workers: number, precision: string, f: Record<string, unknown>, threads?: number): Row {
  const out = fs.mkdtempSync(path.join(os.tmpdir(), 'googlenet-bench-'));
  // webgpu: the last step runs with a timestamp query around every kernel (GPU time per kernel); it is slower,
  // so it is left out of the throughput figures.
  const profile = f.backend === 'webgpu' ? runSteps(f) : 0;
  // As `nx run trainer:train` runs it (project.json): with the training V8 flags.
  const args = [
    ...TRAIN_NODE_FLAGS, path.join(root, 'packages/trainer/src/cli/train.ts'), `--image-size=${size}`, `--batch-size=${batch}`, `--num-classes=${classes}`,
    `--steps=${runSteps(f)}`, `--workers=${workers}`, syntheticSize(workers, batch, f), `--backend=${f.backend}`, '--no-eval', `--out=${out}`, '--log-every=1000',
    `--profile-step=${profile}`, `--precision=${precision}`,
    ...(workers > 1 ? [`--overlap=${f.overlap}`] : []),
  ];
  // The launcher gives each worker floor(cores / workers) native threads; `threads` pins it (the scaling baseline).
  const env = threads === undefined ? process.env : { ...process.env, GOOGLENET_NATIVE_THREADS: String(threads) };
  const r = spawnSync(path.join(root, 'node_modules/.bin/tsx'), args, { cwd: root, encoding: 'utf8', env });
  if (r.status !== 0) throw new Error(`train run failed (${size}x${batch}, ${workers} workers):\n${r.stderr.slice(-2000)}`);
  const all = stepRecords(out);
  const steps = all.filter((x) => x.step > (f.warmup as number) && x.step !== profile);
  const profiled = all.find((x) => x.step === profile && x.gpu);
  const ms = (k: string) => median(steps.map((s) => s.ms[k] as number));
  const row: Row = {
    shape: `${size}x${size} b${batch}`, workers, precision,
    threads: threads ?? Math.max(1, Math.floor(os.availableParallelism() / workers)),
    imgPerSec: median(steps.map((s) => s.imgPerSec as number)),
    ms: { wall: ms('wall'), data: ms('data'), compute: ms('compute'), reduce: ms('reduce'), apply: ms('apply') },
  };
  if (steps.some((s) => s.dispatches !== undefined)) row.dispatches = median(steps.map((s) => s.dispatches as number));
  if (profiled) row.gpu = profiled.gpu;
  return row;
}

/**
 * scaling2: img/s of 2 workers (one thread each) over 1 worker with one thread, fp32: what the exchange lets data
 * parallelism keep. scaling2Default: over 1 worker with the launcher's default threads (all cores). reducePct: the
 * 2-worker step's reduce phase as a share of its wall time.
 */
interface Scaling {
  scaling2?: number; scaling2Default?: number; reducePct?: number; ceiling2?: number; pairImgPerSec?: number;
  /** The independent pair's median phases (ms per step), beside the 2-worker row's. */
  pairMs?: { compute: number; apply: number };
  /** --repeat > 1: scaling2 and ceiling2 of each round (the figures above are their medians). */
  rounds?: { scaling2?: number; ceiling2?: number }[];
}

function scaling(rows: Row[], pair?: Pair): Scaling {
  const fp32 = rows.filter((r) => r.precision === 'fp32');
  const two = fp32.find((r) => r.workers === 2);
  if (!two) return {};
  const oneThread = fp32.find((r) => r.workers === 1 && r.threads === 1);
  const oneDefault = fp32.find((r) => r.workers === 1 && r.threads !== 1) ?? oneThread;
  return {
    scaling2: oneThread ? two.imgPerSec / oneThread.imgPerSec : undefined,
    scaling2Default: oneDefault ? two.imgPerSec / oneDefault.imgPerSec : undefined,
    reducePct: (100 * two.ms.reduce) / two.ms.wall,
    ...(pair && oneThread ? { pairImgPerSec: pair.imgPerSec, ceiling2: pair.imgPerSec / oneThread.imgPerSec, pairMs: { compute: pair.compute, apply: pair.apply } } : {}),
  };
}

/** Per run (same position in every round): median img/s and phases over the rounds. */
function medianRows(rounds: Row[][]): Row[] {
  return rounds[0]!.map((first, i) => {
    const same = rounds.map((r) => r[i]!);
    const ms = (k: keyof Row['ms']) => median(same.map((r) => r.ms[k]));
    return { ...first, imgPerSec: median(same.map((r) => r.imgPerSec)), ms: { wall: ms('wall'), data: ms('data'), compute: ms('compute'), reduce: ms('reduce'), apply: ms('apply') } };
  });
}

/** Ratios of each round (same minute), their medians; img/s and reducePct from the median rows. */
function medianScaling(rounds: Scaling[], ofMedians: Scaling): Scaling {
  const med = (k: 'scaling2' | 'scaling2Default' | 'ceiling2') => {
    const xs = rounds.map((r) => r[k]).filter((x): x is number => x !== undefined);
    return xs.length ? median(xs) : undefined;
  };
  return { ...ofMedians, scaling2: med('scaling2'), scaling2Default: med('scaling2Default'), ceiling2: med('ceiling2'),
    rounds: rounds.map((r) => ({ scaling2: r.scaling2, ceiling2: r.ceiling2 })) };
}

/** One null-backend configuration of the host table. */
interface HostRow {
  mode: 'stock tfjs kernels' | 'our kernels' | 'our kernels, replayed';
  shape: string;
  dispatches: number;
  /** CPU ms of the process per step (median), all threads: the host cost. */
  hostMsPerStep: number;
  usPerDispatch: number;
  /** Wall ms per step, median and best (the floor on a shared machine). */
  wallMs: number;
  wallBest: number;
  /** Dispatches of the step at --estimate-shape (count-dispatches.ts). */
  estimateDispatches?: number;
  /** The estimate at --estimate-shape: usPerDispatch x its dispatches + its per-step input upload (replay). */
  estimateMsPerStep?: number;
}

const HOST_MODES: { mode: HostRow['mode']; env: Record<string, string> }[] = [
  { mode: 'stock tfjs kernels', env: { GOOGLENET_WEBGPU_KERNELS: '0', GOOGLENET_WEBGPU_REPLAY: '0' } },
  { mode: 'our kernels', env: { GOOGLENET_WEBGPU_REPLAY: '0' } },
  { mode: 'our kernels, replayed', env: {} },
];

const tsx = path.join(root, 'node_modules/.bin/tsx');

/**
 * Host ms per training step on Dawn's null backend (commands validated, nothing executed): what tfjs and Dawn
 * cost the CPU whatever the GPU, at `size` x `batch`, 1000 classes. The median wall time of the steps after the
 * replay began (step 4) and one more.
 */
function hostRun(size: number, batch: number, steps: number, mode: (typeof HOST_MODES)[number]): HostRow {
  const out = fs.mkdtempSync(path.join(os.tmpdir(), 'googlenet-host-'));
  const args = [path.join(root, 'packages/trainer/src/cli/train.ts'), `--image-size=${size}`, `--batch-size=${batch}`, '--num-classes=1000',
    `--steps=${steps}`, '--workers=1', '--backend=webgpu', '--no-eval', `--out=${out}`, '--log-every=1000', '--tensorboard=false'];
  const r = spawnSync(tsx, args, { cwd: root, encoding: 'utf8', env: { ...process.env, DAWNNODE_BACKEND: 'null', ...mode.env } });
  const file = path.join(out, 'metrics.jsonl');
  const all = fs.existsSync(file) ? fs.readFileSync(file, 'utf8').trim().split('\n').map((l) => JSON.parse(l)).filter((x) => x.type === 'step') : [];
  fs.rmSync(out, { recursive: true, force: true });
  // The end of a run (the weights digest, model.safetensors) reads every weight at once, which can exceed the
  // null backend's 512 MiB with tfjs's stock kernels; the steps measured are complete by then.
  if (all.length < steps) throw new Error(`null-backend run failed (${mode.mode}, exit ${r.status}):\n${r.stderr.slice(-2000)}`);
  const late = all.filter((x) => x.step >= 6);
  const dispatches = median(late.map((x) => x.dispatches as number));
  const wallMs = median(late.map((x) => x.ms.wall as number));
  const wallBest = Math.min(...late.map((x) => x.ms.wall as number));
  // CPU time of the process per step: on this shared 2-core VM the wall time also measures the neighbours.
  const hostMsPerStep = median(late.map((x) => x.ms.cpu as number));
  return { mode: mode.mode, shape: `${size}x${size} b${batch}`, dispatches, hostMsPerStep, wallMs, wallBest, usPerDispatch: (hostMsPerStep * 1000) / dispatches };
}

/** A bench script's JSON line (count-dispatches.ts, replay-inputs.ts), or undefined with the reason on stderr. */
function scriptJson(script: string, args: string[], env: Record<string, string>): Record<string, unknown> | undefined {
  const r = spawnSync(tsx, [path.join(here, script), ...args], { cwd: root, encoding: 'utf8', env: { ...process.env, ...env } });
  const line = r.stdout.split('\n').find((l) => l.startsWith('{'));
  if (r.status !== 0 || !line) {
    process.stderr.write(`${script} failed (exit ${r.status}): ${r.stderr.split('\n').filter((l) => l.trim()).slice(-3).join(' | ')}\n`);
    return undefined;
  }
  return JSON.parse(line) as Record<string, unknown>;
}

function hostTable(f: Record<string, unknown>): { rows: HostRow[]; estimate: { shape: string; dispatches?: number; uploadMs?: number } } {
  const [size, batch] = String(f.hostShape).split('x').map(Number) as [number, number];
  const rows = HOST_MODES.map((m) => hostRun(size, batch, f.hostSteps as number, m));
  const [es, eb] = String(f.estimateShape).split('x').map(Number) as [number, number];
  // Counted on this machine's adapter while encoded, never submitted (lavapipe in CI); lazy clears off so that
  // the CPU adapter does not zero gigabytes of buffers nothing will use. Stock tfjs kernels and ours differ.
  const count = (env: Record<string, string>) => scriptJson('count-dispatches.ts', [`--image-size=${es}`, `--batch-size=${eb}`, '--num-classes=1000'],
    { GOOGLENET_DAWN_FLAGS: 'disable-dawn-features=lazy_clear_resource_on_first_use', ...env })?.dispatches as number | undefined;
  const dispatches = { stock: count({ GOOGLENET_WEBGPU_KERNELS: '0' }), ours: count({}) };
  const inputs = scriptJson('replay-inputs.ts', [`--image-size=${es}`, `--batch-size=${eb}`], { DAWNNODE_BACKEND: 'null' });
  const uploadMs = inputs ? (inputs.uploadMs as number) + (inputs.keysMs as number) : undefined;
  for (const r of rows) {
    const n = r.mode === 'stock tfjs kernels' ? dispatches.stock : dispatches.ours;
    r.estimateDispatches = n;
    // The replayed step's inputs are uploaded at the estimated shape's size (the measured run's are tiny).
    if (n !== undefined) r.estimateMsPerStep = (r.usPerDispatch * n) / 1000 + (r.mode === 'our kernels, replayed' ? uploadMs ?? NaN : 0);
  }
  return { rows, estimate: { shape: `${es}x${es} b${eb}`, uploadMs } };
}

function torchRef(size: number, batch: number, classes: number, threads: number): number | undefined {
  try {
    const line = execFileSync('/usr/bin/python3', [path.join(here, 'torch_reference.py'), `--size=${size}`, `--batch=${batch}`, `--classes=${classes}`, `--threads=${threads}`, '--warmup=2', `--iters=${size >= 224 ? 4 : 6}`], { encoding: 'utf8' })
      .split('\n').find((l) => l.startsWith('RESULT '));
    return line ? (JSON.parse(line.slice(7)).imgPerSec as number) : undefined;
  } catch (e) {
    process.stderr.write(`PyTorch reference unavailable (${(e as Error).message.split('\n')[0]}); install it with: apt-get install python3-torch\n`);
    return undefined;
  }
}

function main() {
  const flags = parseFlags(process.argv.slice(2), FLAGS);
  const f = flags;
  if (f.help) {
    console.log(helpText('Usage: nx run trainer:bench [options]', FLAGS));
    return;
  }
  const workers = String(f.workers).split(',').map(Number);
  const asked = String(f.precision).split(',');
  if (asked.some((p) => p !== 'fp32' && p !== 'f16')) throw new Error(`--precision=${f.precision}: expected fp32, f16 or fp32,f16`);
  // f16 figures mean something only beside fp32 from the same invocation (same machine state, same neighbours).
  const precisions = asked.includes('f16') ? ['fp32', 'f16'] : ['fp32'];
  // --shapes=none: only the host table (webgpu).
  const shapes = f.shapes === 'none' ? [] : String(f.shapes).split(',').map((s) => s.split('x').map(Number) as [number, number]);
  const results: { shape: string; ours: Row[]; best: number; pytorch?: number; ratio?: number; scaling?: Scaling }[] = [];
  for (const [size, batch] of shapes) {
    const classes = size >= 224 ? 1000 : 10;
    const f: Record<string, unknown> = { ...flags, warmup: warmupSteps(flags.warmup as string, size) };
    // Data-parallel scaling holds the compute per worker fixed, as torchrun with OMP_NUM_THREADS=1 per rank: one
    // worker with one thread beside N workers with one each. A lone worker's default (all cores) is a different
    // question, answered by its own row.
    const cpuRun = f.backend !== 'webgpu';
    const perCore = Math.floor(os.availableParallelism() / Math.max(...workers));
    // A shared VM drifts by 10-20 % from minute to minute: every run is repeated in rounds, and a ratio is taken
    // within one round (runs minutes apart compare the machine's moods, not the trainer).
    const rounds = Array.from({ length: cpuRun ? (f.repeat as number) : 1 }, () => {
      const rows = workers.flatMap((w) => precisions.map((p) => ours(size, batch, classes, w, p, f)));
      let pair: Pair | undefined;
      if (cpuRun && f.scaling && workers.includes(1) && workers.some((w) => w > 1) && perCore === 1) {
        rows.push(...precisions.map((p) => ours(size, batch, classes, 1, p, f, 1)));
        if (workers.includes(2)) pair = independentPair(size, batch, classes, f);
      }
      return { rows, pair, scaling: scaling(rows, pair) };
    });
    const rows = medianRows(rounds.map((r) => r.rows));
    const pairs = rounds.map((r) => r.pair).filter((x): x is Pair => x !== undefined);
    const pair = pairs.length ? { imgPerSec: median(pairs.map((p) => p.imgPerSec)), compute: median(pairs.map((p) => p.compute)), apply: median(pairs.map((p) => p.apply)) } : undefined;
    const scalingOf = rounds.length === 1 ? rounds[0]!.scaling : medianScaling(rounds.map((r) => r.scaling), scaling(rows, pair));
    const best = Math.max(...rows.map((r) => r.imgPerSec));
    // On webgpu the anchor is PyTorch on the same GPU (quoted); a CPU PyTorch run would compare nothing.
    const gpuAnchor = f.backend === 'webgpu' ? PYTORCH_H200[batch] : undefined;
    const pytorch = f.backend === 'webgpu' ? gpuAnchor : f.torch ? torchRef(size, batch, classes, f.torchThreads as number) : undefined;
    results.push({ shape: `${size}x${size} b${batch} (${classes} classes)`, ours: rows, best, pytorch, ratio: pytorch ? best / pytorch : undefined, scaling: scalingOf });
  }
  const fmt = (x: number | undefined, d = 1) => (x === undefined || !Number.isFinite(x) ? '-' : x.toFixed(d));
  console.log('\ntraining throughput (images/s, all workers together; phases are median ms per step on rank 0)\n');
  const gpuRun = f.backend === 'webgpu';
  const ref = gpuRun ? 'PyTorch H200 fp32 (ANCHORS.md)' : 'PyTorch 2 threads';
  console.log(`| shape | workers | threads | precision | img/s | data | compute | reduce | apply |${gpuRun ? ' dispatches | GPU ms |' : ''} ${ref} | best/PyTorch |`);
  console.log(`|---|---|---|---|---|---|---|---|---|${gpuRun ? '---|---|' : ''}---|---|`);
  for (const r of results) {
    r.ours.forEach((o, i) => {
      const gpuCols = gpuRun ? ` ${fmt(o.dispatches, 0)} | ${fmt(o.gpu?.kernelMs)} |` : '';
      console.log(`| ${r.shape} | ${o.workers} | ${o.threads} | ${o.precision} | ${fmt(o.imgPerSec)} | ${fmt(o.ms.data)} | ${fmt(o.ms.compute)} | ${fmt(o.ms.reduce)} | ${fmt(o.ms.apply)} |${gpuCols} ${i === 0 ? fmt(r.pytorch) : ''} | ${i === 0 ? fmt(r.ratio, 2) : ''} |`);
    });
  }
  for (const r of results) {
    const s = r.scaling;
    if (s?.reducePct !== undefined) {
      console.log(`\n${r.shape}: reduce ${fmt(s.reducePct)} % of the 2-worker step; 2 workers / 1 worker (1 thread each): ` +
        `scaling2 ${fmt(s.scaling2, 2)}x; over 1 worker with the default threads: ${fmt(s.scaling2Default, 2)}x` +
        (s.ceiling2 !== undefined ? `; two independent 1-thread runs at once (no exchange): ${fmt(s.pairImgPerSec)} img/s = ceiling2 ${fmt(s.ceiling2, 2)}x` +
          ` (their compute ${fmt(s.pairMs?.compute)} ms, apply ${fmt(s.pairMs?.apply)} ms per step)` : '') +
        (s.rounds ? `\n  medians over ${s.rounds.length} rounds; per round scaling2 ${s.rounds.map((x) => fmt(x.scaling2, 2)).join(' / ')}` +
          (s.rounds.some((x) => x.ceiling2 !== undefined) ? `, ceiling2 ${s.rounds.map((x) => fmt(x.ceiling2, 2)).join(' / ')}` : '') : ''));
    }
  }
  for (const r of results) {
    for (const o of r.ours) {
      if (o.gpu) console.log(`\n${r.shape}, ${o.workers} worker(s), ${o.precision}, profiled step: GPU kernel time ${o.gpu.kernelMs.toFixed(1)} ms; busiest: ${o.gpu.kernels.slice(0, 8).map((k) => `${k.name} ${k.ms.toFixed(1)} ms x${k.calls}`).join(', ')}`);
    }
  }
  let host: ReturnType<typeof hostTable> | undefined;
  if (gpuRun && f.host) {
    host = hostTable(f);
    const e = host.estimate;
    console.log(`\nhost side of a training step on Dawn's null backend (commands validated, nothing executed; 1000 classes): CPU ms of the process per step` +
      ` (median of steps 6-${f.hostSteps}; wall time beside it) measured at ${host.rows[0]!.shape}; at ${e.shape}, which the null backend's 512 MiB cannot hold,` +
      ` estimated as the measured CPU us/dispatch x that shape's dispatches, counted on this machine's adapter` +
      `${e.uploadMs !== undefined ? `, + ${e.uploadMs.toFixed(1)} ms to upload its batch for the replay` : ''}\n`);
    console.log(`| mode | dispatches (${host.rows[0]!.shape}) | hostMsPerStep (CPU) | wall median / best | us/dispatch | dispatches (${e.shape}) | hostMsPerStep at ${e.shape} (estimated) |`);
    console.log('|---|---|---|---|---|---|---|');
    for (const r of host.rows) {
      console.log(`| ${r.mode} | ${fmt(r.dispatches, 0)} | ${fmt(r.hostMsPerStep)} | ${fmt(r.wallMs)} / ${fmt(r.wallBest)} | ${fmt(r.usPerDispatch)} | ${fmt(r.estimateDispatches, 0)} | ${fmt(r.estimateMsPerStep)} |`);
    }
  }
  const replayed = host?.rows.find((r) => r.mode === 'our kernels, replayed');
  const stock = host?.rows.find((r) => r.mode === 'stock tfjs kernels');
  console.log('\n' + JSON.stringify({
    bench: 'trainer', backend: f.backend, cpus: os.cpus().length,
    ...(results[0]?.scaling?.reducePct !== undefined ? { scaling2: results[0].scaling.scaling2, ceiling2: results[0].scaling.ceiling2, reducePct: results[0].scaling.reducePct } : {}),
    results,
    ...(host ? { hostMsPerStep: replayed?.estimateMsPerStep ?? replayed?.hostMsPerStep, hostMsPerStepStock: stock?.estimateMsPerStep ?? stock?.hostMsPerStep, host } : {}),
  }));
}

main();
