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
