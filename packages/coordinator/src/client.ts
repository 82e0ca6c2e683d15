import { existsSync, readFileSync, statfsSync } from 'node:fs';
import { WebSocket } from 'ws';
import { isLoopback, resolveToken } from './auth.js';
import { CoordinatorError, check } from './errors.js';
import {
  HEADER_ROOM, MAX_METRICS, PROTOCOL_VERSION, ProtocolViolation, CloseCode, bytesPer, decode, encode, writeHeader,
  type CollMsg, type DataMsg, type DType, type GoMsg, type Message, type Op, type ResultMsg, type SignatureEntry, type WelcomeMsg,
} from './protocol.js';
import { hostId } from './host-id.js';
import { PeerPlane, type PeerFailureCode, type PeerTiming } from './peer.js';
import { DATA_PLANES, type DataPlaneChoice } from './plane-select.js';
import { Arena, align16 } from './reduce.js';
import { ShmPlane, shmSpaceProblem } from './shm-plane.js';
import { HierPlane } from './hier-plane.js';
import { OverlapExchange, type BucketRanges } from './overlap.js';
import { shmUnavailable } from './shm-native.js';

export interface ClientOptions {
  /** ws://host:port or wss://host:port of the coordinator. */
  url: string;
  /** This worker's rank, 0..worldSize-1. */
  rank: number;
  /** Number of workers; must equal the coordinator's. */
  worldSize: number;
  /** Run id; must match the coordinator's (or the first worker's) when both are set. */
  runId?: string;
  /** Tensor names and shapes every worker must agree on. */
  signature: SignatureEntry[];
  /** Shared secret; default env GOOGLENET_COORDINATOR_TOKEN. */
  token?: string;
  /** PEM text (or a path to it) of the CA that signed a wss:// coordinator's certificate. */
  ca?: string;
  /** Largest gradient message, counted in fp32 bytes; 25 MiB like DDP. */
  bucketBytes?: number;
  /**
   * 'fp16' sends all-reduce values as binary16 (lossy: half the bytes on the wire); 'none'. Only the leading
   * `compressibleLength` values of each call (default: all) are compressed; the rest travel as float32.
   */
  gradCompression?: 'none' | 'fp16';
  /** No collective waits longer than this (+1 s for the coordinator's abort to arrive first); 30000. */
  timeoutMs?: number;
  /** How long connect() waits for all ranks (and retries a refused connection); 120000. */
  rendezvousTimeoutMs?: number;
  /** Log sink for events nobody awaits (connections the peer data listener refused); default: none. */
  log?: (line: string) => void;
  /**
   * Which data planes this worker offers (the coordinator picks one for the whole job, plane-select.ts): 'auto'
   * (default) and 'shm' offer shared memory (when the addon loads; else logged) and a peer data port; 'peer' only
   * the port; 'coordinator' neither.
   */
  dataPlane?: DataPlaneChoice;
  /**
   * Shared-memory plane: floats of a buffer that each rank may fill and all-reduce in place without a copy in or out
   * (`sharedBuffer()`: the trainer's gradients). Rank 0 adds it to the segment when /dev/shm has room for it;
   * default 0 (none).
   */
  sharedElems?: number;
}

/**
 * Per-collective timings of the last call, for benchmarks. `waitMs`: sent -> first result (coordinator data
 * plane) or -> the coordinator's go (peer data plane). The peer data plane also fills receiveMs (go -> the last
 * input of this rank's shard), sumMs (reducing the shard), returnMs (-> the last reduced chunk from every owner) and
 * flushMs (-> the last of this rank's own writes handed to the kernel, when that came after).
 */
export interface ClientTiming {
  encodeMs: number; sendMs: number; waitMs: number; decodeMs: number; totalMs: number;
  dataPlane?: 'shm' | 'hier' | 'peer' | 'coordinator'; receiveMs?: number; sumMs?: number; returnMs?: number; flushMs?: number;
}
// On the shm plane: encodeMs = copying into the segment, receiveMs = waiting for the other ranks' steps, sumMs =
// reducing this rank's shards, decodeMs = copying the other shards' results out.

/** Per-call options of allReduce. */
export interface AllReduceOptions {
  /**
   * With gradCompression 'fp16': only data[0..compressibleLength) may be rounded to binary16 (gradients); the rest
   * (e.g. BatchNorm running statistics, which are values, not deltas) is averaged in float32, exactly as without
   * compression. Default: data.length. Ignored without compression.
   */
  compressibleLength?: number;
  /**
   * data[0..preReduced) was already averaged over the ranks by this client's OverlapExchange (openOverlap) in this
   * step: only the rest is exchanged, but the coordinator is told of the whole call, as without overlap. Default 0.
   */
  preReduced?: number;
}

const DEFAULTS = { bucketBytes: 25 * 1024 * 1024, gradCompression: 'none' as const, timeoutMs: 30_000, rendezvousTimeoutMs: 120_000, dataPlane: 'auto' as DataPlaneChoice, sharedElems: 0 };
/** Extra wait beyond a timeout so that the coordinator's abort (which names the failed rank) wins the race. */
const GRACE_MS = 1000;

interface Pending {
  seq: number; op: Op; dtype: DType; nb: number; bucketElems: number; got: number;
  /** coordinator data plane: arrived[b] = 1 once result bucket b is in (a duplicate or a gap is a protocol error) */
  arrived: Uint8Array;
  data: Float32Array; metrics?: Float64Array;
  resolve: () => void; reject: (e: Error) => void; timer: NodeJS.Timeout;
  t0: number; tSent: number; tFirst: number; decodeMs: number;
  /** peer (or shm) data plane: this rank's exchange finished / the coordinator's go arrived */
  peer?: { timing: PeerTiming; done: boolean; go: boolean; tGo: number };
}

