import { connect, createServer, type Socket } from 'node:net';
import { describe, expect, it } from 'vitest';
import { PEER_HELLO_BYTES, PeerPlane, type PeerRejectCode } from '../src/peer.js';
import { PEER_FRAME_HEADER, PREFIX_BYTES, writeHeader, type Message } from '../src/protocol.js';
import { Arena } from '../src/reduce.js';
import { randomFloats } from './helpers.js';
import { frame, lanes, memoryMb, pack, rng, wrongHeader, type Rng } from './fuzz-helpers.js';

const CASES = Number(process.env.FUZZ_CASES ?? 10_000);
const KEY = Buffer.from('5a'.repeat(32), 'hex');

/** A hello-sized frame: `header` (msgpack) framed with the payload at 128, then `key`. */
function hello(header: Uint8Array, key: Buffer = KEY, claimed = header.length, payloadAt = PEER_FRAME_HEADER): Buffer {
  const b = Buffer.alloc(PEER_HELLO_BYTES);
  b.writeUInt32LE(claimed >>> 0, 0);
  b.writeUInt32LE(payloadAt >>> 0, 4);
  b.set(header.subarray(0, PEER_FRAME_HEADER - PREFIX_BYTES), PREFIX_BYTES);
  key.copy(b, PEER_FRAME_HEADER);
  return b;
}
const valid = (m: Record<string, unknown>, key: Buffer = KEY): Buffer => {
  const b = Buffer.alloc(PEER_HELLO_BYTES);
  writeHeader(b, m as unknown as Message, PEER_FRAME_HEADER);
  key.copy(b, PEER_FRAME_HEADER);
  return b;
};

/** One case: bytes written at once (then half-closed with `end`) and the rejection codes that count. */
function makeCase(r: Rng): { bytes: Buffer; end: boolean; expect: readonly PeerRejectCode[]; kind: string } {
  switch (r.int(10)) {
    case 0: return { kind: 'random bytes, short', bytes: r.bytes(1 + r.int(PEER_HELLO_BYTES - 1)), end: true, expect: ['PEER_TRUNCATED'] };
    case 1: return { kind: 'random bytes, hello-sized', bytes: r.bytes(PEER_HELLO_BYTES), end: false, expect: ['PEER_AUTH_FAILED'] };
    // Delivered in one piece it is OVERSIZED; if TCP splits it at the hello's end, the key check answers first.
    case 2: return { kind: 'random bytes, long', bytes: r.bytes(PEER_HELLO_BYTES + 1 + r.int(400)), end: false, expect: ['PEER_OVERSIZED', 'PEER_AUTH_FAILED'] };
    case 3: {
      const h = valid({ v: 1, type: 'peer', rank: 1 });
      return { kind: 'truncated hello', bytes: h.subarray(0, r.int(PEER_HELLO_BYTES)), end: true, expect: ['PEER_TRUNCATED'] };
    }
    // rank 0 is the listener's own: even a header with only harmless fields changed is refused
    case 4: return { kind: 'wrong types', bytes: hello(wrongHeader(r, { v: 1, type: 'peer', rank: 0 })), end: false, expect: ['PEER_MALFORMED'] };
    case 5: {
      const h = pack({ v: 1, type: 'peer', rank: 1 });
      return r.int(2)
        ? { kind: 'oversized header', bytes: hello(h, KEY, PEER_FRAME_HEADER - PREFIX_BYTES + 1 + r.int(2 ** 31)), end: false, expect: ['PEER_MALFORMED'] }
        : { kind: 'wrong payload offset', bytes: hello(h, KEY, h.length, 8 * r.int(2 ** 20)), end: false, expect: ['PEER_MALFORMED'] };
    }
    case 6: {
      const m = r.pick<Record<string, unknown>>([{ v: 1, type: 'chunk', seq: 1, phase: 'in', offset: 0, count: 8 },
        { v: 1, type: 'hello', rank: 1, worldSize: 2, signature: [] }, { v: 1, type: 'bye' }, { v: 2, type: 'peer', rank: 1 }, { v: 1, type: 'nope' }]);
      return { kind: 'wrong message', bytes: valid(m), end: false, expect: ['PEER_MALFORMED'] };
    }
    case 7: return { kind: 'bad rank', bytes: valid({ v: 1, type: 'peer', rank: r.pick([0, 2 + r.int(1e6)]) }), end: false, expect: ['PEER_MALFORMED'] };
    case 8: {
      const key = r.int(2) ? r.bytes(32) : Buffer.from(KEY); // a random key, or the real one with one byte changed
      key[r.int(32)] ^= 1 + r.int(255);
      return { kind: 'wrong key', bytes: valid({ v: 1, type: 'peer', rank: 1 }, key), end: false, expect: ['PEER_AUTH_FAILED'] };
    }
    default: return { kind: 'right key, random header', bytes: hello(r.bytes(120), KEY, r.int(121)), end: false, expect: ['PEER_MALFORMED'] };
  }
}

