/**
 * One shard file, written front to back as a stream and read with positioned reads:
 *
 *   "GNSHARD1"                                   8 bytes
 *   record 0 bytes, record 1 bytes, ...          raw HWC uint8 pixels, or PNG/JPEG bytes as stored
 *   index: count entries of 24 bytes, little-endian:
 *     offset u64 (from file start) | length u32 | label i32 | width u16 | height u16 | channels u8 | encoding u8 | 2 reserved
 *   footer: index offset u64 | count u32 | "GNSI"  16 bytes
 *
 * The index sits at the end so that the writer never seeks back; a reader reads the footer, then the index.
 */
import { closeSync, fstatSync, fsyncSync, openSync, readSync, renameSync, writeSync } from 'node:fs';
import { DataError } from '../errors.js';

export const SHARD_MAGIC = 'GNSHARD1';
const FOOTER_MAGIC = 'GNSI';
const ENTRY = 24;
const FOOTER = 16;

/** How a record's bytes are stored. */
export enum RecordEncoding {
  Raw = 0, // width*height*channels uint8, HWC
  Png = 1,
  Jpeg = 2,
}

export interface RecordMeta {
  label: number;
  width: number;
  height: number;
  channels: number;
  encoding: RecordEncoding;
}

export class ShardWriter {
  private readonly fd: number;
  private readonly tmp: string;
  private readonly path: string;
  private pos = 0;
  private readonly entries: Buffer[] = [];

  constructor(path: string) {
    this.path = path;
    this.tmp = `${path}.tmp`;
    this.fd = openSync(this.tmp, 'w');
    this.write(Buffer.from(SHARD_MAGIC, 'latin1'));
  }

  private write(b: Uint8Array): void {
    let done = 0;
    while (done < b.length) done += writeSync(this.fd, b, done, b.length - done, this.pos + done);
    this.pos += b.length;
  }

  append(bytes: Uint8Array, meta: RecordMeta): void {
    const e = Buffer.alloc(ENTRY);
    e.writeBigUInt64LE(BigInt(this.pos), 0);
    e.writeUInt32LE(bytes.length, 8);
    e.writeInt32LE(meta.label, 12);
    e.writeUInt16LE(meta.width, 16);
    e.writeUInt16LE(meta.height, 18);
    e.writeUInt8(meta.channels, 20);
    e.writeUInt8(meta.encoding, 21);
    this.entries.push(e);
    this.write(bytes);
  }

  /** Writes index and footer, then renames into place so that a crash never leaves a half shard. Returns bytes. */
  finish(): number {
    const indexOffset = this.pos;
    for (const e of this.entries) this.write(e);
    const f = Buffer.alloc(FOOTER);
    f.writeBigUInt64LE(BigInt(indexOffset), 0);
    f.writeUInt32LE(this.entries.length, 8);
    f.write(FOOTER_MAGIC, 12, 'latin1');
    this.write(f);
    fsyncSync(this.fd);
    closeSync(this.fd);
    renameSync(this.tmp, this.path);
    return this.pos;
  }

  get count(): number {
    return this.entries.length;
  }
}

export interface ShardRecord extends RecordMeta {
  bytes: Uint8Array;
}

export class ShardReader {
  readonly path: string;
  readonly count: number;
  private readonly fd: number;
  private readonly index: Buffer;
  private scratch = Buffer.alloc(0);

  constructor(path: string) {
    this.path = path;
    const bad = (why: string) =>
      new DataError('DATASET_LAYOUT', `shards: ${path} is not a valid shard file (${why}); rewrite it with nx run dataloader:make-shards`, { path });
    try {
      this.fd = openSync(path, 'r');
    } catch (err) {
      throw new DataError('DATASET_NOT_FOUND', `shards: cannot open ${path} (${(err as Error).message}); rewrite the shards with nx run dataloader:make-shards`, { path, cause: err });
    }
    const size = fstatSync(this.fd).size;
    if (size < SHARD_MAGIC.length + FOOTER) throw bad(`only ${size} bytes`);
    const head = Buffer.alloc(SHARD_MAGIC.length);
    readSync(this.fd, head, 0, head.length, 0);
    if (head.toString('latin1') !== SHARD_MAGIC) throw bad('bad magic; format version 1 expected');
    const foot = Buffer.alloc(FOOTER);
    readSync(this.fd, foot, 0, FOOTER, size - FOOTER);
    if (foot.toString('latin1', 12, 16) !== FOOTER_MAGIC) throw bad('no footer: truncated?');
    const indexOffset = Number(foot.readBigUInt64LE(0));
    this.count = foot.readUInt32LE(8);
    if (indexOffset + this.count * ENTRY + FOOTER !== size) throw bad('index does not fit the file size');
    this.index = Buffer.alloc(this.count * ENTRY);
    readSync(this.fd, this.index, 0, this.index.length, indexOffset);
  }

  meta(r: number): RecordMeta & { offset: number; length: number } {
    const o = r * ENTRY;
    const ix = this.index;
    return {
      offset: Number(ix.readBigUInt64LE(o)),
      length: ix.readUInt32LE(o + 8),
      label: ix.readInt32LE(o + 12),
      width: ix.readUInt16LE(o + 16),
      height: ix.readUInt16LE(o + 18),
      channels: ix.readUInt8(o + 20),
      encoding: ix.readUInt8(o + 21),
    };
  }

  label(r: number): number {
    return this.index.readInt32LE(r * ENTRY + 12);
  }

  encoding(r: number): number {
    return this.index.readUInt8(r * ENTRY + 21);
  }

  /** Record r's bytes, in a scratch buffer valid until the next read. */
  read(r: number): ShardRecord {
    const m = this.meta(r);
    if (this.scratch.length < m.length) this.scratch = Buffer.alloc(Math.max(m.length, this.scratch.length * 2));
    const got = readSync(this.fd, this.scratch, 0, m.length, m.offset);
    if (got !== m.length) throw new Error(`short read: ${got} of ${m.length} bytes`);
    return { ...m, bytes: this.scratch.subarray(0, m.length) };
  }

  close(): void {
    closeSync(this.fd);
  }
}
