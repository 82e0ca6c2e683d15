/**
 * TensorBoard event files, written by the project: TFRecord framing (length, masked CRC32C of the length,
 * data, masked CRC32C of the data) around Event protobufs, a file_version event first, then one Event per
 * metrics.jsonl record holding a simple_value per scalar. tf.node.summaryFileWriter would need tfjs-node.
 * Field numbers: tensorflow/core/util/event.proto and tensorflow/core/framework/summary.proto.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { ProtoWriter } from '@googlenet/model';
import { maskedCrc32c } from './crc32c';

/** One TFRecord: u64 length, masked CRC of those 8 bytes, the data, masked CRC of the data (all little-endian). */
export function tfRecord(data: Uint8Array): Uint8Array {
  const out = new Uint8Array(8 + 4 + data.length + 4);
  const view = new DataView(out.buffer);
  view.setBigUint64(0, BigInt(data.length), true);
  view.setUint32(8, maskedCrc32c(out.subarray(0, 8)), true);
  out.set(data, 12);
  view.setUint32(12 + data.length, maskedCrc32c(data), true);
  return out;
}

/** Event { wall_time = 1; step = 2; file_version = 3 | summary = 5 }; Summary { repeated Value value = 1 }. */
export function encodeEvent(e: { wallTime: number; step?: number; fileVersion?: string; scalars?: [string, number][] }): Uint8Array {
  const w = new ProtoWriter().double(1, e.wallTime);
  if (e.step !== undefined) w.int(2, e.step);
  if (e.fileVersion !== undefined) w.string(3, e.fileVersion);
  if (e.scalars) {
    const summary = new ProtoWriter();
    // Summary.Value { tag = 1; simple_value = 2 }
    for (const [tag, value] of e.scalars) summary.message(1, new ProtoWriter().string(1, tag).float(2, value));
    w.message(5, summary);
  }
  return w.finish();
}

/**
 * The scalars of one metrics.jsonl record, tagged `<type>/<field>` (nested objects joined with `/`, e.g.
 * `train/ms/reduce`); `type`, `step` and non-numbers are left out. Step records are the `train` group.
 */
export function recordScalars(record: Record<string, unknown>): [string, number][] {
  const group = record.type === 'step' ? 'train' : String(record.type ?? 'metrics');
  const out: [string, number][] = [];
  const walk = (prefix: string, o: Record<string, unknown>) => {
    for (const [k, v] of Object.entries(o)) {
      if (prefix === group && (k === 'type' || k === 'step')) continue;
      if (typeof v === 'number' && Number.isFinite(v)) out.push([`${prefix}/${k}`, v]);
      else if (v && typeof v === 'object' && !Array.isArray(v)) walk(`${prefix}/${k}`, v as Record<string, unknown>);
    }
  };
  walk(group, record);
  return out;
}

/**
 * Appends events to `<dir>/events.out.tfevents.<seconds>.<host>` (a new file per process start, as
 * TensorFlow names them; on resume TensorBoard drops the superseded steps of the older file itself).
 * Writes are synchronous and whole-record, so a crash leaves a readable file.
 */
export class TensorBoardWriter {
  readonly file: string;

  private constructor(file: string) {
    this.file = file;
  }

  static open(dir: string, now = Date.now()): TensorBoardWriter {
    fs.mkdirSync(dir, { recursive: true });
    const w = new TensorBoardWriter(path.join(dir, `events.out.tfevents.${Math.floor(now / 1000)}.${os.hostname()}.${process.pid}`));
    fs.writeFileSync(w.file, tfRecord(encodeEvent({ wallTime: now / 1000, step: 0, fileVersion: 'brain.Event:2' })));
    return w;
  }

  /** Writes a metrics.jsonl record's scalars at its `step`. */
  add(record: Record<string, unknown>, wallTime = Date.now() / 1000): void {
    const scalars = recordScalars(record);
    if (scalars.length === 0) return;
    const step = typeof record.step === 'number' ? Math.round(record.step) : 0;
    fs.appendFileSync(this.file, tfRecord(encodeEvent({ wallTime, step, scalars })));
  }
}
