import { setImmediate as yieldLoop } from 'node:timers/promises';
import { CoordinatorError } from './errors.js';
import { shardRange } from './peer.js';
import type { DType, Op } from './protocol.js';
import { shmAddon, shmUnavailable, type ShmAddon } from './shm-native.js';

/**
 * The shared-memory data plane: ranks on one machine exchange tensor bytes through one file under /dev/shm that
 * every rank maps (native/shm.cc), instead of loopback TCP. The coordinator's WebSocket stays the control plane.
 *
 * The vector is processed in chunks of C elements. Each chunk k uses buffer k % 2 of the segment: R input slots of
 * C floats and one result area. An all-reduce of chunk k on rank `me`:
 *   1. copy-in: this rank's values of every shard but its own into slot `me` (binary16-rounded for fp16);
 *   2. reduce: once every rank has copied in, rank s averages shard s of the chunk (`shardRange`) over the R slots,
 *      its own values read in place from `data`, with the project's exact mean (src/reduce.ts: float64 sum in rank
 *      order, one rounding; for fp16 rounded to binary16 again), into the result area and into its own `data`;
 *   3. copy-out: once every shard is reduced, each rank copies the other shards' results into its `data`.
 * One result buffer per shard is read by every rank, so all ranks hold identical bytes, equal to the peer and
 * coordinator planes' (which sum the same values in the same order). Double buffering lets chunk k+1's copy-in
 * start while slow ranks still copy out chunk k. A broadcast is rank 0's chunk in the result area, copied out by
 * the others.
 *
 * Metrics (at most 64 float64 values) travel with the first step: each rank writes its own, and after the first
 * wait every rank sums them in rank order from 0, as the coordinator does. With them and the per-collective
 * descriptor check (op, dtype, length, metrics count) the plane needs no answer from the coordinator before it
 * resolves: the client still announces every collective there, but only for the job's bookkeeping.
 *
 * Progress: each rank has a 64-bit counter (collective q, step) in its own cache line; a rank waits until every
 * other counter reached a step (spin, then yield, then futex), in slices of SLICE_MS so that the event loop (the
 * coordinator's abort) runs in between. A wait also ends on the segment's abort word (set by the first rank that
 * gives up: timeout, a peer's process gone, a mismatch, close mid-collective) and when a rank it waits for no longer
 * exists (its pid, checked every 2 ms): the others fail at once with ROUND_ABORTED naming it.
 *
 * Registered slots (`sharedElems`, the zero-copy path): the segment can also hold one slot of sharedElems floats per
 * rank, which the trainer uses as its gradient buffer (`slot()`), so gradients are written straight into shared
 * memory. A collective on a range of this rank's slot then has two steps: 1. every rank has written its slot (and its
 * descriptor and metrics); 2. rank s has averaged shard s of the range over the R slots (same exact mean) and written
 * the mean into that shard of every slot (native reduceSlots). After step 2 each slot holds the whole mean in place:
 * nothing is copied in or out, and each rank's memory traffic for 13.4 M floats drops from ~4 passes over the vector to
 * ~2 (read every slot's shard, write every slot's shard). A slot is written by other ranks only between this rank's
 * step 1 and the end of step 2, while this rank waits inside the collective.
 *
 * Lifetime: rank 0 creates the segment (written under a temporary name and renamed, so nobody maps a half-made
 * header) and the last rank to map it unlinks it, before the first collective: a crash after that leaves nothing in
 * /dev/shm. The segment is made once per job and reused every round (first writes into fresh memory cost ~4 ms/MB
 * here, so a segment per round would cost more than the exchange).
 */

export interface ShmPlaneOptions {
  /** Segment path, normally under /dev/shm; unique per job generation (the coordinator derives it from its data key). */
  path: string;
  /** This rank's index among the ranks that share the segment, 0..ranks-1; 0 creates it. */
  rank: number;
  /** Ranks sharing the segment. */
  ranks: number;
  /** Longest wait for any step of a collective (and for every rank to map the segment), ms. */
  timeoutMs: number;
  /** Elements per slot (a chunk); default: defaultChunkElems(ranks), which keeps the data area within 48 MiB. */
  chunkElems?: number;
  /**
   * Rank 0: floats of each rank's registered slot (`slot()`), 0 for none (the default). Needs an addon with
   * reduceSlots (else ignored). The other ranks take the layout rank 0 made, from the segment's header.
   */
  sharedElems?: number;
}

