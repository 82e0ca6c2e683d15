import fs from 'node:fs/promises';
import path from 'node:path';
import { TensorBoardWriter } from './tensorboard';
import type { WorkerContext } from './worker-context';

/** What the chart draws: the loss and accuracy of every step, and every evaluation. */
export interface RunHistory {
  steps: { step: number; loss: number; top1: number }[];
  evals: { step: number; top1: number; top5: number }[];
}

/**
 * Rank 0's record of a run: metrics.jsonl (one JSON line per step and evaluation), the TensorBoard events,
 * and the history the chart is drawn from. Other ranks record nothing but keep the same calls.
 */
export class RunRecord {
  readonly history: RunHistory = { steps: [], evals: [] };

  private constructor(
    private readonly metricsFile: fs.FileHandle | undefined,
    private readonly tensorboard: TensorBoardWriter | undefined,
  ) {}

  /** A resumed run keeps the records up to its checkpoint (and charts them) and drops those of steps it redoes. */
  static async open({ cfg, lead }: WorkerContext, resumedStep: number | undefined): Promise<RunRecord> {
    const metricsPath = path.join(cfg.out, 'metrics.jsonl');
    const kept = lead && resumedStep !== undefined ? await keepMetricsUpTo(metricsPath, resumedStep) : [];
    const metricsFile = lead ? await fs.open(metricsPath, resumedStep !== undefined ? 'a' : 'w') : undefined;
    const tensorboard = lead && cfg.tensorboard ? TensorBoardWriter.open(path.join(cfg.out, 'tb')) : undefined;
    const rec = new RunRecord(metricsFile, tensorboard);
    for (const r of kept) {
      if (r.type === 'step') rec.history.steps.push({ step: r.step as number, loss: r.loss as number, top1: r.top1 as number });
      if (r.type === 'eval') rec.history.evals.push({ step: r.step as number, top1: r.top1 as number, top5: r.top5 as number });
    }
    return rec;
  }

  async record(o: object): Promise<void> {
    if (this.metricsFile) await this.metricsFile.write(JSON.stringify(o) + '\n');
    this.tensorboard?.add(o as Record<string, unknown>);
  }

  async close(): Promise<void> {
    await this.metricsFile?.close();
  }
}

/** Rewrites metrics.jsonl without records after `step`; returns the records kept. */
async function keepMetricsUpTo(file: string, step: number): Promise<Record<string, unknown>[]> {
  let text: string;
  try {
    text = await fs.readFile(file, 'utf8');
  } catch {
    return [];
  }
  const kept = text.split('\n').filter(Boolean).map((l) => JSON.parse(l) as Record<string, unknown>).filter((r) => (r.step as number) <= step);
  await fs.writeFile(file, kept.map((r) => JSON.stringify(r) + '\n').join(''));
  return kept;
}
