import { connect, createServer, type Socket } from 'node:net';
import { describe, expect, it } from 'vitest';
import { PeerPlane, shardRange } from './peer.js';
import { PEER_FRAME_HEADER, writeHeader } from './protocol.js';
import { Arena } from './reduce.js';

const KEY = 'ab'.repeat(32);

function helloFrame(rank: number, key: string): Buffer {
  const h = Buffer.alloc(PEER_FRAME_HEADER);
  writeHeader(h, { v: 1, type: 'peer', rank, key }, PEER_FRAME_HEADER);
  return h;
}

const closed = (s: Socket): Promise<void> => new Promise((r) => s.on('close', () => r()));

describe('shardRange', () => {
  it('splits any length into disjoint, covering shards on 8-element boundaries', () => {
    for (const n of [0, 1, 7, 8, 9, 100, 50_003, 13_385_816]) {
      for (let ranks = 1; ranks <= 5; ranks++) {
        let next = 0;
        for (let s = 0; s < ranks; s++) {
          const [lo, hi] = shardRange(n, ranks, s);
          expect(lo).toBe(next);
          expect(hi).toBeGreaterThanOrEqual(lo);
          if (hi < n) expect(hi % 8).toBe(0);
          next = hi;
        }
        expect(next).toBe(n);
      }
    }
  });
});

describe('peer data plane', () => {
  it('drops garbage and wrong-key connections, completes the mesh with the real peer, and reports a bad frame', async () => {
    const a = await PeerPlane.listen('127.0.0.1', new Arena());
    // Before and during the mesh: random bytes, a wrong key, a claimed rank outside the world.
    const intruders = [Buffer.from('GET / HTTP/1.1\r\n\r\n'.padEnd(PEER_FRAME_HEADER, 'x')), helloFrame(1, 'cd'.repeat(32)), helloFrame(7, KEY)]
      .map((bytes) => {
        const s = connect(a.port, '127.0.0.1', () => s.write(bytes));
        s.on('error', () => {});
        return closed(s);
      });
    // The real rank 1: listens (a receives from it), connects to a with the key (a writes to it).
    const fake = createServer();
    const fakeIn = new Promise<Socket>((r) => fake.on('connection', (s) => { s.on('error', () => {}); r(s); }));
    await new Promise<void>((r) => fake.listen(0, '127.0.0.1', r));
    const failures: string[] = [];
    a.onFailure = (peer, code, reason) => failures.push(`${peer} ${code} ${reason}`);
    const started = a.start(0, [{ host: '127.0.0.1', port: a.port }, { host: '127.0.0.1', port: (fake.address() as { port: number }).port }], KEY, 5000);
    const toA = connect(a.port, '127.0.0.1', () => toA.write(helloFrame(1, KEY)));
    toA.on('error', () => {});
    await started;
    await Promise.all(intruders); // each was destroyed by a
    // rank 1 now writes a frame a did not expect: a reports it (it does not throw) and drops the connection
    const fromA = await fakeIn;
    const bad = Buffer.alloc(PEER_FRAME_HEADER + 8);
    writeHeader(bad, { v: 1, type: 'chunk', seq: 1, phase: 'out', offset: 0, count: 2 }, PEER_FRAME_HEADER);
    fromA.write(bad);
    await closed(fromA);
    expect(failures[0]).toMatch(/^1 PROTOCOL_ERROR rank 1 sent a bad frame: chunk of collective 1 while none/);
    a.destroy();
    toA.destroy();
    fake.close();
  });
});