/** Per-collective timings on this rank (ms). */
export interface ShmTiming {
  /** copying (or binary16-rounding) this rank's values into its slots */
  copyInMs: number;
  /** waiting for other ranks' steps */
  waitMs: number;
  /** reducing this rank's shards */
  sumMs: number;
  /** copying the other shards' results into `data` */
  copyOutMs: number;
}

/**
 * Where a plane is in its sequence of collectives: the next one is q + 1, and the previous one had `lastSteps`
 * steps (its last step must be passed by every rank before the buffers are reused). A plane lends it to a second
 * plane over the same segment in a worker thread of the same process (overlap-thread.ts) and takes it back after:
 * the segment sees one sequence, whichever thread issues the collectives.
 */
export interface ShmCursor { q: number; lastSteps: number }

/** Abort word: (reason << 16) | (rank + 1). */
export const ABORT = { TIMEOUT: 1, GONE: 2, MISMATCH: 3, LEFT: 4 } as const;
const SLICE_MS = 10;
const HEADER = 64;
const LINE = 64;
/** Each rank's metrics (float64) follow the rank lines; the client allows at most 64 (protocol MAX_METRICS). */
const MAX_METRICS = 64;
/** Data area of a segment, at most: fits Docker's default /dev/shm (64 MiB) with room to spare. */
const SEGMENT_BUDGET = 48 * 1024 * 1024;
const MAX_CHUNK = 4 * 1024 * 1024;
/** 'gather': the slots' views handed to the caller instead of a mean written into them (gather()). */
type PlaneOp = Op | 'gather';
const OP_CODE: Record<PlaneOp, number> = { mean: 1, bcast: 2, gather: 3 };
/** Waits until every rank reached `step` of collective `wq`, failing as the plane fails (waiter()). */
type Wait = (wq: number, step: number, what: string) => Promise<void>;
const DTYPE_CODE: Record<DType, number> = { f32: 1, f16: 2 };

/** Default elements per slot for `ranks` ranks: 2 buffers of (ranks + 1) slots within the segment budget. */
export function defaultChunkElems(ranks: number): number {
  return Math.max(8 * ranks, Math.min(MAX_CHUNK, Math.floor(SEGMENT_BUDGET / (2 * (ranks + 1) * 4) / (8 * ranks)) * 8 * ranks));
}

export class ShmPlane {
  private q = 0;
  private lastSteps = 0;
  private busy = false;
  private closed = false;
  /** leave(): no more collectives, but the segment stays mapped until close(). */
  private left = false;
  private readonly u32: Uint32Array;
  private readonly f64: Float64Array;
  private readonly f32: Float32Array;
  private readonly dataBase: number;
  private readonly bufBytes: number;
  /** Registered slots: floats per rank (0: none), byte offset of rank 0's slot, bytes from one slot to the next. */
  readonly sharedElems: number;
  private readonly sharedBase: number;
  private readonly slotStride: number;
  private slotView: Float32Array | null = null;
  /** gather(): the collective whose views this rank still reads (0: none); collectives are refused meanwhile. */
  private gathering = 0;
  /** The last gather()'s collective, until every rank released it. */
  private lastGather = 0;

  private constructor(private readonly k: ShmAddon, private seg: ArrayBuffer, readonly rank: number, readonly ranks: number,
    readonly chunkElems: number, private readonly timeoutMs: number) {
    this.u32 = new Uint32Array(seg);
    this.f64 = new Float64Array(seg);
    this.f32 = new Float32Array(seg);
    this.dataBase = headerBytes(ranks);
    this.bufBytes = (ranks + 1) * chunkElems * 4;
    this.sharedElems = this.u32[8]!;
    this.sharedBase = sharedBase(ranks, chunkElems);
    this.slotStride = slotStride(this.sharedElems);
  }

