import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { WebSocketServer } from 'ws';
import { CoordinatorClient } from '../src/index.js';
import { decode, encode, type DataMsg } from '../src/protocol.js';
import { SIG, errorOf } from './helpers.js';

/**
 * A faulty coordinator: welcomes one worker on the coordinator data plane and, once a collective's buckets are in,
 * sends back the buckets `answer` lists, each echoing what the worker sent in it (the mean of one rank).
 */
async function faultyCoordinator(answer: (nb: number) => number[]): Promise<{ url: string; close: () => Promise<void> }> {
  const wss = new WebSocketServer({ port: 0, host: '127.0.0.1' });
  await new Promise((r) => wss.once('listening', r));
  wss.on('connection', (ws) => {
    const got: Buffer[] = [];
    ws.on('message', (buf: Buffer) => {
      const { msg, payload } = decode(buf);
      if (msg.type === 'hello') {
        ws.send(encode({ v: 1, type: 'welcome', generation: 0, worldSize: 1, runId: 'r', maxMessageBytes: 1 << 20 }));
      } else if (msg.type === 'data') {
        const m = msg as DataMsg;
        const nb = Math.ceil(m.numel / m.bucketElems);
        got[m.bucket] = Buffer.from(payload);
        if (m.bucket !== nb - 1) return;
        for (const b of answer(nb)) {
          ws.send(encode({ v: 1, type: 'result', seq: m.seq, dtype: 'f32', bucket: b, count: got[b]!.length / 4 }, got[b]));
        }
      }
    });
  });
  const url = `ws://127.0.0.1:${(wss.address() as AddressInfo).port}`;
  return { url, close: () => new Promise((r) => { for (const c of wss.clients) c.terminate(); wss.close(() => r()); }) };
}

let server: Awaited<ReturnType<typeof faultyCoordinator>> | null = null;
afterEach(async () => {
  await server?.close();
  server = null;
});

const connect = (url: string, timeoutMs = 30_000) =>
  CoordinatorClient.connect({ url, rank: 0, worldSize: 1, signature: SIG, bucketBytes: 64, timeoutMs });

describe('client result buckets', () => {
  it('fails with PROTOCOL_ERROR when a result bucket arrives twice instead of a lost one', async () => {
    server = await faultyCoordinator(() => [0, 0]); // bucket 1 lost, bucket 0 duplicated: the count would be right
    const c = await connect(server.url);
    const e = await errorOf(c.allReduce(new Float32Array(32)));
    expect(e.code).toBe('PROTOCOL_ERROR');
    expect(e.message).toMatch(/result bucket 0 of collective 1 arrived twice/);
    await c.close();
  });

  it('fails with PROTOCOL_ERROR when a result bucket overtakes a lost one', async () => {
    server = await faultyCoordinator(() => [0, 2, 3]);
    const c = await connect(server.url);
    const e = await errorOf(c.allReduce(new Float32Array(60)));
    expect(e.code).toBe('PROTOCOL_ERROR');
    expect(e.message).toMatch(/result bucket 2 of collective 1 arrived before bucket\(s\) 1/);
    await c.close();
  });

  it('names the buckets that never came when the round times out', async () => {
    server = await faultyCoordinator((nb) => Array.from({ length: nb - 1 }, (_, b) => b)); // the last one is lost
    const c = await connect(server.url, 200);
    const e = await errorOf(c.allReduce(new Float32Array(40)));
    expect(e.code).toBe('ROUND_TIMEOUT');
    expect(e.message).toMatch(/only 2 of 3 result buckets \(missing 2\)/);
    await c.close();
  });

  it('completes when every bucket arrives once, in order', async () => {
    server = await faultyCoordinator((nb) => Array.from({ length: nb }, (_, b) => b));
    const c = await connect(server.url);
    const data = Float32Array.from({ length: 40 }, (_, i) => i);
    await c.allReduce(data);
    expect(Array.from(data)).toEqual(Array.from({ length: 40 }, (_, i) => i));
    await c.close();
  });
});
