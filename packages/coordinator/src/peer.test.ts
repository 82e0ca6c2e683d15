import { connect, createServer, type Socket } from 'node:net';
import { describe, expect, it } from 'vitest';
import { MAX_UNVERIFIED_PEERS, PEER_HELLO_BYTES, PeerPlane, shardRange, unverifiedCap, type PeerRejectCode } from './peer.js';
import { PEER_FRAME_HEADER, writeHeader } from './protocol.js';
import { Arena } from './reduce.js';

const KEY = 'ab'.repeat(32);

function helloFrame(rank: number, key: string): Buffer {
  const h = Buffer.alloc(PEER_HELLO_BYTES);
  writeHeader(h, { v: 1, type: 'peer', rank }, PEER_FRAME_HEADER);
  Buffer.from(key, 'hex').copy(h, PEER_FRAME_HEADER);
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
    const intruders = [Buffer.from('GET / HTTP/1.1\r\n\r\n'.padEnd(PEER_HELLO_BYTES, 'x')), helloFrame(1, 'cd'.repeat(32)), helloFrame(7, KEY)]
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

describe('peer listener', () => {
  /** A plane of rank 0 in a world of 2 whose mesh waits for rank 1, and the codes it refused connections with. */
  async function listening(): Promise<{ a: PeerPlane; rejects: PeerRejectCode[]; fake: ReturnType<typeof createServer> }> {
    const a = await PeerPlane.listen('127.0.0.1', new Arena());
    const rejects: PeerRejectCode[] = [];
    a.onReject = (code) => rejects.push(code);
    const fake = createServer((s) => s.on('error', () => {}));
    await new Promise<void>((r) => fake.listen(0, '127.0.0.1', r));
    void a.start(0, [{ host: '127.0.0.1', port: a.port }, { host: '127.0.0.1', port: (fake.address() as { port: number }).port }], KEY, 5000).catch(() => {});
    return { a, rejects, fake };
  }
  const send = (port: number, bytes: Buffer, end = false): Promise<void> => {
    const s = connect(port, '127.0.0.1', () => (end ? s.end(bytes) : s.write(bytes)));
    s.on('error', () => {});
    return closed(s);
  };

  it('checks the key before decoding the hello: a wrong key with a malformed header is AUTH_FAILED, the right key MALFORMED', async () => {
    const { a, rejects, fake } = await listening();
    const garbageHeader = (key: string): Buffer => {
      const h = helloFrame(1, key);
      h.fill(0xc1, 8, PEER_FRAME_HEADER); // not msgpack at all
      return h;
    };
    await send(a.port, garbageHeader('cd'.repeat(32)));
    await send(a.port, garbageHeader(KEY));
    await send(a.port, helloFrame(1, KEY).subarray(0, 100), true);
    await send(a.port, Buffer.concat([helloFrame(1, KEY), Buffer.alloc(1)]));
    expect(rejects).toEqual(['PEER_AUTH_FAILED', 'PEER_MALFORMED', 'PEER_TRUNCATED', 'PEER_OVERSIZED']);
    a.destroy();
    fake.close();
  });

  it(`refuses connections beyond ${MAX_UNVERIFIED_PEERS} waiting to authenticate with PEER_LIMIT`, async () => {
    const { a, rejects, fake } = await listening();
    const idle = Array.from({ length: MAX_UNVERIFIED_PEERS }, () => connect(a.port, '127.0.0.1').on('error', () => {}));
    await Promise.all(idle.map((s) => new Promise((r) => s.once('connect', r))));
    await new Promise((r) => setTimeout(r, 50)); // the listener has accepted them all
    await send(a.port, helloFrame(1, KEY));
    expect(rejects).toEqual(['PEER_LIMIT']);
    for (const s of idle) s.destroy();
    a.destroy();
    fake.close();
  });

  it('raises the cap to twice the world size for jobs of more than 32 ranks, so that every peer fits', () => {
    expect(unverifiedCap(2)).toBe(MAX_UNVERIFIED_PEERS);
    expect(unverifiedCap(200)).toBe(400);
  });
});