  /**
   * Creates (rank 0) or maps the segment and resolves once every rank has mapped it (and it was unlinked).
   * Fails with CONNECTION_LOST where shared memory is unavailable or a rank does not map it within timeoutMs.
   */
  static async open(o: ShmPlaneOptions): Promise<ShmPlane> {
    const k = shmAddon();
    if (!k) throw new CoordinatorError('CONNECTION_LOST', `the shared-memory data plane is unavailable: ${shmUnavailable()}`);
    if (!(Number.isInteger(o.ranks) && o.ranks >= 1 && o.ranks <= 1024 && Number.isInteger(o.rank) && o.rank >= 0 && o.rank < o.ranks)) {
      throw new CoordinatorError('INVALID_OPTIONS', `shm plane: rank ${o.rank} of ${o.ranks} ranks; ranks must be 1..1024 and rank in 0..ranks-1`);
    }
    const chunk = o.chunkElems ?? defaultChunkElems(o.ranks);
    if (!(Number.isInteger(chunk) && chunk >= 8 && chunk % 8 === 0 && chunk <= MAX_CHUNK)) {
      throw new CoordinatorError('INVALID_OPTIONS', `shm plane: chunkElems must be a multiple of 8 in 8..${MAX_CHUNK}, got ${chunk}`);
    }
    const shared = k.reduceSlots ? o.sharedElems ?? 0 : 0;
    if (!(Number.isInteger(shared) && shared >= 0 && shared < 2 ** 32)) {
      throw new CoordinatorError('INVALID_OPTIONS', `shm plane: sharedElems must be an integer in 0..2^32-1, got ${shared}`);
    }
    const seg = await mapSegment(k, o.path, o.rank, o.ranks, chunk, o.timeoutMs, shared);
    return new ShmPlane(k, seg, o.rank, o.ranks, chunk, o.timeoutMs);
  }

  /**
   * Maps a segment that this process already mapped as a plane (its `threadPath()`), for a worker thread: no
   * rendezvous, no attach, nothing unlinked. Throws CONNECTION_LOST when the mapping fails.
   */
  static adopt(o: ShmPlaneOptions & { chunkElems: number }): ShmPlane {
    const k = shmAddon();
    if (!k) throw new CoordinatorError('CONNECTION_LOST', `the shared-memory data plane is unavailable in this thread: ${shmUnavailable()}`);
    try {
      return new ShmPlane(k, k.open(o.path, k.reduceSlots ? 0 : segmentBytes(o.ranks, o.chunkElems)), o.rank, o.ranks, o.chunkElems, o.timeoutMs);
    } catch (e) {
      throw new CoordinatorError('CONNECTION_LOST', `shm plane: cannot map ${o.path} again in this thread: ${(e as Error).message}`);
    }
  }

  /**
   * A path at which another thread of this process maps the same segment (`adopt`): its name under /dev/shm is
   * unlinked once every rank mapped it, but the descriptor the addon keeps open still reaches it.
   */
  threadPath(): string {
    return `/proc/self/fd/${this.k.fd(this.seg)}`;
  }

  /**
   * This rank's registered slot (sharedElems floats in the segment), or null when the segment has none. A collective
   * on (a range of) it runs the zero-copy path; the view is detached once the plane is closed.
   */
  slot(): Float32Array | null {
    if (!this.sharedElems || this.closed) return null;
    this.slotView ??= new Float32Array(this.seg, this.sharedBase + this.rank * this.slotStride, this.sharedElems);
    return this.slotView;
  }

  cursor(): ShmCursor {
    return { q: this.q, lastSteps: this.lastSteps };
  }

  /** Continues after the collectives another plane over this segment issued (its `cursor()`). */
  setCursor(c: ShmCursor): void {
    if (this.busy) throw new CoordinatorError('BUSY', 'cannot move the cursor of an shm plane during a collective');
    this.q = c.q;
    this.lastSteps = c.lastSteps;
  }

  /** Unmaps this thread's mapping without failing anyone (an adopted plane that is done; the owner's stays). */
  release(): void {
    if (this.closed) return;
    this.closed = true;
    this.k.unmap(this.seg);
  }

  /**
   * One collective, in place on `data`: 'mean' (all-reduce, exact mean over ranks; 'f16' rounds inputs and result
   * to binary16) or 'bcast' (rank 0's values). Every rank must issue the same collectives in the same order with
   * the same op, dtype and length (else SIZE_MISMATCH on every rank).
   */
  async run(op: Op, dtype: DType, data: Float32Array, metrics?: Float64Array): Promise<ShmTiming> {
    return this.guarded(metrics, async (t) => {
      await this.exchange(op, dtype, data, metrics, t);
      return t;
    });
  }

