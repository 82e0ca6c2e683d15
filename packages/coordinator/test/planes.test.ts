import { spawn } from 'node:child_process';
import { statfsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { afterEach, describe, expect, it } from 'vitest';
import { floatToHalf, halfToFloat } from '../src/fp16.js';
import { HOST_ID_ENV, hostId } from '../src/host-id.js';
import { decode, encode, type Message, type WelcomeMsg } from '../src/protocol.js';
import { ShmPlane } from '../src/shm-plane.js';
import { referenceMean } from '../src/reduce.js';
import { shmUnavailable } from '../src/shm-native.js';
import { CoordinatorClient, startCoordinator } from '../src/index.js';
import { SIG, randomFloats, rawSocket, startJob, stopJob, type Job } from './helpers.js';

// The three data planes (shared memory, worker-to-worker TCP, through the coordinator) on the same inputs.
const unavailable = shmUnavailable();
if (unavailable && process.env.GOOGLENET_REQUIRE_NATIVE === '1') throw new Error(`shm addon missing (GOOGLENET_REQUIRE_NATIVE=1): ${unavailable}`);
if (unavailable) console.log(`SKIPPED test/planes.test.ts: needs the shm addon (${unavailable}; apt-get install g++ and run npm ci)`);

let job: Job | null = null;
afterEach(async () => {
  if (job) await stopJob(job).catch(() => {});
  job = null;
});

const bytesOf = (x: Float32Array): Buffer => Buffer.from(x.buffer, x.byteOffset, x.byteLength);
const q16 = (v: number) => halfToFloat(floatToHalf(v));
// 'shm slots': the shm plane with each rank's data in its registered slot of the segment (sharedBuffer, zero-copy).
const PLANES = ['shm', 'shm slots', 'peer', 'coordinator'] as const;

(unavailable ? describe.skip : describe)('data planes', () => {
  it('give identical bytes on shm (copied and in slots), peer and coordinator planes: fp32 mean, fp16 head + fp32 tail, broadcast, metrics', async () => {
    const numel = 20_011, head = 15_000;
    const inputs = [0, 1, 2].map((r) => randomFloats(numel, 90 + r));
    const out: Record<string, Buffer[]> = {};
    for (const variant of PLANES) {
      const plane = variant === 'shm slots' ? 'shm' : variant;
      for (const compression of ['none', 'fp16'] as const) {
        job = await startJob(3, { dataPlane: plane }, { bucketBytes: 16 * 1024, gradCompression: compression, dataPlane: plane, ...(variant === 'shm slots' ? { sharedElems: numel } : {}) });
        expect(job.logs.some((l) => l.includes(`data plane ${plane}`)), job.logs.join('\n')).toBe(true);
        const datas = variant === 'shm slots' ? job.clients.map((c) => c.sharedBuffer(numel)!) : inputs.map(() => new Float32Array(numel));
        datas.forEach((d, r) => d.set(inputs[r]!));
        // only the length the segment was made for
        if (variant === 'shm slots') expect(job.clients.map((c) => c.sharedBuffer(numel - 1))).toEqual([null, null, null]);
        const metrics = [0, 1, 2].map((r) => new Float64Array([r, 0.5]));
        await Promise.all(job.clients.map((c, r) => c.allReduce(datas[r]!, metrics[r], { compressibleLength: head })));
        for (const m of metrics) expect(Array.from(m)).toEqual([3, 1.5]);
        expect(job.clients[0]!.lastTiming.dataPlane ?? 'coordinator').toBe(plane);
        const bc = [0, 1, 2].map((r) => randomFloats(777, 7 + r));
        await Promise.all(job.clients.map((c, r) => c.broadcast(bc[r]!)));
        for (const b of bc) expect(bytesOf(b).equals(bytesOf(bc[0]!))).toBe(true);
        (out[compression] ??= []).push(...datas.map((d) => Buffer.from(bytesOf(d)))); // a copy: slots are unmapped at close
        await stopJob(job);
        job = null;
      }
    }
    // every rank of every plane holds the same bytes, and they are the documented mean
    const want = new Float32Array(numel);
    referenceMean(inputs, want);
    for (const b of out.none!) expect(b.equals(bytesOf(want))).toBe(true);
    const want16 = new Float32Array(numel);
    referenceMean(inputs.map((x) => Float32Array.from(x.subarray(0, head), q16)), want16.subarray(0, head));
    want16.subarray(0, head).set(want16.subarray(0, head).map(q16));
    referenceMean(inputs.map((x) => x.subarray(head)), want16.subarray(head));
    for (const b of out.fp16!) expect(b.equals(bytesOf(want16))).toBe(true);
  }, 60_000);

  it('copies through the segment, said in rank 0\'s log, when rank 0\'s /dev/shm has no room for the registered slots', async () => {
    const free = statfsSync('/dev/shm');
    const elems = Math.ceil((free.bavail * free.bsize) / 4 / 3) + 1_000_000; // 3 slots of this exceed the free space
    if (elems >= 2 ** 32) {
      console.log('SKIPPED the no-room case of test/planes.test.ts: /dev/shm has more free space than 3 slots can ask for (48 GiB)');
      return;
    }
    const lines: string[] = [];
    job = await startJob(3, { dataPlane: 'shm' }, { dataPlane: 'shm', sharedElems: elems, log: (l) => lines.push(l) });
    expect(job.clients.map((c) => c.sharedBuffer(elems))).toEqual([null, null, null]);
    expect(lines.filter((l) => l.startsWith('rank 0: no registered slots in the shared segment'))).toHaveLength(1);
    const datas = [0, 1, 2].map((r) => randomFloats(1000, 40 + r));
    const want = new Float32Array(1000);
    referenceMean(datas, want);
    await Promise.all(job.clients.map((c, r) => c.allReduce(datas[r]!)));
    for (const d of datas) expect(bytesOf(d).equals(bytesOf(want))).toBe(true);
    expect(job.clients[0]!.lastTiming.dataPlane).toBe('shm');
  });

  it('chooses shared memory automatically for ranks on one host and the peer plane for ranks on two (forced host ids)', async () => {
    for (const [ids, plane] of [[['m1', 'm1'], 'shm'], [['m1', 'm2'], 'peer']] as const) {
      const logs: string[] = [];
      const coord = await startCoordinator({ worldSize: 2, dataPlane: 'auto', log: (l) => logs.push(l) });
      const before = process.env[HOST_ID_ENV];
      const connecting = ids.map((id, rank) => {
        process.env[HOST_ID_ENV] = id; // read synchronously by connect(), before its first await
        return CoordinatorClient.connect({ url: coord.url, rank, worldSize: 2, signature: SIG });
      });
      if (before === undefined) delete process.env[HOST_ID_ENV];
      else process.env[HOST_ID_ENV] = before;
      const clients = await Promise.all(connecting);
      expect(logs.find((l) => l.includes('data plane'))).toContain(`data plane ${plane}`);
      const datas = [randomFloats(100, 1), randomFloats(100, 2)];
      const want = new Float32Array(100);
      referenceMean(datas, want);
      await Promise.all(clients.map((c, r) => c.allReduce(datas[r]!)));
      expect(clients[1]!.lastTiming.dataPlane).toBe(plane);
      for (const d of datas) expect(bytesOf(d).equals(bytesOf(want))).toBe(true);
      await Promise.all(clients.map((c) => c.close()));
      await coord.close();
    }
  });

  it('on shm the coordinator still hears of every collective in order, and the job finishes without an abort', async () => {
    job = await startJob(2, { dataPlane: 'shm' }, { dataPlane: 'shm' });
    const datas = [new Float32Array(64), new Float32Array(64)];
    for (let i = 0; i < 40; i++) await Promise.all(job.clients.map((c, r) => c.allReduce(datas[r]!, Float64Array.of(i))));
    await Promise.all(job.clients.map((c) => c.close())); // waits for the announcements still held back
    await new Promise((r) => setTimeout(r, 100));
    expect(job.logs.filter((l) => l.includes('ABORT'))).toEqual([]);
    expect(job.logs.some((l) => l.includes('job of generation 0 finished'))).toBe(true);
    expect(job.coord.status().recentRounds.at(-1)?.seq).toBe(40);
    await job.coord.close();
    job = null;
  });

  it('ranks that block their event loop longer than the round timeout between shm collectives complete every step', async () => {
    // As the trainer: synchronous compute (2.5 s) between collectives, longer than the coordinator's round timeout
    // (1.5 s), which must count only the skew between ranks, as on the peer plane.
    const coord = await startCoordinator({ worldSize: 2, roundTimeoutMs: 1500, dataPlane: 'shm' });
    const fixture = fileURLToPath(new URL('./fixtures/blocking-worker.ts', import.meta.url));
    const results = [0, 1].map((rank) => new Promise<string>((resolve, reject) => {
      const child = spawn(process.execPath, ['--import', 'tsx', fixture, coord.url, String(rank), '2', '4096', '3', '2500', '0'], { stdio: ['ignore', 'pipe', 'inherit'] });
      let out = '';
      child.stdout.on('data', (d) => (out += d));
      child.on('exit', (code) => (code === 0 ? resolve(out) : reject(new Error(`rank ${rank} exited with ${code}: ${out}`))));
    }));
    const outs = await Promise.all(results);
    for (const o of outs) {
      const { rounds } = JSON.parse(o.trim().split('\n').pop()!) as { rounds: { timing: { dataPlane: string } }[] };
      expect(rounds.map((r) => r.timing.dataPlane)).toEqual(['shm', 'shm', 'shm']);
    }
    expect(coord.status().lastAbort).toBeNull();
    await coord.close();
  }, 60_000);

  it('queues an announcement that arrives while the previous collective is still open, instead of refusing it', async () => {
    // Rank 1 speaks the protocol by hand and announces collectives 1 and 2 before rank 0 has announced 1, as a
    // rank that finished collective 1 in the segment and started 2 does (before: close 4004 and an abort).
    const logs: string[] = [];
    const coord = await startCoordinator({ worldSize: 2, dataPlane: 'shm', log: (l) => logs.push(l) });
    const { ws } = await rawSocket(coord.url);
    const msgs: { msg: Message }[] = [];
    ws.on('message', (b: Buffer) => msgs.push(decode(b)));
    ws.send(encode({ v: 1, type: 'hello', rank: 1, worldSize: 2, signature: SIG, hostId: hostId() }));
    const c0 = CoordinatorClient.connect({ url: coord.url, rank: 0, worldSize: 2, signature: SIG, dataPlane: 'shm' });
    while (!msgs.some((m) => m.msg.type === 'welcome')) await new Promise((r) => setTimeout(r, 5));
    const welcome = msgs.find((m) => m.msg.type === 'welcome')!.msg as WelcomeMsg;
    const plane1 = await ShmPlane.open({ path: welcome.shm!, rank: 1, ranks: 2, timeoutMs: 5000 });
    const client0 = await c0;
    for (const seq of [1, 2]) ws.send(encode({ v: 1, type: 'coll', seq, op: 'mean', dtype: 'f32', numel: 16, bucketElems: 6553600 }));
    await new Promise((r) => setTimeout(r, 100)); // both announcements are in before rank 0's first
    const d0 = [randomFloats(16, 1), randomFloats(16, 2)], d1 = [randomFloats(16, 3), randomFloats(16, 4)];
    const want = d0.map((x, i) => { const w = new Float32Array(16); referenceMean([x, d1[i]!], w); return w; });
    for (let i = 0; i < 2; i++) await Promise.all([client0.allReduce(d0[i]!), plane1.run('mean', 'f32', d1[i]!)]);
    for (let i = 0; i < 2; i++) expect(bytesOf(d0[i]!).equals(bytesOf(want[i]!)) && bytesOf(d1[i]!).equals(bytesOf(want[i]!))).toBe(true);
    while (msgs.filter((m) => m.msg.type === 'go').length < 2) await new Promise((r) => setTimeout(r, 5));
    expect(msgs.filter((m) => m.msg.type === 'go').map((m) => (m.msg as { seq: number }).seq)).toEqual([1, 2]);
    expect(coord.status().lastAbort).toBeNull();
    expect(coord.status().recentRounds.at(-1)?.seq).toBe(2);
    ws.send(encode({ v: 1, type: 'bye' }));
    ws.close();
    plane1.close();
    await client0.close();
    await coord.close();
  });

  it('refuses an unknown dataPlane with INVALID_OPTIONS on both sides', async () => {
    await expect(startCoordinator({ worldSize: 1, dataPlane: 'nvlink' as 'shm' })).rejects.toMatchObject({ code: 'INVALID_OPTIONS' });
    await expect(CoordinatorClient.connect({ url: 'ws://127.0.0.1:1', rank: 0, worldSize: 1, signature: SIG, dataPlane: 'udp' as 'shm' }))
      .rejects.toMatchObject({ code: 'INVALID_OPTIONS', message: expect.stringMatching(/auto, shm, peer, coordinator/) });
  });
});
