import { connect } from 'node:net';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { Packr } from 'msgpackr';
import { PREFIX_BYTES } from '../src/protocol.js';

/** Seeded xorshift32: the same cases on every run. */
export function rng(seed: number) {
  let s = seed >>> 0 || 1;
  const next = (): number => ((s ^= s << 13), (s ^= s >>> 17), (s ^= s << 5), (s >>> 0) / 2 ** 32);
  const int = (n: number): number => Math.floor(next() * n);
  return {
    next, int,
    bytes: (n: number): Buffer => Buffer.from(Array.from({ length: n }, () => int(256))),
    pick: <T>(xs: readonly T[]): T => xs[int(xs.length)]!,
  };
}
export type Rng = ReturnType<typeof rng>;

const plain = new Packr({ useRecords: false, variableMapSize: true });
/** msgpackr with its extensions (Date, RegExp, Error, Set, typed arrays), the types a strict decoder refuses. */
const rich = new Packr({ useRecords: false, moreTypes: true, structuredClone: true });

/** A protocol frame (prefix, header, padding to `payloadAt` or the next 8, payload) around any header bytes. */
export function frame(header: Uint8Array, payload: Uint8Array = new Uint8Array(0), payloadAt?: number, claimed = header.length): Buffer {
  const p = payloadAt ?? ((PREFIX_BYTES + header.length + 7) & ~7);
  const buf = Buffer.alloc(Math.max(p, PREFIX_BYTES + header.length) + payload.length);
  buf.writeUInt32LE(claimed >>> 0, 0);
  buf.writeUInt32LE(p >>> 0, 4);
  buf.set(header, PREFIX_BYTES);
  buf.set(payload, p);
  return buf;
}

/** A value of a random wrong type for a field (or a msgpackr extension object). */
export function wrongValue(r: Rng): unknown {
  return r.pick<() => unknown>([
    () => 'x'.repeat(r.int(40)), () => -1 - r.int(1000), () => 1.5, () => 2 ** 60, () => null, () => true, () => [],
    () => ({ a: 1 }), () => [1, [2, [3]]], () => new Date(r.int(1e9)), () => /x+/g, () => new Error('e'), () => new Set([1]),
    () => new Float32Array(3), () => NaN, () => -0,
  ])();
}

/**
 * A header map built from `base` with 1-3 of its fields given a value of another type (possibly an extension,
 * which needs the rich encoder). A replacement can happen to be valid again (-0 for a 0), so callers that need a
 * rejection make the base itself unacceptable in another way or accept that outcome.
 */
export function wrongHeader(r: Rng, base: Record<string, unknown>): Buffer {
  const m: Record<string, unknown> = { ...base };
  const keys = Object.keys(base);
  for (let k = 1 + r.int(3); k > 0; k--) m[r.pick(keys)] = wrongValue(r);
  return rich.pack(m);
}

export const pack = (m: unknown): Buffer => plain.pack(m);

/** A client-to-server WebSocket frame (masked with a zero mask). */
export function wsFrame(opcode: number, payload: Uint8Array, o: { fin?: boolean; rsv?: number; claimed?: number } = {}): Buffer {
  const n = o.claimed ?? payload.length;
  const len = n < 126 ? [n] : n < 65536 ? [126, n >> 8, n & 255] : [127, 0, 0, 0, 0, (n >>> 24) & 255, (n >> 16) & 255, (n >> 8) & 255, n & 255];
  const b0 = ((o.fin ?? true) ? 0x80 : 0) | ((o.rsv ?? 0) << 4) | opcode;
  return Buffer.concat([Buffer.from([b0, 0x80 | len[0]!, ...len.slice(1), 0, 0, 0, 0]), payload]);
}

const UPGRADE = (port: number) => Buffer.from(`GET / HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
  'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n');

/**
 * Upgrades a raw TCP connection and sends `bytes` (WebSocket frames) with the request, in one write; resolves
 * with the close code of the server's close frame, or 'eof' when it closed the connection without one. With
 * `end`, our side half-closes after the bytes (a truncated frame).
 */
export function wsCase(port: number, bytes: Buffer, end = false): Promise<number | 'eof'> {
  return new Promise((resolve) => {
    const s = connect({ port, host: '127.0.0.1', noDelay: true });
    let buf = Buffer.alloc(0);
    let done = false;
    const finish = (v: number | 'eof') => { if (!done) { done = true; s.destroy(); resolve(v); } };
    s.on('connect', () => (end ? s.end(Buffer.concat([UPGRADE(port), bytes])) : s.write(Buffer.concat([UPGRADE(port), bytes]))));
    s.on('data', (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      const h = buf.indexOf('\r\n\r\n');
      if (h < 0) return;
      let i = h + 4;
      // Skip data frames (none expected) until the close frame (opcode 8) with its 2-byte code.
      while (i + 2 <= buf.length) {
        const op = buf[i]! & 0x0f;
        let len = buf[i + 1]! & 0x7f, hl = 2;
        if (len === 126) { if (i + 4 > buf.length) return; len = buf.readUInt16BE(i + 2); hl = 4; }
        else if (len === 127) { if (i + 10 > buf.length) return; len = Number(buf.readBigUInt64BE(i + 2)); hl = 10; }
        if (i + hl + len > buf.length) return;
        if (op === 8) return finish(len >= 2 ? buf.readUInt16BE(i + hl) : 1005);
        i += hl + len;
      }
    });
    s.on('error', () => finish('eof'));
    s.on('close', () => finish('eof'));
  });
}

/**
 * Runs `n` cases, `concurrency` at a time, in case order within each lane. The suites use 1: on the shared 2-core
 * machine one connection at a time measured fastest (3,000 coordinator cases: 1.9 s, vs 2.9-3.9 s with 2-8 lanes).
 */
export async function lanes<T>(n: number, concurrency: number, run: (i: number) => Promise<T>): Promise<T[]> {
  const out = new Array<T>(n);
  let next = 0;
  await Promise.all(Array.from({ length: concurrency }, async () => {
    while (next < n) {
      const i = next++;
      out[i] = await run(i);
    }
  }));
  return out;
}

setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;

/** Heap and RSS in MB, after a full collection. */
export function memoryMb(): { heap: number; rss: number } {
  gc();
  const m = process.memoryUsage();
  return { heap: m.heapUsed / 2 ** 20, rss: m.rss / 2 ** 20 };
}
