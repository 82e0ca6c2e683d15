/** What the main thread and the overlap thread (overlap.ts, overlap-thread.ts) agree on. */

/** ctrl[CTRL_CANCEL] = tag: the step `tag` is cancelled (the main thread failed inside the backward). */
export const CTRL_CANCEL = 0;
/** ctrl[CTRL_READY + b] = tag: every value of bucket b of step `tag` is written. */
export const CTRL_READY = 1;

/** A bucket: flat ranges [lo, hi) of the vector, exchanged in this order (one collective each). */
export type BucketRanges = [number, number][];

/** The thread's workerData. */
export interface OverlapThreadData {
  /** The segment, as the owning plane's threadPath(). */
  path: string;
  rank: number;
  ranks: number;
  chunkElems: number;
  timeoutMs: number;
  /** The vector (a SharedArrayBuffer): every bucket is averaged over ranks in place. */
  data: SharedArrayBuffer;
  /** Int32 control words (CTRL_*), 1 + buckets. */
  ctrl: SharedArrayBuffer;
  buckets: BucketRanges[];
}
