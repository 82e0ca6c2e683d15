import { CoordinatorError } from './errors.js';
import { floatToHalf, halfToFloat } from './fp16.js';
import { PEER_CHUNK_ELEMS, shardRange, type FrameSink, type PeerFailureCode, type PeerPlane } from './peer.js';
import { CloseCode, ProtocolViolation, type ChunkMsg, type DType, type Op, type PeerAddress } from './protocol.js';
import { shmAddon, shmUnavailable, type ShmAddon } from './shm-native.js';
import { ABORT, defaultChunkElems, headerBytes, laggingRanks, mapSegment, waitForRanks } from './shm-plane.js';

/**
 * The hierarchical data plane, for ranks on several machines: shared memory within each machine, TCP between
 * machines, and each machine sends its share of the vector across once (not once per local rank).
 *
 * Ranks are contiguous per machine (plane-select.ts checks): machine m holds ranks machines[m]..machines[m+1]-1.
 * With S = the fewest ranks on any machine, local rank l < S of every machine is the *carrier* of slice l:
 * the vector is processed in chunks of C elements through the machine's segment (as shm-plane.ts: 2 buffers of
 * L input slots + 1 result area), and slice l of a chunk is `shardRange(chunkLength, S, l)`. An all-reduce of chunk c:
 *   1. every local rank copies its values of the chunk into its slot (binary16-rounded for fp16);
 *   2. carrier l of machine 0 sums slice l over its ranks in rank order in float64 and sends that partial to
 *      carrier l of machine 1, which adds its ranks' values in rank order and passes it on, ...; the last machine
 *      rounds once (the mean of reduce.ts: * (1/R) for a power-of-two R, else / R, to float32, for fp16 to
 *      binary16) and sends the result to carrier l of every other machine. Each carrier puts its slice's result
 *      into its machine's result area. This is exactly the flat planes' float64 sum, left to right in rank order,
 *      one rounding: the same bytes, with no assumption about the values (partials are float64, never rounded);
 *   3. every local rank copies the other slices' results out.
 * Per machine, across machines: the vector once out as float64 partials (machines 0..M-2) and the result once in
 * (float32, or binary16 for fp16); the last machine receives the partials and sends M-1 results. A broadcast:
 * global rank 0's chunk in machine 0's result area, slice l sent by carrier l of machine 0 to carrier l of every
 * other machine.
 *
 * Control: as on the peer plane, every collective is announced to the coordinator and starts at its `go`, which
 * checks that every rank issued the same collective and carries the metric sums. Carriers of one slice are
 * connected by the peer plane's listener and authentication (peer.ts: the raw per-generation key hello, one
 * connection per ordered pair, strict framing): the group index plays the rank there, and this plane receives the
 * frames (FrameSink), each validated against the exactly expected next piece before a byte of it is read.
 * Failures as on the shm plane (abort word, dead pids, timeouts, named ranks) within a machine, and as on the peer
 * plane (the coordinator's abort, peer failure reports) across machines.
 */

/** Elements per TCP frame between machines: 4 MiB of float64 partials. */
const PIECE_ELEMS = PEER_CHUNK_ELEMS / 2;
/** Longest blocking wait for the other local ranks before the event loop (TCP, the coordinator's abort) runs. */
const SLICE_MS = 2;

/** Where a rank sits: machine m of M, local rank `me` of L, S carriers per machine, C elements per chunk. */
export interface Placement { m: number; M: number; me: number; L: number; S: number; chunk: number }

/** The placement of `rank` among machines given as their first ranks followed by the world size. */
export function placement(machines: readonly number[], rank: number, chunkElems?: number): Placement {
  const M = machines.length - 1;
  const sizes = machines.slice(1).map((b, m) => b - machines[m]!);
  let m = 0;
  while (machines[m + 1]! <= rank) m++;
  return { m, M, me: rank - machines[m]!, L: sizes[m]!, S: Math.min(...sizes), chunk: chunkElems ?? defaultChunkElems(Math.max(...sizes)) };
}

export interface HierPlaneOptions {
  /** This machine's segment (welcome.shm). */
  path: string;
  rank: number;
  /** welcome.machines */
  machines: number[];
  /** Every rank's data address and the generation's key (welcome.peers, welcome.dataKey). */
  peers: PeerAddress[];
  dataKey: string;
  /** This rank's data listener, opened before hello; carriers connect through it, the others close it. */
  links: PeerPlane;
  timeoutMs: number;
  /** Elements per segment chunk, the same on every machine; default: defaultChunkElems(most ranks on a machine). */
  chunkElems?: number;
  /** Elements per TCP frame, the same on every machine; default 512 Ki (4 MiB of float64). */
  pieceElems?: number;
}

