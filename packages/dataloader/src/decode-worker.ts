/** Entry of a decode worker thread: builds the Source from its spec and fills ring buffers on request. */
import { parentPort, workerData } from 'node:worker_threads';
import { BatchDecoder, type BatchBuffers, type DecodeConfig } from './decode.js';
import { openSource, type SourceSpec } from './datasets/index.js';
import { DataError } from './errors.js';
import type { TaskMessage, WorkerReply } from './pool.js';

interface Init {
  spec: SourceSpec;
  cfg: DecodeConfig;
  ring: BatchBuffers[];
}

const port = parentPort!;
const { spec, cfg, ring } = workerData as Init;

function serialise(err: unknown): WorkerReply['error'] {
  if (err instanceof DataError) return { code: err.code, message: err.message, path: err.path };
  return { code: 'WORKER_FAILED', message: err instanceof Error ? (err.stack ?? err.message) : String(err) };
}

try {
  const decoder = new BatchDecoder(openSource(spec), cfg);
  port.on('message', (msg: TaskMessage) => {
    decoder.fill(msg.task, ring[msg.buffer]!).then(
      (result) => port.postMessage({ id: msg.id, result } satisfies WorkerReply),
      (err) => port.postMessage({ id: msg.id, error: serialise(err) } satisfies WorkerReply),
    );
  });
  port.postMessage({ id: -1 } satisfies WorkerReply);
} catch (err) {
  port.postMessage({ id: -1, error: serialise(err) } satisfies WorkerReply);
}
