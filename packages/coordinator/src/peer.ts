import { timingSafeEqual } from 'node:crypto';
import { connect, createServer, type Server, type Socket } from 'node:net';
import {
  CloseCode, PEER_FRAME_HEADER, PEER_KEY_BYTES, ProtocolViolation, bytesPer, decode, writeHeader,
  type ChunkMsg, type DType, type Op, type PeerAddress, type PeerHelloMsg,
} from './protocol.js';
import { Arena, align16 } from './reduce.js';

/**
 * The peer data plane: tensor bytes flow worker <-> worker over plain TCP while the coordinator's WebSocket stays
 * the control plane (rendezvous, auth, the per-collective consistency check, metrics, aborts).
 *
 * Rank s owns shard s of the vector (`shardRange`). An all-reduce is a direct reduce-scatter + all-gather:
 * every rank sends its slice of shard s to rank s ('in' chunks); rank s sums its shard chunk by chunk, in rank
 * order, exactly as the coordinator would (`Arena.mean`), and sends each reduced chunk to every rank ('out').
 * One result buffer per chunk goes to every rank, so all ranks get identical bytes. Per rank this moves
 * 2 (R-1)/R of the vector each way, like gloo's ring, and the work is spread over every process.
 *
 * Connections: rank i connects to every peer j and only ever *reads* that socket (straight into the arena or the
 * caller's Float32Array, via net.Socket's `onread`); the acceptor j writes to it. The first frame a connector
 * sends is `peer { rank }` with the coordinator's per-generation random key as its raw payload; the acceptor
 * compares the key in constant time before it decodes anything, and destroys anything else (no key in time,
 * garbage, extra bytes), reporting each rejection with a code (`onReject`). At most MAX_UNVERIFIED_PEERS
 * connections may wait for their hello at once.
 *
 * Frames: the protocol's framing with the payload at exactly PEER_FRAME_HEADER bytes, so a reader asks the
 * kernel for exactly one header, then for exactly the payload, at its final address: no assembly, no copy.
 */

/** Shard s of n elements over R ranks: boundaries at multiples of 8 (whole SIMD blocks); trailing shards may be empty. */
export function shardRange(n: number, ranks: number, s: number): [number, number] {
  const per = Math.ceil(n / ranks / 8) * 8;
  const lo = Math.min(n, s * per);
  return [lo, Math.min(n, lo + per)];
}

/** Largest chunk on a peer connection (elements; 4 MiB of fp32): 256 Ki made the sum ~1.5x slower, 64 Ki ~2x. */
export const PEER_CHUNK_ELEMS = 1024 * 1024;
/** An accepted data connection that does not authenticate within this long is dropped. */
const PEER_HELLO_TIMEOUT_MS = 10_000;
/** The hello: a frame header and the raw key. */
export const PEER_HELLO_BYTES = PEER_FRAME_HEADER + PEER_KEY_BYTES;
/**
 * Connections accepted but not yet authenticated, at most (or twice the world size, for jobs of more than 32
 * ranks): a job needs worldSize - 1, and they authenticate within a round trip once this rank has the key; more
 * are a scanner or a flood, refused at accept so that they cannot hold memory or timers.
 */
export const MAX_UNVERIFIED_PEERS = 64;
export const unverifiedCap = (worldSize: number): number => Math.max(MAX_UNVERIFIED_PEERS, 2 * worldSize);

export type PeerFailureCode = 'CONNECTION_LOST' | 'PROTOCOL_ERROR';
/** Why the listener refused a connection (nothing is sent back: the socket is destroyed). */
export type PeerRejectCode =
  | 'PEER_AUTH_FAILED'    // the key in the hello is not this generation's
  | 'PEER_MALFORMED'      // right key, but the hello's header is not a valid `peer` frame for a rank of the job
  | 'PEER_OVERSIZED'      // more bytes than a hello before it was verified
  | 'PEER_TRUNCATED'      // closed before a whole hello arrived
  | 'PEER_HELLO_TIMEOUT'  // no whole hello within 10 s
  | 'PEER_LIMIT'          // too many connections waiting to authenticate
  | 'PEER_UNEXPECTED';    // an authenticated connector wrote after its hello (reported as a peer failure too)

