import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { CoordinatorClient, CoordinatorError, startCoordinator, type StatusReport } from '../src/index.js';
import { floatToHalf, halfToFloat } from '../src/fp16.js';
import { Packr } from 'msgpackr';
import { MAX_HEADER_BYTES, PREFIX_BYTES, encode } from '../src/protocol.js';
import { SIG, errorOf, exactMeanF32, randomFloats, rawSocket, startJob, stopJob, type Job } from './helpers.js';

let job: Job | null = null;
afterEach(async () => {
  if (job) await stopJob(job).catch(() => {});
  job = null;
});

/** The documented reduction: float64 sum in rank order, one rounding to float32. */
function expectedMean(inputs: Float32Array[]): Float32Array {
  return Float32Array.from(inputs[0]!, (_, i) => inputs.reduce((s, x) => s + x[i]!, 0) / inputs.length);
}

const bytesOf = (x: Float32Array): Buffer => Buffer.from(x.buffer, x.byteOffset, x.byteLength);

/** A message around any msgpack header bytes (encode() only takes protocol messages). */
function headerOf(packed: Uint8Array): Buffer {
  const p = (PREFIX_BYTES + packed.length + 7) & ~7;
  const buf = Buffer.alloc(p);
  buf.writeUInt32LE(packed.length, 0);
  buf.writeUInt32LE(p, 4);
  buf.set(packed, PREFIX_BYTES);
  return buf;
}