  /**
   * The mean without writing it anywhere: once every rank wrote `data` (its registered slot, or a range of it, fp32),
   * resolves with every rank's copy of that range, in rank order (views into the segment), and `metrics` summed over
   * ranks. The caller computes what it needs from the views (the trainer: the exact mean inside its SGD, one pass over
   * R slots instead of averaging into every slot and reading the result back), then calls releaseGather(). The other
   * ranks may read this rank's slot until every rank released: before writing its slot again a rank awaits
   * gatherReleased(); the next collective also waits for it. Every rank must gather the same range (SIZE_MISMATCH).
   */
  async gather(data: Float32Array, metrics?: Float64Array): Promise<{ views: Float32Array[]; timing: ShmTiming }> {
    if (this.closed || this.left) throw new CoordinatorError('CLOSED', 'the shm plane was closed; connect a new client');
    // A bad argument fails this call only (the plane stays usable), so it is checked before the collective starts.
    const at = this.registeredAt(data);
    if (at < 0) throw new CoordinatorError('INVALID_OPTIONS', `shm plane: gather() needs rank ${this.rank}'s registered slot (slot()) or a range of it`);
    return this.guarded(metrics, async (t) => {
      const q = ++this.q, wait = this.waiter(q, 'gather', t);
      await this.afterPrevious(q, wait);
      await this.slotsWritten(q, 'gather', 'f32', data, at, metrics, wait, t);
      this.gathering = q;
      this.lastGather = q;
      const views = Array.from({ length: this.ranks }, (_, r) => new Float32Array(this.seg, this.sharedBase + r * this.slotStride + at * 4, data.length));
      return { views, timing: t };
    });
  }

  /**
   * The guards every collective shares (open, not busy, no views held, metrics within bounds), then `body` with a
   * fresh timing; a failure inside aborts the collective for every rank (the abort word) and rethrows.
   */
  private async guarded<T>(metrics: Float64Array | undefined, body: (t: ShmTiming) => Promise<T>): Promise<T> {
    if (this.closed || this.left) throw new CoordinatorError('CLOSED', 'the shm plane was closed; connect a new client');
    if (this.busy) throw new CoordinatorError('BUSY', 'another collective is in progress on this shm plane');
    if (this.gathering) throw new CoordinatorError('BUSY', 'this rank still holds the views of a gather(); releaseGather() first');
    if (metrics && metrics.length > MAX_METRICS) throw new CoordinatorError('INVALID_OPTIONS', `metrics must be at most ${MAX_METRICS} values`);
    const t: ShmTiming = { copyInMs: 0, waitMs: 0, sumMs: 0, copyOutMs: 0 };
    this.busy = true;
    try {
      return await body(t);
    } catch (e) {
      this.abortWith(ABORT.LEFT, this.rank);
      throw e;
    } finally {
      this.busy = false;
    }
  }

  /** Collective q starts once every rank finished the previous one (its last step), as the segment's lines are reused. */
  private async afterPrevious(q: number, wait: Wait): Promise<void> {
    if (q > 1 && this.lastSteps > 0) await wait(q - 1, this.lastSteps, 'finish the previous collective');
  }

  /** This rank is done reading the views of its last gather() (the others may then write their slots again). */
  releaseGather(): void {
    if (!this.gathering || this.closed) return;
    this.k.signal(this.seg, this.rank, this.gathering, 2);
    this.gathering = 0;
  }

  /** Resolves once every rank released the last gather(): this rank may write its slot again. At once when none is open. */
  async gatherReleased(): Promise<void> {
    if (this.gathering) throw new CoordinatorError('BUSY', 'this rank still holds the views of its gather(); releaseGather() first');
    const q = this.lastGather;
    if (!q) return;
    if (this.closed || this.left) throw new CoordinatorError('CLOSED', 'the shm plane was closed; connect a new client');
    const t: ShmTiming = { copyInMs: 0, waitMs: 0, sumMs: 0, copyOutMs: 0 };
    try {
      await this.waiter(q, 'gather', t)(q, 2, 'finish reading the gathered slots');
    } catch (e) {
      this.abortWith(ABORT.LEFT, this.rank);
      throw e;
    }
    if (this.lastGather === q) this.lastGather = 0;
  }

  /** A wait for (wq, step) of collective q that fails the way the plane fails (abort word, a rank gone, the deadline). */
  private waiter(q: number, op: PlaneOp, t: ShmTiming): Wait {
    const { k, seg, rank: me, ranks: R } = this;
    const deadline = performance.now() + this.timeoutMs;
    return async (wq: number, step: number, what: string): Promise<void> => {
      t.waitMs += await waitForRanks(k, seg, R, me, wq, step, SLICE_MS, deadline, {
        check: () => {
          if (this.closed || this.left) throw new CoordinatorError('CLOSED', 'the shm plane was closed during a collective');
        },
        aborted: () => { throw this.abortError(); },
        gone: (r) => {
          this.abortWith(ABORT.GONE, r);
          throw this.abortError();
        },
        timedOut: () => {
          const late = this.lagging(wq, step);
          this.abortWith(ABORT.TIMEOUT, late[0] ?? me);
          throw new CoordinatorError('ROUND_TIMEOUT', `shm plane: collective ${q} (${op}) waited ${this.timeoutMs / 1000} s for rank(s) ${late.join(',')} to ${what}; a rank is stuck`, late[0]);
        },
      });
    };
  }

