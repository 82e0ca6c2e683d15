import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { isLoopback, requireTokenFor, resolveToken } from './auth.js';
import { watchConnection } from './conn.js';
import { check } from './errors.js';
import { createFront } from './http-front.js';
import { Job } from './job.js';
import { DATA_PLANES, type DataPlaneChoice } from './plane-select.js';
import { CloseCode } from './protocol.js';
import { statusOf, type StatusReport } from './status.js';

/**
 * The coordinator, assembled as `ws` assembles its lib from small modules:
 *   http-front.ts        HTTP(S): GET /status and the WebSocket upgrade, both behind the token (auth.ts)
 *   conn.ts              one WebSocket: binary frames decoded (protocol.ts, msgpack.ts), hello timeout, violations
 *   job.ts               the state machine: rendezvous (rendezvous.ts), running, the next generation
 *   rounds.ts            one collective: sequence, consistency across ranks, metrics, round timeout
 *   layout.ts            where a collective lives in the arena (reduce.ts)
 *   coordinator-plane.ts data through here: buckets in, exact mean, one result buffer out to all
 *   peer-control.ts      data worker to worker (peer.ts): announcements, go, peer failures
 *   failures.ts          a worker leaving or failing; aborts
 *   status.ts            what GET /status reports
 */

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
   * the coordinator only checks, times and releases each collective; 'auto' / 'shm': shared memory when every
   * worker offers the same host id, else as 'peer'; 'coordinator': every byte goes through here (plane-select.ts).
   */
  dataPlane?: DataPlaneChoice;
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

type Resolved = Required<Omit<CoordinatorOptions, 'runId' | 'token' | 'tls' | 'log' | 'onAbort'>> & CoordinatorOptions;

export async function startCoordinator(options: CoordinatorOptions): Promise<Coordinator> {
  const opts: Resolved = { ...DEFAULTS, ...definedOnly(options) };
  check(Number.isInteger(opts.worldSize) && opts.worldSize >= 1, 'INVALID_OPTIONS', () => `worldSize must be a positive integer, got ${opts.worldSize}`);
  check(Number.isInteger(opts.port) && opts.port >= 0 && opts.port < 65536, 'INVALID_OPTIONS', () => `port must be 0..65535, got ${opts.port}`);
  for (const k of ['roundTimeoutMs', 'rendezvousTimeoutMs', 'maxMessageBytes', 'heartbeatMs'] as const) {
    check(Number.isFinite(opts[k]) && opts[k] > 0, 'INVALID_OPTIONS', () => `${k} must be a positive number, got ${opts[k]}`);
  }
  check(DATA_PLANES.includes(opts.dataPlane), 'INVALID_OPTIONS', () => `dataPlane must be one of ${DATA_PLANES.join(', ')}, got ${String(opts.dataPlane)}`);
  const token = resolveToken(opts.token);
  requireTokenFor(opts.host, token);
  const c = new CoordinatorServer(opts, token);
  await c.listen();
  return c;
}

class CoordinatorServer implements Coordinator {
  private readonly http: Server;
  private readonly job: Job;
  private readonly log: (line: string) => void;
  private readonly heartbeat: NodeJS.Timeout;
  url = '';
  port = 0;

  constructor(private readonly opts: Resolved, private readonly token: string | undefined) {
    this.log = opts.log ?? (() => {});
    const job = this.job = new Job(opts, this.log);
    const events = { message: job.onMessage.bind(job), violation: job.violation.bind(job), close: job.onClose.bind(job), log: this.log };
    this.http = createFront({ tls: opts.tls, maxMessageBytes: opts.maxMessageBytes, token }, {
      status: () => this.status(),
      connection: (ws, address) => job.conns.add(watchConnection(ws, address, job.generation, events)),
      closing: () => job.closed,
      log: this.log,
    }).http;
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
          `${this.token ? ' (token required)' : ''}${isLoopback(this.opts.host) ? '' : ' (non-loopback)'}, simd ${this.job.arena.simd ? 'on' : 'off'}`);
        resolve();
      });
    });
  }

  /**
   * Pings everyone. Missed pongs are not a failure: a worker computes with its event loop blocked (seconds to
   * minutes per step), during which it cannot answer while being perfectly alive. A dead worker process closes its
   * socket (noticed at once), and a hung or unreachable one is caught by the round timeout, counted from the first
   * rank that entered the collective. Connections that never joined are closed by the hello timeout.
   */
  private beat(): void {
    for (const c of this.job.conns) if (c.ws.readyState === c.ws.OPEN) c.ws.ping();
  }

  status(): StatusReport {
    return statusOf(this.job);
  }

  async close(): Promise<void> {
    const conns = this.job.conns;
    if (this.job.closed) return;
    this.job.stopTimers();
    clearInterval(this.heartbeat);
    for (const c of conns) c.ws.close(CloseCode.SHUTDOWN, 'coordinator shutting down');
    const deadline = setTimeout(() => { for (const c of conns) c.ws.terminate(); }, 1000);
    await new Promise<void>((resolve) => {
      const done = () => (conns.size === 0 ? resolve() : setTimeout(done, 10));
      done();
    });
    clearTimeout(deadline);
    await new Promise<void>((resolve) => this.http.close(() => resolve()));
    this.log('coordinator: closed');
  }
}

/** `{ ...defaults, ...options }` must not let an explicit `undefined` (an absent CLI flag) erase a default. */
function definedOnly<T extends object>(o: T): T {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as T;
}
