/**
 * Where batches get decoded: a pool of worker threads (each with its own Source and sharp on one libvips
 * thread) or, with threads: 0, the calling thread. Both write into the same SharedArrayBuffer ring, so a
 * decoded batch is never copied.
 */
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { Worker } from 'node:worker_threads';
import { BatchDecoder, type BatchBuffers, type BatchResult, type BatchTask, type DecodeConfig } from './decode.js';
import { openSource, type SourceSpec } from './datasets/index.js';
import { DataError, type DataErrorCode } from './errors.js';

export interface TaskMessage {
  id: number;
  buffer: number; // ring index
  task: BatchTask;
}

export interface WorkerReply {
  id: number; // -1: start-up report
  result?: BatchResult;
  error?: { code: string; message: string; path?: string };
}

export interface Executor {
  readonly threads: number; // 0 = calling thread
  run(task: BatchTask, buffer: number): Promise<BatchResult>;
  close(): Promise<void>;
}

export class InlineExecutor implements Executor {
  readonly threads = 0;
  private readonly decoder: BatchDecoder;
  private readonly ring: BatchBuffers[];
  private readonly closeSource: () => void;

  constructor(spec: SourceSpec, cfg: DecodeConfig, ring: BatchBuffers[]) {
    const source = openSource(spec);
    this.decoder = new BatchDecoder(source, cfg);
    this.ring = ring;
    this.closeSource = () => source.close?.();
  }

  run(task: BatchTask, buffer: number): Promise<BatchResult> {
    return this.decoder.fill(task, this.ring[buffer]!);
  }

  async close(): Promise<void> {
    this.closeSource();
  }
}

const toError = (e: NonNullable<WorkerReply['error']>) => new DataError(e.code as DataErrorCode, e.message, e.path === undefined ? {} : { path: e.path });

interface Pending {
  resolve: (r: BatchResult) => void;
  reject: (e: Error) => void;
}

class DecodeThread {
  readonly worker: Worker;
  readonly pending = new Map<number, Pending>();
  dead?: Error;

  constructor(worker: Worker) {
    this.worker = worker;
    worker.on('message', (m: WorkerReply) => {
      const p = this.pending.get(m.id);
      if (!p) return;
      this.pending.delete(m.id);
      this.idleCheck();
      if (m.error) p.reject(toError(m.error));
      else p.resolve(m.result!);
    });
    const die = (err: Error) => {
      this.dead ??= err;
      for (const p of this.pending.values()) p.reject(this.dead);
      this.pending.clear();
    };
    worker.on('error', (e) => die(new DataError('WORKER_FAILED', `a decode thread failed: ${e.message}`, { cause: e })));
    worker.on('exit', (code) => die(new DataError('WORKER_FAILED', `a decode thread exited (code ${code})`)));
  }

  /** An idle worker must not keep the process alive if the user forgets close(). */
  idleCheck(): void {
    if (this.pending.size === 0) this.worker.unref();
    else this.worker.ref();
  }
}

/**
 * The worker entry is a .ts file and neither vitest's transform nor tsx's hooks reach a new thread (on Node 20
 * `execArgv: ['--import', 'tsx']` does not apply the hooks to the worker's entry module). So each worker
 * starts from this small script, which registers tsx's ESM hooks in its own thread and then imports the entry.
 */
function bootstrap(entry: string): string {
  // The ESM build of tsx/esm/api (a require.resolve would give the CJS build, whose register() fails here).
  const tsxDir = dirname(createRequire(import.meta.url).resolve('tsx/package.json'));
  const api = pathToFileURL(join(tsxDir, 'dist/esm/api/index.mjs')).href;
  return `import(${JSON.stringify(api)}).then((m) => { m.register(); return import(${JSON.stringify(entry)}); })`;
}

export class WorkerPool implements Executor {
  readonly threads: number;
  private readonly workers: DecodeThread[];
  private nextId = 0;
  private closed = false;

  private constructor(workers: DecodeThread[]) {
    this.workers = workers;
    this.threads = workers.length;
  }

  /** Starts `n` workers and waits until each has opened its Source (so a bad data folder fails here, once). */
  static async start(n: number, spec: SourceSpec, cfg: DecodeConfig, ring: BatchBuffers[]): Promise<WorkerPool> {
    const url = new URL('./decode-worker.ts', import.meta.url).href;
    const threads: DecodeThread[] = [];
    try {
      for (let i = 0; i < n; i++) {
        const worker = new Worker(bootstrap(url), { eval: true, workerData: { spec, cfg, ring } });
        threads.push(new DecodeThread(worker));
      }
      await Promise.all(
        threads.map(
          (t) =>
            new Promise<void>((resolve, reject) => {
              t.pending.set(-1, { resolve: () => resolve(), reject });
            }),
        ),
      );
    } catch (err) {
      await Promise.all(threads.map((t) => t.worker.terminate()));
      throw err;
    }
    for (const t of threads) t.idleCheck();
    return new WorkerPool(threads);
  }

  run(task: BatchTask, buffer: number): Promise<BatchResult> {
    if (this.closed) return Promise.reject(new DataError('LOADER_CLOSED', 'the data loader is closed'));
    // Least busy worker; ties to the lowest index. Whole batches per worker keep messages few.
    let best = this.workers[0]!;
    for (const w of this.workers) if (w.pending.size < best.pending.size) best = w;
    if (best.dead) return Promise.reject(best.dead);
    const id = this.nextId++;
    return new Promise<BatchResult>((resolve, reject) => {
      best.pending.set(id, { resolve, reject });
      best.idleCheck();
      best.worker.postMessage({ id, buffer, task } satisfies TaskMessage);
    });
  }

  async close(): Promise<void> {
    this.closed = true;
    await Promise.all(this.workers.map((w) => w.worker.terminate()));
  }
}