  private async exchange(op: Op, dtype: DType, data: Float32Array, metrics: Float64Array | undefined, t: ShmTiming): Promise<void> {
    const { k, seg, rank: me, ranks: R, chunkElems: C } = this;
    // A metrics-only collective (n = 0) is one empty chunk: its first step carries the metrics.
    const q = ++this.q, n = data.length, K = Math.max(1, Math.ceil(n / C)), f16 = dtype === 'f16';
    const nm = metrics ? metrics.length + 1 : 0; // 0: no metrics (a rank with and one without is a mismatch)
    const at = this.registeredAt(data);
    const wait = this.waiter(q, op, t);
    await this.afterPrevious(q, wait);
    if (at >= 0) return this.exchangeInSlots(q, op, dtype, data, at, metrics, wait, t);
    this.lastSteps = 3 * K;
    for (let c = 0; c < K; c++) {
      const base = c * C, len = Math.min(C, n - base), buf = this.dataBase + (c & 1) * this.bufBytes, result = buf + R * C * 4;
      const [lo, hi] = op === 'mean' ? shardRange(len, R, me) : [0, 0];
      if (c >= 2) await wait(q, 3 * (c - 2) + 3, `finish reading chunk ${c - 2}`);
      let t0 = performance.now();
      if (op === 'mean') {
        const slot = buf + me * C * 4;
        for (const [a, b] of [[0, lo], [hi, len]] as const) {
          if (b <= a) continue;
          if (f16) k.quantize(seg, slot + a * 4, data.subarray(base + a, base + b));
          else this.f32.set(data.subarray(base + a, base + b), (slot >> 2) + a);
        }
      } else if (me === 0) this.f32.set(data.subarray(base, base + len), result >> 2);
      if (c === 0) {
        this.describe(q, op, dtype, n, nm, -1);
        if (metrics) this.f64.set(metrics, this.metricsAt(me));
      }
      t.copyInMs += performance.now() - t0;
      k.signal(seg, me, q, 3 * c + 1);
      await wait(q, 3 * c + 1, `copy in chunk ${c}`);
      if (c === 0) {
        this.checkDescriptors(q, op, dtype, n, nm, -1);
        if (metrics) this.sumMetrics(metrics);
      }
      t0 = performance.now();
      if (op === 'mean' && hi > lo) k.reduce(seg, buf + lo * 4, C * 4, R, me, data.subarray(base + lo, base + hi), result + lo * 4, f16 ? 1 : 0);
      t.sumMs += performance.now() - t0;
      k.signal(seg, me, q, 3 * c + 2);
      await wait(q, 3 * c + 2, `reduce chunk ${c}`);
      t0 = performance.now();
      const r32 = result >> 2;
      if (op === 'mean') {
        if (lo > 0) data.set(this.f32.subarray(r32, r32 + lo), base);
        if (hi < len) data.set(this.f32.subarray(r32 + hi, r32 + len), base + hi);
      } else if (me !== 0) data.set(this.f32.subarray(r32, r32 + len), base);
      t.copyOutMs += performance.now() - t0;
      k.signal(seg, me, q, 3 * c + 3);
    }
  }

  /**
   * Where `data` starts in this rank's registered slot (floats), or -1 when it is not a view of the segment. A view
   * of the segment outside this rank's slot is refused (INVALID_OPTIONS).
   */
  private registeredAt(data: Float32Array): number {
    if (data.buffer !== this.seg) return -1;
    const mine = this.sharedBase + this.rank * this.slotStride, at = (data.byteOffset - mine) / 4;
    if (!this.sharedElems || !(at >= 0 && at + data.length <= this.sharedElems)) {
      throw new CoordinatorError('INVALID_OPTIONS', `shm plane: data is a view of the shared segment but not of rank ${this.rank}'s slot (slot()); pass the slot or a range of it`);
    }
    return at;
  }