export class CoordinatorClient {
  readonly rank: number;
  readonly worldSize: number;
  readonly runId: string;
  readonly generation: number;
  /** Timings of the last completed collective. */
  lastTiming: ClientTiming = { encodeMs: 0, sendMs: 0, waitMs: 0, decodeMs: 0, totalMs: 0 };
  private readonly bucketElems: number;
  /** Set when the job uses the peer data plane (the coordinator's welcome listed every rank's data port). */
  private readonly plane: PeerPlane | null;
  /** Set when the job uses the shared-memory data plane (the welcome named a segment). */
  private shm: ShmPlane | null = null;
  /** shm plane: the last collective the coordinator answered with go (they come in order). */
  private shmGo = 0;
  /** Set when the job spans machines and uses the hierarchical plane (the welcome listed `machines`). */
  private hier: HierPlane | null = null;
  private peerFailureTimer: NodeJS.Timeout | null = null;
  private readonly maxMessageBytes: number;
  private seq = 0;
  private pending: Pending | null = null;
  private failure: CoordinatorError | null = null;
  private lastHeard = Date.now();
  private lastTick = Date.now();
  private readonly watchdog: NodeJS.Timeout;
  private closing = false;
  /** shm plane: an overlapped step holds the plane's cursor (OverlapExchange.begin .. finish); collectives wait. */
  private lent = false;
  private overlap: OverlapExchange | null = null;

  private constructor(private readonly ws: WebSocket, private readonly opts: Required<Omit<ClientOptions, 'runId' | 'token' | 'ca' | 'log'>> & ClientOptions,
    welcome: WelcomeMsg, private readonly arena: Arena, plane: PeerPlane | null) {
    this.plane = welcome.peers && !welcome.machines ? plane : null;
    if (plane && !this.plane && !welcome.machines) plane.destroy(); // hier: openHier() takes it
    if (this.plane) this.plane.onFailure = (peer, code, reason) => this.onPeerFailure(peer, code, reason);
    this.rank = opts.rank;
    this.worldSize = opts.worldSize;
    this.runId = welcome.runId;
    this.generation = welcome.generation;
    this.maxMessageBytes = welcome.maxMessageBytes;
    // Buckets are whole blocks of 8 floats so the SIMD kernels see aligned, tail-free buckets except the last.
    this.bucketElems = Math.max(8, Math.floor(opts.bucketBytes / 4 / 8) * 8);
    ws.on('message', (data: Buffer) => this.onMessage(data));
    ws.on('ping', () => { this.lastHeard = Date.now(); });
    ws.on('close', (code, reason) => this.onClose(code, reason.toString()));
    ws.on('error', () => {}); // 'close' follows and carries the failure
    this.watchdog = setInterval(() => this.checkLiveness(), 1000);
    this.watchdog.unref();
  }

