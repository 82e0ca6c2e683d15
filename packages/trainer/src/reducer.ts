import type { BucketRanges, CoordinatorClient, OverlapExchange } from '@googlenet/coordinator';

/**
 * How a worker combines its gradients with the other ranks'. The step does not know whether it runs
 * alone or in a job of hundreds: it hands its buffers to a reducer.
 */
export interface GradientReducer {
  readonly worldSize: number;
  /**
   * In place: `data` becomes the mean over ranks (identical bytes on every rank), `metrics` the sum.
   * `compressibleLength` (default: all of `data`): the leading values that --grad-compression may round (the
   * gradients); the rest (BatchNorm running statistics) is always averaged in fp32. `preReduced`: the leading
   * values were already averaged by this reducer's overlap exchange in this step (--overlap).
   */
  allReduce(data: Float32Array, metrics: Float64Array, compressibleLength?: number, preReduced?: number): Promise<void>;
  /**
   * --overlap: a thread that averages `buckets` of `data` (a SharedArrayBuffer) while the backward runs. Absent
   * where the reducer cannot; rejects with code INVALID_OPTIONS when this job's data plane is not shared memory.
   */
  openOverlap?(data: Float32Array, buckets: BucketRanges[]): Promise<OverlapExchange>;
  /**
   * A buffer of `n` floats that allReduce averages in place without copying it in or out (the shared-memory plane's
   * registered slot), or null/absent: the step then keeps its gradients in memory of its own.
   */
  sharedBuffer?(n: number): Float32Array | null;
  /**
   * The shared buffer's values on every rank without averaging them (the shared-memory plane's gather): once every
   * rank wrote `data` (its sharedBuffer()), every rank's copy in rank order, and `metrics` summed. The caller averages
   * what it reads, then releaseShared(); before writing its sharedBuffer() again it awaits sharedReleased(). Null or
   * absent: use allReduce.
   */
  gatherShared?(data: Float32Array, metrics: Float64Array): Promise<Float32Array[] | null>;
  releaseShared?(): void;
  sharedReleased?(): Promise<void>;
  /** In place: `metrics` becomes the sum over ranks (evaluation). */
  reduceMetrics(metrics: Float64Array): Promise<void>;
  /** In place: rank 0's `data` lands in every rank's buffer. */
  broadcast(data: Float32Array): Promise<void>;
  close(): Promise<void>;
}

/** A single process: nothing to combine, no sockets. */
export class LocalReducer implements GradientReducer {
  readonly worldSize = 1;
  async allReduce(): Promise<void> {}
  async reduceMetrics(): Promise<void> {}
  async broadcast(): Promise<void> {}
  async close(): Promise<void> {}
}

const EMPTY = new Float32Array(0);

/** Rounds through the WebSocket coordinator. */
export class CoordinatorReducer implements GradientReducer {
  constructor(
    private readonly client: CoordinatorClient,
    readonly worldSize: number,
  ) {}
  allReduce(data: Float32Array, metrics: Float64Array, compressibleLength?: number, preReduced?: number): Promise<void> {
    return this.client.allReduce(data, metrics, { compressibleLength, ...(preReduced ? { preReduced } : {}) });
  }
  openOverlap(data: Float32Array, buckets: BucketRanges[]): Promise<OverlapExchange> {
    return this.client.openOverlap(data, buckets);
  }
  sharedBuffer(n: number): Float32Array | null {
    return this.client.sharedBuffer(n);
  }
  gatherShared(data: Float32Array, metrics: Float64Array): Promise<Float32Array[] | null> {
    return this.client.gatherShared(data, metrics);
  }
  releaseShared(): void {
    this.client.releaseGathered();
  }
  sharedReleased(): Promise<void> {
    return this.client.gatheredReleased();
  }
  reduceMetrics(metrics: Float64Array): Promise<void> {
    return this.client.allReduce(EMPTY, metrics);
  }
  broadcast(data: Float32Array): Promise<void> {
    return this.client.broadcast(data);
  }
  close(): Promise<void> {
    return this.client.close();
  }
}