  /**
   * The zero-copy collective on floats [at, at + n) of every rank's registered slot: step 1, every rank wrote its slot
   * (fp16: rounded in place to binary16) and its descriptor; step 2, rank s averaged shard s over the slots into every
   * slot ('mean'), or copied rank 0's range into its own ('bcast'). Resolves after step 2 of every rank, so no other
   * rank touches this slot until this rank's next collective.
   */
  private async exchangeInSlots(q: number, op: Op, dtype: DType, data: Float32Array, at: number, metrics: Float64Array | undefined,
    wait: Wait, t: ShmTiming): Promise<void> {
    const { k, seg, rank: me, ranks: R } = this;
    const n = data.length, first = this.sharedBase + at * 4;
    await this.slotsWritten(q, op, dtype, data, at, metrics, wait, t);
    const t0 = performance.now();
    if (op === 'mean') {
      const [lo, hi] = shardRange(n, R, me);
      if (hi > lo) k.reduceSlots!(seg, first + lo * 4, this.slotStride, R, hi - lo, dtype === 'f16' ? 1 : 0);
    } else if (me !== 0) data.set(this.f32.subarray(first >> 2, (first >> 2) + n));
    t.sumMs += performance.now() - t0;
    k.signal(seg, me, q, 2);
    await wait(q, 2, op === 'mean' ? 'average its shard of the slots' : 'copy rank 0\'s slot');
  }

  /**
   * Step 1 of a collective on the registered slots (exchangeInSlots, gather): this rank's slot range is final (fp16
   * 'mean': rounded in place to binary16), its descriptor and metrics are written, and every rank did the same; the
   * descriptors agree and `metrics` holds the sum over ranks. The collective then has 2 steps.
   */
  private async slotsWritten(q: number, op: PlaneOp, dtype: DType, data: Float32Array, at: number, metrics: Float64Array | undefined,
    wait: Wait, t: ShmTiming): Promise<void> {
    const { k, seg, rank: me } = this;
    const n = data.length, nm = metrics ? metrics.length + 1 : 0;
    this.lastSteps = 2;
    const t0 = performance.now();
    if (op === 'mean' && dtype === 'f16') k.quantize(seg, this.sharedBase + at * 4 + me * this.slotStride, data);
    this.describe(q, op, dtype, n, nm, at);
    if (metrics) this.f64.set(metrics, this.metricsAt(me));
    t.copyInMs += performance.now() - t0;
    k.signal(seg, me, q, 1);
    await wait(q, 1, 'write its slot');
    this.checkDescriptors(q, op, dtype, n, nm, at);
    if (metrics) this.sumMetrics(metrics);
  }

  /**
   * This rank's collective descriptor, in its line (read by the others after the first step). `at`: the range's start
   * in the registered slots, -1 for the chunked path (a rank on one path and one on the other is a mismatch).
   */
  private describe(q: number, op: PlaneOp, dtype: DType, n: number, nm: number, at: number): void {
    const w = (HEADER + this.rank * LINE) >> 2;
    this.u32[w + 4] = q;
    this.u32[w + 5] = OP_CODE[op] | (DTYPE_CODE[dtype] << 8);
    this.f64[(w + 6) >> 1] = n;
    this.u32[w + 8] = nm;
    this.f64[(w + 10) >> 1] = at;
  }

  private checkDescriptors(q: number, op: PlaneOp, dtype: DType, n: number, nm: number, at: number): void {
    for (let r = 0; r < this.ranks; r++) {
      const w = (HEADER + r * LINE) >> 2;
      const rq = this.u32[w + 4]!, code = this.u32[w + 5]!, rn = this.f64[(w + 6) >> 1]!, rm = this.u32[w + 8]!, ra = this.f64[(w + 10) >> 1]!;
      if (rq !== q || code !== (OP_CODE[op] | (DTYPE_CODE[dtype] << 8)) || rn !== n || rm !== nm || ra !== at) {
        this.abortWith(ABORT.MISMATCH, r);
        const ms = (x: number) => (x === 0 ? 'no metrics' : `${x - 1} metrics`);
        const where = (x: number) => (x < 0 ? 'copied' : `in the registered slots at ${x}`);
        throw new CoordinatorError('SIZE_MISMATCH', `shm plane: collective ${q}: rank ${this.rank} has ${op}/${dtype} of ${n} values ${where(at)} and ${ms(nm)}, ` +
          `rank ${r} ${describeCode(code)} of ${rn} ${where(ra)} and ${ms(rm)} (collective ${rq}); every rank must issue the same collectives in the same order`, r);
      }
    }
  }

  /** Index (in f64 units) of rank r's metrics. */
  private metricsAt(r: number): number {
    return (HEADER + this.ranks * LINE + r * MAX_METRICS * 8) >> 3;
  }

  /** metrics <- sum over ranks in rank order, from 0, in float64: the coordinator's sums (rounds.ts), bit for bit. */
  private sumMetrics(metrics: Float64Array): void {
    const out = new Float64Array(metrics.length);
    for (let r = 0; r < this.ranks; r++) {
      const at = this.metricsAt(r);
      for (let j = 0; j < out.length; j++) out[j] += this.f64[at + j]!;
    }
    metrics.set(out);
  }

