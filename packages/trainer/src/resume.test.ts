import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { tempDir, writeMetaOnlyCheckpoint } from '../test/helpers';
import { resolveTrainConfig, type TrainConfig } from './config';
import type { GradientReducer } from './reducer';
import { agreeOnResume, localResumePoint } from './resume';

/** `n` in-process ranks whose collectives meet, as the coordinator's do: broadcast copies rank 0's data, metrics add up. */
function ranks(n: number): GradientReducer[] {
  let waiting: { rank: number; data: Float32Array | Float64Array; done: () => void }[] = [];
  const meet = (rank: number, data: Float32Array | Float64Array, op: 'bcast' | 'sum') =>
    new Promise<void>((resolve) => {
      waiting.push({ rank, data, done: resolve });
      if (waiting.length < n) return;
      const all = waiting;
      waiting = [];
      if (op === 'bcast') {
        const root = all.find((w) => w.rank === 0)!.data;
        for (const w of all) w.data.set(root);
      } else {
        const sum = new Float64Array(data.length);
        for (const w of all) w.data.forEach((v, i) => (sum[i]! += v));
        for (const w of all) w.data.set(sum);
      }
      for (const w of all) w.done();
    });
  return Array.from({ length: n }, (_, rank) => ({
    worldSize: n,
    allReduce: async () => {},
    reduceMetrics: (m: Float64Array) => meet(rank, m, 'sum'),
    broadcast: (d: Float32Array) => meet(rank, d, 'bcast'),
    close: async () => {},
  }));
}

/** Two nodes with a run folder each (no shared storage): rank r resumes from its own folder. */
async function agree(dirs: string[], resume = true) {
  const reducers = ranks(dirs.length);
  const logs: string[][] = dirs.map(() => []);
  return Promise.allSettled(dirs.map(async (dir, rank) => {
    const cfg = resolveTrainConfig([`--out=${dir}`, ...(resume ? [`--resume=${dir}`] : [])], { env: {} }) as TrainConfig;
    const local = await localResumePoint(cfg, rank, (l) => logs[rank]!.push(l));
    return { point: await agreeOnResume(reducers[rank]!, rank, local, cfg, (l) => logs[rank]!.push(l)), logs: logs[rank]! };
  }));
}

function nodes() {
  const root = tempDir('agree');
  const [n0, n1] = [path.join(root, 'node0'), path.join(root, 'node1')];
  for (const s of [2, 4]) writeMetaOnlyCheckpoint(n0, s);
  writeMetaOnlyCheckpoint(n1, 2);
  return { n0, n1 };
}

describe('every rank resumes from rank 0\'s checkpoint', () => {
  it('a rank whose newest checkpoint is another takes rank 0\'s from its own folder', async () => {
    const { n0, n1 } = nodes();
    fs.copyFileSync(path.join(n0, 'checkpoints/step-00000004.ckpt'), path.join(n1, 'checkpoints/step-00000004.ckpt'));
    writeMetaOnlyCheckpoint(n1, 6, 'a newer one rank 0 never wrote');
    const [r0, r1] = await agree([n0, n1]);
    expect(r0.status === 'fulfilled' && r0.value.point?.ckpt.meta.step).toBe(4);
    if (r1.status !== 'fulfilled') throw r1.reason;
    expect(r1.value.point?.file).toBe(path.join(n1, 'checkpoints/step-00000004.ckpt'));
    expect(r1.value.logs.join('\n')).toMatch(/\[rank 1\] resuming from rank 0's checkpoint .*node1\/checkpoints\/step-00000004\.ckpt \(step 4\) instead of its own newest, .*step-00000006\.ckpt/);
  });

  it('when a rank cannot load it, every rank aborts with RESUME_DISAGREE naming that rank, the step and the file', async () => {
    const { n0, n1 } = nodes();
    const [r0, r1] = await agree([n0, n1]);
    expect(r0.status).toBe('rejected');
    expect(r1.status).toBe('rejected');
    const e0 = (r0 as PromiseRejectedResult).reason as Error & { code: string };
    const e1 = (r1 as PromiseRejectedResult).reason as Error & { code: string };
    expect([e0.code, e1.code]).toEqual(['RESUME_DISAGREE', 'RESUME_DISAGREE']);
    expect(e0.message).toMatch(/^rank\(s\) 1 cannot load the checkpoint rank 0 resumes from: step 4, step-00000004\.ckpt \(sha256 [0-9a-f]{12}\.\.\.\)/);
    expect(e1.message).toMatch(/^rank 1 cannot load the checkpoint rank 0 resumes from: step 4, step-00000004\.ckpt .*node1\/checkpoints\/step-00000004\.ckpt does not exist; put the run folder on storage that every machine shares/);
  });

  it('a file of the same step with other bytes is not rank 0\'s checkpoint', async () => {
    const { n0, n1 } = nodes();
    writeMetaOnlyCheckpoint(n1, 4, 'written by another run');
    const [, r1] = await agree([n0, n1]);
    expect((r1 as PromiseRejectedResult).reason.message).toMatch(/node1\/checkpoints\/step-00000004\.ckpt differs from it \(sha256 [0-9a-f]{12}/);
  });

  it('a rank with a checkpoint starts from scratch when rank 0 does', async () => {
    const { n1 } = nodes();
    const fresh = path.join(path.dirname(n1), 'fresh');
    const reducers = ranks(2);
    const cfg0 = resolveTrainConfig([`--out=${fresh}`], { env: {} }) as TrainConfig;
    const cfg1 = resolveTrainConfig([`--out=${n1}`, `--resume=${n1}`], { env: {} }) as TrainConfig;
    const logs: string[] = [];
    const local1 = await localResumePoint(cfg1, 1, () => {});
    const [p0, p1] = await Promise.all([agreeOnResume(reducers[0]!, 0, undefined, cfg0, () => {}), agreeOnResume(reducers[1]!, 1, local1, cfg1, (l) => logs.push(l))]);
    expect([p0, p1]).toEqual([undefined, undefined]);
    expect(logs.join()).toMatch(/rank 0 starts from scratch, so this rank does too/);
  });
});