/**
 * Sends one case on a fresh connection; resolves with what `codeOf` says for our local port once the listener has
 * closed it (it refuses, destroying the socket, before our side sees the close; ports are reused later).
 */
function send(port: number, bytes: Buffer, end: boolean, codeOf: (localPort: number) => PeerRejectCode | undefined): Promise<PeerRejectCode | undefined> {
  return new Promise((resolve) => {
    const s = connect({ port, host: '127.0.0.1', noDelay: true });
    s.on('error', () => {});
    s.on('connect', () => (end ? s.end(bytes) : s.write(bytes)));
    let local = 0;
    s.once('connect', () => { local = s.localPort!; });
    s.on('close', () => resolve(codeOf(local)));
  });
}

describe('peer listener fuzz', () => {
  it(`refuses ${CASES} seeded malformed connections with a code each, then the mesh forms and reduces exactly`, async () => {
    const [a, b] = await Promise.all([PeerPlane.listen('127.0.0.1', new Arena()), PeerPlane.listen('127.0.0.1', new Arena())]);
    const peers = [{ host: '127.0.0.1', port: a.port }, { host: '127.0.0.1', port: b.port }];
    const rejected = new Map<number, PeerRejectCode>();
    const failures: string[] = [];
    a.onReject = (code, _reason, address) => rejected.set(Number(address.slice(address.lastIndexOf(':') + 1)), code);
    a.onFailure = b.onFailure = (peer, code, reason) => failures.push(`${peer} ${code} ${reason}`);
    // Rank 0 waits for rank 1's data connection throughout the fuzz: its listener is open and holds the key.
    const meshA = a.start(0, peers, KEY.toString('hex'), 120_000);
    meshA.catch(() => {}); // awaited below; rejects only when the test fails early and destroys the plane
    try {
      const r = rng(1130);
      const cases = Array.from({ length: CASES }, () => makeCase(r));
      const codeOf = (port: number) => {
        const c = rejected.get(port);
        rejected.delete(port);
        return c;
      };
      const run = (i: number) => send(a.port, cases[i]!.bytes, cases[i]!.end, codeOf);
      await lanes(200, 1, run); // warm-up
      const before = memoryMb();
      const t0 = performance.now();
      const codes = await lanes(CASES, 1, run);
      const seconds = (performance.now() - t0) / 1000;
      const after = memoryMb();

      const wrong = codes.map((code, i) => ({ i, code, ...cases[i]! })).filter((c) => !c.expect.includes(c.code!));
      expect(wrong.slice(0, 5).map((c) => `${c.i} ${c.kind}: ${c.code} not in ${c.expect.join('/')}`)).toEqual([]);
      const kinds = new Map<string, number>();
      for (const c of cases) kinds.set(c.kind, (kinds.get(c.kind) ?? 0) + 1);
      console.log(`peer listener fuzz: ${CASES} cases in ${seconds.toFixed(1)} s (${[...kinds].map(([k, n]) => `${k} ${n}`).join(', ')}); ` +
        `heap ${before.heap.toFixed(1)} -> ${after.heap.toFixed(1)} MB, rss ${before.rss.toFixed(0)} -> ${after.rss.toFixed(0)} MB`);
      expect(after.heap - before.heap).toBeLessThan(16);
      expect(after.rss - before.rss).toBeLessThan(128);
      expect((a as unknown as { unverified: Map<unknown, unknown> }).unverified.size).toBe(0);
      expect(failures).toEqual([]);

      // The real rank 1 joins: both meshes complete and the first all-reduce is exact.
      await Promise.all([meshA, b.start(1, peers, KEY.toString('hex'), 10_000)]);
      const x = [randomFloats(3000, 7), randomFloats(3000, 8)];
      const want = Float32Array.from(x[0]!, (v, i) => (v + x[1]![i]!) / 2);
      const d = x.map((v) => v.slice());
      await Promise.all([a, b].map((p, k) => new Promise<void>((done) => {
        p.begin(1, 'mean', 'f32', d[k]!, 1024, done);
        p.go();
      })));
      expect(Array.from(d[0]!)).toEqual(Array.from(want));
      expect(Array.from(d[1]!)).toEqual(Array.from(want));
    } finally {
      a.destroy();
      b.destroy();
    }
  });
});

const READER_CASES = Number(process.env.FUZZ_READER_CASES ?? 1_000);

/**
 * Bytes an authenticated rank 1 sends instead of the frame rank 0 expects next: after its input for shard 0
 * (elements 0..32), the reduced shard 1 ('out', offset 32, count 32) of the 64-element collective.
 */
