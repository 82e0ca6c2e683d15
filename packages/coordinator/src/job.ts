import { randomBytes, randomUUID } from 'node:crypto';
import { onData } from './coordinator-plane.js';
import { who, type Conn } from './conn.js';
import { abort, onClose } from './failures.js';
import { onColl, onPeerFailure } from './peer-control.js';
import { choosePlane, type DataPlane, type DataPlaneChoice } from './plane-select.js';
import { CloseCode, ProtocolViolation, encode, type CollMsg, type HelloMsg, type Message, type WelcomeMsg } from './protocol.js';
import { Arena } from './reduce.js';
import { Rendezvous } from './rendezvous.js';
import type { Round } from './rounds.js';
import { Ring, type RoundTiming, type StatusReport } from './status.js';

/** shm plane: announcements a connection may have queued ahead of the collective open here. */
const MAX_EARLY = 1024;

/** The options the job needs (resolved: defaults applied). */
export interface JobOptions {
  worldSize: number;
  runId?: string;
  roundTimeoutMs: number;
  rendezvousTimeoutMs: number;
  maxMessageBytes: number;
  dataPlane: DataPlaneChoice;
  onAbort?: (info: { generation: number; failedRank: number; code: string; reason: string }) => void;
}

/**
 * The coordinator's state machine: rendezvous -> running -> (finished | aborted) -> rendezvous of the next
 * generation. It owns the connections, the workers of the current generation, the collective in flight and the
 * arena; the data planes (coordinator-plane.ts, peer-control.ts), rounds.ts and failures.ts act on it.
 */
export class Job {
  readonly conns = new Set<Conn>();
  readonly arena = new Arena();
  readonly recent = new Ring<RoundTiming>(20);
  generation = 0;
  state: StatusReport['state'] = 'rendezvous';
  rdv: Rendezvous;
  rdvTimer: NodeJS.Timeout | null = null;
  workers: (Conn | null)[] = [];
  plane: DataPlane = 'coordinator';
  round: Round | null = null;
  lastSeq = 0;
  steps = 0;
  lastAbort: StatusReport['lastAbort'] = null;
  /** Set by violation() so that onClose reports why the socket went away. */
  failure: { rank: number; code: string; reason: string } | null = null;
  closed = false;

  constructor(readonly opts: JobOptions, readonly log: (line: string) => void) {
    this.rdv = new Rendezvous(opts.worldSize, opts.runId);
  }

  // ---- connections ---------------------------------------------------------------------------------------

  onMessage(conn: Conn, msg: Message, payload: Buffer): void {
    if (conn.generation !== this.generation) return; // a socket of an aborted generation, already closing
    // Only a joined worker takes part in a job (an unjoined one could otherwise count as a rank's announcement).
    if (conn.rank === null && msg.type !== 'hello') throw new ProtocolViolation(CloseCode.UNEXPECTED, `'${msg.type}' before hello`);
    switch (msg.type) {
      case 'hello': return this.onHello(conn, msg);
      case 'data':
        if (this.plane !== 'coordinator') throw new ProtocolViolation(CloseCode.UNEXPECTED, `data through the coordinator in a job that uses the ${this.plane} data plane`);
        return onData(this, conn, msg, payload);
      case 'coll':
        // The shm and hier planes are controlled like the peer plane: announcements here, bytes between the workers.
        if (this.plane === 'coordinator' || this.state !== 'running') throw new ProtocolViolation(CloseCode.UNEXPECTED, 'coll outside a job that uses the peer, hier or shm data plane');
        if (this.plane === 'shm') return this.onShmColl(conn, msg);
        return onColl(this, conn, msg);
      case 'peerFailure': return onPeerFailure(this, conn, msg);
      case 'bye':
        conn.saidBye = true;
        return;
      default:
        throw new ProtocolViolation(CloseCode.UNEXPECTED, `a worker may not send '${msg.type}'`);
    }
  }

  /**
   * shm plane: workers finish a collective in the segment without waiting for go, so a fast rank may announce
   * collective q+1 while q is still open here (a slower rank's announcement of q on its way). Such announcements
   * wait in the connection's queue (at most MAX_EARLY) and join their round as soon as it opens. A rank therefore
   * announces each collective when it starts it, as on the peer plane, and the round timeout keeps its meaning.
   */
  private onShmColl(conn: Conn, m: CollMsg): void {
    const early = (conn.early ??= []);
    if (early.length > 0 || (this.round ? m.seq > this.round.seq : m.seq > this.lastSeq + 1)) {
      if (early.length >= MAX_EARLY) throw new ProtocolViolation(CloseCode.UNEXPECTED, `more than ${MAX_EARLY} announcements ahead of collective ${this.round?.seq ?? this.lastSeq + 1}`);
      early.push(m);
    } else {
      onColl(this, conn, m);
    }
    this.drainEarly();
  }