/** Per-collective timings on this rank (ms). */
export interface PeerTiming {
  /** copying (fp32) or encoding (fp16) this rank's data into the send and input buffers */
  encodeMs: number;
  /** inside socket writes (the kernel copies what fits; the rest is queued without a copy) */
  sendMs: number;
  /** go -> the last input chunk of this rank's shard arrived */
  receiveMs: number;
  /** the exact mean of this rank's shard (and the fp16 round trip) */
  sumMs: number;
  /** the last input chunk -> the last reduced chunk from every owner arrived */
  returnMs: number;
  /** writing received fp16 results into `data` */
  decodeMs: number;
  /**
   * everything was received and reduced -> the last of this rank's writes was handed to the kernel (0 when the
   * writes were out first). A collective resolves only then: once the caller blocks its event loop (synchronous
   * compute), bytes still queued in user space would not move until it yields again, and the peers waiting for
   * them would stall for the whole compute phase.
   */
  flushMs: number;
}

/**
 * Receives the chunk frames of a peer when another exchange than the flat one drives the connections (the
 * hierarchical plane, hier-plane.ts): `header` validates a frame against the one expected next from peer j and
 * returns where its payload goes (exactly that many bytes are read, straight there), or throws (the connection is
 * dropped and reported as a PROTOCOL_ERROR); `payload` says that the payload is in place.
 */
export interface FrameSink {
  header(j: number, m: ChunkMsg): Buffer;
  payload(j: number, m: ChunkMsg): void;
}

/** Accept-side state of a connection until its hello is verified. */
interface PendingHello { hello: Buffer; got: number; complete: boolean; address: string; timer: NodeJS.Timeout }

interface Cursor { phase: 'in' | 'out'; off: number; inHi: number; outLo: number; outHi: number }

interface Exchange {
  seq: number; op: Op; dtype: DType; esize: number; n: number; chunk: number;
  data: Float32Array; dataBytes: Buffer;
  lo: number; hi: number; stride: number; inBase: number; res: number; send16: number; res16: number; stage: number;
  myChunks: number; inCount: Int32Array; reduced: number; outLeft: number; writesLeft: number;
  cursors: Cursor[]; started: boolean; done: boolean;
  timing: PeerTiming; tGo: number; tLastIn: number; tReady: number;
  onDone: () => void;
}

export class PeerPlane {
  private key: Buffer | null = null;
  private rank = -1;
  private world = 0;
  private readonly out: (Socket | null)[] = [];
  private readonly inb: (Socket | null)[] = [];
  private readonly unverified = new Map<Socket, PendingHello>();
  private ex: Exchange | null = null;
  private closing = false;
  private meshDone: (() => void) | null = null;
  private meshFail: ((e: Error) => void) | null = null;
  /** Called once per broken or misbehaving peer connection while the plane is open. */
  onFailure: (peer: number, code: PeerFailureCode, reason: string) => void = () => {};
  /** Called once per refused connection, with where it came from (for the log). */
  onReject: (code: PeerRejectCode, reason: string, address: string) => void = () => {};
  /** Set: frames go to this sink instead of this plane's own collective (begin/go). */
  sink: FrameSink | null = null;

  private constructor(private readonly server: Server, readonly port: number, private readonly arena: Arena, private readonly maxUnverified: number) {
    server.on('connection', (s) => this.onAccept(s));
  }

  /** Opens the data listener (before hello, which advertises its port), for a job of `worldSize` ranks. */
  static listen(host: string, arena: Arena, worldSize = 1): Promise<PeerPlane> {
    return new Promise((resolve, reject) => {
      const server = createServer({ noDelay: true });
      server.once('error', reject);
      server.listen(0, host, () => {
        server.off('error', reject);
        server.on('error', () => {});
        resolve(new PeerPlane(server, (server.address() as { port: number }).port, arena, unverifiedCap(worldSize)));
      });
    });
  }

