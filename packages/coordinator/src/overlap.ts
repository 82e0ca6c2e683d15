/**
 * Overlap of the gradient exchange with the backward pass, on the shared-memory plane (client.openOverlap).
 *
 * The main thread cannot move a byte while TensorFlow.js runs the backward (one synchronous call that blocks its
 * event loop), but a worker thread does not need that event loop. So the exchange of a step runs in a thread of
 * its own (overlap-thread.ts) over a second mapping of the same segment: the trainer writes each parameter's
 * gradient into `data` (a SharedArrayBuffer) as the backward produces it, marks a bucket ready (`ready(b)`) once
 * all of its values are in, and the thread averages that bucket over the ranks in place, bucket after bucket, in
 * the order given (reverse layer order, as DDP), while the backward goes on. `finish()` waits for the last bucket.
 *
 * Every bucket is one or more ordinary collectives of the plane (same kernels, same exact mean, same checks), so
 * the bytes equal those of one all-reduce of the whole vector. The segment sees one sequence of collectives: the
 * client lends its plane's cursor to the thread for the step (`begin`) and takes it back (`finish`); meanwhile
 * the client refuses other collectives (BUSY). The coordinator is not told of the bucket collectives: the trainer
 * announces the step's all-reduce as before (allReduce with `preReduced`), so step counts, /status and the round
 * timeout keep their meaning; the thread's waits have the plane's own timeout, abort word and pid checks.
 */
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { Worker } from 'node:worker_threads';
import { CoordinatorError, type CoordinatorErrorCode } from './errors.js';
import { CTRL_CANCEL, CTRL_READY, type BucketRanges, type OverlapThreadData } from './overlap-shared.js';
import type { ShmCursor, ShmPlane } from './shm-plane.js';

export type { BucketRanges } from './overlap-shared.js';

/** What an exchange needs from the client that owns the plane (client.ts). */
export interface OverlapHost {
  /** The plane's cursor; the client refuses other collectives until giveBack. Throws when it cannot lend (busy, failed). */
  lend(): ShmCursor;
  /** Returns the cursor after a step; with `err` instead, fails the client (every later call rejects with it). */
  giveBack(cursor: ShmCursor | null, err?: CoordinatorError): void;
}

/** One step's exchange, as the thread saw it. */
export interface OverlapTiming {
  /** Per bucket: when the thread started and finished its exchange (ms since the epoch, comparable across threads). */
  buckets: [number, number][];
  /** How long finish() waited for the thread (ms). */
  waitMs: number;
}

interface InFlight { tag: number; resolve: (t: OverlapTiming) => void; reject: (e: CoordinatorError) => void; t0: number }

export class OverlapExchange {
  private tag = 0;
  private inFlight: InFlight | null = null;
  /** Set once the thread can no longer be used (it died, or a step failed); every later call rejects with it. */
  private failure: CoordinatorError | null = null;
  private closed = false;
  private readonly ctrl: Int32Array;

  private constructor(private readonly worker: Worker, private readonly host: OverlapHost, ctrl: SharedArrayBuffer, readonly buckets: number) {
    this.ctrl = new Int32Array(ctrl);
    worker.on('message', (m: { type: string; tag: number; code?: CoordinatorErrorCode; message?: string; failedRank?: number; cursor?: ShmCursor; times?: [number, number][] }) => {
      const f = this.inFlight;
      if (!f || m.tag !== f.tag) return;
      this.inFlight = null;
      if (m.type === 'done') {
        this.host.giveBack(m.cursor!);
        f.resolve({ buckets: m.times!, waitMs: performance.now() - f.t0 });
      } else {
        this.fail(new CoordinatorError(m.code ?? 'THREAD_FAILED', `overlap thread: ${m.message}`, m.failedRank), f);
      }
    });
    const died = (why: string) => {
      if (this.closed) return;
      this.fail(new CoordinatorError('THREAD_FAILED', `the overlap thread ${why}; the step's exchange cannot finish (restart the job, or --overlap=off)`), this.inFlight);
    };
    worker.on('error', (e) => died(`failed: ${e.message}`));
    worker.on('exit', (code) => died(`exited (code ${code})`));
    worker.unref();
  }

