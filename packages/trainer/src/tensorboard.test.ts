import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { maskedCrc32c } from './crc32c';
import { encodeEvent, recordScalars, TensorBoardWriter, tfRecord } from './tensorboard';
import { readJsonl, tempDir, train } from '../test/helpers';
import { hasPythonModules, toolsPython } from '../test/pytools';

/** Splits a TFRecord file, checking both masked CRCs of every record. */
function readRecords(bytes: Uint8Array): Uint8Array[] {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const out: Uint8Array[] = [];
  for (let off = 0; off < bytes.length;) {
    const len = Number(view.getBigUint64(off, true));
    expect(view.getUint32(off + 8, true)).toBe(maskedCrc32c(bytes.subarray(off, off + 8)));
    const data = bytes.subarray(off + 12, off + 12 + len);
    expect(view.getUint32(off + 12 + len, true)).toBe(maskedCrc32c(data));
    out.push(data);
    off += 16 + len;
  }
  return out;
}

describe('TensorBoard event files', () => {
  it('frames a record as length, masked CRC of the length, data, masked CRC of the data', () => {
    const data = new TextEncoder().encode('hello');
    const rec = tfRecord(data);
    expect(rec.length).toBe(8 + 4 + 5 + 4);
    expect(readRecords(rec)).toEqual([data]);
  });

  it('encodes an Event with wall_time, step and a simple_value scalar', () => {
    // Event { wall_time: 1.0 (field 1, double), step: 3 (field 2), summary (field 5) { value (1) { tag (1): "a",
    // simple_value (2): 1.0f } } }
    const hex = Buffer.from(encodeEvent({ wallTime: 1, step: 3, scalars: [['a', 1]] })).toString('hex');
    expect(hex).toBe('09000000000000f03f' + '1003' + '2a0a' + '0a08' + '0a0161' + '150000803f');
  });

  it('takes every numeric field of a metrics record as a scalar, nested objects joined with /', () => {
    const scalars = recordScalars({ type: 'step', step: 5, epoch: 0.5, loss: 2.3, ms: { wall: 10, reduce: 2 }, gpu: { kernels: [1, 2] }, ok: true });
    expect(scalars).toEqual([['train/epoch', 0.5], ['train/loss', 2.3], ['train/ms/wall', 10], ['train/ms/reduce', 2]]);
    expect(recordScalars({ type: 'eval', step: 5, top1: 0.5 })).toEqual([['eval/top1', 0.5]]);
  });

  it('starts the file with a file_version event and appends whole records', () => {
    const dir = path.join(tempDir('tb'), 'tb');
    const w = TensorBoardWriter.open(dir, 1_700_000_000_000);
    w.add({ type: 'step', step: 1, loss: 2 });
    w.add({ type: 'step', step: 2 }); // no scalars: nothing written
    expect(path.basename(w.file)).toMatch(/^events\.out\.tfevents\.1700000000\./);
    const records = readRecords(new Uint8Array(fs.readFileSync(w.file)));
    expect(records).toHaveLength(2);
    expect(Buffer.from(records[0]!).toString('latin1')).toContain('brain.Event:2');
    expect(Buffer.from(records[1]!).toString('latin1')).toContain('train/loss');
  });

  it('a real run\'s tb/ files hold the scalars of its metrics.jsonl, as TensorBoard reads them, also after a resume', async () => {
    const out = path.join(tempDir('tb-run'), 'run');
    const args = ['--dataset=synthetic', '--synthetic-size=48,16', '--image-size=32', '--batch-size=8', '--steps=4',
      '--eval-every=2', '--workers=1', '--backend=wasm', `--out=${out}`];
    await train([...args, '--checkpoint-every=2']);
    const first = fs.readdirSync(path.join(out, 'tb'));
    expect(first).toHaveLength(1);
    const records = readRecords(new Uint8Array(fs.readFileSync(path.join(out, 'tb', first[0]!))));
    const metrics = readJsonl(path.join(out, 'metrics.jsonl'));
    expect(records).toHaveLength(1 + metrics.length);
    expect(metrics.some((m) => m.type === 'eval')).toBe(true);
    // Steps 3-4 again from the step-2 checkpoint: a second file whose steps supersede the first file's.
    const ckpt = fs.readdirSync(path.join(out, 'checkpoints')).sort()[0]!;
    await new Promise((r) => setTimeout(r, 1100)); // TensorBoard reads files in name order: the second they were opened
    await train([...args, `--resume=${path.join(out, 'checkpoints', ckpt)}`]);
    expect(fs.readdirSync(path.join(out, 'tb'))).toHaveLength(2);
    if (!hasPythonModules('tensorboard.test.ts (EventAccumulator check)', ['tensorboard'])) return;
    const r = spawnSync(toolsPython(), [path.join(import.meta.dirname, 'tensorboard_check.py'), out], { encoding: 'utf8' });
    expect(r.status, r.stdout + r.stderr).toBe(0);
    const report = JSON.parse(r.stdout.trim().split('\n').pop()!);
    expect(report.file_version).toBe(2); // EventAccumulator parses "brain.Event:2" into 2.0
    expect(report.compared).toBeGreaterThan(40);
  }, 300_000);

  it('--tensorboard=false writes no tb/ folder', async () => {
    const out = path.join(tempDir('tb-off'), 'run');
    await train(['--dataset=synthetic', '--synthetic-size=16,8', '--image-size=32', '--batch-size=8', '--steps=1',
      '--no-eval', '--workers=1', '--backend=wasm', '--tensorboard=false', `--out=${out}`]);
    expect(fs.existsSync(path.join(out, 'metrics.jsonl'))).toBe(true);
    expect(fs.existsSync(path.join(out, 'tb'))).toBe(false);
  }, 300_000);
});
