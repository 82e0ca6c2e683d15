import { CoordinatorClient } from '@googlenet/coordinator';

/**
 * How a worker combines its gradients with the other ranks'. The step does not know whether it runs
 * alone or in a job of hundreds: it hands its buffers to a reducer.
 */
export interface GradientReducer {
  readonly worldSize: number;
  /**
   * In place: `data` becomes the mean over ranks (identical bytes on every rank), `metrics` the sum.
   * `compressibleLength` (default: all of `data`): the leading values that --grad-compression may round (the
   * gradients); the rest (BatchNorm running statistics) is always averaged in fp32.
   */
  allReduce(data: Float32Array, metrics: Float64Array, compressibleLength?: number): Promise<void>;
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
  allReduce(data: Float32Array, metrics: Float64Array, compressibleLength?: number): Promise<void> {
    return this.client.allReduce(data, metrics, { compressibleLength });
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