/** Per-collective timings on this rank (ms). */
export interface HierTiming {
  /** copying (or binary16-rounding) this rank's values into its slot */
  copyInMs: number;
  /** waiting for the other ranks of this machine */
  waitMs: number;
  /** carriers: summing, rounding and placing their slice */
  sumMs: number;
  /** carriers: waiting for partials and results from other machines */
  linkMs: number;
  /** copying the other slices' results into `data` */
  copyOutMs: number;
  /** the last of this rank's TCP writes handed to the kernel, after everything else was done */
  flushMs: number;
}

/** One frame's worth of this carrier's slice: global offset, length, and position among the slice's elements. */
interface Piece { off: number; count: number; pos: number }

interface Collective {
  seq: number; op: Op; dtype: DType; data: Float32Array;
  pieces: Piece[];
  /** pieces[first[c]..first[c+1]) lie in chunk c */
  first: number[];
  /** per group index: the phase of the frames expected from that machine's carrier (undefined: none) */
  expect: ('in' | 'out' | undefined)[];
  /** per group index: pieces received */
  got: number[];
  writesLeft: number;
  timing: HierTiming;
}

export class HierPlane implements FrameSink {
  private q = 0;
  private lastSteps = 0;
  private x: Collective | null = null;
  private wake: (() => void) | null = null;
  private dead: CoordinatorError | null = null;
  private closed = false;
  private partial = new Float64Array(0);
  private res16 = new Uint16Array(0);
  private readonly u32: Uint32Array;
  private readonly f32: Float32Array;
  private readonly dataBase: number;
  private readonly bufBytes: number;
  /** Called once per broken or misbehaving connection to another machine, naming that rank. */
  onFailure: (rank: number, code: PeerFailureCode, reason: string) => void = () => {};

  private constructor(private readonly k: ShmAddon, private readonly seg: ArrayBuffer, private readonly p: Placement,
    private readonly machines: number[], readonly rank: number, private readonly links: PeerPlane | null, private readonly timeoutMs: number,
    private readonly pieceElems: number) {
    this.u32 = new Uint32Array(seg);
    this.f32 = new Float32Array(seg);
    this.dataBase = headerBytes(p.L);
    this.bufBytes = (p.L + 1) * p.chunk * 4;
    if (links) {
      links.sink = this;
      links.onFailure = (g, code, reason) => this.onFailure(this.machines[g]! + p.me, code, reason);
    }
  }

  get world(): number {
    return this.machines.at(-1)!;
  }

  private get carrier(): boolean {
    return this.p.me < this.p.S;
  }

  /**
   * Maps this machine's segment and, on carriers, connects to the same-slice carriers of the other machines;
   * resolves when both are done. A failure leaves nothing mapped or in /dev/shm.
   */
  static async open(o: HierPlaneOptions): Promise<HierPlane> {
    const k = shmAddon();
    if (!k) {
      o.links.destroy();
      throw new CoordinatorError('CONNECTION_LOST', `the hierarchical data plane needs shared memory, which is unavailable: ${shmUnavailable()}`);
    }
    const p = placement(o.machines, o.rank, o.chunkElems);
    const piece = o.pieceElems ?? PIECE_ELEMS;
    if (![p.chunk, piece].every((e) => Number.isInteger(e) && e >= 8 && e % 8 === 0 && e <= 4 * 1024 * 1024)) {
      o.links.destroy();
      throw new CoordinatorError('INVALID_OPTIONS', `hier plane: chunkElems and pieceElems must be multiples of 8 in 8..${4 * 1024 * 1024}, got ${p.chunk} and ${piece}`);
    }
    const carrier = p.me < p.S;
    if (!carrier) o.links.destroy(); // nothing crosses machines from this rank
    const group = o.machines.slice(0, p.M).map((b) => o.peers[b + p.me]!);
    const [seg, mesh] = await Promise.allSettled([
      mapSegment(k, o.path, p.me, p.L, p.chunk, o.timeoutMs),
      carrier ? o.links.start(p.m, group, o.dataKey, o.timeoutMs) : Promise.resolve(),
    ]);
    if (seg.status === 'fulfilled' && mesh.status === 'fulfilled') return new HierPlane(k, seg.value, p, o.machines, o.rank, carrier ? o.links : null, o.timeoutMs, piece);
    if (seg.status === 'fulfilled') k.unmap(seg.value);
    o.links.destroy();
    if (seg.status === 'rejected') throw seg.reason;
    throw new CoordinatorError('CONNECTION_LOST', `hier plane: ${((mesh as PromiseRejectedResult).reason as Error).message}`);
  }