describe('all-reduce', () => {
  for (const n of [1, 2, 3, 4]) {
    it(`averages random gradients from ${n} worker(s) exactly, in several buckets, and sums metrics`, async () => {
      job = await startJob(n, {}, { bucketBytes: 64 * 1024 });
      const numel = 50_003; // 4 buckets, odd tail
      const inputs = job.clients.map((_, r) => randomFloats(numel, 11 + r));
      const want = expectedMean(inputs);
      let got = new Float32Array(0);
      for (let round = 0; round < 2; round++) { // the second round reuses every buffer
        const datas = inputs.map((x) => x.slice());
        got = datas[0]!;
        const metrics = job.clients.map((_, r) => new Float64Array([0.5 * (r + 1), r, 8]));
        await Promise.all(job.clients.map((c, r) => c.allReduce(datas[r]!, metrics[r])));
        for (let r = 0; r < n; r++) {
          expect(bytesOf(datas[r]!).equals(bytesOf(want))).toBe(true);
          expect(Array.from(metrics[r]!)).toEqual([0.5 * n * (n + 1) / 2, (n * (n - 1)) / 2, 8 * n]);
        }
      }
      // The documented formula is, for these inputs, the correctly rounded exact mean: checked against an oracle
      // in integer arithmetic, independent of the float64 reduction.
      const off: string[] = [];
      for (let i = 0; i < numel && off.length < 5; i++) {
        const exact = exactMeanF32(inputs.map((x) => x[i]!));
        if (got[i] !== exact) off.push(`[${i}] ${got[i]} != ${exact}`);
      }
      expect(off).toEqual([]);
      expect(job.coord.status().step).toBe(2);
    });
  }

  it('compresses to fp16 and returns the same bytes to every rank', async () => {
    job = await startJob(3, {}, { gradCompression: 'fp16', bucketBytes: 4096 });
    const numel = 10_001;
    const inputs = job.clients.map((_, r) => randomFloats(numel, 5 + r));
    const halves = inputs.map((x) => Float32Array.from(x, (v) => halfToFloat(floatToHalf(v))));
    const want = Float32Array.from(expectedMean(halves), (v) => halfToFloat(floatToHalf(v)));
    const datas = inputs.map((x) => x.slice());
    await Promise.all(job.clients.map((c, r) => c.allReduce(datas[r]!)));
    for (const d of datas) expect(bytesOf(d).equals(bytesOf(want))).toBe(true);
  });

  it('keeps values past compressibleLength in fp32 on both data planes: a running stat of 70000 and a 1e-6 update survive', async () => {
    const head = 3001;
    // BatchNorm running statistics: values, not deltas. binary16 would turn 70000 into Inf and lose the 1e-6 step.
    const tails = [Float32Array.of(70000, 0.5 + 1e-6, 1e-6, -1234.567), Float32Array.of(70000, 0.5 + 1e-6, 3e-6, 98765.4)];
    const inputs = tails.map((t, r) => { const x = new Float32Array(head + t.length); x.set(randomFloats(head, 60 + r)); x.set(t, head); return x; });
    const halves = inputs.map((x) => Float32Array.from(x.subarray(0, head), (v) => halfToFloat(floatToHalf(v))));
    const wantHead = Float32Array.from(expectedMean(halves), (v) => halfToFloat(floatToHalf(v)));
    const wantTail = expectedMean(tails);
    expect(Array.from(wantTail.subarray(0, 2))).toEqual([70000, Math.fround(0.5 + 1e-6)]);
    for (const dataPlane of ['peer', 'coordinator'] as const) {
      job = await startJob(2, { dataPlane }, { gradCompression: 'fp16', bucketBytes: 4096 });
      const datas = inputs.map((x) => x.slice());
      const metrics = [new Float64Array([1]), new Float64Array([2])];
      await Promise.all(job.clients.map((c, r) => c.allReduce(datas[r]!, metrics[r], { compressibleLength: head })));
      for (let r = 0; r < 2; r++) {
        expect(bytesOf(datas[r]!.subarray(0, head)).equals(bytesOf(wantHead))).toBe(true);
        expect(Array.from(datas[r]!.subarray(head))).toEqual(Array.from(wantTail));
        expect(metrics[r]![0]).toBe(3);
      }
      expect(job.coord.status().step).toBe(1); // the fp32 tail is part of the same step
      const bad = await errorOf(job.clients[0]!.allReduce(datas[0]!, undefined, { compressibleLength: head + 5 }));
      expect(bad.code).toBe('INVALID_OPTIONS');
      await stopJob(job);
      job = null;
    }
  });

  it('broadcasts rank 0 and reduces metrics without data', async () => {
    job = await startJob(3);
    const datas = job.clients.map((_, r) => new Float32Array(1000).fill(r + 1));
    await Promise.all(job.clients.map((c, r) => c.broadcast(datas[r]!)));
    for (const d of datas) expect(d.every((v) => v === 1)).toBe(true);
    const metrics = job.clients.map((_, r) => new Float64Array([r + 0.25, 1]));
    await Promise.all(job.clients.map((c, r) => c.reduceMetrics(metrics[r]!)));
    for (const m of metrics) expect(Array.from(m)).toEqual([3.75, 3]);
  });

  it('moves tensor bytes worker to worker by default and through the coordinator when asked, with the same bytes', async () => {
    const numel = 30_011;
    const inputs = [0, 1, 2].map((r) => randomFloats(numel, 40 + r));
    const want = expectedMean(inputs);
    for (const dataPlane of ['peer', 'coordinator'] as const) {
      job = await startJob(3, { dataPlane }, { bucketBytes: 32 * 1024 });
      expect(job.logs.some((l) => l.includes(`data plane ${dataPlane}`))).toBe(true);
      const datas = inputs.map((x) => x.slice());
      const metrics = [0, 1, 2].map((r) => new Float64Array([r]));
      await Promise.all(job.clients.map((c, r) => c.allReduce(datas[r]!, metrics[r])));
      for (let r = 0; r < 3; r++) {
        expect(bytesOf(datas[r]!).equals(bytesOf(want))).toBe(true);
        expect(metrics[r]![0]).toBe(3);
      }
      expect(job.clients[0]!.lastTiming.dataPlane ?? 'coordinator').toBe(dataPlane);
      await stopJob(job);
      job = null;
    }
  });

  it('rounds to fp16 even for a single worker', async () => {
    job = await startJob(1, {}, { gradCompression: 'fp16' });
    const x = randomFloats(1001, 3);
    const d = x.slice();
    await job.clients[0]!.allReduce(d);
    expect(bytesOf(d).equals(bytesOf(Float32Array.from(x, (v) => halfToFloat(floatToHalf(v)))))).toBe(true);
  });

  it('aborts every rank when lengths differ', async () => {
    job = await startJob(2);
    const [a, b] = await Promise.all([errorOf(job.clients[0]!.allReduce(new Float32Array(10))), errorOf(job.clients[1]!.allReduce(new Float32Array(12)))]);
    for (const e of [a, b]) expect(e.code).toBe('ROUND_ABORTED');
    expect(a.message).toMatch(/equal-length/);
  });
});