  /**
   * Starts the thread and maps the segment in it. `data` must be backed by a SharedArrayBuffer; `buckets` are
   * flat ranges of it, disjoint, in exchange order, equal on every rank (checked only by length).
   */
  static async start(host: OverlapHost, plane: ShmPlane, timeoutMs: number, data: Float32Array, buckets: BucketRanges[]): Promise<OverlapExchange> {
    if (!(data.buffer instanceof SharedArrayBuffer)) throw new CoordinatorError('INVALID_OPTIONS', 'overlap: the vector must live in a SharedArrayBuffer (the thread reads and writes it in place)');
    for (const b of buckets) {
      for (const [lo, hi] of b) {
        if (!(Number.isInteger(lo) && Number.isInteger(hi) && lo >= 0 && lo < hi && hi <= data.length)) {
          throw new CoordinatorError('INVALID_OPTIONS', `overlap: bucket range [${lo}, ${hi}) is not inside the vector of ${data.length} values`);
        }
      }
    }
    const ctrl = new SharedArrayBuffer(4 * (CTRL_READY + buckets.length));
    const wd: OverlapThreadData = {
      path: plane.threadPath(), rank: plane.rank, ranks: plane.ranks, chunkElems: plane.chunkElems, timeoutMs,
      // Views into the caller's vector: the thread sees the whole buffer and offsets by the view's start.
      data: data.buffer as SharedArrayBuffer, ctrl,
      buckets: buckets.map((b) => b.map(([lo, hi]) => [lo + data.byteOffset / 4, hi + data.byteOffset / 4] as [number, number])),
    };
    const worker = new Worker(bootstrap(new URL('./overlap-thread.ts', import.meta.url).href), { eval: true, workerData: wd });
    await new Promise<void>((resolve, reject) => {
      const onMessage = (m: { type: string; code?: CoordinatorErrorCode; message?: string }) => {
        cleanup();
        if (m.type === 'ready') resolve();
        else reject(new CoordinatorError(m.code ?? 'THREAD_FAILED', `overlap thread: ${m.message}`));
      };
      const onError = (e: Error) => { cleanup(); reject(new CoordinatorError('THREAD_FAILED', `the overlap thread failed to start: ${e.message}`)); };
      const onExit = (code: number) => { cleanup(); reject(new CoordinatorError('THREAD_FAILED', `the overlap thread exited at start (code ${code})`)); };
      const cleanup = () => { worker.off('message', onMessage); worker.off('error', onError); worker.off('exit', onExit); };
      worker.on('message', onMessage);
      worker.on('error', onError);
      worker.on('exit', onExit);
    }).catch(async (e) => {
      await worker.terminate();
      throw e;
    });
    return new OverlapExchange(worker, host, ctrl, buckets.length);
  }

  /**
   * Opens a step: the thread takes the plane's cursor and waits for bucket 0. Call before the backward; then
   * ready(b) for every bucket (any order; they are exchanged in order) and finish().
   */
  begin(): void {
    if (this.failure) throw this.failure;
    if (this.closed) throw new CoordinatorError('CLOSED', 'this overlap exchange was closed');
    if (this.inFlight) throw new CoordinatorError('BUSY', 'an overlapped step is already in progress; finish() it first');
    const cursor = this.host.lend();
    const tag = ++this.tag;
    let resolve!: (t: OverlapTiming) => void, reject!: (e: CoordinatorError) => void;
    const done = new Promise<OverlapTiming>((res, rej) => { resolve = res; reject = rej; });
    done.catch(() => {}); // observed by finish(); a step cancelled before it must not be an unhandled rejection
    this.inFlight = { tag, resolve, reject, t0: 0 };
    this.done = done;
    this.worker.postMessage({ type: 'step', tag, cursor });
  }

  private done: Promise<OverlapTiming> | null = null;

  /** Bucket b's values are all written for this step (synchronous: usable inside the backward). */
  ready(b: number): void {
    Atomics.store(this.ctrl, CTRL_READY + b, this.tag);
    Atomics.notify(this.ctrl, CTRL_READY + b);
  }

  /** Waits until every bucket of the step is exchanged (marks nothing ready itself). Rejects with the step's failure. */
  async finish(): Promise<OverlapTiming> {
    if (!this.done) throw new CoordinatorError('INVALID_OPTIONS', 'overlap: finish() without begin()');
    if (this.inFlight) this.inFlight.t0 = performance.now();
    const done = this.done;
    this.done = null;
    return done;
  }

  /**
   * The main thread failed inside the step: stops the thread at its next bucket and fails the client with `err`
   * (which also fails, at once, any collective the other ranks wait in for this rank).
   */
  cancel(err: CoordinatorError): void {
    Atomics.store(this.ctrl, CTRL_CANCEL, this.tag);
    for (let b = 0; b < this.buckets; b++) Atomics.notify(this.ctrl, CTRL_READY + b);
    this.fail(err, this.inFlight);
    this.done = null;
  }

  /** Stops the thread (its mapping goes; the client's plane stays). */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    Atomics.store(this.ctrl, CTRL_CANCEL, this.tag);
    for (let b = 0; b < this.buckets; b++) Atomics.notify(this.ctrl, CTRL_READY + b);
    await new Promise<void>((resolve) => {
      const t = setTimeout(() => { void this.worker.terminate().then(() => resolve()); }, 2000);
      this.worker.once('exit', () => { clearTimeout(t); resolve(); });
      this.worker.postMessage({ type: 'close' });
    });
  }

  private fail(err: CoordinatorError, f: InFlight | null): void {
    if (!this.failure) {
      this.failure = err;
      this.host.giveBack(null, err);
    }
    this.inFlight = null;
    f?.reject(this.failure);
  }
}

/**
 * The thread's entry is a .ts file, and neither vitest's transform nor tsx's hooks reach a new thread on Node 20,
 * so it starts from a small script that registers tsx in its own thread first (as the data loader's pool does).
 */
function bootstrap(entry: string): string {
  const tsxDir = dirname(createRequire(import.meta.url).resolve('tsx/package.json'));
  const api = pathToFileURL(join(tsxDir, 'dist/esm/api/index.mjs')).href;
  return `import(${JSON.stringify(api)}).then((m) => { m.register(); return import(${JSON.stringify(entry)}); })`;
}