function badStream(r: Rng): { bytes: Buffer; end: boolean; kind: string } {
  const chunk = (m: Record<string, unknown>, payload = Buffer.alloc(128)) => frame(pack(m), payload, PEER_FRAME_HEADER);
  const good = { v: 1, type: 'chunk', seq: 1, phase: 'out', offset: 32, count: 32 };
  switch (r.int(6)) {
    case 0: return { kind: 'random bytes', bytes: r.bytes(1 + r.int(600)), end: r.int(2) === 1 };
    case 1: return { kind: 'truncated chunk', bytes: chunk(good).subarray(0, r.int(PEER_FRAME_HEADER + 128)), end: true };
    case 2: return { kind: 'wrong types', bytes: frame(wrongHeader(r, good), Buffer.alloc(128), PEER_FRAME_HEADER), end: false };
    case 3: {
      const f = chunk(good);
      f.writeUInt32LE(PEER_FRAME_HEADER - PREFIX_BYTES + 1 + r.int(2 ** 31), 0);
      return { kind: 'oversized header', bytes: f, end: false };
    }
    case 4: { // well formed, but not the chunk expected: a peer must not steer where its bytes land
      const m = r.pick<Record<string, unknown>>([{ ...good, seq: 2 }, { ...good, phase: 'in' }, { ...good, offset: 0 }, { ...good, offset: 2 ** 40 },
        { ...good, count: 1 << 20 }, { ...good, count: 31 }, { v: 1, type: 'peer', rank: 1 }]);
      return { kind: 'unexpected chunk', bytes: chunk(m), end: false };
    }
    default: return { kind: 'wrong payload offset', bytes: frame(pack(good), Buffer.alloc(128), 8 * (1 + r.int(15))), end: false };
  }
}

describe('peer data connection fuzz', () => {
  it(`reports ${READER_CASES} seeded bad streams from an authenticated peer as a coded failure and never completes the collective`, async () => {
    // The fake rank 1: a listener that rank 0 reads from, plus a connection to rank 0 that rank 0 writes to.
    let incoming: (s: Socket) => void = () => {};
    const fake = createServer((s) => { s.on('error', () => {}); incoming(s); });
    await new Promise<void>((res) => fake.listen(0, '127.0.0.1', res));
    const fakePort = (fake.address() as { port: number }).port;
    const r = rng(42);
    const kinds = new Map<string, number>();
    const codes = new Map<string, number>();
    const before = memoryMb();
    const t0 = performance.now();
    try {
      for (let i = 0; i < READER_CASES; i++) {
        const c = badStream(r);
        kinds.set(c.kind, (kinds.get(c.kind) ?? 0) + 1);
        const a = await PeerPlane.listen('127.0.0.1', new Arena());
        const failed = new Promise<string>((res) => { a.onFailure = (peer, code) => res(`${peer} ${code}`); });
        const fromA = new Promise<Socket>((res) => { incoming = res; });
        const mesh = a.start(0, [{ host: '127.0.0.1', port: a.port }, { host: '127.0.0.1', port: fakePort }], KEY.toString('hex'), 5000);
        const toA = connect(a.port, '127.0.0.1', () => toA.write(valid({ v: 1, type: 'peer', rank: 1 })));
        toA.on('error', () => {});
        toA.resume(); // rank 0's 'in' chunks for shard 1 and its results: read and dropped
        const feed = await fromA;
        await mesh;
        const data = Float32Array.from({ length: 64 }, (_, k) => k);
        let completed = false;
        a.begin(1, 'mean', 'f32', data, 32, () => { completed = true; });
        a.go();
        // The first chunk of shard 0 from rank 1 is right, so that the bad bytes meet a reader in mid-collective.
        feed.write(frame(pack({ v: 1, type: 'chunk', seq: 1, phase: 'in', offset: 0, count: 32 }), Buffer.alloc(128), PEER_FRAME_HEADER));
        // Then the stream ends: bytes that are not a whole frame are a lost connection, not a wait for more.
        if (c.end) feed.end(c.bytes);
        else feed.write(c.bytes, () => feed.end());
        let timer: NodeJS.Timeout | undefined;
        const got = await Promise.race([failed, new Promise<string>((res) => { timer = setTimeout(() => res(`no failure for case ${i} (${c.kind})`), 5000); })]);
        clearTimeout(timer);
        codes.set(got, (codes.get(got) ?? 0) + 1);
        expect(['1 PROTOCOL_ERROR', '1 CONNECTION_LOST']).toContain(got);
        expect(completed, `case ${i} (${c.kind}) completed the collective`).toBe(false);
        a.destroy();
        toA.destroy();
        feed.destroy();
      }
    } finally {
      fake.close();
    }
    const seconds = (performance.now() - t0) / 1000;
    const after = memoryMb();
    console.log(`peer data connection fuzz: ${READER_CASES} cases in ${seconds.toFixed(1)} s (${[...kinds].map(([k, n]) => `${k} ${n}`).join(', ')}; ` +
      `${[...codes].map(([k, n]) => `${k.slice(2)} ${n}`).join(', ')}); heap ${before.heap.toFixed(1)} -> ${after.heap.toFixed(1)} MB, rss ${before.rss.toFixed(0)} -> ${after.rss.toFixed(0)} MB`);
    expect(after.heap - before.heap).toBeLessThan(16);
  });
});