  /** Connects, joins the rendezvous and resolves once every rank has joined. */
  static async connect(options: ClientOptions): Promise<CoordinatorClient> {
    const opts = { ...DEFAULTS, ...options };
    check(typeof opts.url === 'string' && /^wss?:\/\//.test(opts.url), 'INVALID_OPTIONS', () => `url must be ws://host:port or wss://host:port, got ${opts.url}`);
    check(Number.isInteger(opts.worldSize) && opts.worldSize >= 1, 'INVALID_OPTIONS', () => `worldSize must be a positive integer, got ${opts.worldSize}`);
    check(Number.isInteger(opts.rank) && opts.rank >= 0 && opts.rank < opts.worldSize, 'INVALID_OPTIONS', () => `rank must be in 0..${opts.worldSize - 1}, got ${opts.rank}`);
    check(Array.isArray(opts.signature), 'INVALID_OPTIONS', () => 'signature must be an array of { name, shape }');
    check(Number.isFinite(opts.bucketBytes) && opts.bucketBytes >= 32, 'INVALID_OPTIONS', () => `bucketBytes must be >= 32, got ${opts.bucketBytes}`);
    check(opts.gradCompression === 'none' || opts.gradCompression === 'fp16', 'INVALID_OPTIONS', () => `gradCompression must be 'none' or 'fp16', got ${opts.gradCompression}`);
    check(opts.timeoutMs > 0 && opts.rendezvousTimeoutMs > 0, 'INVALID_OPTIONS', () => 'timeoutMs and rendezvousTimeoutMs must be positive');
    check(DATA_PLANES.includes(opts.dataPlane), 'INVALID_OPTIONS', () => `dataPlane must be one of ${DATA_PLANES.join(', ')}, got ${String(opts.dataPlane)}`);
    check(Number.isInteger(opts.sharedElems) && opts.sharedElems >= 0 && opts.sharedElems < 2 ** 32, 'INVALID_OPTIONS', () => `sharedElems must be an integer in 0..2^32-1, got ${opts.sharedElems}`);
    const token = resolveToken(opts.token);
    const ca = opts.ca === undefined ? undefined : opts.ca.includes('-----BEGIN') ? opts.ca : existsSync(opts.ca) ? readFileSync(opts.ca, 'utf8') : opts.ca;
    const deadline = Date.now() + opts.rendezvousTimeoutMs + GRACE_MS;
    const url = new URL(opts.url);
    const host = url.hostname.replace(/^\[|\]$/g, '');
    // Peer data connections are plain TCP (authenticated by a per-job key), so a wss:// job keeps its data on the
    // coordinator's TLS connection. Bind the interface that reaches a loopback coordinator, else every interface.
    const peerHost = url.protocol === 'ws:' && opts.dataPlane !== 'coordinator' ? (isLoopback(host) ? (host === 'localhost' ? '127.0.0.1' : host) : '0.0.0.0') : null;
    // Shared memory needs the addon; the coordinator then picks another plane, and the log says why.
    const noShm = opts.dataPlane === 'auto' || opts.dataPlane === 'shm'
      ? shmUnavailable() ?? shmSpaceProblem(opts.worldSize, statfsSync('/dev/shm')) : 'not offered';
    if (noShm && noShm !== 'not offered') opts.log?.(`rank ${opts.rank}: shared-memory data plane unavailable: ${noShm}`);
    const myHost = noShm ? undefined : hostId();
    for (;;) {
      const arena = new Arena();
      const plane = peerHost === null ? null : await PeerPlane.listen(peerHost, arena, opts.worldSize);
      const log = opts.log;
      if (plane && log) plane.onReject = (code, reason, address) => log(`rank ${opts.rank}: data listener refused ${address}: ${code}: ${reason}`);
      const ws = new WebSocket(opts.url, {
        perMessageDeflate: false,
        maxPayload: HEADER_ROOM + 2 * opts.bucketBytes + 65536,
        // A zero mask makes ws skip the per-byte XOR (85 MB/s in JS); masking guards against proxy cache
        // poisoning by browsers, which does not apply to a worker talking to its coordinator.
        generateMask: (m: Buffer) => { m.fill(0); },
        headers: token === undefined ? {} : { authorization: `Bearer ${token}` },
        ...(ca === undefined ? {} : { ca }),
      });
      try {
        const welcome = await handshake(ws, opts, deadline, plane?.port, myHost);
        const client = new CoordinatorClient(ws, opts, welcome, arena, plane);
        if (welcome.machines) await client.openHier(welcome, plane!);
        if (client.plane) await client.openPeers(welcome);
        if (welcome.shm && !welcome.machines) await client.openShm(welcome.shm);
        return client;
      } catch (e) {
        ws.terminate();
        plane?.destroy();
        if (e instanceof RetryableError && Date.now() + 250 < deadline) {
          await new Promise((r) => setTimeout(r, 250));
          continue;
        }
        if (e instanceof RetryableError) {
          throw new CoordinatorError('RENDEZVOUS_TIMEOUT', `could not reach the coordinator at ${opts.url} within ${opts.rendezvousTimeoutMs / 1000} s (${e.message}); start it first or check the address`);
        }
        throw e;
      }
    }
  }

  /** Connects the peer data plane; a failure here closes the socket, so the coordinator aborts the other ranks. */
  private async openPeers(welcome: WelcomeMsg): Promise<void> {
    try {
      await this.plane!.start(this.rank, welcome.peers!, welcome.dataKey!, this.opts.timeoutMs);
    } catch (e) {
      throw this.failure ?? new CoordinatorError('CONNECTION_LOST', `rank ${this.rank}: ${(e as Error).message}; ` +
        `workers must reach each other's data ports over TCP (or start the coordinator with dataPlane: 'coordinator')`);
    }
  }

  /** Hierarchical plane: maps this machine's segment and connects carriers across machines (hier-plane.ts). */
  private async openHier(welcome: WelcomeMsg, links: PeerPlane): Promise<void> {
    try {
      this.hier = await HierPlane.open({ path: welcome.shm!, rank: this.rank, machines: welcome.machines!, peers: welcome.peers!, dataKey: welcome.dataKey!, links, timeoutMs: this.opts.timeoutMs });
      this.hier.onFailure = (peer, code, reason) => this.onPeerFailure(peer, code, reason);
    } catch (e) {
      throw this.failure ?? new CoordinatorError((e as CoordinatorError).code ?? 'CONNECTION_LOST', `rank ${this.rank}: ${(e as Error).message}; ` +
        `ranks with one host id must share /dev/shm and reach the other machines' data ports over TCP (or start the coordinator with dataPlane: 'peer')`);
    }
  }

  /** Maps the job's shared segment; a failure here closes the socket, so the coordinator aborts the other ranks. */
  private async openShm(path: string): Promise<void> {
    try {
      // Rank 0 makes the segment, so its /dev/shm decides whether the registered slots fit; the others follow its header.
      const want = this.opts.sharedElems;
      const noRoom = want && this.rank === 0 ? shmSpaceProblem(this.worldSize, statfsSync('/dev/shm'), want) : null;
      if (noRoom) this.opts.log?.(`rank 0: no registered slots in the shared segment (sharedBuffer() is null, collectives copy through it): ${noRoom}`);
      this.shm = await ShmPlane.open({ path, rank: this.rank, ranks: this.worldSize, timeoutMs: this.opts.timeoutMs, sharedElems: noRoom ? 0 : want });
    } catch (e) {
      throw this.failure ?? new CoordinatorError((e as CoordinatorError).code ?? 'CONNECTION_LOST', `rank ${this.rank}: ${(e as Error).message}; ` +
        `ranks with one host id must share /dev/shm (or start the coordinator with dataPlane: 'peer')`);
    }
  }

  /**
   * This rank's buffer of `n` floats in the shared-memory segment (ClientOptions.sharedElems), or null when the job has
   * none (another data plane, no room in /dev/shm, an older addon, another length). An allReduce or broadcast of it (or
   * of a range of it) exchanges in place: the other ranks read and write it directly, during the collective only.
   * Every rank must use it or none, for the same collectives; it is detached when the client closes.
   */
  sharedBuffer(n: number): Float32Array | null {
    const slot = this.shm?.slot() ?? null;
    return slot && slot.length === n ? slot : null;
  }

  /** Rank 0's `data` is copied into every rank's `data` (lengths must match on every rank). */
  broadcast(data: Float32Array): Promise<void> {
    return this.collective('bcast', data);
  }

  /**
   * In place: data <- mean over ranks (identical bytes everywhere), metrics <- sum over ranks. With fp16 compression
   * and a `compressibleLength` below data.length, the float32 remainder is a second collective right after the
   * first (marked `tail`), so each collective keeps one dtype on both data planes.
   */
  async allReduce(data: Float32Array, metrics?: Float64Array, options: AllReduceOptions = {}): Promise<void> {
    const n = data instanceof Float32Array ? data.length : 0; // collective() rejects anything else
    const k = options.compressibleLength ?? n;
    if (!Number.isInteger(k) || k < 0 || k > n) {
      throw new CoordinatorError('INVALID_OPTIONS', `compressibleLength must be an integer in 0..${n} (data.length), got ${k}`);
    }
    const pre = options.preReduced ?? 0;
    if (pre !== 0) {
      if (!this.shm || this.opts.gradCompression === 'fp16' || !Number.isInteger(pre) || pre < 0 || pre > n) {
        throw new CoordinatorError('INVALID_OPTIONS', `preReduced needs the shm plane and no fp16 compression, and an integer in 0..${n}; got ${pre}`);
      }
      return this.collective('mean', data, metrics, { skip: pre });
    }
    if (this.opts.gradCompression !== 'fp16' || k === n) return this.collective('mean', data, metrics);
    if (k === 0) return this.collective('mean', data, metrics, { lossless: true });
    await this.collective('mean', data.subarray(0, k), metrics);
    const head = this.lastTiming;
    await this.collective('mean', data.subarray(k), undefined, { lossless: true, tail: true });
    const t = this.lastTiming;
    for (const key of Object.keys(t) as (keyof ClientTiming)[]) {
      if (typeof t[key] === 'number' && typeof head[key] === 'number') (t[key] as number) += head[key] as number;
    }
  }

  /** metrics <- sum over ranks, with no tensor data (evaluation). */
  reduceMetrics(metrics: Float64Array): Promise<void> {
    return this.collective('mean', new Float32Array(0), metrics);
  }

  /**
   * Shared-memory plane only: starts a worker thread that exchanges `buckets` (flat ranges) of `data` (backed by a
   * SharedArrayBuffer) while this thread computes; see overlap.ts. The trainer then announces each step's
   * all-reduce with `preReduced`. One per client; closed with the client.
   */
  async openOverlap(data: Float32Array, buckets: BucketRanges[]): Promise<OverlapExchange> {
    if (!this.shm) throw new CoordinatorError('INVALID_OPTIONS', 'overlap needs the shared-memory data plane (this job uses another)');
    if (this.overlap) throw new CoordinatorError('BUSY', 'this client already has an overlap exchange');
    this.overlap = await OverlapExchange.start({
      lend: () => {
        if (this.failure) throw this.failure;
        if (this.pending || this.lent || !this.shm) throw new CoordinatorError('BUSY', 'a collective is in progress on this client');
        this.lent = true;
        return this.shm.cursor();
      },
      giveBack: (cursor, err) => {
        this.lent = false;
        if (err) this.fail(err);
        else this.shm?.setCursor(cursor!);
      },
    }, this.shm, this.opts.timeoutMs, data, buckets);
    return this.overlap;
  }

  /**
   * Shared-memory plane, registered slots, fp32 wire only: once every rank wrote `data` (its sharedBuffer(), or a range
   * of it), resolves with every rank's copy of that range in rank order (views into the segment), and `metrics`
   * summed over ranks; nothing is averaged or written (ShmPlane.gather). The caller computes the exact mean from the
   * views itself and then calls releaseGathered(); before it writes its sharedBuffer() again it awaits
   * gatheredReleased() (the other ranks may still be reading it until then). Null where this client cannot (another
   * data plane, no slots, `data` not in the slot, --grad-compression=fp16): use allReduce.
   */
  async gatherShared(data: Float32Array, metrics?: Float64Array): Promise<Float32Array[] | null> {
    const shm = this.shm;
    if (!shm || this.opts.gradCompression === 'fp16' || !shm.slot() || data.buffer !== shm.slot()!.buffer) return null;
    if (this.failure) throw this.failure;
    if (this.closing) throw new CoordinatorError('CLOSED', 'this client was closed; connect a new one');
    if (this.lent || this.pending) throw new CoordinatorError('BUSY', 'another collective is in progress on this client; await it first');
    if (metrics && (!(metrics instanceof Float64Array) || metrics.length > MAX_METRICS)) {
      throw new CoordinatorError('INVALID_OPTIONS', `metrics must be a Float64Array of at most ${MAX_METRICS} values`);
    }
    const t0 = performance.now();
    return new Promise<Float32Array[]>((resolve, reject) => {
      // Announced as the mean it stands for: the coordinator counts it, checks every rank issued the same, times it out.
      let views: Float32Array[] = [];
      const p = this.announce('mean', 'f32', data, metrics, t0, false, () => resolve(views), reject, 'another rank is stuck');
      shm.gather(data, metrics).then((g) => {
        if (this.pending !== p) return;
        clearTimeout(p.timer);
        this.pending = null;
        views = g.views;
        this.lastTiming = { encodeMs: 0, sendMs: 0, waitMs: 0, decodeMs: 0, totalMs: performance.now() - t0, dataPlane: 'shm', receiveMs: g.timing.waitMs, sumMs: 0 };
        p.resolve();
      }, (e: CoordinatorError) => this.fail(e));
    });
  }

  /** Done reading the views of the last gatherShared() (no-op when none is held). */
  releaseGathered(): void {
    this.shm?.releaseGather();
  }

  /** Resolves once every rank released the last gatherShared(): this rank may write its sharedBuffer() again. */
  async gatheredReleased(): Promise<void> {
    if (!this.shm) return;
    if (this.failure) throw this.failure;
    try {
      await this.shm.gatherReleased();
    } catch (e) {
      this.fail(e as CoordinatorError);
      throw this.failure ?? e;
    }
  }

  /**
   * `lossless`: float32 even with fp16 compression; `tail`: the remainder of the preceding all-reduce; `skip`: shm
   * plane, the leading values are already averaged (preReduced).
   */
  private collective(op: Op, data: Float32Array, metrics?: Float64Array, o: { lossless?: boolean; tail?: boolean; skip?: number } = {}): Promise<void> {
    if (this.failure) return Promise.reject(this.failure);
    if (this.closing) return Promise.reject(new CoordinatorError('CLOSED', 'this client was closed; connect a new one'));
    if (this.lent) return Promise.reject(new CoordinatorError('BUSY', 'an overlapped step holds the shm plane; finish() it first'));
    if (this.pending) return Promise.reject(new CoordinatorError('BUSY', 'another collective is in progress on this client; await it first (calls must be issued in the same order on every rank)'));
    if (!(data instanceof Float32Array)) return Promise.reject(new CoordinatorError('INVALID_OPTIONS', 'data must be a Float32Array'));
    if (metrics && (!(metrics instanceof Float64Array) || metrics.length > MAX_METRICS)) {
      return Promise.reject(new CoordinatorError('INVALID_OPTIONS', `metrics must be a Float64Array of at most ${MAX_METRICS} values`));
    }
    const t0 = performance.now();
    const dtype: DType = op === 'mean' && this.opts.gradCompression === 'fp16' && !o.lossless ? 'f16' : 'f32';
    const tail = o.tail === true;
    if (this.shm) return this.shmCollective(op, dtype, data, metrics, t0, tail, o.skip ?? 0);
    if (this.hier) return this.hierCollective(op, dtype, data, metrics, t0, tail);
    if (this.plane) return this.peerCollective(op, dtype, data, metrics, t0, tail);
    const esize = bytesPer(dtype);
    const numel = data.length;
    const be = this.bucketElems;
    const nb = Math.max(1, Math.ceil(numel / be));
    const per = Math.min(be, numel);
    const slotBytes = HEADER_ROOM + align16(per * esize);
    if (slotBytes > this.maxMessageBytes) {
      return Promise.reject(new CoordinatorError('INVALID_OPTIONS', `buckets of ${per * esize} bytes exceed the coordinator's maxMessageBytes ${this.maxMessageBytes}; lower bucketBytes`));
    }
    // Arena: one message slot per bucket (header room + payload), then f32 and f16 scratch for fp16 decoding.
    const scratch32 = nb * slotBytes;
    const scratch16 = scratch32 + align16(per * 4);
    this.arena.ensure(scratch16 + align16(per * 2) + 16);
    const a = this.arena;
    const seq = ++this.seq;
    let sendMs = 0;
    for (let b = 0; b < nb; b++) {
      const off = b * be;
      const count = Math.min(be, numel - off);
      const slot = b * slotBytes;
      const payload = slot + HEADER_ROOM;
      if (dtype === 'f32') a.u8.set(new Uint8Array(data.buffer, data.byteOffset + off * 4, count * 4), payload);
      else {
        a.f32.set(data.subarray(off, off + count), scratch32 >> 2);
        a.toHalf(payload, scratch32, count);
      }
      const header: DataMsg = { v: 1, type: 'data', seq, op, dtype, numel, bucketElems: be, bucket: b, count, ...(tail ? { tail } : {}) };
      if (b === 0 && metrics) header.metrics = Array.from(metrics);
      writeHeader(a.u8.subarray(slot, payload), header, HEADER_ROOM);
      const ts = performance.now();
      this.ws.send(a.buffer(slot, HEADER_ROOM + count * esize));
      sendMs += performance.now() - ts;
    }
    const tSent = performance.now();
    return new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => this.fail(new CoordinatorError('ROUND_TIMEOUT',
        `collective ${seq} (${op}) got ${this.pending?.got ? `only ${this.pending.got} of ${nb} result buckets (missing ${missingBuckets(this.pending.arrived)})` : 'no result'} ` +
        `within ${this.opts.timeoutMs / 1000} s; the coordinator at ${this.opts.url} or another rank is stuck`)), this.opts.timeoutMs + GRACE_MS);
      this.pending = { seq, op, dtype, nb, bucketElems: be, got: 0, arrived: new Uint8Array(nb), data, metrics, resolve, reject, timer, t0, tSent, tFirst: 0, decodeMs: 0 };
      this.lastTiming = { encodeMs: tSent - t0 - sendMs, sendMs, waitMs: 0, decodeMs: 0, totalMs: 0 };
    });
  }

  /**
   * Opens collective seq+1 on the peer or shm plane: its round timer, its pending record, and the `coll`
   * announcement to the coordinator (which counts it, checks every rank issued the same, and sends the go).
   */
  private announce(op: Op, dtype: DType, data: Float32Array, metrics: Float64Array | undefined, t0: number, tail: boolean,
    resolve: () => void, reject: (e: Error) => void, stuck: string): Pending {
    const seq = ++this.seq;
    const timer = setTimeout(() => this.fail(new CoordinatorError('ROUND_TIMEOUT',
      `collective ${seq} (${op}) did not complete within ${this.opts.timeoutMs / 1000} s; ${stuck}`)), this.opts.timeoutMs + GRACE_MS);
    const p: Pending = { seq, op, dtype, nb: 1, bucketElems: this.bucketElems, got: 0, arrived: new Uint8Array(0), data, metrics, resolve, reject, timer, t0, tSent: 0, tFirst: 0, decodeMs: 0 };
    this.pending = p;
    const header: CollMsg = { v: 1, type: 'coll', seq, op, dtype, numel: data.length, bucketElems: this.bucketElems, ...(tail ? { tail } : {}) };
    if (metrics) header.metrics = Array.from(metrics);
    this.ws.send(encode(header));
    p.tSent = performance.now();
    return p;
  }

  /** Peer data plane: announce the collective (coll), exchange data after the coordinator's go, finish when both are done. */
  private peerCollective(op: Op, dtype: DType, data: Float32Array, metrics: Float64Array | undefined, t0: number, tail: boolean): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      // Announce first: the copy/encode below overlaps the coordinator's round trip. Peers' frames can only follow
      // the go, which needs this announcement, and are read only after this synchronous code has set up the exchange.
      const p = this.announce(op, dtype, data, metrics, t0, tail, resolve, reject, `the coordinator at ${this.opts.url} or another rank is stuck`);
      const timing = this.plane!.begin(p.seq, op, dtype, data, this.bucketElems, () => {
        p.peer!.done = true;
        this.finishPeer(p);
      });
      p.peer = { timing, done: false, go: false, tGo: 0 };
    });
  }

  /**
   * Shared-memory data plane: the exchange runs through the segment at once and resolves by itself (it checks
   * that every rank issued the same collective and sums the metrics there), so the coordinator's round trip is not
   * on the critical path. The coordinator still hears of every collective when it starts (`coll`: step count,
   * /status, round timeout); one that arrives while the previous is still open there waits in its queue.
   */
  private shmCollective(op: Op, dtype: DType, data: Float32Array, metrics: Float64Array | undefined, t0: number, tail: boolean, skip: number): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      const p = this.announce(op, dtype, data, metrics, t0, tail, resolve, reject, 'another rank is stuck');
      this.shm!.run(op, dtype, skip ? data.subarray(skip) : data, metrics).then((t) => {
        if (this.pending !== p) return;
        clearTimeout(p.timer);
        this.pending = null;
        this.lastTiming = {
          encodeMs: t.copyInMs, sendMs: 0, waitMs: 0, decodeMs: t.copyOutMs, totalMs: performance.now() - t0,
          dataPlane: 'shm', receiveMs: t.waitMs, sumMs: t.sumMs,
        };
        resolve();
      }, (e: CoordinatorError) => this.fail(e));
    });
  }

  /** shm plane: the coordinator saw every rank announce collective m.seq (the bytes may be long exchanged). */
  private onShmGo(m: GoMsg): void {
    if (m.seq !== this.shmGo + 1 || m.seq > this.seq) throw new Error(`go for collective ${m.seq} was not expected (next: ${this.shmGo + 1})`);
    this.shmGo = m.seq;
  }

  /** Hierarchical plane: announced like a peer-plane collective; the exchange starts at the go (which carries the metric sums). */
  private hierCollective(op: Op, dtype: DType, data: Float32Array, metrics: Float64Array | undefined, t0: number, tail: boolean): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      const p = this.announce(op, dtype, data, metrics, t0, tail, resolve, reject, `the coordinator at ${this.opts.url} or another rank is stuck`);
      this.hier!.begin(p.seq, op, dtype, data); // frames from other machines may arrive from the go on
    });
  }

  private onHierGo(m: GoMsg): void {
    const p = this.pending;
    if (!p || m.seq !== p.seq || p.tFirst) throw new Error(`go for collective ${m.seq} was not expected`);
    if (p.metrics) {
      if (!m.metrics || m.metrics.length !== p.metrics.length) throw new Error('go carries no (or wrongly sized) metrics');
      p.metrics.set(m.metrics);
    }
    p.tFirst = performance.now();
    this.hier!.run().then((t) => {
      if (this.pending !== p) return;
      clearTimeout(p.timer);
      this.pending = null;
      this.lastTiming = {
        encodeMs: t.copyInMs, sendMs: 0, waitMs: p.tFirst - p.tSent, decodeMs: t.copyOutMs, totalMs: performance.now() - p.t0,
        dataPlane: 'hier', receiveMs: t.waitMs + t.linkMs, sumMs: t.sumMs, flushMs: t.flushMs,
      };
      p.resolve();
    }, (e: CoordinatorError) => this.fail(e));
  }

  private onGo(m: GoMsg): void {
    if (this.shm) return this.onShmGo(m);
    if (this.hier) return this.onHierGo(m);
    const p = this.pending;
    if (!p?.peer || m.seq !== p.seq || p.peer.go) throw new Error(`go for collective ${m.seq} was not expected`);
    if (p.metrics) {
      if (!m.metrics || m.metrics.length !== p.metrics.length) throw new Error('go carries no (or wrongly sized) metrics');
      p.metrics.set(m.metrics);
    }
    p.peer.go = true;
    p.peer.tGo = performance.now();
    this.plane!.go();
    this.finishPeer(p);
  }

  private finishPeer(p: Pending): void {
    if (!p.peer!.go || !p.peer!.done || this.pending !== p) return;
    clearTimeout(p.timer);
    this.pending = null;
    const t = p.peer!.timing;
    this.lastTiming = {
      encodeMs: t.encodeMs, sendMs: t.sendMs, waitMs: p.peer!.tGo - p.tSent, decodeMs: t.decodeMs, totalMs: performance.now() - p.t0,
      dataPlane: 'peer', receiveMs: t.receiveMs, sumMs: t.sumMs, returnMs: t.returnMs, flushMs: t.flushMs,
    };
    p.resolve();
  }

  /**
   * A data connection broke or carried garbage: tell the coordinator (which aborts the job naming that rank, unless
   * it already knows better, e.g. the peer process died) and give its abort time to arrive before failing alone.
   */
  private onPeerFailure(peer: number, code: PeerFailureCode, reason: string): void {
    if (this.failure || this.closing) return;
    if (this.ws.readyState === WebSocket.OPEN) this.ws.send(encode({ v: 1, type: 'peerFailure', seq: this.pending?.seq ?? this.seq, peer, code, reason }));
    if (this.pending && !this.peerFailureTimer) {
      this.peerFailureTimer = setTimeout(() => this.fail(new CoordinatorError(code, `${reason}; the coordinator did not abort the job`, peer)), 2 * GRACE_MS);
      this.peerFailureTimer.unref();
    }
  }

  private onMessage(buf: Buffer): void {
    this.lastHeard = Date.now();
    let msg: Message, payload: Buffer;
    try {
      ({ msg, payload } = decode(buf));
    } catch (e) {
      return this.fail(new CoordinatorError('PROTOCOL_ERROR', `bad message from the coordinator: ${(e as Error).message}`), CloseCode.MALFORMED);
    }
    switch (msg.type) {
      case 'result':
        try {
          return this.onResult(msg, payload);
        } catch (e) {
          return this.fail(new CoordinatorError('PROTOCOL_ERROR', (e as Error).message), CloseCode.WRONG_SIZE);
        }
      case 'go':
        try {
          return this.onGo(msg);
        } catch (e) {
          return this.fail(new CoordinatorError('PROTOCOL_ERROR', (e as Error).message), CloseCode.UNEXPECTED);
        }
      case 'abort':
        return this.fail(new CoordinatorError('ROUND_ABORTED',
          `the coordinator aborted the job: ${msg.reason} (${msg.code}, failed rank ${msg.failedRank}); restart the job`, msg.failedRank));
      case 'error':
        return this.fail(new CoordinatorError(msg.code as CoordinatorError['code'], msg.message));
      default:
        return this.fail(new CoordinatorError('PROTOCOL_ERROR', `unexpected '${msg.type}' from the coordinator`), CloseCode.UNEXPECTED);
    }
  }

  private onResult(m: ResultMsg, payload: Buffer): void {
    const p = this.pending;
    if (!p || p.peer || m.seq !== p.seq || m.dtype !== p.dtype || m.bucket >= p.nb) throw new Error(`result for collective ${m.seq} bucket ${m.bucket} was not expected`);
    // The coordinator completes buckets in order (each rank sends them in order), so a bucket that overtakes an
    // earlier one means that one was lost; counting alone would let a duplicate stand in for it.
    if (p.arrived[m.bucket]) throw new Error(`result bucket ${m.bucket} of collective ${m.seq} arrived twice`);
    if (m.bucket > 0 && !p.arrived[m.bucket - 1]) throw new Error(`result bucket ${m.bucket} of collective ${m.seq} arrived before bucket(s) ${missingBuckets(p.arrived.subarray(0, m.bucket))}`);
    const t = performance.now();
    if (p.got === 0) p.tFirst = t;
    const off = m.bucket * p.bucketElems;
    const count = Math.min(p.bucketElems, p.data.length - off);
    if (m.count !== count || payload.length !== count * bytesPer(p.dtype)) throw new Error(`result bucket ${m.bucket}: ${payload.length} bytes, expected ${count} values`);
    if (p.dtype === 'f32') {
      // Byte copy: the payload's offset inside ws's receive buffer need not be 4-aligned.
      payload.copy(Buffer.from(p.data.buffer, p.data.byteOffset + off * 4, count * 4));
    } else {
      const a = this.arena;
      const s32 = this.arena.bytes - align16(count * 4) - align16(count * 2) - 16;
      const s16 = s32 + align16(count * 4);
      a.u8.set(payload, s16);
      a.fromHalf(s32, s16, count);
      p.data.set(a.f32.subarray(s32 >> 2, (s32 >> 2) + count), off);
    }
    if (m.bucket === 0 && p.metrics) {
      if (!m.metrics || m.metrics.length !== p.metrics.length) throw new Error('result carries no (or wrongly sized) metrics');
      p.metrics.set(m.metrics);
    }
    const t2 = performance.now();
    p.decodeMs += t2 - t;
    p.arrived[m.bucket] = 1;
    if (++p.got === p.nb) {
      clearTimeout(p.timer);
      this.pending = null;
      Object.assign(this.lastTiming, { waitMs: p.tFirst - p.tSent, decodeMs: p.decodeMs, totalMs: t2 - p.t0 });
      p.resolve();
    }
  }

  /** Records the first failure, rejects the pending call and drops the connection; later calls reject with it. */
  private fail(err: CoordinatorError, closeCode?: number): void {
    this.failure ??= err;
    if (this.peerFailureTimer) clearTimeout(this.peerFailureTimer);
    this.plane?.destroy();
    // A collective the other ranks wait in fails for them at once; the mapping stays until close(), because the
    // caller may still be writing its sharedBuffer() (the trainer's gradients) before it sees this failure.
    this.shm?.leave();
    this.hier?.destroy();
    const p = this.pending;
    this.pending = null;
    if (p) {
      clearTimeout(p.timer);
      p.reject(this.failure);
    }
    if (closeCode !== undefined) this.ws.close(closeCode, err.message.slice(0, 120));
    else if (err.code === 'ROUND_TIMEOUT' || err.code === 'CONNECTION_LOST') this.ws.terminate();
  }

  private onClose(code: number, reason: string): void {
    clearInterval(this.watchdog);
    if (this.closing) return;
    this.fail(new CoordinatorError('CONNECTION_LOST', `connection to the coordinator at ${this.opts.url} closed (code ${code}${reason ? `: ${reason}` : ''}); the coordinator died or ended the job`));
  }

  /** The coordinator pings every second; hearing nothing for the timeout means it (or the network) is gone. */
  private checkLiveness(): void {
    const now = Date.now();
    const late = now - this.lastTick > 1500; // our own event loop was blocked: give pings queued meanwhile a chance
    this.lastTick = now;
    if (late) return;
    if (now - this.lastHeard > this.opts.timeoutMs + GRACE_MS) {
      this.fail(new CoordinatorError('CONNECTION_LOST', `nothing heard from the coordinator at ${this.opts.url} for ${(now - this.lastHeard) / 1000} s`));
    }
  }

  /** Says goodbye (so the coordinator does not count this as a failure) and closes the socket. */
  async close(): Promise<void> {
    if (this.closing) return;
    // shm plane: every announced collective must be closed at the coordinator first (its go), else it would see
    // this rank leave in the middle of a collective that every rank in fact completed.
    for (const until = Date.now() + this.opts.timeoutMs; this.shm && this.shmGo < this.seq && !this.failure && this.ws.readyState === WebSocket.OPEN && Date.now() < until;) {
      await new Promise((r) => setTimeout(r, 2));
    }
    this.closing = true;
    clearInterval(this.watchdog);
    await this.overlap?.close();
    if (this.ws.readyState === WebSocket.OPEN) {
      this.ws.send(encode({ v: 1, type: 'bye' }));
      this.ws.close(1000, 'bye');
    }
    this.plane?.close();
    this.shm?.close();
    this.hier?.close();
    if (this.ws.readyState !== WebSocket.CLOSED) {
      await new Promise<void>((resolve) => {
        const t = setTimeout(() => { this.ws.terminate(); resolve(); }, 2000);
        this.ws.once('close', () => { clearTimeout(t); resolve(); });
      });
    }
  }
}