describe('rendezvous', () => {
  it('rejects a mismatched signature and a duplicate rank with clear errors, then completes', async () => {
    const coord = await startCoordinator({ worldSize: 2 });
    const first = CoordinatorClient.connect({ url: coord.url, rank: 0, worldSize: 2, signature: SIG });
    await new Promise((r) => setTimeout(r, 100));
    const mismatch = await errorOf(CoordinatorClient.connect({ url: coord.url, rank: 1, worldSize: 2, signature: [SIG[0]!, { name: 'fc.bias', shape: [1000] }] }));
    expect(mismatch.code).toBe('SIGNATURE_MISMATCH');
    expect(mismatch.message).toContain("'fc.bias' has shape [1000]");
    const dup = await errorOf(CoordinatorClient.connect({ url: coord.url, rank: 0, worldSize: 2, signature: SIG }));
    expect(dup.code).toBe('DUPLICATE_RANK');
    const wrongWorld = await errorOf(CoordinatorClient.connect({ url: coord.url, rank: 1, worldSize: 3, signature: SIG }));
    expect(wrongWorld.code).toBe('WORLD_SIZE_MISMATCH');
    const second = await CoordinatorClient.connect({ url: coord.url, rank: 1, worldSize: 2, signature: SIG });
    job = { coord, clients: [await first, second], logs: [] };
  });

  it('times out naming the missing ranks', async () => {
    const coord = await startCoordinator({ worldSize: 3, rendezvousTimeoutMs: 400 });
    const errs = await Promise.all([0, 1].map((rank) => errorOf(CoordinatorClient.connect({ url: coord.url, rank, worldSize: 3, signature: SIG }))));
    for (const e of errs) {
      expect(e.code).toBe('RENDEZVOUS_TIMEOUT');
      expect(e.message).toMatch(/2 joined .*\(ranks 0,1\); missing rank 2/);
    }
    await coord.close();
  });
});

describe('liveness', () => {
  it('aborts the round naming a rank that misses the round timeout, then accepts a new generation', async () => {
    job = await startJob(3, { roundTimeoutMs: 600 });
    const t0 = Date.now();
    const errs = await Promise.all([0, 2].map((r) => errorOf(job!.clients[r]!.allReduce(new Float32Array(100)))));
    expect(Date.now() - t0).toBeLessThan(10_000);
    for (const e of errs) {
      expect(e).toBeInstanceOf(CoordinatorError);
      expect(e.code).toBe('ROUND_ABORTED');
      expect(e.failedRank).toBe(1);
      expect(e.message).toMatch(/rank 1 did not deliver collective 1/);
    }
    expect((await errorOf(job.clients[1]!.allReduce(new Float32Array(100)))).code).toBe('ROUND_ABORTED');
    expect(job.coord.status().lastAbort).toMatchObject({ failedRank: 1, code: 'ROUND_TIMEOUT' });
    // a restarted job joins the same coordinator as generation 1
    const coord = job.coord;
    await Promise.all(job.clients.map((c) => c.close()));
    const clients = await Promise.all([0, 1, 2].map((rank) => CoordinatorClient.connect({ url: coord.url, rank, worldSize: 3, signature: SIG })));
    job = { coord, clients, logs: [] };
    expect(clients[0]!.generation).toBe(1);
    const datas = clients.map((_, r) => new Float32Array(8).fill(r));
    await Promise.all(clients.map((c, r) => c.allReduce(datas[r]!)));
    expect(datas[2]![0]).toBe(1);
  });

  it('rejects with CONNECTION_LOST when the coordinator goes away', async () => {
    job = await startJob(2);
    const pending = errorOf(job.clients[0]!.allReduce(new Float32Array(10)));
    await new Promise((r) => setTimeout(r, 50));
    await job.coord.close();
    expect((await pending).code).toBe('CONNECTION_LOST');
  });
});