  /** Ranks whose counter has not reached (q, step). */
  private lagging(q: number, step: number): number[] {
    return laggingRanks(this.u32, this.ranks, this.rank, q, step);
  }

  private abortWith(reason: number, rank: number): void {
    if (!this.closed) this.k.abort(this.seg, (reason << 16) | (rank + 1));
  }

  /** The error for the segment's abort word (the first rank that gave up wrote it). */
  private abortError(): CoordinatorError {
    const word = this.u32[5]!, reason = word >>> 16, failed = (word & 0xffff) - 1;
    const why = reason === ABORT.GONE ? `rank ${failed}'s process exited during the collective`
      : reason === ABORT.TIMEOUT ? `rank ${failed} did not arrive within ${this.timeoutMs / 1000} s`
      : reason === ABORT.MISMATCH ? `rank ${failed} issued a different collective (op, dtype or length)`
      : `rank ${failed} left the collective (it failed or was closed)`;
    // Worded like the coordinator's abort ("..., failed rank N"), which tools and tests match.
    return new CoordinatorError(reason === ABORT.MISMATCH ? 'SIZE_MISMATCH' : 'ROUND_ABORTED', `shm plane: ${why} (failed rank ${failed}); restart the job`, failed);
  }

  /** Fails the collective in progress on every rank (this rank gave up); no-op when idle. */
  abort(): void {
    if (this.busy) this.abortWith(ABORT.LEFT, this.rank);
  }

  /**
   * Fails any collective waiting for this rank on every rank (as close()) and refuses further ones, but keeps the
   * segment mapped until close(): whoever holds a view of this rank's slot (the trainer's gradient buffer) may still
   * write it before it hears of the failure, and a detached view would turn that into an unrelated error.
   */
  leave(): void {
    if (this.left || this.closed) return;
    this.abortWith(ABORT.LEFT, this.rank);
    this.left = true;
  }

  /**
   * Unmaps the segment (it was unlinked at open). Any collective still waiting for this rank fails on every rank at
   * once (ROUND_ABORTED): waits check the counters before the abort word, so ranks that this rank already passed
   * still finish.
   */
  close(): void {
    if (this.closed) return;
    this.abortWith(ABORT.LEFT, this.rank);
    this.closed = true;
    this.k.unmap(this.seg);
  }
}

/**
 * Creates (rank 0) or maps the segment of `ranks` ranks at `path` and resolves once every rank has mapped it (the
 * last one unlinks it). On failure the path is unlinked and nothing stays mapped: CONNECTION_LOST, or
 * RENDEZVOUS_TIMEOUT when a rank does not map it within timeoutMs. Shared with the hierarchical plane (hier-plane.ts).
 */
export async function mapSegment(k: ShmAddon, path: string, rank: number, ranks: number, chunk: number, timeoutMs: number, sharedElems = 0): Promise<ArrayBuffer> {
  const bytes = segmentBytes(ranks, chunk, sharedElems);
  const deadline = Date.now() + timeoutMs;
  let seg: ArrayBuffer | null = null;
  try {
    if (rank === 0) seg = sharedElems ? k.create(path, bytes, ranks, chunk, sharedElems) : k.create(path, bytes, ranks, chunk);
    else {
      while (!seg) {
        try {
          // Rank 0 chose whether the segment has registered slots (its free space): take its size, check it below.
          seg = k.open(path, k.reduceSlots ? 0 : bytes);
        } catch (e) {
          if ((e as { code?: string }).code !== 'ENOENT' || Date.now() > deadline) throw e;
          await new Promise((r) => setTimeout(r, 2));
        }
      }
    }
    const made = segmentBytes(ranks, chunk, new Uint32Array(seg, 0, 16)[8]!);
    if (seg.byteLength !== made) throw new Error(`${path} has ${seg.byteLength} bytes, not the ${made} of its header's layout (another job or version?)`);
    const mapped = k.attach(seg, rank);
    if (mapped === ranks) k.unlink(path);
    const u32 = new Uint32Array(seg, 0, 8);
    while (u32[4]! < ranks) {
      if (Date.now() > deadline) {
        throw new CoordinatorError('RENDEZVOUS_TIMEOUT', `only ${u32[4]} of ${ranks} ranks mapped the shared segment ${path} within ${timeoutMs / 1000} s`);
      }
      await new Promise((r) => setTimeout(r, 2));
    }
    return seg;
  } catch (e) {
    k.unlink(path); // nothing may stay behind in /dev/shm
    if (seg) k.unmap(seg);
    if (e instanceof CoordinatorError) throw e;
    throw new CoordinatorError('CONNECTION_LOST', `shm plane: ${(e as Error).message}`);
  }
}