  /**
   * Prepares collective `seq` when it is announced (before the coordinator's go): frames from other machines may
   * arrive from the go on, and are read straight into their place.
   */
  begin(seq: number, op: Op, dtype: DType, data: Float32Array): void {
    const { M, m, S, me, chunk: C } = this.p;
    const n = data.length, K = Math.ceil(n / C);
    const pieces: Piece[] = [], first: number[] = [];
    let pos = 0;
    for (let c = 0; c < K; c++) {
      first.push(pieces.length);
      if (!this.carrier) continue;
      const base = c * C, [lo, hi] = shardRange(Math.min(C, n - base), S, me);
      for (let o = lo; o < hi; o += this.pieceElems) {
        const count = Math.min(this.pieceElems, hi - o);
        pieces.push({ off: base + o, count, pos });
        pos += count;
      }
    }
    first.push(pieces.length);
    const expect: Collective['expect'] = new Array(M).fill(undefined);
    if (this.carrier && op === 'mean') {
      if (m > 0) expect[m - 1] = 'in';
      if (m < M - 1) expect[M - 1] = 'out';
    } else if (this.carrier && m > 0) expect[0] = 'out';
    if (this.partial.length < pos) this.partial = new Float64Array(pos);
    if (dtype === 'f16' && this.res16.length < pos) this.res16 = new Uint16Array(pos);
    this.x = {
      seq, op, dtype, data, pieces, first, expect, got: new Array(M).fill(0), writesLeft: 0,
      timing: { copyInMs: 0, waitMs: 0, sumMs: 0, linkMs: 0, copyOutMs: 0, flushMs: 0 },
    };
  }

  /** Runs the collective prepared by begin() (after the go); resolves once every write of this rank is in the kernel. */
  async run(): Promise<HierTiming> {
    const x = this.x!;
    try {
      if (x.data.length > 0) await this.exchange(x);
      const t0 = performance.now();
      while (x.writesLeft > 0) await this.sleep();
      x.timing.flushMs = performance.now() - t0;
      return x.timing;
    } catch (e) {
      this.abortWith(ABORT.LEFT, this.p.me);
      throw e;
    } finally {
      if (this.x === x) this.x = null;
    }
  }

  // ---- frames from other machines (FrameSink) ---------------------------------------------------------------

  header(j: number, h: ChunkMsg): Buffer {
    const x = this.x;
    if (!x || h.seq !== x.seq) throw new ProtocolViolation(CloseCode.UNEXPECTED, `chunk of collective ${h.seq} while ${x ? x.seq : 'none'} is in progress`);
    const phase = x.expect[j], p = x.pieces[x.got[j]!];
    if (!phase || !p || h.phase !== phase || h.offset !== p.off || h.count !== p.count) {
      throw new ProtocolViolation(CloseCode.WRONG_SIZE, `chunk ${h.phase} ${h.offset}+${h.count}, expected ${p && phase ? `${phase} ${p.off}+${p.count}` : 'none'}`);
    }
    if (phase === 'in') return Buffer.from(this.partial.buffer, p.pos * 8, p.count * 8);
    if (x.dtype === 'f16') return Buffer.from(this.res16.buffer, p.pos * 2, p.count * 2);
    return Buffer.from(x.data.buffer, x.data.byteOffset + p.off * 4, p.count * 4);
  }

  payload(j: number): void {
    this.x!.got[j]!++;
    this.wake?.();
  }

  // ---- one collective ---------------------------------------------------------------------------------------

