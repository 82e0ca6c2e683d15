import fs from 'node:fs/promises';
import path from 'node:path';
import type { TrainConfig } from './config';
import type { WorkerIdentity } from './identity';
import { Progress } from './progress';

/** Where a worker's words go. Rank 0 talks to the user; every rank keeps a log. */
export interface WorkerIo {
  /** User-facing output (rank 0: the terminal). */
  write(s: string): void;
  /** Whether `write` reaches a terminal that can redraw a progress bar. */
  tty: boolean;
}

/** What every phase of one rank's run shares: its config, who it is, and its log. */
export interface WorkerContext {
  cfg: TrainConfig;
  id: WorkerIdentity;
  /** Rank 0: talks to the user and writes the run folder's files. */
  lead: boolean;
  progress: Progress;
  /** train.log (rank 0) or worker-<rank>.log. */
  logFile: string;
  /** A log line (rank 0 also shows it above the progress bar). */
  say(line: string): void;
  /** Appends the lines said since the last flush to the log file. */
  flushLog(): Promise<void>;
  /** Lines said and not yet flushed. */
  unflushed(): number;
}

export async function openWorkerContext(cfg: TrainConfig, id: WorkerIdentity, io: WorkerIo): Promise<WorkerContext> {
  const lead = id.rank === 0;
  await fs.mkdir(cfg.out, { recursive: true });
  const logFile = path.join(cfg.out, lead ? 'train.log' : `worker-${id.rank}.log`);
  const logLines: string[] = [];
  const progress = new Progress({ tty: lead && io.tty, logEvery: cfg.logEvery, write: (s) => (lead ? io.write(s) : undefined) });
  return {
    cfg, id, lead, progress, logFile,
    say: (line) => {
      logLines.push(line);
      if (lead) progress.line(line);
    },
    flushLog: () => fs.appendFile(logFile, logLines.splice(0).map((l) => l + '\n').join('')),
    unflushed: () => logLines.length,
  };
}
