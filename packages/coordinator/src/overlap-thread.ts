/**
 * The worker thread of an OverlapExchange (overlap.ts): it maps the job's shm segment a second time (through the
 * descriptor the main thread's plane keeps open) and, per step, exchanges each bucket of the gradient vector as
 * soon as the main thread marks it ready, while the main thread is still inside the backward pass. Its own event
 * loop and V8 isolate are free while the main thread computes, which is the point of running here.
 *
 * Messages in: { type: 'step', tag, cursor } (exchange every bucket of this step), { type: 'close' }.
 * Messages out: { type: 'ready' } once mapped; per step { type: 'done', tag, cursor, times } or
 * { type: 'error', tag, code, message, failedRank }. Bucket readiness and cancellation travel through `ctrl`
 * (Atomics), because the main thread cannot post messages from inside the backward.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { CoordinatorError } from './errors.js';
import { ShmPlane, type ShmCursor } from './shm-plane.js';
import { CTRL_CANCEL, CTRL_READY, type OverlapThreadData } from './overlap-shared.js';

const d = workerData as OverlapThreadData;
const port = parentPort!;
const data = new Float32Array(d.data);
const ctrl = new Int32Array(d.ctrl);
const now = () => performance.timeOrigin + performance.now();

let plane: ShmPlane | null = null;
try {
  plane = ShmPlane.adopt({ path: d.path, rank: d.rank, ranks: d.ranks, chunkElems: d.chunkElems, timeoutMs: d.timeoutMs });
  port.postMessage({ type: 'ready' });
} catch (e) {
  port.postMessage({ type: 'error', tag: 0, code: (e as CoordinatorError).code ?? 'THREAD_FAILED', message: (e as Error).message });
}

/** Blocks this thread until bucket b of step `tag` is ready (true) or the step is cancelled (false). */
function awaitReady(b: number, tag: number): boolean {
  for (;;) {
    const v = Atomics.load(ctrl, CTRL_READY + b);
    if (v === tag) return true;
    if (Atomics.load(ctrl, CTRL_CANCEL) === tag) return false;
    Atomics.wait(ctrl, CTRL_READY + b, v, 100);
  }
}

async function step(tag: number, cursor: ShmCursor): Promise<void> {
  const p = plane!;
  p.setCursor(cursor);
  const times: [number, number][] = [];
  try {
    for (let b = 0; b < d.buckets.length; b++) {
      if (!awaitReady(b, tag)) {
        port.postMessage({ type: 'error', tag, code: 'CLOSED', message: `step cancelled by the main thread before bucket ${b}` });
        return;
      }
      const t0 = now();
      for (const [lo, hi] of d.buckets[b]!) await p.run('mean', 'f32', data.subarray(lo, hi));
      times.push([t0, now()]);
    }
    port.postMessage({ type: 'done', tag, cursor: p.cursor(), times });
  } catch (e) {
    const err = e as CoordinatorError;
    port.postMessage({ type: 'error', tag, code: err.code ?? 'THREAD_FAILED', message: err.message, failedRank: err.failedRank });
  }
}

port.on('message', (m: { type: 'step'; tag: number; cursor: ShmCursor } | { type: 'close' }) => {
  if (m.type === 'close') {
    plane?.release();
    port.close();
  } else if (plane) {
    void step(m.tag, m.cursor);
  }
});