  private async exchange(x: Collective): Promise<void> {
    const { me, L, S, m, chunk: C } = this.p, t = x.timing, k = this.k, seg = this.seg;
    const q = ++this.q, n = x.data.length, K = Math.ceil(n / C), f16 = x.dtype === 'f16';
    const deadline = performance.now() + this.timeoutMs;
    const bcastRoot = x.op === 'bcast' && m === 0 && me === 0;
    // Segment buffers are reused: the first copy-in waits until every local rank finished the previous collective.
    if (q > 1 && this.lastSteps > 0) await this.waitLocal(q - 1, this.lastSteps, deadline, t, 'finish the previous collective');
    this.lastSteps = 3 * K;
    for (let c = 0; c < K; c++) {
      const base = c * C, len = Math.min(C, n - base), buf = this.dataBase + (c & 1) * this.bufBytes, res = buf + L * C * 4;
      const [lo, hi] = this.carrier ? shardRange(len, S, me) : [0, 0];
      if (c >= 2) await this.waitLocal(q, 3 * (c - 2) + 3, deadline, t, `finish reading chunk ${c - 2}`);
      let t0 = performance.now();
      const chunk = x.data.subarray(base, base + len);
      if (x.op === 'mean') {
        const slot = buf + me * C * 4;
        if (f16) k.quantize(seg, slot, chunk);
        else this.f32.set(chunk, slot >> 2);
      } else if (bcastRoot) this.f32.set(chunk, res >> 2);
      t.copyInMs += performance.now() - t0;
      k.signal(seg, me, q, 3 * c + 1);
      await this.waitLocal(q, 3 * c + 1, deadline, t, `copy in chunk ${c}`);
      if (hi > lo) await (x.op === 'mean' ? this.reduceSlice(x, c, buf, res, base) : this.spreadSlice(x, c, res, base));
      k.signal(seg, me, q, 3 * c + 2);
      await this.waitLocal(q, 3 * c + 2, deadline, t, `reduce chunk ${c}`);
      t0 = performance.now();
      if (!bcastRoot) {
        const r32 = res >> 2;
        if (lo > 0) x.data.set(this.f32.subarray(r32, r32 + lo), base);
        if (hi < len) x.data.set(this.f32.subarray(r32 + hi, r32 + len), base + hi);
      }
      t.copyOutMs += performance.now() - t0;
      k.signal(seg, me, q, 3 * c + 3);
    }
  }

  /** Carrier, all-reduce: this machine's link of the chain for this rank's slice of chunk c. */
  private async reduceSlice(x: Collective, c: number, buf: number, res: number, base: number): Promise<void> {
    const { m, M, L, chunk: C } = this.p, t = x.timing, f = this.f32, partial = this.partial, data = x.data;
    const R = this.world, pow2 = (R & (R - 1)) === 0, scale = pow2 ? 1 / R : R, f16 = x.dtype === 'f16', last = m === M - 1;
    for (let i = x.first[c]!; i < x.first[c + 1]!; i++) {
      const p = x.pieces[i]!, s0 = (buf >> 2) + (p.off - base), r0 = (res >> 2) + (p.off - base);
      if (m > 0) await this.arrived(x, m - 1, i);
      const t0 = performance.now();
      // The flat planes' sum: x_0 + x_1 + ... in rank order in float64; machine 0 starts it, the others continue it.
      for (let e = 0; e < p.count; e++) {
        let acc = m === 0 ? f[s0 + e]! : partial[p.pos + e]!;
        for (let r = m === 0 ? 1 : 0; r < L; r++) acc += f[s0 + r * C + e]!;
        if (!last) partial[p.pos + e] = acc;
        else {
          const mean = pow2 ? acc * scale : acc / scale;
          let v: number;
          if (f16) {
            const h = floatToHalf(mean); // rounds to float32 first (a Float32Array store), then to binary16
            this.res16[p.pos + e] = h;
            v = halfToFloat(h);
          } else v = mean;
          data[p.off + e] = v;
          f[r0 + e] = v;
        }
      }
      t.sumMs += performance.now() - t0;
      if (!last) this.send(x, m + 1, 'in', p, Buffer.from(partial.buffer, p.pos * 8, p.count * 8));
      else {
        const out = f16 ? Buffer.from(this.res16.buffer, p.pos * 2, p.count * 2) : Buffer.from(data.buffer, data.byteOffset + p.off * 4, p.count * 4);
        for (let g = 0; g < M - 1; g++) this.send(x, g, 'out', p, out);
      }
    }
    if (last) return;
    for (let i = x.first[c]!; i < x.first[c + 1]!; i++) {
      const p = x.pieces[i]!, r0 = (res >> 2) + (p.off - base);
      await this.arrived(x, M - 1, i);
      const t0 = performance.now();
      if (f16) for (let e = 0; e < p.count; e++) data[p.off + e] = halfToFloat(this.res16[p.pos + e]!);
      f.set(data.subarray(p.off, p.off + p.count), r0);
      t.sumMs += performance.now() - t0;
    }
  }

