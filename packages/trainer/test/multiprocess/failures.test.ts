import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { loggedSteps, maxRelativeError, range, readCounters, readTensors, startTrain, tempDir, train, waitFor } from '../helpers';

// 48 samples: 6 steps per epoch, so an 8-step run crosses an epoch boundary after its restart.
const common = ['--image-size=32', '--batch-size=4', '--lr=0.05', '--backend=wasm', '--seed=5', '--workers=2', '--round-timeout=10', '--synthetic-size=48,16'];
const stepsLogged = (out: string) => loggedSteps(out).length;

/** The uninterrupted 8-step run that a restarted one must equal; trained once, on first use. */
let reference: Promise<string> | undefined;
const uninterrupted = () =>
  (reference ??= (async () => {
    const out = path.join(tempDir('straight'), 'run');
    await train([...common, '--steps=8', '--checkpoint-every=2', `--out=${out}`]);
    return out;
  })());

/** A restarted run counted every step once, and ended with the uninterrupted run's weights and BN counters. */
async function expectSameAsUninterrupted(out: string): Promise<void> {
  expect(loggedSteps(out)).toEqual(range(1, 8));
  const summary = JSON.parse(fs.readFileSync(path.join(out, 'summary.json'), 'utf8'));
  // The last attempt ran the steps after the checkpoint it restarted from, and no others.
  expect(summary.startStep).toBeGreaterThan(0);
  expect(summary.stepsRun).toBe(8 - summary.startStep);
  const straight = await uninterrupted();
  const { err, worst } = maxRelativeError(readTensors(path.join(out, 'model.safetensors')), readTensors(path.join(straight, 'model.safetensors')));
  expect(err, `worst tensor ${worst}`).toBeLessThanOrEqual(1e-6);
  expect(readCounters(path.join(out, 'model.safetensors'))).toEqual(readCounters(path.join(straight, 'model.safetensors')));
}

function pidOf(out: string, name: string): number {
  const p = JSON.parse(fs.readFileSync(path.join(out, 'processes.json'), 'utf8')) as { processes: { name: string; pid: number }[] };
  return p.processes.find((x) => x.name === name)!.pid;
}

describe('failures stop the job fast and restarts lose nothing', () => {
  it('restarts every worker from the last checkpoint when one is killed, and finishes all steps', async () => {
    const out = path.join(tempDir('kill'), 'run');
    const run = startTrain([...common, '--steps=8', '--checkpoint-every=2', '--max-restarts=1', `--out=${out}`]);
    await waitFor(() => stepsLogged(out) >= 3, 240_000, 'step 3');
    process.kill(pidOf(out, 'rank 1'), 'SIGKILL');
    const r = await run.done;
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toMatch(/rank 1 was killed by SIGKILL; restart 1\/1 from .*run \(newest: step-0000000[24]\.ckpt\)/);
    await expectSameAsUninterrupted(out);
  }, 600_000);

  it('with --max-restarts=0 exits non-zero within the round timeout, naming the rank', async () => {
    const out = path.join(tempDir('kill0'), 'run');
    const run = startTrain([...common, '--steps=50', `--out=${out}`]);
    await waitFor(() => stepsLogged(out) >= 2, 240_000, 'step 2');
    const killedAt = Date.now();
    process.kill(pidOf(out, 'rank 1'), 'SIGKILL');
    const r = await run.done;
    expect(r.code).not.toBe(0);
    expect(Date.now() - killedAt).toBeLessThan(10_000 + 5_000);
    expect(r.stderr).toMatch(/error: training failed: rank 1 was killed by SIGKILL/);
    // The survivor learnt why from the coordinator instead of hanging.
    expect(r.stderr).toMatch(/\[rank 0\] error \[ROUND_ABORTED\]: .*failed rank 1/);
  }, 600_000);

  it('when the coordinator dies, workers stop promptly with a clear error and the launcher restarts them', async () => {
    const out = path.join(tempDir('coord'), 'run');
    const run = startTrain([...common, '--steps=8', '--checkpoint-every=2', '--max-restarts=1', `--out=${out}`]);
    await waitFor(() => stepsLogged(out) >= 3, 240_000, 'step 3');
    process.kill(pidOf(out, 'coordinator'), 'SIGKILL');
    const r = await run.done;
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toMatch(/coordinator was killed by SIGKILL; restart 1\/1/);
    expect(r.stderr).toMatch(/\[rank [01]\] error \[CONNECTION_LOST\]: connection to the coordinator/);
    await expectSameAsUninterrupted(out);
  }, 600_000);

  it('SIGTERM to the launcher (what Nx forwards) stops every child and leaves no orphans', async () => {
    const out = path.join(tempDir('sigterm'), 'run');
    const run = startTrain([...common, '--steps=200', `--out=${out}`]);
    await waitFor(() => stepsLogged(out) >= 2, 240_000, 'step 2');
    const pids = (JSON.parse(fs.readFileSync(path.join(out, 'processes.json'), 'utf8')) as { processes: { pid: number }[] }).processes.map((p) => p.pid);
    const sentAt = Date.now();
    run.child.kill('SIGTERM');
    const r = await run.done;
    expect(r.code).toBe(143);
    expect(Date.now() - sentAt).toBeLessThan(10_000);
    const alive = pids.filter((pid) => {
      try {
        process.kill(pid, 0);
        return true;
      } catch {
        return false;
      }
    });
    expect(alive, 'child processes still running').toEqual([]);
  }, 600_000);
});
