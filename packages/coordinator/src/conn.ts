import type { WebSocket } from 'ws';
import { CloseCode, ProtocolViolation, decode, type CollMsg, type Message } from './protocol.js';
import type { WorkerStatus } from './status.js';

/** A connection that never says hello is closed after this long. */
export const HELLO_TIMEOUT_MS = 10_000;

/** One worker's WebSocket (or a connection that has not said hello yet). */
export interface Conn {
  ws: WebSocket;
  address: string;
  /** the generation it connected in; messages of an older one are ignored while its socket closes */
  generation: number;
  rank: number | null;
  state: WorkerStatus['state'];
  lastHeard: number;
  helloTimer: NodeJS.Timeout | null;
  saidBye: boolean;
  /** the worker's peer data port (from hello) */
  dataPort?: number;
  /** the worker's host id (from hello), offered when it can use the shared-memory plane */
  hostId?: string;
  /** shm plane: announcements of collectives after the one open here, in order (job.ts onShmColl) */
  early?: CollMsg[];
}

/** What a connection reports to the job. */
export interface ConnEvents {
  /** a decoded, validated message; throw ProtocolViolation to close the connection with its code */
  message(conn: Conn, msg: Message, payload: Buffer): void;
  violation(conn: Conn, e: ProtocolViolation): void;
  close(conn: Conn, code: number, reason: string): void;
  log(line: string): void;
}

/**
 * Wraps an accepted WebSocket: binary frames only, each decoded (protocol.ts) and handed on; a text frame, a
 * malformed message or an exception while handling one is a violation (a 4xxx close); no hello within
 * HELLO_TIMEOUT_MS is one too. Pongs and messages count as signs of life for /status.
 */
export function watchConnection(ws: WebSocket, address: string, generation: number, on: ConnEvents): Conn {
  const conn: Conn = {
    ws, address, generation, rank: null, state: 'connected', lastHeard: Date.now(), saidBye: false,
    helloTimer: setTimeout(() => on.violation(conn, new ProtocolViolation(CloseCode.HELLO_TIMEOUT, `no hello within ${HELLO_TIMEOUT_MS / 1000} s`)), HELLO_TIMEOUT_MS),
  };
  ws.on('message', (data: Buffer, isBinary: boolean) => {
    conn.lastHeard = Date.now();
    if (!isBinary) return on.violation(conn, new ProtocolViolation(CloseCode.MALFORMED, 'text frame; the protocol is binary'));
    try {
      const { msg, payload } = decode(data);
      on.message(conn, msg, payload);
    } catch (e) {
      if (e instanceof ProtocolViolation) on.violation(conn, e);
      else on.violation(conn, new ProtocolViolation(CloseCode.MALFORMED, `internal error handling message: ${(e as Error).message}`));
    }
  });
  ws.on('pong', () => { conn.lastHeard = Date.now(); });
  ws.on('error', (e) => on.log(`coordinator: ${who(conn)}: ${e.message}`)); // ws closes the socket itself (1009, 1002, ...)
  ws.on('close', (code, reason) => on.close(conn, code, reason.toString()));
  return conn;
}

export const who = (c: Conn): string => (c.rank === null ? `connection ${c.address}` : `rank ${c.rank} (${c.address})`);
