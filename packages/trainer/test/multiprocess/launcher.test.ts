import { EventEmitter } from 'node:events';
import fs from 'node:fs';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { launch, type LaunchIo } from '../../src/launcher';
import { resolveTrainConfig, type TrainConfig } from '../../src/config';
import { findResumeCheckpoint } from '../../src/checkpoint';
import { tempDir, waitFor, writeMetaOnlyCheckpoint } from '../helpers';

// The launcher supervises stand-in workers (fixtures/fake-worker.mjs) here: what is tested is its restart
// and signal logic, which needs processes but not training.
const fakeWorker = path.join(path.dirname(new URL(import.meta.url).pathname), '..', 'fixtures', 'fake-worker.mjs');
const saved = { ...process.env };
afterEach(() => {
  for (const k of ['GOOGLENET_WORKER_ENTRY', 'FAKE_WORKER', 'FAKE_WORKER_LOG']) {
    if (saved[k] === undefined) delete process.env[k];
    else process.env[k] = saved[k];
  }
});

function setup(mode: 'fail' | 'fatal' | 'hang', flags: string[]) {
  const dir = tempDir('launcher');
  const log = path.join(dir, 'starts.jsonl');
  Object.assign(process.env, { GOOGLENET_WORKER_ENTRY: fakeWorker, FAKE_WORKER: mode, FAKE_WORKER_LOG: log });
  const cfg = resolveTrainConfig(['--workers=1', '--backend=wasm', `--out=${path.join(dir, 'run')}`, ...flags]) as TrainConfig;
  const starts = () => (fs.existsSync(log) ? fs.readFileSync(log, 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { attempt: number; pid: number; resume: string | null }) : []);
  const signals = new EventEmitter();
  const lines: string[] = [];
  const io: LaunchIo = { write: () => {}, error: (s) => lines.push(s), tty: false };
  return { cfg, starts, signals, lines, io };
}

const alive = (pid: number) => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

describe('launcher restarts and signals', () => {
  it('a SIGTERM that arrives between restart attempts starts no next attempt', async () => {
    const t = setup('fail', ['--max-restarts=3']);
    // io.error's restart line is written after one attempt is torn down and before the next starts.
    const io = { ...t.io, error: (s: string) => {
      t.lines.push(s);
      if (/restart 1\/3/.test(s)) t.signals.emit('SIGTERM', 'SIGTERM');
    } };
    const code = await launch(t.cfg, io, { signals: t.signals });
    expect(code).toBe(143);
    expect(t.starts().map((s) => s.attempt)).toEqual([0]);
  }, 60_000);

  it('a second signal kills children that ignore SIGTERM at once instead of waiting out the grace period', async () => {
    const t = setup('hang', []);
    // Without the escalation the launcher would wait the full 10 minutes of grace before SIGKILL.
    const done = launch(t.cfg, t.io, { signals: t.signals, stopGraceMs: 600_000 });
    await waitFor(() => t.starts().length === 1, 30_000, 'the worker to start');
    const pid = t.starts()[0]!.pid;
    t.signals.emit('SIGTERM', 'SIGTERM');
    await new Promise((r) => setTimeout(r, 300));
    expect(alive(pid), 'the worker ignores SIGTERM').toBe(true);
    t.signals.emit('SIGINT', 'SIGINT');
    expect(await done).toBe(143);
    expect(alive(pid)).toBe(false);
    expect(t.lines.join('\n')).toMatch(/SIGINT again, killing 1 process/);
  }, 60_000);

  it('a worker failure that a restart cannot fix (EXIT_NO_RESTART, e.g. a changed config) is not restarted', async () => {
    const t = setup('fatal', ['--max-restarts=3']);
    expect(await launch(t.cfg, t.io, { signals: t.signals })).toBe(1);
    expect(t.starts().map((s) => s.attempt)).toEqual([0]);
    expect(t.lines.join('\n')).toMatch(/error: training failed: rank 0 exited with code 3; a restart cannot fix this, so none was tried/);
  }, 60_000);

  it('restarts resume from the run folder, so a corrupt newest checkpoint falls back to the one before', async () => {
    const t = setup('fail', ['--max-restarts=1']);
    writeMetaOnlyCheckpoint(t.cfg.out, 2);
    fs.writeFileSync(path.join(t.cfg.out, 'checkpoints', 'step-00000004.ckpt'), 'cut short by a kill');
    expect(await launch(t.cfg, t.io, { signals: t.signals })).toBe(1);
    const [first, second] = t.starts();
    expect(first!.resume).toBeNull();
    expect(second!.resume).toBe(t.cfg.out);
    expect(t.lines.join('\n')).toMatch(/restart 1\/1 from .*run \(newest: step-00000004\.ckpt\)/);
    // What the restarted workers do with it:
    const warnings: string[] = [];
    const { file } = await findResumeCheckpoint(second!.resume!, (w) => warnings.push(w));
    expect(path.basename(file)).toBe('step-00000002.ckpt');
    expect(warnings.join()).toMatch(/skipping .*step-00000004\.ckpt/);
  }, 60_000);
});
