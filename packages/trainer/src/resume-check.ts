import type { LoaderState } from '@googlenet/dataloader';
import type { CheckpointMeta } from './checkpoint';
import { TrainerError } from './errors';

/**
 * The settings that decide what a resumed run computes, by flag name, with where each is read from a
 * config. A resume that changes one of them is not a continuation of the same run, so it is refused unless
 * `--resume-override` names the setting. Everything else (backend, --grad-compression, --bucket-mb, eval
 * and log settings, --checkpoint-every, --keep, --data-dir, addresses, timeouts, threads) may change freely:
 * it changes where or how fast the run goes, not what it computes (fp16 compression and the backend only
 * move rounding). `steps`/`epochs` may change too (extending a run is what --resume is for), except under
 * the cosine schedule, whose curve is stretched by the run's length.
 */
export const RESUME_KEYS: Record<string, { key: string; optional?: boolean; samplerLayout?: boolean; cosineOnly?: boolean }> = {
  dataset: { key: 'dataset', samplerLayout: true },
  'synthetic-size': { key: 'syntheticSize', samplerLayout: true },
  'num-classes': { key: 'numClasses', optional: true },
  'image-size': { key: 'imageSize' },
  'batch-size': { key: 'batchSize', samplerLayout: true },
  'world-size': { key: 'worldSize', samplerLayout: true },
  accumulate: { key: 'accumulate', samplerLayout: true },
  seed: { key: 'seed', samplerLayout: true },
  augment: { key: 'augment' },
  lr: { key: 'lr' },
  'lr-schedule': { key: 'lrSchedule' },
  warmup: { key: 'warmup' },
  'step-epochs': { key: 'stepEpochs' },
  gamma: { key: 'gamma' },
  momentum: { key: 'momentum' },
  'weight-decay': { key: 'weightDecay' },
  'aux-weight': { key: 'auxWeight' },
  'label-smoothing': { key: 'labelSmoothing' },
  'clip-grad-norm': { key: 'clipGradNorm' },
  nesterov: { key: 'nesterov' },
  'ema-decay': { key: 'emaDecay' },
  precision: { key: 'precision' },
  steps: { key: 'steps', optional: true, cosineOnly: true },
  epochs: { key: 'epochs', optional: true, cosineOnly: true },
};

/** What a resume check decided. */
export interface ResumeCheck {
  /** `flag old -> new` for each changed setting that --resume-override allowed (to log). */
  overridden: string[];
  /** Notes to log about allowed changes that need no override. */
  notes: string[];
  /** The sampler state to resume the train loader from: the checkpoint's, or a fresh one at the start of the
   *  checkpoint's epoch when an allowed change altered the sample layout (its position would mean other samples). */
  sampler: LoaderState;
}

const show = (v: unknown): string => {
  if (v === undefined || v === null) return '(unset)';
  if (typeof v === 'object') return Object.values(v as object).join(',');
  return String(v);
};

/**
 * Compares the config and seeds that wrote a checkpoint with the new run's. Throws RESUME_CONFIG_CHANGED
 * naming every changed setting (old -> new) that `overrides` (flag names, or 'all') does not allow.
 * Settings a checkpoint does not record (written before the flag existed) are not compared.
 */
export function checkResumeConfig(
  meta: CheckpointMeta,
  cfg: Readonly<Record<string, unknown>>,
  worldSize: number,
  overrides: readonly string[],
  file: string,
): ResumeCheck {
  const old: Record<string, unknown> = { ...meta.config, seed: meta.seeds.seed, worldSize: meta.sampler.worldSize };
  const now: Record<string, unknown> = { ...cfg, worldSize };
  const cosine = old.lrSchedule === 'cosine' || now.lrSchedule === 'cosine';
  const changed: { flag: string; line: string; samplerLayout: boolean }[] = [];
  for (const [flag, k] of Object.entries(RESUME_KEYS)) {
    if (k.cosineOnly && !cosine) continue;
    if (!(k.key in old) && !k.optional) continue;
    if (JSON.stringify(old[k.key]) === JSON.stringify(now[k.key])) continue;
    changed.push({ flag, line: `${flag} ${show(old[k.key])} -> ${show(now[k.key])}`, samplerLayout: Boolean(k.samplerLayout) });
  }
  const notes: string[] = [];
  const slots = (o: Record<string, unknown>) => Number(o.worldSize) * Number(o.accumulate);
  const split = changed.filter((c) => c.flag === 'world-size' || c.flag === 'accumulate');
  if (split.length && slots(old) === slots(now)) {
    // The loader serves worldSize x accumulate slots; the same product means the same samples per step and
    // the same mean gradient: the same run on another split of processes.
    notes.push(`resume: ${old.worldSize} worker(s) x accumulate ${old.accumulate} -> ${now.worldSize} x ${now.accumulate}: the same samples per step`);
    for (const c of split) changed.splice(changed.indexOf(c), 1);
  }
  const all = overrides.includes('all');
  const refused = changed.filter((c) => !all && !overrides.includes(c.flag));
  if (refused.length) {
    throw new TrainerError(
      'RESUME_CONFIG_CHANGED',
      `${file} was written by a run with other settings: ${refused.map((c) => c.line).join(', ')}. ` +
        `Resume with the original flags, or allow the change with --resume-override=${refused.map((c) => c.flag).join(',')} (or --resume-override=all)`,
    );
  }
  const layoutChanged = changed.some((c) => c.samplerLayout);
  const sampler: LoaderState = layoutChanged
    ? { version: 1, seed: Number(now.seed), epoch: meta.sampler.epoch, position: 0, worldSize, accumulate: Number(now.accumulate), dataset: String(now.dataset) }
    : meta.sampler;
  if (layoutChanged) notes.push(`resume: the sample layout changed, so the data order restarts at the beginning of epoch ${meta.sampler.epoch + 1}`);
  return { overridden: changed.map((c) => c.line), notes, sampler };
}

/** Parses `--resume-override=a,b` (flag names, camelCase accepted) or `all`; throws BAD_FLAG on an unknown name. */
export function parseResumeOverride(value: string | undefined): string[] {
  if (value === undefined || value === '') return [];
  const names = value.split(',').map((s) => s.trim().replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)).filter(Boolean);
  const unknown = names.filter((n) => n !== 'all' && !(n in RESUME_KEYS));
  if (unknown.length) {
    throw new TrainerError('BAD_FLAG', `--resume-override=${value} names unknown setting(s) ${unknown.join(', ')}: expected all or a comma-separated list of ${Object.keys(RESUME_KEYS).join(', ')}`);
  }
  return names;
}
