import path from 'node:path';
import type { TrainConfig } from './config';

const count = (n: number) => n.toLocaleString('en-US');

/**
 * The few settings a user checks before a run starts, as a short aligned block: what data, how long, how
 * the optimizer steps, where the results go. The whole resolved config (every flag) is in config.json, which
 * the first line names; a JSON wall of ~50 keys at the top of every run was read by nobody.
 */
export function configSummary(cfg: TrainConfig, worldSize: number): string {
  const rel = (p: string) => (path.relative(process.cwd(), p).startsWith('..') ? p : path.relative(process.cwd(), p) || '.');
  const data = cfg.dataset === 'synthetic'
    ? `synthetic (${count(cfg.syntheticSize.train)} train / ${count(cfg.syntheticSize.test)} test)`
    : `${cfg.dataset}${cfg.dataDir ? ` from ${rel(cfg.dataDir)}` : ''}`;
  const classes = cfg.numClasses ? `, ${cfg.numClasses} classes` : '';
  const length = cfg.steps !== undefined ? `${count(cfg.steps)} steps` : `${cfg.epochs ?? 2} epochs`;
  const micro = cfg.accumulate > 1 ? ` x ${cfg.accumulate} micro-batches` : '';
  const perStep = cfg.batchSize * worldSize * cfg.accumulate;
  const schedule = cfg.lrSchedule + (cfg.warmup ? `, ${cfg.warmup} warm-up steps` : '');
  const evals = !cfg.eval ? 'no evaluation' : cfg.evalEvery ? `evaluate every ${cfg.evalEvery} steps` : 'evaluate at epoch ends';
  const ckpt = cfg.checkpointEvery ? `checkpoint every ${cfg.checkpointEvery} steps` : 'checkpoint at epoch ends';
  const rows: [string, string][] = [
    ['data', `${data}${classes} at ${cfg.imageSize} px, augment ${cfg.augment}, seed ${cfg.seed}`],
    ['length', `${length}, batch ${cfg.batchSize} x ${worldSize} worker${worldSize === 1 ? '' : 's'}${micro} = ${count(perStep)} images per step`],
    ['optimizer', `SGD${cfg.nesterov ? ' (Nesterov)' : ''} lr ${cfg.lr} (${schedule}), momentum ${cfg.momentum}, weight decay ${cfg.weightDecay}, aux heads x ${cfg.auxWeight}` +
      (cfg.labelSmoothing ? `, label smoothing ${cfg.labelSmoothing}` : '') +
      (cfg.clipGradNorm ? `, clip grad norm ${cfg.clipGradNorm}` : '') +
      (cfg.emaDecay ? `, EMA ${cfg.emaDecay}` : '') +
      (cfg.gradCompression !== 'none' ? `, ${cfg.gradCompression} gradients` : '')],
    ['output', `${rel(cfg.out)}: ${evals}, ${ckpt} (keep ${cfg.keep})${cfg.resume ? `, resuming ${rel(cfg.resume)}` : ''}`],
  ];
  const width = Math.max(...rows.map(([k]) => k.length)) + 2;
  return [`config (every setting: ${rel(path.join(cfg.out, 'config.json'))})`, ...rows.map(([k, v]) => `  ${k.padEnd(width)}${v}`)].join('\n');
}
