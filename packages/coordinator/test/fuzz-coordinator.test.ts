import { describe, expect, it } from 'vitest';
import { CoordinatorClient, startCoordinator } from '../src/index.js';
import { MAX_HEADER_BYTES, encode, type Message } from '../src/protocol.js';
import { SIG, randomFloats } from './helpers.js';
import { frame, lanes, memoryMb, pack, rng, wrongHeader, wsCase, wsFrame, type Rng } from './fuzz-helpers.js';

const CASES = Number(process.env.FUZZ_CASES ?? 10_000);
const MAX_MESSAGE = 64 * 1024;
const BINARY = 2, TEXT = 1;

/** Valid messages a worker could send, as templates for truncation and wrong types. */
const TEMPLATES: Record<string, unknown>[] = [
  { v: 1, type: 'hello', rank: 0, worldSize: 2, signature: SIG },
  { v: 1, type: 'data', seq: 1, op: 'mean', dtype: 'f32', numel: 4, bucketElems: 4, bucket: 0, count: 4, metrics: [1] },
  { v: 1, type: 'coll', seq: 1, op: 'mean', dtype: 'f16', numel: 4, bucketElems: 8 },
  { v: 1, type: 'peerFailure', seq: 1, peer: 1, code: 'CONNECTION_LOST', reason: 'x' },
  { v: 1, type: 'bye' },
];

type Expect = readonly (number | 'eof')[];
const PROTOCOL = [4000, 4001, 4002, 4003, 4004, 4005] as const;

/** One fuzz case: the bytes on the wire (after the upgrade request) and the close codes that count as rejected. */
function makeCase(r: Rng): { bytes: Buffer; end?: boolean; expect: Expect; kind: string } {
  const bin = (m: Buffer): Buffer => wsFrame(BINARY, m);
  switch (r.int(9)) {
    case 0: return { kind: 'random bytes', bytes: bin(r.bytes(r.int(300))), expect: [4000] };
    case 1: { // a valid message cut short (a data message cut inside its payload is still well formed: 4004)
      const t = r.pick(TEMPLATES);
      const whole = encode(t as unknown as Message, t.type === 'data' ? new Uint8Array(16) : undefined);
      return { kind: 'truncated message', bytes: bin(whole.subarray(0, r.int(whole.length))), expect: [4000, 4004] };
    }
    case 2: return { kind: 'wrong types', bytes: bin(frame(wrongHeader(r, r.pick(TEMPLATES)))), expect: PROTOCOL };
    case 3: { // a prefix that claims a header over the cap, or past the message
      const huge = MAX_HEADER_BYTES + 1 + r.int(2 ** 31);
      const h = pack({ v: 1, type: 'bye' });
      const past = frame(h);
      past.writeUInt32LE(past.length + 8 * (1 + r.int(1000)), 4);
      return { kind: 'oversized header', bytes: bin(r.int(2) ? frame(h, undefined, undefined, huge) : past), expect: [4000] };
    }
    case 4: return { kind: 'text frame', bytes: wsFrame(TEXT, Buffer.from('{"type":"hello"}'.repeat(1 + r.int(4)))), expect: [4000, 1007] };
    case 5: { // WebSocket-level garbage: reserved bits, reserved opcodes, a continuation with nothing to continue
      const bad = r.pick([() => wsFrame(BINARY, r.bytes(8), { rsv: 1 + r.int(7) }), () => wsFrame(3 + r.int(5), r.bytes(8)), () => wsFrame(0, r.bytes(8))])();
      return { kind: 'bad websocket frame', bytes: bad, expect: [1002] };
    }
    case 6: return { kind: 'oversized message', bytes: wsFrame(BINARY, Buffer.alloc(0), { claimed: MAX_MESSAGE + 1 + r.int(1 << 20) }), expect: [1009] };
    case 7: { // a frame cut short, then our side closes
      const m = bin(encode({ v: 1, type: 'hello', rank: 1, worldSize: 2, signature: SIG }));
      return { kind: 'truncated frame', bytes: m.subarray(0, 1 + r.int(m.length - 1)), end: true, expect: ['eof', 1006] };
    }
    default: { // well formed, but not something an unjoined connection may send
      const m = r.pick<Record<string, unknown>>([
        { v: 1, type: 'result', seq: 1, dtype: 'f32', bucket: 0, count: 0 }, { v: 1, type: 'go', seq: 1 },
        { v: 1, type: 'welcome', generation: 0, worldSize: 2, runId: 'x', maxMessageBytes: 10 },
        { v: 1, type: 'abort', generation: 0, failedRank: 0, code: 'X', reason: 'y' }, { v: 1, type: 'bye' },
        { v: 1, type: 'hello', rank: r.int(2), worldSize: 2, signature: SIG }, { v: 1, type: 'hello', rank: 2 + r.int(9), worldSize: 2, signature: SIG },
        { v: 1, type: 'coll', seq: 1, op: 'mean', dtype: 'f32', numel: 4, bucketElems: 8 },
        { v: 1, type: 'peerFailure', seq: 1, peer: 0, code: 'X', reason: 'y' },
      ]);
      return { kind: 'unexpected message', bytes: bin(encode(m as unknown as Message)), expect: [4004, 4005] };
    }
  }
}

