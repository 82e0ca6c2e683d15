import { readFileSync } from 'node:fs';
import { createServer as createHttpServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { AddressInfo, Socket } from 'node:net';
import { randomBytes, randomUUID } from 'node:crypto';
import { WebSocketServer, type WebSocket } from 'ws';
import { isLoopback, requestToken, requireTokenFor, resolveToken, tokenMatches } from './auth.js';
import { CoordinatorError, check } from './errors.js';
import {
  CloseCode, HEADER_ROOM, ProtocolViolation, bytesPer, decode, encode, writeHeader,
  type CollMsg, type DataMsg, type DType, type HelloMsg, type Message, type Op, type PeerFailureMsg,
} from './protocol.js';
import { Arena, align16 } from './reduce.js';
import { Rendezvous } from './rendezvous.js';
import { Ring, type RoundTiming, type StatusReport, type WorkerStatus } from './status.js';

export interface CoordinatorOptions {
  /** Address to bind; '127.0.0.1'. Anything but loopback requires a token. */
  host?: string;
  /** TCP port; 0 = ephemeral (read it back from Coordinator.port). */
  port?: number;
  /** Number of workers in the job. */
  worldSize: number;
  /** Run id workers must present; default: the first worker's, else a random UUID. */
  runId?: string;
  /** Shared secret; default env GOOGLENET_COORDINATOR_TOKEN. Checked on every upgrade and on /status. */
  token?: string;
  /** PEM file paths; serves wss:// and https:// when given. */
  tls?: { cert: string; key: string };
  /** A collective not completed by every rank within this long after it started is aborted; 30000. */
  roundTimeoutMs?: number;
  /** All ranks must join within this long after the first one did; 120000. */
  rendezvousTimeoutMs?: number;
  /** Largest accepted WebSocket message; larger frames are refused by ws (close 1009) before buffering; 64 MiB. */
  maxMessageBytes?: number;
  /**
   * Ping period; 1000. Pings keep idle connections alive and let clients tell a live coordinator from a vanished
   * one; a worker that does not answer them is NOT failed for it: its event loop may be blocked by a long
   * synchronous compute step. Worker failures are a closed socket and the round timeout.
   */
  heartbeatMs?: number;
  /** Log sink (one line per event); default: none. */
  log?: (line: string) => void;
  /**
   * 'peer' (default): when every worker offers a data port (plain ws://), tensor bytes flow worker <-> worker and
   * the coordinator only checks, times and releases each collective; 'coordinator': every byte goes through here.
   */
  dataPlane?: 'peer' | 'coordinator';
  /** Called after an abort was sent to the surviving workers (the coordinator is then back in rendezvous). */
  onAbort?: (info: { generation: number; failedRank: number; code: string; reason: string }) => void;
}

export interface Coordinator {
  readonly url: string;
  readonly port: number;
  status(): StatusReport;
  close(): Promise<void>;
}

const DEFAULTS = {
  host: '127.0.0.1',
  port: 0,
  roundTimeoutMs: 30_000,
  rendezvousTimeoutMs: 120_000,
  maxMessageBytes: 64 * 1024 * 1024,
  heartbeatMs: 1000,
  dataPlane: 'peer' as const,
};
/** A connection that never says hello is closed after this long. */
const HELLO_TIMEOUT_MS = 10_000;

interface Conn {
  ws: WebSocket;
  address: string;
  generation: number;
  rank: number | null;
  state: WorkerStatus['state'];
  lastHeard: number;
  helloTimer: NodeJS.Timeout | null;
  saidBye: boolean;
  /** the worker's peer data port (from hello) */
  dataPort?: number;
}

/** One collective in flight: its layout in the arena and who has delivered which bucket. */
interface Round {
  seq: number; op: Op; dtype: DType; numel: number; bucketElems: number; nb: number;
  /** the float32 remainder of the preceding fp16 all-reduce (not a step of its own) */
  tail: boolean;
  esize: number; inBase: number; stride: number; outBase: number; slotBytes: number; scratch: number;
  got: Uint8Array; gotPerBucket: Int32Array; bucketsPerRank: Int32Array; bucketsDone: number;
  metrics: (number[] | undefined)[]; metricsLen: number; metricsRanks: number;
  /** peer data plane: a `coll` round (no data here; nb is 1, one announcement per rank) */
  peer: boolean;
  t0: number; lastArrival: number; copyMs: number; reduceMs: number; sendMs: number;
  timer: NodeJS.Timeout;
}

export async function startCoordinator(options: CoordinatorOptions): Promise<Coordinator> {
  const opts = { ...DEFAULTS, ...definedOnly(options) };
  check(Number.isInteger(opts.worldSize) && opts.worldSize >= 1, 'INVALID_OPTIONS', () => `worldSize must be a positive integer, got ${opts.worldSize}`);
  check(Number.isInteger(opts.port) && opts.port >= 0 && opts.port < 65536, 'INVALID_OPTIONS', () => `port must be 0..65535, got ${opts.port}`);
  for (const k of ['roundTimeoutMs', 'rendezvousTimeoutMs', 'maxMessageBytes', 'heartbeatMs'] as const) {
    check(Number.isFinite(opts[k]) && opts[k] > 0, 'INVALID_OPTIONS', () => `${k} must be a positive number, got ${opts[k]}`);
  }
  const token = resolveToken(opts.token);
  requireTokenFor(opts.host, token);
  const c = new CoordinatorServer(opts, token);
  await c.listen();
  return c;
}

class CoordinatorServer implements Coordinator {
  private readonly http: Server;
  private readonly wss: WebSocketServer;
  private readonly conns = new Set<Conn>();
  private readonly arena = new Arena();
  private readonly recent = new Ring<RoundTiming>(20);
  private readonly log: (line: string) => void;
  private generation = 0;
  private state: StatusReport['state'] = 'rendezvous';
  private rdv: Rendezvous;
  private rdvTimer: NodeJS.Timeout | null = null;
  private workers: (Conn | null)[] = [];
  private plane: 'peer' | 'coordinator' = 'coordinator';
  private round: Round | null = null;
  private lastSeq = 0;
  private steps = 0;
  private lastAbort: StatusReport['lastAbort'] = null;
  private heartbeat: NodeJS.Timeout;
  private closed = false;
  url = '';
  port = 0;

  constructor(private readonly opts: Required<Omit<CoordinatorOptions, 'runId' | 'token' | 'tls' | 'log' | 'onAbort'>> & CoordinatorOptions,
    private readonly token: string | undefined) {
    this.log = opts.log ?? (() => {});
    this.rdv = new Rendezvous(opts.worldSize, opts.runId);
    const handler = (req: IncomingMessage, res: ServerResponse) => this.onHttp(req, res);
    this.http = opts.tls
      ? createHttpsServer({ cert: readFileSync(opts.tls.cert), key: readFileSync(opts.tls.key) }, handler)
      : createHttpServer(handler);
    this.wss = new WebSocketServer({ noServer: true, perMessageDeflate: false, maxPayload: opts.maxMessageBytes });
    this.http.on('upgrade', (req, socket, head) => this.onUpgrade(req, socket as Socket, head));
    this.heartbeat = setInterval(() => this.beat(), opts.heartbeatMs);
    this.heartbeat.unref();
  }

  listen(): Promise<void> {
    return new Promise((resolve, reject) => {
      this.http.once('error', reject);
      this.http.listen(this.opts.port, this.opts.host, () => {
        this.port = (this.http.address() as AddressInfo).port;
        const h = this.opts.host.includes(':') ? `[${this.opts.host}]` : this.opts.host;
        this.url = `${this.opts.tls ? 'wss' : 'ws'}://${h}:${this.port}`;
        this.log(`coordinator: listening on ${this.url} for ${this.opts.worldSize} workers` +
          `${this.token ? ' (token required)' : ''}${isLoopback(this.opts.host) ? '' : ' (non-loopback)'}, simd ${this.arena.simd ? 'on' : 'off'}`);
        resolve();
      });
    });
  }

  // ---- HTTP: /status and the WebSocket upgrade -------------------------------------------------------------

  private authorized(req: IncomingMessage): boolean {
    return this.token === undefined || tokenMatches(requestToken(req), this.token);
  }

  private onHttp(req: IncomingMessage, res: ServerResponse): void {
    const path = (req.url ?? '').split('?')[0];
    if (req.method !== 'GET' || path !== '/status') {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('only GET /status and WebSocket upgrades are served here\n');
      return;
    }
    if (!this.authorized(req)) {
      res.writeHead(401, { 'content-type': 'text/plain' }).end('missing or wrong token (Authorization: Bearer ...)\n');
      return;
    }
    res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(this.status()));
  }

  private onUpgrade(req: IncomingMessage, socket: Socket, head: Buffer): void {
    const address = `${req.socket.remoteAddress}:${req.socket.remotePort}`;
    if (this.closed) return void socket.destroy();
    if (!this.authorized(req)) {
      this.log(`coordinator: rejected connection from ${address}: missing or wrong token`);
      socket.end('HTTP/1.1 401 Unauthorized\r\nConnection: close\r\nContent-Length: 0\r\n\r\n');
      return;
    }
    this.wss.handleUpgrade(req, socket, head, (ws) => this.onConnection(ws, address));
  }

  private onConnection(ws: WebSocket, address: string): void {
    const conn: Conn = {
      ws, address, generation: this.generation, rank: null, state: 'connected', lastHeard: Date.now(), saidBye: false,
      helloTimer: setTimeout(() => this.violation(conn, new ProtocolViolation(CloseCode.HELLO_TIMEOUT, `no hello within ${HELLO_TIMEOUT_MS / 1000} s`)), HELLO_TIMEOUT_MS),
    };
    this.conns.add(conn);
    ws.on('message', (data: Buffer, isBinary: boolean) => {
      conn.lastHeard = Date.now();
      if (!isBinary) return this.violation(conn, new ProtocolViolation(CloseCode.MALFORMED, 'text frame; the protocol is binary'));
      try {
        const { msg, payload } = decode(data);
        this.onMessage(conn, msg, payload);
      } catch (e) {
        if (e instanceof ProtocolViolation) this.violation(conn, e);
        else this.violation(conn, new ProtocolViolation(CloseCode.MALFORMED, `internal error handling message: ${(e as Error).message}`));
      }
    });
    ws.on('pong', () => { conn.lastHeard = Date.now(); });
    ws.on('error', (e) => this.log(`coordinator: ${who(conn)}: ${e.message}`)); // ws closes the socket itself (1009, 1002, ...)
    ws.on('close', (code, reason) => this.onClose(conn, code, reason.toString()));
  }

  /** Logs and closes with a 4xxx code; a joined worker's violation then aborts its job through onClose. */
  private violation(conn: Conn, e: ProtocolViolation): void {
    this.log(`coordinator: closing ${who(conn)} with ${e.closeCode}: ${e.message}`);
    if (conn.rank !== null && conn.generation === this.generation) {
      this.failure = { rank: conn.rank, code: 'PROTOCOL_ERROR', reason: `rank ${conn.rank} broke the protocol: ${e.message}` };
    }
    conn.ws.close(e.closeCode, e.message.slice(0, 120));
  }

  /** Set by violation() so that onClose reports why the socket went away. */
  private failure: { rank: number; code: string; reason: string } | null = null;

  // ---- messages ------------------------------------------------------------------------------------------

  private onMessage(conn: Conn, msg: Message, payload: Buffer): void {
    if (conn.generation !== this.generation) return; // a socket of an aborted generation, already closing
    if (conn.rank === null && msg.type !== 'hello') throw new ProtocolViolation(CloseCode.UNEXPECTED, `'${msg.type}' before hello`);
    switch (msg.type) {
      case 'hello': return this.onHello(conn, msg);
      case 'data':
        if (this.plane === 'peer') throw new ProtocolViolation(CloseCode.UNEXPECTED, 'data through the coordinator in a job that uses the peer data plane');
        return this.onData(conn, msg, payload);
      case 'coll':
        if (this.plane !== 'peer' || this.state !== 'running') throw new ProtocolViolation(CloseCode.UNEXPECTED, 'coll outside a job that uses the peer data plane');
        return this.onColl(conn, msg);
      case 'peerFailure': return this.onPeerFailure(conn, msg);
      case 'bye':
        // Only a joined worker has a job to leave; anything else would hold its connection until the hello timeout.
        if (conn.rank === null) throw new ProtocolViolation(CloseCode.UNEXPECTED, 'bye before hello');
        conn.saidBye = true;
        return;
      default:
        throw new ProtocolViolation(CloseCode.UNEXPECTED, `a worker may not send '${msg.type}'`);
    }
  }

  private onHello(conn: Conn, h: HelloMsg): void {
    if (conn.rank !== null) throw new ProtocolViolation(CloseCode.UNEXPECTED, 'second hello on one connection');
    clearTimeout(conn.helloTimer!);
    conn.helloTimer = null;
    const result = this.state === 'running' && h.rank >= 0 && h.rank < this.opts.worldSize
      ? { ok: false as const, code: 'DUPLICATE_RANK' as const, message: `rank ${h.rank} is part of the running job (generation ${this.generation}); wait for it to end or abort` }
      : this.rdv.join(h);
    if (!result.ok) {
      this.log(`coordinator: rejected ${conn.address} as rank ${h.rank}: ${result.code}: ${result.message}`);
      conn.ws.send(encode({ v: 1, type: 'error', code: result.code, message: result.message }));
      conn.ws.close(CloseCode.REJECTED, result.code);
      return;
    }
    conn.rank = h.rank;
    conn.state = 'joined';
    conn.dataPort = h.dataPort;
    this.workers[h.rank] = conn;
    this.log(`coordinator: rank ${h.rank} joined from ${conn.address} (${this.rdv.size}/${this.opts.worldSize})`);
    if (this.rdv.size === 1) {
      this.rdvTimer = setTimeout(() => this.rendezvousTimeout(), this.opts.rendezvousTimeoutMs);
    }
    if (this.rdv.complete) this.startJob();
  }

  private startJob(): void {
    clearTimeout(this.rdvTimer!);
    this.rdvTimer = null;
    this.state = 'running';
    this.rdv.runId ??= randomUUID();
    const peer = this.opts.dataPlane === 'peer' && this.workers.every((w) => w!.dataPort !== undefined);
    this.plane = peer ? 'peer' : 'coordinator';
    const welcome = encode({
      v: 1, type: 'welcome', generation: this.generation, worldSize: this.opts.worldSize, runId: this.rdv.runId, maxMessageBytes: this.opts.maxMessageBytes,
      // The address each worker's WebSocket came from, and a fresh key per generation (only ever sent over the
      // authenticated WebSocket) that every data connection must present.
      ...(peer ? { peers: this.workers.map((w) => ({ host: hostOf(w!.address), port: w!.dataPort! })), dataKey: randomBytes(32).toString('hex') } : {}),
    });
    for (const w of this.workers) {
      w!.state = 'running';
      w!.ws.send(welcome);
    }
    this.log(`coordinator: all ${this.opts.worldSize} workers joined; run ${this.rdv.runId}, generation ${this.generation}, data plane ${this.plane}`);
  }

  private rendezvousTimeout(): void {
    const joined = this.rdv.ranks();
    const missing = this.rdv.missing();
    const message = `expected ${this.opts.worldSize} workers, ${joined.length} joined within ${this.opts.rendezvousTimeoutMs / 1000} s ` +
      `(ranks ${joined.join(',')}); missing rank${missing.length > 1 ? 's' : ''} ${missing.join(',')}: check --workers and the coordinator address`;
    this.log(`coordinator: RENDEZVOUS_TIMEOUT: ${message}`);
    const err = encode({ v: 1, type: 'error', code: 'RENDEZVOUS_TIMEOUT', message });
    for (const w of this.workers) {
      if (!w) continue;
      w.ws.send(err);
      w.ws.close(CloseCode.RENDEZVOUS_TIMEOUT, 'rendezvous timeout');
    }
    this.newGeneration();
  }

  private onData(conn: Conn, m: DataMsg, payload: Buffer): void {
    const rank = conn.rank;
    if (rank === null || this.state !== 'running') {
      throw new ProtocolViolation(CloseCode.UNEXPECTED, 'data before the rendezvous completed');
    }
    const r = this.joinRound(rank, m, () => this.newRound(m));
    if (!r) return;
    const b = m.bucket;
    const count = b === r.nb - 1 ? r.numel - b * r.bucketElems : r.bucketElems;
    if (b >= r.nb || m.count !== count || payload.length !== count * r.esize) {
      throw new ProtocolViolation(CloseCode.WRONG_SIZE, `bucket ${b}: ${payload.length} payload bytes for count ${m.count}, expected ${count} ${r.dtype} values of ${r.nb} bucket(s)`);
    }
    const slot = b * this.opts.worldSize + rank;
    if (r.got[slot]) throw new ProtocolViolation(CloseCode.UNEXPECTED, `bucket ${b} of collective ${r.seq} sent twice`);
    // In order, so that buckets complete (and results go out) in order: clients treat a gap as a lost result.
    if (b !== r.bucketsPerRank[rank]) throw new ProtocolViolation(CloseCode.UNEXPECTED, `bucket ${b} of collective ${r.seq} sent before bucket ${r.bucketsPerRank[rank]}`);
    if (b === 0 && m.metrics) {
      if (r.metricsLen >= 0 && m.metrics.length !== r.metricsLen) {
        return this.abort(rank, 'SIZE_MISMATCH', `rank ${rank} sent ${m.metrics.length} metrics, others ${r.metricsLen}; pass equal-length metrics on every rank`);
      }
      r.metricsLen = m.metrics.length;
      r.metrics[rank] = m.metrics;
      r.metricsRanks++;
    }
    const t = performance.now();
    this.arena.u8.set(payload, r.inBase + rank * r.stride + b * r.bucketElems * r.esize);
    r.copyMs += performance.now() - t;
    r.got[slot] = 1;
    r.bucketsPerRank[rank]!++;
    r.lastArrival = t;
    if (++r.gotPerBucket[b]! === this.opts.worldSize) this.finishBucket(r, b, count);
  }

  /**
   * Starts collective m.seq (with `open`) or joins the one in progress, for both data planes: the sequence
   * must be the next one, every rank still in the job, and op, dtype, length and buckets equal on every rank.
   * Returns undefined after aborting the job.
   */
  private joinRound(rank: number, m: { op: string; dtype: string; seq: number; numel: number; bucketElems: number; tail?: boolean }, open: () => Round): Round | undefined {
    if (m.op === 'bcast' && m.dtype !== 'f32') throw new ProtocolViolation(CloseCode.MALFORMED, 'broadcasts are always f32');
    let r = this.round;
    if (!r) {
      if (m.seq !== this.lastSeq + 1) throw new ProtocolViolation(CloseCode.UNEXPECTED, `collective ${m.seq} while ${this.lastSeq + 1} is next`);
      const gone = this.workers.findIndex((w) => !w || w.state === 'left');
      if (gone >= 0) {
        this.abort(gone, 'CONNECTION_LOST', `rank ${gone} left the job before collective ${m.seq}`);
        return undefined;
      }
      r = this.round = open();
    } else if (m.seq !== r.seq) {
      throw new ProtocolViolation(CloseCode.UNEXPECTED, `collective ${m.seq} while ${r.seq} is in progress`);
    }
    if (m.op !== r.op || m.dtype !== r.dtype || m.numel !== r.numel || m.bucketElems !== r.bucketElems || (m.tail === true) !== r.tail) {
      const first = this.workers.findIndex((_, k) => r!.bucketsPerRank[k]! > 0 && k !== rank);
      const tail = (t: boolean | undefined) => (t ? ' (fp32 tail)' : '');
      this.abort(rank, 'SIZE_MISMATCH', `rank ${rank} sent ${m.op} of ${m.numel} ${m.dtype} values${tail(m.tail)} (buckets of ${m.bucketElems}) ` +
        `but rank ${first} sent ${r.op} of ${r.numel} ${r.dtype}${tail(r.tail)} (buckets of ${r.bucketElems}); every rank must call the same collectives with equal-length buffers and options`);
      return undefined;
    }
    return r;
  }

  /** Peer data plane: rank announces collective m.seq; when every rank has, consistently, all get go (+ metric sums). */
  private onColl(conn: Conn, m: CollMsg): void {
    const rank = conn.rank!;
    const r = this.joinRound(rank, m, () => this.newRound({ ...m, bucket: 0, count: 0, type: 'data' }, true));
    if (!r) return;
    if (r.bucketsPerRank[rank]) throw new ProtocolViolation(CloseCode.UNEXPECTED, `collective ${r.seq} announced twice`);
    if (m.metrics) {
      if (r.metricsLen >= 0 && m.metrics.length !== r.metricsLen) {
        return this.abort(rank, 'SIZE_MISMATCH', `rank ${rank} sent ${m.metrics.length} metrics, others ${r.metricsLen}; pass equal-length metrics on every rank`);
      }
      r.metricsLen = m.metrics.length;
      r.metrics[rank] = m.metrics;
      r.metricsRanks++;
    }
    r.bucketsPerRank[rank] = 1;
    r.lastArrival = performance.now();
    if (++r.gotPerBucket[0]! < this.opts.worldSize) return;
    if (r.metricsRanks > 0 && r.metricsRanks < this.opts.worldSize) {
      const without = r.metrics.findIndex((x) => x === undefined);
      return this.abort(without, 'SIZE_MISMATCH', `rank ${without} sent no metrics with collective ${r.seq} but other ranks did; pass metrics on every rank or on none`);
    }
    const t = performance.now();
    const go = encode({ v: 1, type: 'go', seq: r.seq, ...(r.metricsLen >= 0 ? { metrics: sumMetrics(r.metrics, r.metricsLen) } : {}) });
    for (const w of this.workers) w!.ws.send(go);
    r.sendMs = performance.now() - t;
    r.bucketsDone = 1;
    this.finishRound(r, performance.now());
  }

  /**
   * A worker's data connection with `peer` broke or carried garbage. The abort names `peer`; it waits a moment
   * so that a peer process that died is reported by its own WebSocket closing (the more precise reason).
   */
  private onPeerFailure(conn: Conn, m: PeerFailureMsg): void {
    const reporter = conn.rank;
    if (reporter === null || this.state !== 'running' || m.peer >= this.opts.worldSize || m.peer === reporter) {
      throw new ProtocolViolation(CloseCode.UNEXPECTED, `peerFailure naming rank ${m.peer} from ${reporter === null ? 'a worker that has not joined' : `rank ${reporter}`}`);
    }
    const generation = this.generation;
    // A peer that said bye closes its data connections; the other ranks see that as a closed connection.
    if (this.workers[m.peer]?.saidBye) return;
    this.log(`coordinator: rank ${reporter} reports its data connection with rank ${m.peer}: ${m.code}: ${m.reason}`);
    setTimeout(() => {
      const w = this.workers[m.peer];
      if (this.generation !== generation || this.closed || !w || w.saidBye) return;
      this.abort(m.peer, m.code === 'PROTOCOL_ERROR' ? 'PROTOCOL_ERROR' : 'CONNECTION_LOST', `rank ${reporter} lost its data connection with rank ${m.peer}: ${m.reason}`);
    }, 250).unref();
  }

  private newRound(m: DataMsg, peer = false): Round {
    const n = this.opts.worldSize;
    const nb = peer ? 1 : Math.max(1, Math.ceil(m.numel / m.bucketElems));
    const esize = bytesPer(m.dtype);
    // Arena: [rank 0 input | rank 1 input | ...][result slot per bucket: header room + payload][f32 scratch]
    const stride = align16(m.numel * esize);
    const slotBytes = HEADER_ROOM + align16(Math.min(m.bucketElems, m.numel) * esize);
    const inBase = 0, outBase = n * stride, scratch = outBase + nb * slotBytes;
    if (!peer) this.arena.ensure(scratch + align16(Math.min(m.bucketElems, m.numel) * 4) + 16);
    const seq = m.seq;
    return {
      seq, op: m.op, dtype: m.dtype, numel: m.numel, bucketElems: m.bucketElems, nb, tail: m.tail === true, esize, inBase, stride, outBase, slotBytes, scratch,
      got: new Uint8Array(nb * n), gotPerBucket: new Int32Array(nb), bucketsPerRank: new Int32Array(n), bucketsDone: 0,
      metrics: new Array(n).fill(undefined), metricsLen: -1, metricsRanks: 0, peer,
      t0: performance.now(), lastArrival: 0, copyMs: 0, reduceMs: 0, sendMs: 0,
      timer: setTimeout(() => this.roundTimeout(seq), this.opts.roundTimeoutMs),
    };
  }

  /** Every rank's bucket b is in: reduce it and send one result buffer to every worker. */
  private finishBucket(r: Round, b: number, count: number): void {
    const a = this.arena;
    if (b === 0 && r.metricsRanks > 0 && r.metricsRanks < this.opts.worldSize) {
      const without = r.metrics.findIndex((m) => m === undefined);
      return this.abort(without, 'SIZE_MISMATCH', `rank ${without} sent no metrics with collective ${r.seq} but other ranks did; pass metrics on every rank or on none`);
    }
    const t0 = performance.now();
    const slot = r.outBase + b * r.slotBytes;
    const out = slot + HEADER_ROOM;
    const inp = r.inBase + b * r.bucketElems * r.esize;
    if (r.op === 'bcast') a.u8.copyWithin(out, inp, inp + count * r.esize);
    else if (r.dtype === 'f32') a.mean(out, inp, r.stride, this.opts.worldSize, count, 'f32');
    else {
      a.mean(r.scratch, inp, r.stride, this.opts.worldSize, count, 'f16');
      a.toHalf(out, r.scratch, count);
    }
    const t1 = performance.now();
    const header: Message = { v: 1, type: 'result', seq: r.seq, dtype: r.dtype, bucket: b, count };
    if (b === 0 && r.metricsLen >= 0) header.metrics = sumMetrics(r.metrics, r.metricsLen);
    writeHeader(a.u8.subarray(slot, out), header, HEADER_ROOM);
    const msg = a.buffer(slot, HEADER_ROOM + count * r.esize);
    for (const w of this.workers) w!.ws.send(msg);
    const t2 = performance.now();
    r.reduceMs += t1 - t0;
    r.sendMs += t2 - t1;
    if (++r.bucketsDone === r.nb) this.finishRound(r, t2);
  }

  private finishRound(r: Round, now: number): void {
    clearTimeout(r.timer);
    this.round = null;
    this.lastSeq = r.seq;
    if (r.op === 'mean' && r.numel > 0 && !r.tail) this.steps++;
    this.recent.push({
      seq: r.seq, op: r.op, dtype: r.dtype, numel: r.numel, buckets: r.peer ? Math.max(1, Math.ceil(r.numel / r.bucketElems)) : r.nb,
      totalMs: round2(now - r.t0), receiveMs: round2(r.lastArrival - r.t0), copyMs: round2(r.copyMs), reduceMs: round2(r.reduceMs), sendMs: round2(r.sendMs),
    });
  }

  private roundTimeout(seq: number): void {
    const r = this.round;
    if (!r || r.seq !== seq) return;
    const late = this.workers.map((_, k) => k).filter((k) => r.bucketsPerRank[k]! < r.nb);
    const failed = late[0] ?? 0;
    this.abort(failed, 'ROUND_TIMEOUT', `rank${late.length > 1 ? 's' : ''} ${late.join(',')} did not deliver collective ${seq} (${r.op}) within ${this.opts.roundTimeoutMs / 1000} s`);
  }

  // ---- failures ------------------------------------------------------------------------------------------

  private onClose(conn: Conn, code: number, reason: string): void {
    this.conns.delete(conn);
    if (conn.helloTimer) clearTimeout(conn.helloTimer);
    if (conn.generation !== this.generation || conn.rank === null || this.closed) return;
    const rank = conn.rank;
    if (this.workers[rank] !== conn) return;
    if (this.state === 'rendezvous') {
      this.rdv.leave(rank);
      this.workers[rank] = null;
      this.log(`coordinator: rank ${rank} left during rendezvous (${code})`);
      if (this.rdv.size === 0 && this.rdvTimer) { clearTimeout(this.rdvTimer); this.rdvTimer = null; }
      return;
    }
    const failure = this.failure?.rank === rank ? this.failure : null;
    this.failure = null;
    if (failure) return this.abort(rank, failure.code, failure.reason);
    if (conn.saidBye) {
      conn.state = 'left';
      this.log(`coordinator: rank ${rank} finished`);
      if (this.round && this.round.bucketsPerRank[rank]! < this.round.nb) {
        return this.abort(rank, 'CONNECTION_LOST', `rank ${rank} closed its connection during collective ${this.round.seq}`);
      }
      if (this.workers.every((w) => w!.state === 'left')) {
        this.log(`coordinator: job of generation ${this.generation} finished; accepting a new rendezvous`);
        this.newGeneration();
      }
      return;
    }
    this.abort(rank, 'CONNECTION_LOST', `rank ${rank}'s connection closed (code ${code}${reason ? `: ${reason}` : ''})`);
  }

  /**
   * Ends the generation: every surviving worker gets an abort naming the failed rank, then its socket is closed.
   * The coordinator goes back to rendezvous, so a restarted job (new worker processes) can join again.
   */
  private abort(failedRank: number, code: string, reason: string): void {
    const generation = this.generation;
    this.log(`coordinator: ABORT generation ${generation}: ${code}: ${reason}`);
    const msg = encode({ v: 1, type: 'abort', generation, failedRank, code, reason });
    for (const w of this.workers) {
      if (!w || w.ws.readyState !== w.ws.OPEN) continue;
      w.ws.send(msg);
      w.ws.close(CloseCode.ABORTED, `aborted: ${code}`);
    }
    this.lastAbort = { generation, failedRank, code, reason, at: new Date().toISOString() };
    this.newGeneration();
    this.opts.onAbort?.({ generation, failedRank, code, reason });
  }

  private newGeneration(): void {
    if (this.round) clearTimeout(this.round.timer);
    if (this.rdvTimer) clearTimeout(this.rdvTimer);
    this.rdvTimer = null;
    this.round = null;
    this.generation++;
    this.state = 'rendezvous';
    this.rdv = new Rendezvous(this.opts.worldSize, this.opts.runId);
    this.workers = [];
    this.lastSeq = 0;
    this.steps = 0;
    this.failure = null;
  }

  /**
   * Pings everyone. Missed pongs are not a failure: a worker computes with its event loop blocked (seconds to
   * minutes per step), during which it cannot answer while being perfectly alive. A dead worker process closes its
   * socket (noticed at once), and a hung or unreachable one is caught by the round timeout, counted from the first
   * rank that entered the collective. Connections that never joined are closed by the hello timeout.
   */
  private beat(): void {
    for (const c of this.conns) if (c.ws.readyState === c.ws.OPEN) c.ws.ping();
  }

  status(): StatusReport {
    const now = Date.now();
    const r = this.round;
    return {
      runId: this.rdv.runId ?? null,
      generation: this.generation,
      state: this.state,
      worldSize: this.opts.worldSize,
      collectives: this.lastSeq,
      step: this.steps,
      workers: [...this.conns].filter((c) => c.generation === this.generation)
        .map((c) => ({ rank: c.rank, state: c.state, address: c.address, msSinceHeard: now - c.lastHeard }))
        .sort((a, b) => (a.rank ?? 1e9) - (b.rank ?? 1e9)),
      currentRound: r ? {
        seq: r.seq, op: r.op, bucketsDone: r.bucketsDone, buckets: r.nb, msRunning: round2(performance.now() - r.t0),
        waitingFor: this.workers.map((_, k) => k).filter((k) => r.bucketsPerRank[k]! < r.nb),
      } : null,
      recentRounds: this.recent.toArray(),
      lastAbort: this.lastAbort,
      simd: this.arena.simd,
    };
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    clearInterval(this.heartbeat);
    if (this.round) clearTimeout(this.round.timer);
    if (this.rdvTimer) clearTimeout(this.rdvTimer);
    for (const c of this.conns) {
      if (c.helloTimer) clearTimeout(c.helloTimer);
      c.ws.close(CloseCode.SHUTDOWN, 'coordinator shutting down');
    }
    const deadline = setTimeout(() => { for (const c of this.conns) c.ws.terminate(); }, 1000);
    await new Promise<void>((resolve) => {
      const done = () => (this.conns.size === 0 ? resolve() : setTimeout(done, 10));
      done();
    });
    clearTimeout(deadline);
    await new Promise<void>((resolve) => this.http.close(() => resolve()));
    this.log('coordinator: closed');
  }
}

function sumMetrics(perRank: (number[] | undefined)[], len: number): number[] {
  // Rank order, float64: the same sums whichever rank arrived first.
  const out = new Array<number>(len).fill(0);
  for (const m of perRank) {
    if (!m) continue;
    for (let j = 0; j < len; j++) out[j] += m[j]!;
  }
  return out;
}

/** `{ ...defaults, ...options }` must not let an explicit `undefined` (an absent CLI flag) erase a default. */
function definedOnly<T extends object>(o: T): T {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as T;
}

/** '127.0.0.1:5555' -> '127.0.0.1', '[::1]:5555' or '::1:5555' -> '::1', '::ffff:10.0.0.2:5555' -> '10.0.0.2'. */
function hostOf(address: string): string {
  const host = address.slice(0, address.lastIndexOf(':')).replace(/^\[|\]$/g, '');
  return host.startsWith('::ffff:') && host.includes('.') ? host.slice(7) : host;
}

const who = (c: Conn): string => (c.rank === null ? `connection ${c.address}` : `rank ${c.rank} (${c.address})`);
const round2 = (x: number): number => Math.round(x * 100) / 100;