describe('security and robustness', () => {
  it('refuses connections without or with a wrong token, and requires one beyond loopback', async () => {
    const saved = process.env.GOOGLENET_COORDINATOR_TOKEN;
    delete process.env.GOOGLENET_COORDINATOR_TOKEN;
    try {
      await expect(startCoordinator({ worldSize: 1, host: '0.0.0.0' })).rejects.toMatchObject({ code: 'TOKEN_REQUIRED' });
      const coord = await startCoordinator({ worldSize: 1, token: 's3cret' });
      const none = await errorOf(CoordinatorClient.connect({ url: coord.url, rank: 0, worldSize: 1, signature: SIG }));
      expect(none.code).toBe('AUTH_FAILED');
      const wrong = await errorOf(CoordinatorClient.connect({ url: coord.url, rank: 0, worldSize: 1, signature: SIG, token: 'guess' }));
      expect(wrong.code).toBe('AUTH_FAILED');
      const httpUrl = coord.url.replace('ws:', 'http:');
      expect((await fetch(`${httpUrl}/status`)).status).toBe(401);
      process.env.GOOGLENET_COORDINATOR_TOKEN = 's3cret';
      const ok = await CoordinatorClient.connect({ url: coord.url, rank: 0, worldSize: 1, signature: SIG });
      job = { coord, clients: [ok], logs: [] };
      expect((await fetch(`${httpUrl}/status`, { headers: { authorization: 'Bearer s3cret' } })).status).toBe(200);
    } finally {
      if (saved === undefined) delete process.env.GOOGLENET_COORDINATOR_TOKEN;
      else process.env.GOOGLENET_COORDINATOR_TOKEN = saved;
    }
  });

  it('survives random bytes, unknown types, out-of-order and oversized messages, headers over 256 KiB and msgpack extensions, and the next round is correct', async () => {
    const logs: string[] = [];
    const coord = await startCoordinator({ worldSize: 2, log: (l) => logs.push(l), maxMessageBytes: 1 << 20 });
    const cases: [Buffer | string, number][] = [
      [Buffer.from(Array.from({ length: 300 }, (_, i) => (i * 7919) & 255)), 4000],
      ['{"type":"hello"}', 4000],
      [encode({ v: 1, type: 'launch-missiles' } as never), 4002],
      [encode({ v: 9, type: 'hello' } as never), 4001],
      [encode({ v: 1, type: 'data', seq: 1, op: 'mean', dtype: 'f32', numel: 1, bucketElems: 1, bucket: 0, count: 1 }, new Uint8Array(4)), 4004],
      [Buffer.alloc((1 << 20) + 1), 1009],
      [headerOf(new Packr({ useRecords: false }).pack({ v: 1, type: 'hello', rank: 0, worldSize: 2, signature: SIG, pad: 'x'.repeat(MAX_HEADER_BYTES) })), 4000],
      [headerOf(new Packr({ useRecords: false, moreTypes: true }).pack({ v: 1, type: 'hello', rank: 0, worldSize: 2, signature: SIG, at: new Date() })), 4000],
    ];
    for (const [msg, code] of cases) {
      const { ws, closed } = await rawSocket(coord.url);
      ws.send(msg);
      expect((await closed).code).toBe(code);
    }
    expect(logs.filter((l) => l.includes('closing connection')).length).toBeGreaterThanOrEqual(7);
    expect(logs.some((l) => /bad prefix \(header 26\d{4} bytes/.test(l))).toBe(true); // over the 256 KiB cap
    expect(logs.some((l) => /extension type/.test(l))).toBe(true);
    const clients = await Promise.all([0, 1].map((rank) => CoordinatorClient.connect({ url: coord.url, rank, worldSize: 2, signature: SIG })));
    job = { coord, clients, logs };
    const datas = [Float32Array.of(1, 2, 3), Float32Array.of(3, 4, 6)];
    await Promise.all(clients.map((c, r) => c.allReduce(datas[r]!)));
    expect(Array.from(datas[1]!)).toEqual([2, 3, 4.5]);
  });

  it('closes a joined worker that sends a wrongly sized payload with 4003 and aborts the others', async () => {
    const coord = await startCoordinator({ worldSize: 2 });
    const c0 = CoordinatorClient.connect({ url: coord.url, rank: 0, worldSize: 2, signature: SIG });
    const { ws, closed } = await rawSocket(coord.url);
    ws.send(encode({ v: 1, type: 'hello', rank: 1, worldSize: 2, signature: SIG }));
    const client = await c0;
    job = { coord, clients: [client], logs: [] };
    const pending = errorOf(client.allReduce(new Float32Array(4)));
    ws.send(encode({ v: 1, type: 'data', seq: 1, op: 'mean', dtype: 'f32', numel: 4, bucketElems: (25 * 1024 * 1024) / 4, bucket: 0, count: 4 }, new Uint8Array(12)));
    expect((await closed).code).toBe(4003);
    const e = await pending;
    expect(e).toMatchObject({ code: 'ROUND_ABORTED', failedRank: 1 });
    expect(e.message).toMatch(/broke the protocol/);
  });

  it('closes a connection that announces a collective before hello with 4004, and the job is not touched', async () => {
    job = await startJob(2);
    const datas = [Float32Array.of(1, 2), Float32Array.of(3, 4)];
    const first = job.clients[0]!.allReduce(datas[0]!); // rank 0 has announced collective 1
    await new Promise((r) => setTimeout(r, 50));
    const { ws, closed } = await rawSocket(job.coord.url);
    ws.send(encode({ v: 1, type: 'coll', seq: 1, op: 'mean', dtype: 'f32', numel: 2, bucketElems: (25 * 1024 * 1024) / 4 }));
    expect(await closed).toMatchObject({ code: 4004, reason: "'coll' before hello" });
    expect(job.coord.status()).toMatchObject({ generation: 0, lastAbort: null, currentRound: { waitingFor: [1] } });
    await Promise.all([first, job.clients[1]!.allReduce(datas[1]!)]);
    expect(Array.from(datas[0]!)).toEqual([2, 3]);
  });

  it('closes a joined worker that sends its buckets out of order with 4004 (results must go out in order)', async () => {
    const coord = await startCoordinator({ worldSize: 2 });
    const c0 = CoordinatorClient.connect({ url: coord.url, rank: 0, worldSize: 2, signature: SIG, bucketBytes: 32 });
    const { ws, closed } = await rawSocket(coord.url);
    ws.send(encode({ v: 1, type: 'hello', rank: 1, worldSize: 2, signature: SIG }));
    const client = await c0;
    job = { coord, clients: [client], logs: [] };
    const pending = errorOf(client.allReduce(new Float32Array(16)));
    ws.send(encode({ v: 1, type: 'data', seq: 1, op: 'mean', dtype: 'f32', numel: 16, bucketElems: 8, bucket: 1, count: 8 }, new Uint8Array(32)));
    const c = await closed;
    expect(c.code).toBe(4004);
    expect(c.reason).toMatch(/bucket 1 of collective 1 sent before bucket 0/);
    expect(await pending).toMatchObject({ code: 'ROUND_ABORTED', failedRank: 1 });
  });

  it('round-trips over TLS with a self-signed certificate', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'coord-tls-'));
    const [key, cert] = [join(dir, 'key.pem'), join(dir, 'cert.pem')];
    execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', key, '-out', cert, '-days', '1',
      '-subj', '/CN=localhost', '-addext', 'subjectAltName=IP:127.0.0.1,DNS:localhost'], { stdio: 'ignore' });
    job = await startJob(2, { tls: { cert, key } }, { ca: readFileSync(cert, 'utf8') });
    expect(job.coord.url.startsWith('wss://')).toBe(true);
    const datas = [Float32Array.of(1, 2), Float32Array.of(3, 5)];
    await Promise.all(job.clients.map((c, r) => c.allReduce(datas[r]!)));
    expect(Array.from(datas[0]!)).toEqual([2, 3.5]);
    // without the CA the certificate is refused
    const coord2 = await startCoordinator({ worldSize: 1, tls: { cert, key } });
    const e = await errorOf(CoordinatorClient.connect({ url: coord2.url, rank: 0, worldSize: 1, signature: SIG }));
    expect(e.code).toBe('CONNECTION_LOST');
    await coord2.close();
  });

  it('reports workers, step and round timings on GET /status', async () => {
    job = await startJob(2);
    const datas = [new Float32Array(100), new Float32Array(100)];
    await Promise.all(job.clients.map((c, r) => c.allReduce(datas[r]!)));
    const s = (await (await fetch(`${job.coord.url.replace('ws:', 'http:')}/status`)).json()) as StatusReport;
    expect(s).toMatchObject({ state: 'running', worldSize: 2, step: 1, collectives: 1, currentRound: null });
    expect(s.workers.map((w) => [w.rank, w.state])).toEqual([[0, 'running'], [1, 'running']]);
    expect(s.recentRounds[0]).toMatchObject({ seq: 1, op: 'mean', numel: 100, buckets: 1 });
    expect(typeof s.recentRounds[0]!.totalMs).toBe('number');
  });
});