  /** Connects to every peer and waits until every peer has connected (and authenticated) to us. */
  start(rank: number, peers: PeerAddress[], keyHex: string, timeoutMs: number): Promise<void> {
    this.rank = rank;
    this.world = peers.length;
    this.key = Buffer.from(keyHex, 'hex');
    const ready = new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`peer data connections not complete within ${timeoutMs / 1000} s ` +
        `(connected to ranks ${this.ranksWith(this.inb)}, accepted from ranks ${this.ranksWith(this.out)})`)), timeoutMs);
      this.meshDone = () => { clearTimeout(timer); resolve(); };
      this.meshFail = (e) => { clearTimeout(timer); reject(e); };
    });
    for (let j = 0; j < this.world; j++) {
      this.out.push(null);
      this.inb.push(null);
    }
    for (const s of [...this.unverified.keys()]) this.checkHello(s);
    for (let j = 0; j < this.world; j++) if (j !== rank) this.connectTo(j, peers[j]!);
    this.checkMesh();
    return ready;
  }

  private ranksWith(a: (Socket | null)[]): string {
    return a.map((s, j) => (s ? j : -1)).filter((j) => j >= 0).join(',') || 'none';
  }

  private checkMesh(): void {
    if (!this.meshDone) return;
    for (let j = 0; j < this.world; j++) if (j !== this.rank && (!this.out[j] || !this.inb[j])) return;
    this.server.close(); // every peer is connected: accept nothing more
    const done = this.meshDone;
    this.meshDone = this.meshFail = null;
    done();
  }

  private broken(peer: number, code: PeerFailureCode, reason: string): void {
    if (this.closing) return;
    if (this.meshFail) {
      const f = this.meshFail;
      this.meshDone = this.meshFail = null;
      f(new Error(`data connection with rank ${peer}: ${reason}`));
      return;
    }
    this.onFailure(peer, code, reason);
  }

  // ---- accepting (we write to these) ---------------------------------------------------------------------

  private onAccept(s: Socket): void {
    if (this.closing) return void s.destroy();
    s.on('error', () => {});
    const address = `${s.remoteAddress}:${s.remotePort}`;
    if (this.unverified.size >= this.maxUnverified) {
      return this.reject(s, 'PEER_LIMIT', `${this.unverified.size} connections are already waiting to authenticate`, address);
    }
    const x: PendingHello = {
      hello: Buffer.alloc(PEER_HELLO_BYTES), got: 0, complete: false, address,
      timer: setTimeout(() => this.reject(s, 'PEER_HELLO_TIMEOUT', `no hello within ${PEER_HELLO_TIMEOUT_MS / 1000} s`, address), PEER_HELLO_TIMEOUT_MS),
    };
    this.unverified.set(s, x);
    s.on('data', (d: Buffer) => {
      const peer = this.out.indexOf(s);
      if (peer >= 0) {
        // The connector never writes after its hello.
        this.reject(s, 'PEER_UNEXPECTED', `rank ${peer} wrote ${d.length} bytes on a receive-only connection`, address);
        return this.broken(peer, 'PROTOCOL_ERROR', `rank ${peer} wrote ${d.length} unexpected bytes on a receive-only connection`);
      }
      if (s.destroyed) return;
      if (x.got + d.length > PEER_HELLO_BYTES) return this.reject(s, 'PEER_OVERSIZED', `${x.got + d.length} bytes before authentication, a hello is ${PEER_HELLO_BYTES}`, address);
      d.copy(x.hello, x.got);
      x.got += d.length;
      if (x.got === PEER_HELLO_BYTES) {
        clearTimeout(x.timer);
        x.complete = true;
        if (this.key) this.checkHello(s);
      }
    });
    s.on('end', () => {
      if (!x.complete && !s.destroyed) this.reject(s, 'PEER_TRUNCATED', `closed after ${x.got} of ${PEER_HELLO_BYTES} hello bytes`, address);
    });
    s.on('close', () => {
      clearTimeout(x.timer);
      this.unverified.delete(s);
      const peer = this.out.indexOf(s);
      if (peer >= 0) {
        this.out[peer] = null;
        this.broken(peer, 'CONNECTION_LOST', `the data connection to rank ${peer} closed`);
      }
    });
  }

  /** Destroys a connection that is not (or no longer) a peer of this job, and says why. */
  private reject(s: Socket, code: PeerRejectCode, reason: string, address: string): void {
    const x = this.unverified.get(s);
    if (x) clearTimeout(x.timer);
    this.unverified.delete(s);
    s.destroy();
    this.onReject(code, reason, address);
  }

  /**
   * Authenticates a complete hello once the key is known. The key (raw bytes at PEER_FRAME_HEADER) is compared
   * first, in constant time; only a connection that holds it gets its msgpack header decoded.
   */
  private checkHello(s: Socket): void {
    const x = this.unverified.get(s);
    if (!x?.complete || !this.key || s.destroyed) return;
    const hello = x.hello;
    if (!timingSafeEqual(hello.subarray(PEER_FRAME_HEADER), this.key)) return this.reject(s, 'PEER_AUTH_FAILED', 'wrong data key', x.address);
    let m: PeerHelloMsg;
    try {
      if (hello.readUInt32LE(4) !== PEER_FRAME_HEADER) throw new Error(`payload offset ${hello.readUInt32LE(4)}, expected ${PEER_FRAME_HEADER}`);
      const msg = decode(hello.subarray(0, PEER_FRAME_HEADER)).msg;
      if (msg.type !== 'peer') throw new Error(`'${msg.type}' instead of 'peer'`);
      m = msg;
    } catch (e) {
      return this.reject(s, 'PEER_MALFORMED', `bad hello: ${(e as Error).message}`, x.address);
    }
    if (m.rank >= this.world || m.rank === this.rank || this.out[m.rank]) {
      return this.reject(s, 'PEER_MALFORMED', `hello from rank ${m.rank}, which is ${m.rank >= this.world ? 'not in the job' : 'this rank or already connected'}`, x.address);
    }
    this.unverified.delete(s);
    this.out[m.rank] = s;
    this.checkMesh();
  }

  // ---- connecting (we read these, straight into their destination) ---------------------------------------

  private connectTo(j: number, addr: PeerAddress): void {
    const hdr = Buffer.alloc(PEER_FRAME_HEADER);
    let hgot = 0;
    let dest: Buffer | null = null;
    let dgot = 0;
    let cur: ChunkMsg | null = null;
    const callback = (n: number): boolean => {
      try {
        if (!dest) {
          hgot += n;
          if (hgot < PEER_FRAME_HEADER) return true;
          hgot = 0;
          const { msg } = decode(hdr);
          if (hdr.readUInt32LE(4) !== PEER_FRAME_HEADER || msg.type !== 'chunk') {
            throw new ProtocolViolation(CloseCode.UNEXPECTED, `expected a chunk frame with payload at ${PEER_FRAME_HEADER}, got '${msg.type}'`);
          }
          cur = msg;
          dest = this.sink ? this.sink.header(j, msg) : this.frameHeader(j, msg);
          dgot = 0;
        } else {
          dgot += n;
          if (dgot < dest.length) return true;
          dest = null;
          if (this.sink) this.sink.payload(j, cur!);
          else this.framePayload(j, cur!);
        }
        return true;
      } catch (e) {
        s.destroy();
        this.broken(j, 'PROTOCOL_ERROR', `rank ${j} sent a bad frame: ${(e as Error).message}`);
        return false;
      }
    };
    const s = connect({ host: addr.host, port: addr.port, noDelay: true, onread: { buffer: () => (dest ? dest.subarray(dgot) : hdr.subarray(hgot)), callback } });
    s.on('error', () => {});
    s.once('connect', () => {
      const h = Buffer.alloc(PEER_HELLO_BYTES);
      writeHeader(h, { v: 1, type: 'peer', rank: this.rank }, PEER_FRAME_HEADER);
      this.key!.copy(h, PEER_FRAME_HEADER);
      s.write(h);
      this.inb[j] = s;
      this.checkMesh();
    });
    s.on('close', () => {
      if (this.inb[j] === s) this.inb[j] = null;
      this.broken(j, 'CONNECTION_LOST', `the data connection from rank ${j} (${addr.host}:${addr.port}) closed`);
    });
  }

  // ---- one collective -----------------------------------------------------------------------------------

  /**
   * Prepares collective `seq` (called when the collective is issued, before the coordinator's go): lays out the
   * arena and copies (fp32) or encodes (fp16) this rank's data. Peers' frames may arrive from now on.
   */
  begin(seq: number, op: Op, dtype: DType, data: Float32Array, bucketElems: number, onDone: () => void): PeerTiming {
    const t0 = performance.now();
    const R = this.world, me = this.rank, n = data.length, esize = bytesPer(dtype);
    const chunk = Math.max(8, Math.min(PEER_CHUNK_ELEMS, bucketElems));
    const [lo, hi] = op === 'mean' ? shardRange(n, R, me) : [0, 0];
    const len = hi - lo;
    // Arena: [R input slots of this rank's shard][reduced shard] and, for fp16, [encoded vector][received results][f32 stage]
    const stride = align16(len * esize);
    const inBase = 0, res = R * stride;
    const send16 = res + stride, res16 = send16 + (dtype === 'f16' ? align16(n * 2) : 0);
    const stage = res16 + (dtype === 'f16' ? align16(n * 2) : 0);
    this.arena.ensure(stage + align16(chunk * 4) + 16);
    const a = this.arena;
    const dataBytes = Buffer.from(data.buffer, data.byteOffset, data.byteLength);
    if (op === 'mean' && dtype === 'f32') {
      a.u8.set(dataBytes.subarray(lo * 4, hi * 4), inBase + me * stride);
    } else if (op === 'mean') {
      // Only this rank's shard here; the others are encoded chunk by chunk in go(), each right before its write,
      // so the kernel is already moving bytes while the rest is encoded.
      for (let off = lo; off < hi; off += chunk) {
        const count = Math.min(chunk, hi - off);
        a.f32.set(data.subarray(off, off + count), stage >> 2);
        a.toHalf(inBase + me * stride + (off - lo) * 2, stage, count);
      }
    }
    const cursors: Cursor[] = [];
    let outLeft = 0;
    for (let j = 0; j < R; j++) {
      let outLo = 0, outHi = 0;
      if (op === 'mean') [outLo, outHi] = shardRange(n, R, j);
      else if (j === 0) [outLo, outHi] = [0, n];
      if (j === me) { cursors.push({ phase: 'out', off: 0, inHi: 0, outLo: 0, outHi: 0 }); continue; }
      outLeft += Math.ceil((outHi - outLo) / chunk);
      cursors.push(lo < hi ? { phase: 'in', off: lo, inHi: hi, outLo, outHi } : { phase: 'out', off: outLo, inHi: hi, outLo, outHi });
    }
    const myChunks = Math.ceil(len / chunk);
    const timing: PeerTiming = { encodeMs: performance.now() - t0, sendMs: 0, receiveMs: 0, sumMs: 0, returnMs: 0, decodeMs: 0, flushMs: 0 };
    this.ex = {
      seq, op, dtype, esize, n, chunk, data, dataBytes, lo, hi, stride, inBase, res, send16, res16, stage,
      myChunks, inCount: new Int32Array(myChunks), reduced: 0, outLeft, writesLeft: 0, cursors, started: false, done: false,
      timing, tGo: 0, tLastIn: 0, tReady: 0, onDone,
    };
    return timing;
  }

  /** Every rank issued the collective consistently (the coordinator's go): send, and reduce what is in. */
  go(): void {
    const x = this.ex!;
    const t0 = performance.now();
    const encodeBefore = x.timing.encodeMs;
    x.started = true;
    x.tGo = t0;
    x.tLastIn = t0;
    const R = this.world, me = this.rank;
    if (x.op === 'mean') {
      // Round-robin over owners chunk by chunk, so that every owner can start reducing early.
      const ranges = Array.from({ length: R }, (_, s) => shardRange(x.n, R, s));
      for (let off = 0; ; off += x.chunk) {
        let any = false;
        for (let k = 1; k < R; k++) {
          const j = (me + k) % R;
          const [slo, shi] = ranges[j]!;
          if (slo + off >= shi) continue;
          any = true;
          const o = slo + off, count = Math.min(x.chunk, shi - o);
          if (x.dtype === 'f16') {
            const t = performance.now();
            this.arena.f32.set(x.data.subarray(o, o + count), x.stage >> 2);
            this.arena.toHalf(x.send16 + o * 2, x.stage, count);
            x.timing.encodeMs += performance.now() - t;
          }
          const payload = x.dtype === 'f32' ? x.dataBytes.subarray(o * 4, (o + count) * 4) : this.arena.buffer(x.send16 + o * 2, count * 2);
          this.write(x, j, { v: 1, type: 'chunk', seq: x.seq, phase: 'in', offset: o, count }, payload);
        }
        if (!any) break;
      }
    } else if (me === 0) {
      for (let o = 0; o < x.n; o += x.chunk) {
        const count = Math.min(x.chunk, x.n - o);
        for (let j = 1; j < R; j++) this.write(x, j, { v: 1, type: 'chunk', seq: x.seq, phase: 'out', offset: o, count }, x.dataBytes.subarray(o * 4, (o + count) * 4));
      }
    }
    x.timing.sendMs += performance.now() - t0 - (x.dtype === 'f16' ? x.timing.encodeMs - encodeBefore : 0);
    this.reduceReady(x);
    this.checkDone(x);
  }

  /**
   * Queues one frame to peer j. The collective counts it until libuv has handed all of it to the kernel (the write
   * callback): a collective resolves only when every write of this rank is in the kernel, which then delivers it
   * with no help from this process, so that the caller may block its event loop (and overwrite `data` or reuse the
   * arena) right after. A failed write leaves the count up: the broken connection is reported and the job aborts.
   */
  private write(x: Exchange, j: number, h: ChunkMsg, payload: Uint8Array): void {
    x.writesLeft++;
    if (!this.sendFrame(j, h, payload, () => { x.writesLeft--; this.checkDone(x); })) x.writesLeft--;
  }

  /**
   * Queues one frame (header + payload, no copy of the payload) to peer j; `written` runs once libuv handed all of
   * it to the kernel, never for a failed write. False when the connection is gone (its close was reported; the
   * coordinator aborts the job).
   */
  sendFrame(j: number, h: ChunkMsg, payload: Uint8Array, written: () => void): boolean {
    const s = this.out[j];
    if (!s || s.destroyed) return false;
    const hdr = Buffer.allocUnsafe(PEER_FRAME_HEADER);
    writeHeader(hdr, h, PEER_FRAME_HEADER);
    s.cork();
    s.write(hdr);
    s.write(payload, (err) => { if (!err) written(); });
    s.uncork();
    return true;
  }

  /** Validates a chunk header against the one expected next from this peer; returns where its payload goes. */
  private frameHeader(j: number, m: ChunkMsg): Buffer {
    const x = this.ex;
    if (!x || x.done || m.seq !== x.seq) throw new ProtocolViolation(CloseCode.UNEXPECTED, `chunk of collective ${m.seq} while ${x && !x.done ? x.seq : 'none'} is in progress`);
    const c = x.cursors[j]!;
    const end = c.phase === 'in' ? c.inHi : c.outHi;
    const count = Math.min(x.chunk, end - c.off);
    if (m.phase !== c.phase || m.offset !== c.off || m.count !== count || count <= 0) {
      throw new ProtocolViolation(CloseCode.WRONG_SIZE, `chunk ${m.phase} ${m.offset}+${m.count}, expected ${c.phase} ${c.off}+${count}`);
    }
    c.off += count;
    if (c.phase === 'in' && c.off === c.inHi) { c.phase = 'out'; c.off = c.outLo; }
    if (m.phase === 'in') return this.arena.buffer(x.inBase + j * x.stride + (m.offset - x.lo) * x.esize, count * x.esize);
    if (x.dtype === 'f32') return x.dataBytes.subarray(m.offset * 4, (m.offset + count) * 4);
    return this.arena.buffer(x.res16 + m.offset * 2, count * 2);
  }

  private framePayload(_j: number, m: ChunkMsg): void {
    const x = this.ex!;
    if (m.phase === 'in') {
      x.tLastIn = performance.now();
      x.inCount[(m.offset - x.lo) / x.chunk]!++;
      if (x.started) this.reduceReady(x);
    } else {
      if (x.dtype === 'f16') {
        const t = performance.now();
        this.arena.fromHalf(x.stage, x.res16 + m.offset * 2, m.count);
        x.data.set(this.arena.f32.subarray(x.stage >> 2, (x.stage >> 2) + m.count), m.offset);
        x.timing.decodeMs += performance.now() - t;
      }
      x.outLeft--;
    }
    this.checkDone(x);
  }

  /** Reduces, in order, every chunk of this rank's shard whose inputs are all in, and sends it to every peer. */
  private reduceReady(x: Exchange): void {
    const a = this.arena, R = this.world;
    while (x.reduced < x.myChunks && x.inCount[x.reduced] === R - 1) {
      const t0 = performance.now();
      const rel = x.reduced * x.chunk, off = x.lo + rel, count = Math.min(x.chunk, x.hi - off);
      const inp = x.inBase + rel * x.esize, out = x.res + rel * x.esize;
      if (x.dtype === 'f32') {
        a.mean(out, inp, x.stride, R, count, 'f32');
        x.data.set(a.f32.subarray(out >> 2, (out >> 2) + count), off);
      } else {
        a.mean(x.stage, inp, x.stride, R, count, 'f16');
        a.toHalf(out, x.stage, count);
        a.fromHalf(x.stage, out, count);
        x.data.set(a.f32.subarray(x.stage >> 2, (x.stage >> 2) + count), off);
      }
      const t1 = performance.now();
      const payload = a.buffer(out, count * x.esize);
      for (let k = 1; k < R; k++) this.write(x, (this.rank + k) % R, { v: 1, type: 'chunk', seq: x.seq, phase: 'out', offset: off, count }, payload);
      x.timing.sumMs += t1 - t0;
      x.timing.sendMs += performance.now() - t1;
      x.reduced++;
    }
  }

  private checkDone(x: Exchange): void {
    if (x.done || !x.started || x.reduced < x.myChunks || x.outLeft > 0) return;
    if (!x.tReady) x.tReady = performance.now();
    if (x.writesLeft > 0) return;
    x.done = true;
    const now = performance.now();
    x.timing.receiveMs = x.tLastIn - x.tGo;
    x.timing.returnMs = x.tReady - x.tLastIn;
    x.timing.flushMs = now - x.tReady;
    this.ex = null;
    x.onDone();
  }

  /** Drops the collective in progress (after a failure). */
  cancel(): void {
    if (this.ex) this.ex.done = true;
    this.ex = null;
  }

  /** Orderly close (after bye): queued writes are flushed first. */
  close(): void {
    this.closing = true;
    this.server.close();
    for (const s of this.unverified.keys()) s.destroy();
    for (const s of [...this.out, ...this.inb]) s?.end();
    setTimeout(() => { for (const s of [...this.out, ...this.inb]) s?.destroy(); }, 2000).unref();
  }

  destroy(): void {
    this.closing = true;
    if (this.meshFail) {
      const f = this.meshFail;
      this.meshDone = this.meshFail = null;
      f(new Error('the client failed or was closed while connecting to its peers'));
    }
    this.cancel();
    this.server.close();
    for (const s of this.unverified.keys()) s.destroy();
    for (const s of [...this.out, ...this.inb]) s?.destroy();
  }
}