  /** Feeds queued announcements into the round they belong to, round after round, while any can join. */
  private drainEarly(): void {
    const generation = this.generation, workers = this.workers;
    for (let progress = true; progress;) {
      progress = false;
      for (const w of workers) {
        if (this.generation !== generation || this.state !== 'running') return; // aborted meanwhile
        const next = this.round ? this.round.seq : this.lastSeq + 1;
        const m = w?.early?.[0];
        if (!m || m.seq !== next || (this.round && this.round.bucketsPerRank[w.rank!])) continue;
        w.early!.shift();
        onColl(this, w, m);
        progress = true;
      }
    }
  }

  /** Logs and closes with a 4xxx code; a joined worker's violation then aborts its job through onClose. */
  violation(conn: Conn, e: ProtocolViolation): void {
    this.log(`coordinator: closing ${who(conn)} with ${e.closeCode}: ${e.message}`);
    if (conn.rank !== null && conn.generation === this.generation) {
      this.failure = { rank: conn.rank, code: 'PROTOCOL_ERROR', reason: `rank ${conn.rank} broke the protocol: ${e.message}` };
    }
    conn.ws.close(e.closeCode, e.message.slice(0, 120));
  }

  onClose(conn: Conn, code: number, reason: string): void {
    onClose(this, conn, code, reason);
  }

  abort(failedRank: number, code: string, reason: string): void {
    abort(this, failedRank, code, reason);
  }

  // ---- rendezvous ----------------------------------------------------------------------------------------

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
    conn.hostId = h.hostId;
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
    const { plane, why, machines } = choosePlane(this.opts.dataPlane, this.workers.map((w) => ({ dataPort: w!.dataPort, hostId: w!.hostId })));
    this.plane = plane;
    const segment = () => `/dev/shm/googlenet-${randomBytes(12).toString('hex')}`;
    const fields: WelcomeMsg = {
      v: 1, type: 'welcome', generation: this.generation, worldSize: this.opts.worldSize, runId: this.rdv.runId, maxMessageBytes: this.opts.maxMessageBytes,
      // The address each worker's WebSocket came from, and a fresh key per generation (only ever sent over the
      // authenticated WebSocket) that every data connection must present.
      ...(plane === 'peer' || plane === 'hier' ? { peers: this.workers.map((w) => ({ host: hostOf(w!.address), port: w!.dataPort! })), dataKey: randomBytes(32).toString('hex') } : {}),
      // A fresh, unguessable segment name per generation (a restarted job never meets a dead one's segment).
      ...(plane === 'shm' ? { shm: segment() } : {}),
    };
    // hier: one segment per machine, so each machine's workers get their own path.
    const paths = machines?.slice(1).map(segment);
    const machineOf = (rank: number) => machines!.findIndex((b) => b > rank) - 1;
    const welcome = paths ? null : encode(fields);
    for (const w of this.workers) {
      w!.state = 'running';
      w!.ws.send(welcome ?? encode({ ...fields, machines: machines!, shm: paths![machineOf(w!.rank!)]! }));
    }
    this.log(`coordinator: all ${this.opts.worldSize} workers joined; run ${this.rdv.runId}, generation ${this.generation}, data plane ${this.plane} (${why})`);
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

  /** Forgets the generation's workers and collective; the next hello starts a new rendezvous. */
  newGeneration(): void {
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

  /** Stops every timer (coordinator shutdown). */
  stopTimers(): void {
    this.closed = true;
    if (this.round) clearTimeout(this.round.timer);
    if (this.rdvTimer) clearTimeout(this.rdvTimer);
    for (const c of this.conns) if (c.helloTimer) clearTimeout(c.helloTimer);
  }
}

/** '127.0.0.1:5555' -> '127.0.0.1', '[::1]:5555' or '::1:5555' -> '::1', '::ffff:10.0.0.2:5555' -> '10.0.0.2'. */
function hostOf(address: string): string {
  const host = address.slice(0, address.lastIndexOf(':')).replace(/^\[|\]$/g, '');
  return host.startsWith('::ffff:') && host.includes('.') ? host.slice(7) : host;
}
