/**
 * An in-order read-ahead queue over a ring of depth+1 buffers. Item `seq` is produced into ring slot
 * seq % (depth+1); it can start only once the item that last used that slot has been released, i.e. once the
 * caller asked for the item after it. So the caller holds one buffer while `depth` are being filled.
 */
import { DataError } from './errors.js';

/** Starts producing item `seq` into ring slot `ring`; returns null when there is no item `seq` (the end). */
export type Producer<T> = (seq: number, ring: number) => Promise<T> | null;

export class PrefetchQueue<T> {
  readonly ringSize: number;
  private readonly produce: Producer<T>;
  private readonly inflight = new Map<number, Promise<T>>();
  private scheduled = 0;
  private requested = 0;
  private end = Infinity;
  private closed = false;

  constructor(depth: number, produce: Producer<T>) {
    this.ringSize = depth + 1;
    this.produce = produce;
    this.fill(0);
  }

  private fill(requested: number): void {
    // Slots of items < requested-1 are free; the caller still holds item requested-1 until now.
    while (!this.closed && this.scheduled < this.end && this.scheduled < requested + this.ringSize) {
      const seq = this.scheduled;
      const p = this.produce(seq, seq % this.ringSize);
      if (p === null) {
        this.end = seq;
        break;
      }
      p.catch(() => undefined); // awaited later by next(); do not report it as unhandled meanwhile
      this.inflight.set(seq, p);
      this.scheduled++;
    }
  }

  /** The next item in order, or null after the last one. The previous item's buffer is reused from now on. */
  async next(): Promise<T | null> {
    if (this.closed) throw new DataError('LOADER_CLOSED', 'the data loader is closed; create a new one to read more batches');
    const seq = this.requested++;
    this.fill(seq);
    if (seq >= this.end) return null;
    const p = this.inflight.get(seq)!;
    this.inflight.delete(seq);
    return p;
  }

  close(): void {
    this.closed = true;
    this.inflight.clear();
  }
}
