import { WebSocket } from 'ws';
import { CoordinatorClient, startCoordinator, type ClientOptions, type Coordinator, type CoordinatorOptions } from '../src/index.js';

export const SIG = [{ name: 'conv1.weight', shape: [64, 3, 7, 7] }, { name: 'fc.bias', shape: [10] }];

export interface Job { coord: Coordinator; clients: CoordinatorClient[]; logs: string[] }

/** A coordinator plus `n` in-process clients, all joined. */
export async function startJob(n: number, copts: Partial<CoordinatorOptions> = {}, clientOpts: Partial<ClientOptions> = {}): Promise<Job> {
  const logs: string[] = [];
  const coord = await startCoordinator({ worldSize: n, log: (l) => logs.push(l), ...copts });
  const clients = await Promise.all(Array.from({ length: n }, (_, rank) =>
    CoordinatorClient.connect({ url: coord.url, rank, worldSize: n, signature: SIG, ...clientOpts })));
  return { coord, clients, logs };
}

export async function stopJob(job: Job): Promise<void> {
  await Promise.all(job.clients.map((c) => c.close()));
  await job.coord.close();
}

/** Reproducible floats spanning many binades. */
export function randomFloats(n: number, seed: number): Float32Array {
  let s = seed >>> 0 || 1;
  const next = () => ((s ^= s << 13), (s ^= s >>> 17), (s ^= s << 5), (s >>> 0) / 2 ** 32);
  return Float32Array.from({ length: n }, () => (next() - 0.5) * 10 ** (next() * 6 - 3));
}

/** A raw WebSocket (no client library) and the close code the coordinator answers with. */
export function rawSocket(url: string, headers: Record<string, string> = {}): Promise<{ ws: WebSocket; closed: Promise<{ code: number; reason: string }> }> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, { headers, perMessageDeflate: false });
    const closed = new Promise<{ code: number; reason: string }>((r) => ws.on('close', (code, reason) => r({ code, reason: reason.toString() })));
    ws.on('open', () => resolve({ ws, closed }));
    ws.on('error', reject);
  });
}

export const errorOf = async (p: Promise<unknown>): Promise<{ code?: string; message: string; failedRank?: number }> => {
  try {
    await p;
  } catch (e) {
    return e as { code: string; message: string; failedRank?: number };
  }
  throw new Error('expected a rejection');
};

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

/** A float32 value as an exact integer multiple of 2^-149 (the smallest subnormal). */
function scaledInt(x: number): bigint {
  f32[0] = x;
  const u = u32[0]!, exp = (u >>> 23) & 0xff, mant = u & 0x7fffff;
  const m = BigInt(exp === 0 ? mant : mant | 0x800000) << BigInt(exp === 0 ? 0 : exp - 1);
  return u >>> 31 ? -m : m;
}

/**
 * The exact mean of float32 values, correctly rounded to float32 (nearest, ties to even), in integer arithmetic:
 * an oracle that shares nothing with the float64 reduction it checks.
 */
export function exactMeanF32(values: readonly number[]): number {
  let s = 0n;
  for (const v of values) s += scaledInt(v);
  if (s === 0n) return 0;
  const a = s < 0n ? -s : s;
  const b = BigInt(values.length) << 149n; // mean = a / b (times the sign)
  const ratio = (e: number): [bigint, bigint, bigint] => { // floor(a / (b 2^e)), remainder, divisor
    const [num, den] = e >= 0 ? [a, b << BigInt(e)] : [a << BigInt(-e), b];
    return [num / den, num % den, den];
  };
  let e = Math.max(-149, a.toString(2).length - b.toString(2).length - 24);
  let [q, rem, den] = ratio(e);
  while (q >= 1n << 24n) [q, rem, den] = ratio(++e);
  while (q < 1n << 23n && e > -149) [q, rem, den] = ratio(--e);
  if (2n * rem > den || (2n * rem === den && (q & 1n) === 1n)) q += 1n;
  return (s < 0n ? -1 : 1) * Number(q) * 2 ** e; // q <= 2^24: exact in a double
}
