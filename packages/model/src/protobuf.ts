/**
 * A minimal protocol-buffers writer: the wire format (varints, fixed 32/64-bit, length-delimited fields) and
 * nothing else. Enough to write TensorBoard's Event/Summary and ONNX's ModelProto without a generated-code
 * dependency: callers write their fields by number, as the .proto files define them.
 * https://protobuf.dev/programming-guides/encoding/
 */

const WIRE_VARINT = 0;
const WIRE_FIXED64 = 1;
const WIRE_BYTES = 2;
const WIRE_FIXED32 = 5;

const utf8 = new TextEncoder();

/** Builds one message. Nested messages are built with their own writer and added with `message()`. */
export class ProtoWriter {
  private buf = new Uint8Array(64);
  private len = 0;
  private readonly view = () => new DataView(this.buf.buffer, this.buf.byteOffset, this.buf.byteLength);

  /** int32/int64/uint64/bool/enum field. Negative values take ten bytes (two's complement), as protobuf says. */
  int(field: number, value: number | bigint | boolean): this {
    this.tag(field, WIRE_VARINT);
    this.varint(typeof value === 'boolean' ? (value ? 1n : 0n) : BigInt(value));
    return this;
  }

  /** `double` field. */
  double(field: number, value: number): this {
    this.tag(field, WIRE_FIXED64);
    this.reserve(8);
    this.view().setFloat64(this.len, value, true);
    this.len += 8;
    return this;
  }

  /** `float` field. */
  float(field: number, value: number): this {
    this.tag(field, WIRE_FIXED32);
    this.reserve(4);
    this.view().setFloat32(this.len, value, true);
    this.len += 4;
    return this;
  }

  string(field: number, value: string): this {
    return this.bytes(field, utf8.encode(value));
  }

  bytes(field: number, value: Uint8Array): this {
    this.tag(field, WIRE_BYTES);
    this.varint(BigInt(value.length));
    this.reserve(value.length);
    this.buf.set(value, this.len);
    this.len += value.length;
    return this;
  }

  message(field: number, value: ProtoWriter): this {
    return this.bytes(field, value.finish());
  }

  /** `repeated int64` in packed form. */
  packedInts(field: number, values: readonly (number | bigint)[]): this {
    const inner = new ProtoWriter();
    for (const v of values) inner.varint(BigInt(v));
    return this.bytes(field, inner.finish());
  }

  /** The encoded message (a view of the writer's buffer; copy it before writing more). */
  finish(): Uint8Array {
    return this.buf.subarray(0, this.len);
  }

  private tag(field: number, wire: number): void {
    if (!Number.isInteger(field) || field < 1) throw new RangeError(`protobuf field numbers start at 1, got ${field}`);
    this.varint(BigInt(field * 8 + wire));
  }

  private varint(v: bigint): void {
    let x = BigInt.asUintN(64, v);
    this.reserve(10);
    do {
      let byte = Number(x & 0x7fn);
      x >>= 7n;
      if (x !== 0n) byte |= 0x80;
      this.buf[this.len++] = byte;
    } while (x !== 0n);
  }

  private reserve(n: number): void {
    if (this.len + n <= this.buf.length) return;
    let size = this.buf.length * 2;
    while (size < this.len + n) size *= 2;
    const next = new Uint8Array(size);
    next.set(this.buf.subarray(0, this.len));
    this.buf = next;
  }
}