  /** Carrier, broadcast: machine 0 sends its slice of rank 0's chunk to every machine, which puts it in its result area. */
  private async spreadSlice(x: Collective, c: number, res: number, base: number): Promise<void> {
    const { m, M, me } = this.p, f = this.f32, data = x.data;
    for (let i = x.first[c]!; i < x.first[c + 1]!; i++) {
      const p = x.pieces[i]!, r0 = (res >> 2) + (p.off - base);
      if (m === 0) {
        // Sent from `data` (never rewritten during this collective), not from the reused segment.
        if (me !== 0) data.set(f.subarray(r0, r0 + p.count), p.off);
        const out = Buffer.from(data.buffer, data.byteOffset + p.off * 4, p.count * 4);
        for (let g = 1; g < M; g++) this.send(x, g, 'out', p, out);
      } else {
        await this.arrived(x, 0, i);
        f.set(data.subarray(p.off, p.off + p.count), r0);
      }
    }
  }

  private send(x: Collective, g: number, phase: 'in' | 'out', p: Piece, payload: Buffer): void {
    x.writesLeft++;
    const queued = this.links!.sendFrame(g, { v: 1, type: 'chunk', seq: x.seq, phase, offset: p.off, count: p.count }, payload, () => {
      x.writesLeft--;
      this.wake?.();
    });
    if (!queued) x.writesLeft--; // the broken connection was reported; the coordinator aborts the job
  }

  /** Waits until piece i from machine g's carrier is in place. */
  private async arrived(x: Collective, g: number, i: number): Promise<void> {
    const t0 = performance.now();
    while (x.got[g]! <= i) await this.sleep();
    x.timing.linkMs += performance.now() - t0;
  }

  /** Until the next frame or write callback (or a failure, which throws). */
  private async sleep(): Promise<void> {
    if (this.dead) throw this.dead;
    await new Promise<void>((r) => { this.wake = r; });
    this.wake = null;
    if (this.dead) throw this.dead;
  }

  /** Waits until every other local rank reached (q, step); fails at once on the segment's abort or a dead rank. */
  private async waitLocal(q: number, step: number, deadline: number, t: HierTiming, what: string): Promise<void> {
    const { k, seg } = this, { L, me } = this.p;
    t.waitMs += await waitForRanks(k, seg, L, me, q, step, SLICE_MS, deadline, {
      check: () => {
        if (this.dead) throw this.dead; // after close the segment is unmapped: touch nothing
      },
      aborted: () => { throw this.abortError(); },
      gone: (r) => {
        this.abortWith(ABORT.GONE, r);
        throw this.abortError();
      },
      timedOut: () => {
        const late = laggingRanks(this.u32, L, me, q, step).map((l) => this.global(l));
        this.abortWith(ABORT.TIMEOUT, late.length ? late[0]! - this.global(0) : me);
        throw new CoordinatorError('ROUND_TIMEOUT', `hier plane: collective ${q} waited ${this.timeoutMs / 1000} s for rank(s) ${late.join(',')} to ${what}; a rank is stuck`, late[0]);
      },
    });
  }

  private global(local: number): number {
    return this.machines[this.p.m]! + local;
  }

  private abortWith(reason: number, local: number): void {
    if (!this.closed) this.k.abort(this.seg, (reason << 16) | (local + 1));
  }

  /** The error for the segment's abort word, naming the global rank (the first local rank that gave up wrote it). */
  private abortError(): CoordinatorError {
    const word = this.u32[5]!, reason = word >>> 16, failed = this.global((word & 0xffff) - 1);
    const why = reason === ABORT.GONE ? `rank ${failed}'s process exited during the collective`
      : reason === ABORT.TIMEOUT ? `rank ${failed} did not arrive within ${this.timeoutMs / 1000} s`
      : `rank ${failed} left the collective (it failed or was closed)`;
    return new CoordinatorError('ROUND_ABORTED', `hier plane: ${why} (failed rank ${failed}); restart the job`, failed);
  }

  /** Orderly close (after bye): queued writes are flushed; a collective still waiting for this rank fails at once. */
  close(): void {
    this.stop(new CoordinatorError('CLOSED', 'the hier plane was closed'));
    this.links?.close();
  }

  /** After a failure: drops the connections at once. */
  destroy(): void {
    this.stop(new CoordinatorError('CLOSED', 'the hier plane was closed during a collective'));
    this.links?.destroy();
  }

  private stop(err: CoordinatorError): void {
    if (this.closed) return;
    this.abortWith(ABORT.LEFT, this.p.me);
    this.closed = true;
    this.dead = err;
    this.k.unmap(this.seg);
    this.wake?.();
  }
}
