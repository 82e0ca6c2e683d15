// One benchmark worker process: joins, runs warmup + iters all-reduce rounds (each after a metrics-only
// barrier, or after blocking its event loop for blockMs + 10 ms per rank when blockMs > 0), prints one JSON line
// with its per-round times and the client-side breakdown.
import { CoordinatorClient } from '../src/index.js';

const [url, rank, world, numel, compression, warmup, iters, bucketBytes, blockMs = '0', dataPlane = 'auto', shared = 'on'] = process.argv.slice(2);
const client = await CoordinatorClient.connect({
  url: url!, rank: Number(rank), worldSize: Number(world), signature: [{ name: 'grads', shape: [Number(numel)] }],
  gradCompression: compression as 'none' | 'fp16', bucketBytes: Number(bucketBytes), dataPlane: dataPlane as 'auto',
  sharedElems: shared === 'on' ? Number(numel) : 0,
});
// As the trainer does: the vector lives in this rank's slot of the shm segment where the job has one (no copy in or out).
const slot = client.sharedBuffer(Number(numel));
const data = slot ?? new Float32Array(Number(numel));
for (let i = 0; i < data.length; i++) data[i] = Math.sin(i * 0.001 + Number(rank));
const barrier = new Float64Array(1);
const rounds: { totalMs: number; encodeMs: number; sendMs: number; waitMs: number; decodeMs: number }[] = [];
for (let i = 0; i < Number(warmup) + Number(iters); i++) {
  if (Number(blockMs) > 0) {
    const until = performance.now() + Number(blockMs) + 10 * Number(rank);
    while (performance.now() < until) { /* synchronous compute: no I/O is serviced */ }
  } else {
    await client.reduceMetrics(barrier);
  }
  const t0 = performance.now();
  await client.allReduce(data);
  const totalMs = performance.now() - t0;
  if (i >= Number(warmup)) rounds.push({ ...client.lastTiming, totalMs });
}
process.stdout.write(`${JSON.stringify({ rank: Number(rank), inSlot: slot !== null, rounds })}\n`);
await client.close();