/** Ranks (other than `me`) whose progress counter in the segment has not reached (q, step). */
export function laggingRanks(u32: Uint32Array, ranks: number, me: number, q: number, step: number): number[] {
  const target = q * 2 ** 24 + step, out: number[] = [];
  for (let r = 0; r < ranks; r++) {
    const w = (HEADER + r * LINE) >> 2;
    const v = u32[w + 1]! * 2 ** 32 + u32[w]!;
    if (r !== me && v < target) out.push(r);
  }
  return out;
}

/** What a wait on the segment does when it cannot end normally (each throws). */
export interface SegmentWaitEnds {
  /** Before each slice: throws when the plane must not touch the segment any more (closed, failed). */
  check(): void;
  /** The segment's abort word is set. */
  aborted(): never;
  /** Local rank `local`'s process no longer exists. */
  gone(local: number): never;
  /** The deadline passed. */
  timedOut(): never;
}

/**
 * Waits until every other of `ranks` ranks reached (q, step) in the segment, in slices of `sliceMs` (spin, yield,
 * futex inside the addon) between which the event loop runs (the coordinator's abort, pings). Returns the ms waited.
 * The shm and hier planes share it.
 */
export async function waitForRanks(k: ShmAddon, seg: ArrayBuffer, ranks: number, me: number, q: number, step: number, sliceMs: number,
  deadline: number, ends: SegmentWaitEnds): Promise<number> {
  const t0 = performance.now();
  for (;;) {
    ends.check();
    const r = k.wait(seg, ranks, me, q, step, sliceMs);
    if (r === 0) return performance.now() - t0;
    if (r === 2) ends.aborted();
    if (r >= 3) ends.gone(r - 3);
    if (performance.now() > deadline) ends.timedOut();
    await yieldLoop();
  }
}

/**
 * Bytes of a segment for `ranks` ranks (header, then 2 buffers of ranks + 1 slots of `chunkElems` floats, then, with
 * sharedElems, one registered slot per rank from a page boundary).
 */
export function segmentBytes(ranks: number, chunkElems = defaultChunkElems(ranks), sharedElems = 0): number {
  const chunked = headerBytes(ranks) + 2 * (ranks + 1) * chunkElems * 4;
  return sharedElems ? sharedBase(ranks, chunkElems) + ranks * slotStride(sharedElems) : chunked;
}

/** Byte offset of rank 0's registered slot. */
function sharedBase(ranks: number, chunkElems: number): number {
  return Math.ceil((headerBytes(ranks) + 2 * (ranks + 1) * chunkElems * 4) / 4096) * 4096;
}

/** Bytes from one registered slot to the next (whole cache lines, so no line holds two ranks' values). */
function slotStride(sharedElems: number): number {
  return Math.ceil(sharedElems / 16) * 64;
}

/**
 * Why /dev/shm cannot hold a segment for `ranks` ranks (free space from statfs), or null. The client then offers
 * no host id and the job uses the peer plane, instead of failing (or, with a sparse file, dying of SIGBUS).
 */
export function shmSpaceProblem(ranks: number, free: { bavail: number; bsize: number }, sharedElems = 0): string | null {
  const need = segmentBytes(ranks, defaultChunkElems(ranks), sharedElems), have = free.bavail * free.bsize;
  if (have >= need) return null;
  const mib = (b: number) => `${(b / 2 ** 20).toFixed(1)} MiB`;
  return `/dev/shm has ${mib(have)} free, a segment for ${ranks} ranks needs ${mib(need)} (Docker: --shm-size=256m)`;
}

/** Bytes before the data area: the header and each rank's line and metrics, in whole pages. */
export function headerBytes(ranks: number): number {
  return Math.ceil((HEADER + ranks * (LINE + MAX_METRICS * 8)) / 4096) * 4096;
}

function describeCode(code: number): string {
  const op = (Object.keys(OP_CODE) as PlaneOp[]).find((o) => OP_CODE[o] === (code & 0xff)) ?? '?';
  const dt = (Object.keys(DTYPE_CODE) as DType[]).find((d) => DTYPE_CODE[d] === code >> 8) ?? '?';
  return `${op}/${dt}`;
}
