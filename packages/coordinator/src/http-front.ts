import { readFileSync } from 'node:fs';
import { createServer as createHttpServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { Socket } from 'node:net';
import { WebSocketServer, type WebSocket } from 'ws';
import { requestToken, tokenMatches } from './auth.js';

export interface FrontOptions {
  tls?: { cert: string; key: string };
  /** larger frames are refused by ws at the frame header (close 1009), before buffering */
  maxMessageBytes: number;
  token: string | undefined;
}

export interface FrontEvents {
  /** the JSON served on GET /status */
  status(): unknown;
  /** an authenticated WebSocket */
  connection(ws: WebSocket, address: string): void;
  /** true once the coordinator is closing: upgrades are dropped */
  closing(): boolean;
  log(line: string): void;
}

/**
 * The HTTP(S) side: GET /status and WebSocket upgrades, both behind the token, which is checked before the
 * upgrade (a missing or wrong one gets 401 and no WebSocket). Everything else is a 404.
 */
export function createFront(o: FrontOptions, on: FrontEvents): { http: Server; wss: WebSocketServer } {
  const authorized = (req: IncomingMessage): boolean => o.token === undefined || tokenMatches(requestToken(req), o.token);
  const handler = (req: IncomingMessage, res: ServerResponse): void => {
    const path = (req.url ?? '').split('?')[0];
    if (req.method !== 'GET' || path !== '/status') {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('only GET /status and WebSocket upgrades are served here\n');
      return;
    }
    if (!authorized(req)) {
      res.writeHead(401, { 'content-type': 'text/plain' }).end('missing or wrong token (Authorization: Bearer ...)\n');
      return;
    }
    res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(on.status()));
  };
  const http = o.tls
    ? createHttpsServer({ cert: readFileSync(o.tls.cert), key: readFileSync(o.tls.key) }, handler)
    : createHttpServer(handler);
  const wss = new WebSocketServer({ noServer: true, perMessageDeflate: false, maxPayload: o.maxMessageBytes });
  http.on('upgrade', (req: IncomingMessage, socket: Socket, head: Buffer) => {
    const address = `${req.socket.remoteAddress}:${req.socket.remotePort}`;
    if (on.closing()) return void socket.destroy();
    if (!authorized(req)) {
      on.log(`coordinator: rejected connection from ${address}: missing or wrong token`);
      socket.end('HTTP/1.1 401 Unauthorized\r\nConnection: close\r\nContent-Length: 0\r\n\r\n');
      return;
    }
    wss.handleUpgrade(req, socket, head, (ws) => on.connection(ws, address));
  });
  return { http, wss };
}
