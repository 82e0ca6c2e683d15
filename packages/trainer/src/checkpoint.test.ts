import { execFileSync, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { GoogLeNet, selectBackend } from '@googlenet/model';
import { Sgd } from './optim';
import {
  CHECKPOINT_FORMAT, CHECKPOINT_VERSION, decodeCheckpoint, encodeCheckpoint, findResumeCheckpoint, removeStaleTemps, restoreCheckpoint, writeCheckpoint,
  type CheckpointMeta,
} from './checkpoint';
import { TrainerError } from './errors';

let model: GoogLeNet;
let sgd: Sgd;

const meta = (step: number): CheckpointMeta => ({
  format: CHECKPOINT_FORMAT, version: CHECKPOINT_VERSION, step, epoch: 0,
  sampler: { version: 1, seed: 1, epoch: 0, position: step, worldSize: 1, accumulate: 1, dataset: 'synthetic' },
  optimizer: { type: 'sgd', started: true, momentum: 0.9, weightDecay: 0, layout: 'tfjs' }, config: {}, seeds: { seed: 1 }, createdAt: 'now',
});

beforeAll(async () => {
  await selectBackend('wasm');
  model = new GoogLeNet({ numClasses: 10, seed: 1 });
  sgd = new Sgd(model.params.map((p) => p.variable), { momentum: 0.9, weightDecay: 0 });
  // One step so the momentum buffers hold something.
  const grads = model.params.map((p) => tf.onesLike(p.variable));
  sgd.step(grads, 0.1);
  tf.dispose(grads);
});
afterAll(() => {
  model.dispose();
  sgd.dispose();
});

const tmp = () => fs.mkdtempSync(path.join(os.tmpdir(), 'googlenet-ckpt-'));

function expectRestores(file: string) {
  const ckpt = decodeCheckpoint(new Uint8Array(fs.readFileSync(file)), file);
  const fresh = new GoogLeNet({ numClasses: 10, seed: 99 });
  const freshSgd = new Sgd(fresh.params.map((p) => p.variable), { momentum: 0.9, weightDecay: 0 });
  restoreCheckpoint(ckpt, fresh, freshSgd, file);
  // Bytewise: vitest's deep equality over millions of floats would take minutes.
  const bytes = (t: tf.Tensor) => Buffer.from((t.dataSync() as Float32Array).buffer);
  model.params.forEach((p, i) => expect(bytes(fresh.params[i]!.variable).equals(bytes(p.variable)), p.name).toBe(true));
  model.buffers.forEach((b, i) => expect(bytes(fresh.buffers[i]!.variable).equals(bytes(b.variable)), b.name).toBe(true));
  sgd.state().buffers.forEach((b, i) => expect(bytes(freshSgd.state().buffers[i]!).equals(bytes(b)), `momentum ${i}`).toBe(true));
  expect(freshSgd.state().started).toBe(true);
  fresh.dispose();
  freshSgd.dispose();
  return ckpt;
}

describe('checkpoints', () => {
  it('round-trips weights, BN statistics, momentum and metadata, and keeps the newest --keep', async () => {
    const dir = tmp();
    for (const step of [2, 4, 6]) await writeCheckpoint(dir, step, await encodeCheckpoint(model, sgd, meta(step)), { keep: 2 });
    expect(fs.readdirSync(path.join(dir, 'checkpoints')).sort()).toEqual(['step-00000004.ckpt', 'step-00000006.ckpt']);
    const { file, ckpt } = await findResumeCheckpoint(dir, () => {});
    expect(file).toMatch(/step-00000006\.ckpt$/);
    expect(ckpt.meta.sampler.position).toBe(6);
    expectRestores(file);
  });

  it('falls back to the previous checkpoint when the newest is corrupt, and says so', async () => {
    const dir = tmp();
    await writeCheckpoint(dir, 2, await encodeCheckpoint(model, sgd, meta(2)), { keep: 5 });
    fs.writeFileSync(path.join(dir, 'checkpoints', 'step-00000004.ckpt'), 'garbage');
    const warnings: string[] = [];
    const { file } = await findResumeCheckpoint(dir, (w) => warnings.push(w));
    expect(file).toMatch(/step-00000002\.ckpt$/);
    expect(warnings.join()).toMatch(/skipping .*step-00000004\.ckpt/);
  });

  it('rejects a checkpoint of another version or a plain weights file with a clear code', async () => {
    const bytes = await encodeCheckpoint(model, sgd, { ...meta(1), version: 99 });
    expect(() => decodeCheckpoint(bytes, 'x.ckpt')).toThrow(expect.objectContaining({ code: 'CHECKPOINT_VERSION' }));
    expect(() => decodeCheckpoint(new Uint8Array([1, 2, 3]), 'y.ckpt')).toThrow(expect.objectContaining({ code: 'CHECKPOINT_CORRUPT' }));
  });

  it('a checkpoint without optimizer metadata is CHECKPOINT_CORRUPT, not a TypeError', async () => {
    const { optimizer: _, ...noOptimizer } = meta(2);
    const bytes = await encodeCheckpoint(model, sgd, noOptimizer as CheckpointMeta);
    const load = () => restoreCheckpoint(decodeCheckpoint(bytes, 'old.ckpt'), model, sgd, 'old.ckpt');
    expect(load).toThrow(expect.objectContaining({ code: 'CHECKPOINT_CORRUPT', message: expect.stringMatching(/old\.ckpt: metadata lacks the optimizer state/) }));
    const noSeeds = await encodeCheckpoint(model, sgd, { ...meta(2), seeds: undefined } as unknown as CheckpointMeta);
    expect(() => decodeCheckpoint(noSeeds, 'x.ckpt')).toThrow(expect.objectContaining({ code: 'CHECKPOINT_CORRUPT' }));
  });

  it('removes the temp files of writers that died mid-write and keeps those of live writers', async () => {
    const dir = tmp();
    await writeCheckpoint(dir, 2, await encodeCheckpoint(model, sgd, meta(2)), { keep: 3 });
    const dead = spawnSync(process.execPath, ['-e', '0']).pid;
    const ckpts = path.join(dir, 'checkpoints');
    fs.writeFileSync(path.join(ckpts, `step-00000004.ckpt.tmp-${dead}`), 'half a checkpoint');
    fs.writeFileSync(path.join(ckpts, `step-00000006.ckpt.tmp-${process.pid}`), 'being written');
    const removed = await removeStaleTemps(dir);
    expect(removed.map((f) => path.basename(f))).toEqual([`step-00000004.ckpt.tmp-${dead}`]);
    expect(fs.readdirSync(ckpts).sort()).toEqual(['step-00000002.ckpt', `step-00000006.ckpt.tmp-${process.pid}`]);
    expect(await removeStaleTemps(tmp())).toEqual([]);
  });

  it('a failed write (disk full) throws CHECKPOINT_WRITE_FAILED and leaves the previous checkpoint loadable', async () => {
    const dir = tmp();
    await writeCheckpoint(dir, 2, await encodeCheckpoint(model, sgd, meta(2)), { keep: 3 });
    const full = { writeFile: async () => { throw Object.assign(new Error('ENOSPC: no space left on device'), { code: 'ENOSPC' }); } };
    const err = await writeCheckpoint(dir, 4, await encodeCheckpoint(model, sgd, meta(4)), { keep: 3, fs: full }).catch((e: TrainerError) => e);
    expect(err).toMatchObject({ code: 'CHECKPOINT_WRITE_FAILED' });
    expect((err as Error).message).toMatch(/disk is full.*previous checkpoint is intact/);
    expect(fs.readdirSync(path.join(dir, 'checkpoints'))).toEqual(['step-00000002.ckpt']);
    expectRestores(path.join(dir, 'checkpoints', 'step-00000002.ckpt'));
  });

  // Real full and read-only file systems need a tmpfs mount, which needs root (CI runs as root).
  const canMount = (() => {
    if (process.getuid?.() !== 0) return false;
    const probe = tmp();
    try {
      execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=64k', 'tmpfs', probe], { stdio: 'ignore' });
      execFileSync('umount', [probe]);
      return true;
    } catch {
      return false;
    }
  })();
  if (!canMount) console.warn('SKIPPED: real full-disk and read-only checkpoint tests need root to mount a tmpfs; the injected-ENOSPC test above still ran');

  it.skipIf(!canMount)('on a really full and then a read-only file system, the previous checkpoint survives', async () => {
    const bytes = await encodeCheckpoint(model, sgd, meta(2));
    const mnt = tmp();
    // Room for one checkpoint and a half: the second write runs out of space part-way.
    execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${Math.ceil((bytes.length * 1.5) / 4096) * 4096}`, 'tmpfs', mnt]);
    try {
      await writeCheckpoint(mnt, 2, bytes, { keep: 3 });
      const full = await writeCheckpoint(mnt, 4, await encodeCheckpoint(model, sgd, meta(4)), { keep: 3 }).catch((e: TrainerError) => e);
      expect(full).toMatchObject({ code: 'CHECKPOINT_WRITE_FAILED' });
      expect((full as Error).message).toMatch(/ENOSPC/);
      expect(fs.readdirSync(path.join(mnt, 'checkpoints'))).toEqual(['step-00000002.ckpt']);
      expectRestores(path.join(mnt, 'checkpoints', 'step-00000002.ckpt'));

      execFileSync('mount', ['-o', 'remount,ro', mnt]);
      const ro = await writeCheckpoint(mnt, 6, bytes, { keep: 3 }).catch((e: TrainerError) => e);
      expect(ro).toMatchObject({ code: 'CHECKPOINT_WRITE_FAILED' });
      expect((ro as Error).message).toMatch(/read-only/);
      expectRestores(path.join(mnt, 'checkpoints', 'step-00000002.ckpt'));
    } finally {
      execFileSync('umount', [mnt]);
    }
  });
});