describe('coordinator fuzz', () => {
  // Half the cases with each data plane: the waiting round is then either buckets of rank 0 already copied into
  // the coordinator's arena, or rank 0's announcement (coll) waiting for rank 1's.
  for (const [dataPlane, seed] of [['coordinator', 20261130], ['peer', 1130]] as const) {
    const n = Math.ceil(CASES / 2);
    it(`rejects ${n} seeded malformed connections with a close code while a round waits (${dataPlane} data plane), which then completes exactly`, async () => {
      let logged = 0;
      const coord = await startCoordinator({ worldSize: 2, maxMessageBytes: MAX_MESSAGE, roundTimeoutMs: 120_000, dataPlane, log: () => void logged++ });
      const port = Number(new URL(coord.url).port);
      const clients = await Promise.all([0, 1].map((rank) => CoordinatorClient.connect({ url: coord.url, rank, worldSize: 2, signature: SIG, bucketBytes: 4096 })));
      try {
        const inputs = [randomFloats(5000, 1), randomFloats(5000, 2)];
        const want = Float32Array.from(inputs[0]!, (v, i) => (v + inputs[1]![i]!) / 2);
        // Rank 0 is inside collective 1 for the whole fuzz.
        const d0 = inputs[0]!.slice();
        const first = clients[0]!.allReduce(d0);
        await new Promise((res) => setTimeout(res, 50));
        expect(coord.status().currentRound).toMatchObject({ seq: 1, waitingFor: [1] });

        const r = rng(seed);
        const cases = Array.from({ length: n }, () => makeCase(r));
        await lanes(200, 1, (i) => wsCase(port, cases[i]!.bytes, cases[i]!.end)); // warm-up: JIT, socket pools
        const before = memoryMb();
        const t0 = performance.now();
        const got = await lanes(n, 1, (i) => wsCase(port, cases[i]!.bytes, cases[i]!.end));
        const seconds = (performance.now() - t0) / 1000;
        const after = memoryMb();

        const wrong = got.map((code, i) => ({ i, code, ...cases[i]! })).filter((c) => !c.expect.includes(c.code));
        expect(wrong.slice(0, 5).map((c) => `${c.i} ${c.kind}: ${c.code} not in ${c.expect.join('/')}`)).toEqual([]);
        const kinds = new Map<string, number>();
        for (const c of cases) kinds.set(c.kind, (kinds.get(c.kind) ?? 0) + 1);
        console.log(`coordinator fuzz (${dataPlane} plane): ${n} cases in ${seconds.toFixed(1)} s (${[...kinds].map(([k, n]) => `${k} ${n}`).join(', ')}); ` +
          `heap ${before.heap.toFixed(1)} -> ${after.heap.toFixed(1)} MB, rss ${before.rss.toFixed(0)} -> ${after.rss.toFixed(0)} MB, ${logged} log lines`);
        expect(after.heap - before.heap).toBeLessThan(16);
        expect(after.rss - before.rss).toBeLessThan(128);

        // Nothing of the fuzz is left, the job was not touched, and the waiting round completes exactly.
        await new Promise((res) => setTimeout(res, 100));
        const s = coord.status();
        expect(s.workers.map((w) => w.rank)).toEqual([0, 1]);
        expect(s).toMatchObject({ generation: 0, state: 'running', lastAbort: null });
        const d1 = inputs[1]!.slice();
        await Promise.all([first, clients[1]!.allReduce(d1)]);
        expect(Array.from(d0)).toEqual(Array.from(want));
        expect(Array.from(d1)).toEqual(Array.from(want));
      } finally {
        await Promise.all(clients.map((c) => c.close()));
        await coord.close();
      }
    });
  }
});
