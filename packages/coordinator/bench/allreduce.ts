// nx run coordinator:bench [--workers=2,4] --numel=13385816 [--grad-compression=fp16] [--iters=10] [--warmup=3]
//   [--bucket-bytes=26214400] [--data-plane=shm|peer|coordinator|auto] [--no-gloo] [--block-ms=MS] [--machines=M] [--shared=on|off]
// --shared=on (default, as the trainer): on the shm plane each rank's vector lives in its registered slot of the segment
// (no copy in or out); off: the copying shm path.
// --machines=M: simulates M machines on this one (GOOGLENET_HOST_ID per worker, contiguous ranks), so that auto
// picks the hierarchical plane (and --data-plane=peer the flat plane over the same "machines").
// --workers=2,4 runs each count in turn (ours, then gloo) and ends with a table and one JSON line over all counts.
// --block-ms: instead of the metrics-only barrier, each worker blocks its event loop synchronously for MS ms
// (+ 10 ms per rank) before every round, like the trainer's tfjs compute phase.
// Starts the coordinator in this process and N worker processes on loopback; prints the median ms per all-reduce
// round (slowest rank per round), MB/s, a breakdown, gloo's figure measured now with bench/gloo_reference.py,
// the ratio ours/gloo, and one JSON line.
import { execFile, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { startCoordinator } from '../src/index.js';

const { values: a } = parseArgs({
  options: {
    workers: { type: 'string', default: '2,4' }, numel: { type: 'string', default: '13385816' },
    'grad-compression': { type: 'string', default: 'none' }, iters: { type: 'string', default: '10' },
    warmup: { type: 'string', default: '3' }, 'bucket-bytes': { type: 'string', default: String(25 * 1024 * 1024) },
    'data-plane': { type: 'string', default: 'auto' }, 'no-gloo': { type: 'boolean', default: false }, 'block-ms': { type: 'string', default: '0' }, machines: { type: 'string', default: '1' }, shared: { type: 'string', default: 'on' }, help: { type: 'boolean', default: false },
  },
});
if (a.help) {
  console.log('usage: nx run coordinator:bench --workers=N[,M...] --numel=13385816 [--grad-compression=none|fp16] [--iters=10] [--warmup=3] [--bucket-bytes=B] [--data-plane=shm|peer|coordinator|auto] [--no-gloo] [--block-ms=MS] [--machines=M] [--shared=on|off]');
  process.exit(0);
}
const counts = a.workers!.split(',').map(Number);
const numel = Number(a.numel), iters = Number(a.iters), warmup = Number(a.warmup), blockMs = Number(a['block-ms']), machines = Number(a.machines);
const compression = a['grad-compression']!;
const dataPlane = a['data-plane'] as 'shm' | 'peer' | 'coordinator' | 'auto';
if (!(counts.every((w) => Number.isInteger(w) && w >= 1 && w % machines === 0) && Number.isInteger(machines) && machines >= 1 && numel >= 1 && iters >= 1 && warmup >= 0 && blockMs >= 0) || !['none', 'fp16'].includes(compression) || !['shm', 'peer', 'coordinator', 'auto'].includes(dataPlane) || !['on', 'off'].includes(a.shared!)) {
  console.error('bench: --workers (N or N,M,...), --numel, --iters, --machines must be positive integers (each worker count a multiple of --machines), --grad-compression none|fp16, --data-plane shm|peer|coordinator|auto, --shared on|off');
  process.exit(2);
}

const median = (xs: number[]): number => { const s = [...xs].sort((x, y) => x - y); const m = s.length >> 1; return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2; };
const r1 = (x: number): number => Math.round(x * 10) / 10;

async function ours(workers: number) {
  const logs: string[] = [];
  const coord = await startCoordinator({ worldSize: workers, maxMessageBytes: Number(a['bucket-bytes']) + (1 << 20), dataPlane, log: (l) => logs.push(l) });
  const script = fileURLToPath(new URL('./worker.ts', import.meta.url));
  const outs = await Promise.all(Array.from({ length: workers }, (_, rank) => new Promise<string>((resolve, reject) => {
    const p = spawn(process.execPath, ['--import', 'tsx', script, coord.url, String(rank), String(workers), String(numel), compression, String(warmup), String(iters), a['bucket-bytes']!, String(blockMs), dataPlane, a.shared!], {
      stdio: ['ignore', 'pipe', 'inherit'],
      env: machines > 1 ? { ...process.env, GOOGLENET_HOST_ID: `bench-machine-${Math.floor(rank / (workers / machines))}` } : process.env,
    });
    let out = '';
    p.stdout.on('data', (d) => (out += d));
    p.on('exit', (code) => (code === 0 ? resolve(out) : reject(new Error(`bench worker ${rank} exited with ${code}`))));
  })));
  const rounds = coord.status().recentRounds.filter((r) => r.op === 'mean' && r.numel > 0).slice(-iters);
  await coord.close();
  const plane = /data plane (\w+)/.exec(logs.find((l) => l.includes('data plane')) ?? '')?.[1] ?? '?';
  type Timing = Record<'totalMs' | 'encodeMs' | 'sendMs' | 'waitMs' | 'decodeMs' | 'receiveMs' | 'sumMs' | 'returnMs' | 'flushMs', number>;
  const perRank = outs.map((o) => JSON.parse(o.trim().split('\n').pop()!) as { rank: number; inSlot: boolean; rounds: Timing[] });
  const slowest = Array.from({ length: iters }, (_, i) => Math.max(...perRank.map((p) => p.rounds[i]!.totalMs)));
  const r0 = perRank.find((p) => p.rank === 0)!.rounds;
  const pick = (k: keyof Timing) => r1(median(r0.map((r) => r[k] ?? 0)));
  const srv = (k: 'receiveMs' | 'copyMs' | 'reduceMs' | 'sendMs' | 'totalMs') => r1(median(rounds.map((r) => r[k])));
  const ranks = perRank.sort((x, y) => x.rank - y.rank).map((p) => {
    const m = (k: keyof Timing) => r1(median(p.rounds.map((r) => r[k] ?? 0)));
    return { rank: p.rank, totalMs: m('totalMs'), encodeMs: m('encodeMs'), waitMs: m('waitMs'), receiveMs: m('receiveMs'), sumMs: m('sumMs'), decodeMs: m('decodeMs') };
  });
  return {
    plane: plane === 'shm' && perRank.every((p) => p.inSlot) ? 'shm-slots' : plane, ranks, medianMs: r1(median(slowest)), minMs: r1(Math.min(...slowest)), maxMs: r1(Math.max(...slowest)),
    client: {
      encodeMs: pick('encodeMs'), sendMs: pick('sendMs'), waitMs: pick('waitMs'), decodeMs: pick('decodeMs'),
      ...(plane !== 'coordinator' ? { receiveMs: pick('receiveMs'), sumMs: pick('sumMs'), returnMs: pick('returnMs'), flushMs: pick('flushMs') } : {}),
    },
    server: { receiveMs: srv('receiveMs'), copyMs: srv('copyMs'), reduceMs: srv('reduceMs'), sendMs: srv('sendMs'), totalMs: srv('totalMs') },
  };
}

function gloo(workers: number): Promise<{ medianMs: number; MBps: number } | { skipped: string }> {
  const py = '/usr/bin/python3';
  const script = fileURLToPath(new URL('./gloo_reference.py', import.meta.url));
  if (a['no-gloo']) return Promise.resolve({ skipped: '--no-gloo' });
  if (!existsSync(py)) return Promise.resolve({ skipped: `${py} not found` });
  return new Promise((resolve) => {
    execFile(py, [script, '--world', String(workers), '--numel', String(numel), '--iters', String(iters), '--warmup', String(warmup)], { timeout: 300_000 }, (err, stdout, stderr) => {
      const line = stdout.split('\n').find((l) => l.startsWith('GLOO '));
      if (err || !line) resolve({ skipped: `gloo reference failed: ${(stderr || String(err)).trim().split('\n').pop()}` });
      else resolve(JSON.parse(line.slice(5)));
    });
  });
}

const mb = (numel * 4) / 1e6;
const rows: { workers: number; plane: string; oursMs: number; glooMs: number | null; ratioVsGloo: number | null }[] = [];
for (const workers of counts) {
  const o = await ours(workers);
  const g = await gloo(workers);
  const oursMBps = r1(mb / (o.medianMs / 1e3));
  console.log(`all-reduce of ${numel} floats (${mb.toFixed(1)} MB fp32), ${workers} workers${machines > 1 ? ` on ${machines} simulated machines` : ''}, compression ${compression}, data plane ${o.plane}${dataPlane !== o.plane ? ` (asked: ${dataPlane})` : ''}, bucket ${a['bucket-bytes']} B, median of ${iters}${blockMs ? `, each round after ${blockMs} ms (+10 ms per rank) of blocked event loop` : ''}`);
  console.log(`  ours        ${o.medianMs.toFixed(1).padStart(8)} ms  ${String(oursMBps).padStart(8)} MB/s   (min ${o.minMs}, max ${o.maxMs} ms)`);
  if ('medianMs' in g) console.log(`  gloo        ${g.medianMs.toFixed(1).padStart(8)} ms  ${String(g.MBps).padStart(8)} MB/s`);
  else console.log(`  gloo        skipped: ${g.skipped}`);
  const ratio = 'medianMs' in g ? Math.round((o.medianMs / g.medianMs) * 100) / 100 : null;
  if (ratio !== null) console.log(`  ours/gloo   ${ratio}`);
  if (o.plane === 'peer') {
    const c = o.client as typeof o.client & { receiveMs: number; sumMs: number; returnMs: number; flushMs: number };
    console.log(`  breakdown (rank 0, median ms): encode ${c.encodeMs}, coordinator go ${c.waitMs}, send (inside socket writes) ${c.sendMs}, ` +
      `receive (go -> last input of its shard) ${c.receiveMs}, sum ${c.sumMs}, return (-> last reduced chunk in) ${c.returnMs}, of which decode ${c.decodeMs}, ` +
      `flush (-> its own last write in the kernel) ${c.flushMs}`);
  } else if (o.plane === 'hier') {
    for (const r of o.ranks) {
      console.log(`  breakdown (rank ${r.rank}, median ms): total ${r.totalMs}: coordinator go ${r.waitMs}, copy in ${r.encodeMs}, wait for this machine's ranks and other machines ${r.receiveMs}, sum ${r.sumMs}, copy out ${r.decodeMs}`);
    }
  } else if (o.plane === 'shm-slots') {
    for (const r of o.ranks) {
      console.log(`  breakdown (rank ${r.rank}, median ms): total ${r.totalMs}: descriptor (+ fp16 rounding) ${r.encodeMs}, wait for other ranks ${r.receiveMs}, average its shard into every slot ${r.sumMs} (in place in the registered slots: nothing copied in or out)`);
    }
  } else if (o.plane === 'shm') {
    for (const r of o.ranks) {
      console.log(`  breakdown (rank ${r.rank}, median ms): total ${r.totalMs}: copy in ${r.encodeMs}, wait for other ranks ${r.receiveMs}, sum ${r.sumMs}, copy out ${r.decodeMs} (the coordinator only hears of each collective: no round trip)`);
    }
  } else {
    console.log(`  breakdown (rank 0, median ms): encode ${o.client.encodeMs}, send ${o.client.sendMs}, wait for first result ${o.client.waitMs}, receive+decode ${o.client.decodeMs}`);
    console.log(`  breakdown (coordinator, median ms): receive window ${o.server.receiveMs} (of which copy ${o.server.copyMs}), sum ${o.server.reduceMs}, return ${o.server.sendMs}, round ${o.server.totalMs}`);
  }
  rows.push({ workers, plane: o.plane, oursMs: o.medianMs, glooMs: 'medianMs' in g ? g.medianMs : null, ratioVsGloo: ratio });
  console.log(JSON.stringify({ bench: 'coordinator-allreduce', workers, numel, compression, dataPlane: o.plane, bucketBytes: Number(a['bucket-bytes']), blockMs, ours: { ...o, MBps: oursMBps }, gloo: g, ratio, ratioVsGloo: ratio }));
}
if (counts.length > 1) {
  console.log('\n| workers | plane | ours (ms) | gloo (ms) | ours/gloo |\n|---|---|---|---|---|');
  for (const r of rows) console.log(`| ${r.workers} | ${r.plane} | ${r.oursMs} | ${r.glooMs ?? 'skipped'} | ${r.ratioVsGloo ?? '-'} |`);
  console.log(JSON.stringify({ bench: 'coordinator-allreduce-summary', numel, compression, dataPlane, iters, rows }));
}
