import type { CoordinatorErrorCode } from './errors.js';
import type { HelloMsg, SignatureEntry } from './protocol.js';

export type JoinResult = { ok: true } | { ok: false; code: CoordinatorErrorCode; message: string };

/** First difference between two model signatures, or null when they agree. */
export function signatureDifference(a: readonly SignatureEntry[], b: readonly SignatureEntry[]): string | null {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) {
    const x = a[i]!, y = b[i]!;
    if (x.name !== y.name) return `tensor ${i} is '${x.name}' here but '${y.name}' there`;
    if (x.shape.length !== y.shape.length || x.shape.some((d, k) => d !== y.shape[k])) {
      return `tensor ${i} '${x.name}' has shape [${x.shape}] here but [${y.shape}] there`;
    }
  }
  if (a.length !== b.length) return `${a.length} tensors here but ${b.length} there`;
  return null;
}

/**
 * Who has joined one generation of the job. Pure bookkeeping: the server owns sockets and timers.
 * The first worker to join fixes the signature (and the run id unless the coordinator was given one).
 */
export class Rendezvous {
  private readonly joined = new Map<number, HelloMsg>();
  private reference: { rank: number; signature: SignatureEntry[] } | null = null;
  runId: string | undefined;

  constructor(readonly worldSize: number, runId?: string) {
    this.runId = runId;
  }

  join(h: HelloMsg): JoinResult {
    if (h.worldSize !== this.worldSize) {
      return { ok: false, code: 'WORLD_SIZE_MISMATCH', message: `worker rank ${h.rank} was started with world size ${h.worldSize} but the coordinator expects ${this.worldSize}; pass the same --workers everywhere` };
    }
    if (!Number.isInteger(h.rank) || h.rank < 0 || h.rank >= this.worldSize) {
      return { ok: false, code: 'INVALID_RANK', message: `rank ${h.rank} is outside 0..${this.worldSize - 1}` };
    }
    if (this.joined.has(h.rank)) {
      return { ok: false, code: 'DUPLICATE_RANK', message: `rank ${h.rank} has already joined run ${this.runId ?? '(unnamed)'}; give every worker a distinct rank` };
    }
    if (this.runId !== undefined && h.runId !== undefined && h.runId !== this.runId) {
      return { ok: false, code: 'RUN_ID_MISMATCH', message: `worker rank ${h.rank} belongs to run '${h.runId}' but this coordinator serves run '${this.runId}'` };
    }
    if (this.reference) {
      const diff = signatureDifference(h.signature, this.reference.signature);
      if (diff) {
        return { ok: false, code: 'SIGNATURE_MISMATCH', message: `model signature of rank ${h.rank} differs from rank ${this.reference.rank}: ${diff}; every worker must build the same model` };
      }
    } else {
      this.reference = { rank: h.rank, signature: h.signature };
    }
    this.runId ??= h.runId;
    this.joined.set(h.rank, h);
    return { ok: true };
  }

  leave(rank: number): void {
    this.joined.delete(rank);
    if (this.joined.size === 0) this.reference = null;
  }

  get size(): number { return this.joined.size; }
  get complete(): boolean { return this.joined.size === this.worldSize; }
  ranks(): number[] { return [...this.joined.keys()].sort((a, b) => a - b); }
  missing(): number[] {
    const out: number[] = [];
    for (let r = 0; r < this.worldSize; r++) if (!this.joined.has(r)) out.push(r);
    return out;
  }
}