class RetryableError extends Error {}

/** '0,3,4' for the buckets not yet arrived (the first 10). */
function missingBuckets(arrived: Uint8Array): string {
  const out: number[] = [];
  for (let b = 0; b < arrived.length && out.length < 10; b++) if (!arrived[b]) out.push(b);
  return out.join(',') + (out.length === 10 ? ',...' : '');
}

/** Opens the socket, says hello and waits for welcome (or a rejection). */
function handshake(ws: WebSocket, opts: ClientOptions & { rendezvousTimeoutMs: number }, deadline: number, dataPort: number | undefined, host: string | undefined): Promise<WelcomeMsg> {
  return new Promise((resolve, reject) => {
    let opened = false;
    let settled = false;
    const done = (f: () => void) => { if (!settled) { settled = true; clearTimeout(timer); f(); } };
    const timer = setTimeout(() => done(() => reject(new CoordinatorError('RENDEZVOUS_TIMEOUT',
      `not all ${opts.worldSize} ranks joined within ${opts.rendezvousTimeoutMs / 1000} s; check --workers and the coordinator address`))), Math.max(0, deadline - Date.now()));
    ws.on('unexpected-response', (_req, res) => done(() => reject(res.statusCode === 401
      ? new CoordinatorError('AUTH_FAILED', `the coordinator at ${opts.url} refused the token; pass the same --token (or ${'GOOGLENET_COORDINATOR_TOKEN'}) as the coordinator`)
      : new CoordinatorError('CONNECTION_LOST', `the coordinator at ${opts.url} answered HTTP ${res.statusCode}`))));
    ws.on('error', (e: NodeJS.ErrnoException) => done(() => reject(!opened && (e.code === 'ECONNREFUSED' || e.code === 'ECONNRESET')
      ? new RetryableError(e.message)
      : new CoordinatorError('CONNECTION_LOST', `cannot connect to the coordinator at ${opts.url}: ${e.message}`))));
    ws.on('close', (code, reason) => done(() => reject(new CoordinatorError('CONNECTION_LOST', `the coordinator closed the connection during rendezvous (code ${code}: ${reason.toString()})`))));
    ws.on('open', () => {
      opened = true;
      ws.send(encode({ v: PROTOCOL_VERSION, type: 'hello', rank: opts.rank, worldSize: opts.worldSize, signature: opts.signature,
        ...(opts.runId === undefined ? {} : { runId: opts.runId }), ...(dataPort === undefined ? {} : { dataPort }), ...(host === undefined ? {} : { hostId: host }) }));
    });
    ws.on('message', (buf: Buffer) => {
      let msg: Message;
      try {
        msg = decode(buf).msg;
      } catch (e) {
        return done(() => reject(new CoordinatorError('PROTOCOL_ERROR', `bad message from the coordinator: ${(e as ProtocolViolation).message}`)));
      }
      if (msg.type === 'welcome') done(() => { ws.removeAllListeners(); resolve(msg as WelcomeMsg); });
      else if (msg.type === 'error') done(() => reject(new CoordinatorError(msg.code as CoordinatorError['code'], msg.message)));
      else done(() => reject(new CoordinatorError('PROTOCOL_ERROR', `unexpected '${msg.type}' during rendezvous`)));
    });
  });
}
