/**
 * A strict msgpack decoder for bytes from unauthenticated sockets. msgpackr's decoder builds typed arrays,
 * RegExp, Error, Set, Date and record objects from extension types before anything is validated, and its
 * extension table is global; the protocol needs none of that. This one accepts only what a header is made of
 * (nil, booleans, numbers, UTF-8 strings, arrays, maps with string keys), builds plain objects, and bounds
 * everything before allocating: a length larger than the bytes left, a nesting deeper than MAX_DEPTH or a map
 * wider than MAX_MAP_ENTRIES is an error, so a hostile header costs at most a linear scan of its bytes.
 * Encoding stays with msgpackr's Packr (plain maps, no records), whose output this decoder reads.
 */

/** Deepest nesting the protocol uses is 4 (hello: map > signature array > entry map > shape array). */
export const MAX_DEPTH = 8;
/** No protocol map has more than a dozen fields. */
export const MAX_MAP_ENTRIES = 64;

export class MsgpackError extends Error {
  readonly code = 'MSGPACK_REJECTED';
}

const utf8 = new TextDecoder('utf-8', { fatal: true });

/** Decodes exactly one value spanning all of `bytes`; throws MsgpackError on anything else. */
export function strictUnpack(bytes: Uint8Array): unknown {
  const r = new Reader(bytes);
  const v = r.value(0);
  if (r.pos !== bytes.length) throw new MsgpackError(`${bytes.length - r.pos} trailing bytes after the value`);
  return v;
}

class Reader {
  pos = 0;
  private readonly dv: DataView;
  constructor(private readonly b: Uint8Array) {
    this.dv = new DataView(b.buffer, b.byteOffset, b.byteLength);
  }

  private need(n: number, what: string): number {
    if (n > this.b.length - this.pos) throw new MsgpackError(`${what} of ${n} bytes at offset ${this.pos} runs past the end (${this.b.length} bytes)`);
    const at = this.pos;
    this.pos += n;
    return at;
  }

  private u8(): number { return this.b[this.need(1, 'byte')]!; }
  private u16(): number { return this.dv.getUint16(this.need(2, 'uint16'), false); }
  private u32(): number { return this.dv.getUint32(this.need(4, 'uint32'), false); }

  private int64(signed: boolean): number {
    const at = this.need(8, 'int64');
    const v = signed ? this.dv.getBigInt64(at, false) : this.dv.getBigUint64(at, false);
    if (v > BigInt(Number.MAX_SAFE_INTEGER) || v < BigInt(Number.MIN_SAFE_INTEGER)) throw new MsgpackError(`64-bit integer ${v} is not a safe integer`);
    return Number(v);
  }

  private str(n: number): string {
    const at = this.need(n, 'string');
    try {
      return utf8.decode(this.b.subarray(at, at + n));
    } catch {
      throw new MsgpackError(`string at offset ${at} is not valid UTF-8`);
    }
  }

  private array(n: number, depth: number): unknown[] {
    // Every element takes at least one byte: a claimed length beyond the bytes left is a lie, refused before allocating.
    if (n > this.b.length - this.pos) throw new MsgpackError(`array of ${n} elements in ${this.b.length - this.pos} bytes`);
    const out = new Array<unknown>(n);
    for (let i = 0; i < n; i++) out[i] = this.value(depth + 1);
    return out;
  }

  private map(n: number, depth: number): Record<string, unknown> {
    if (n > MAX_MAP_ENTRIES) throw new MsgpackError(`map of ${n} entries (at most ${MAX_MAP_ENTRIES})`);
    const out: Record<string, unknown> = {};
    for (let i = 0; i < n; i++) {
      const k = this.value(depth + 1);
      if (typeof k !== 'string') throw new MsgpackError(`map key of type ${k === null ? 'nil' : typeof k}; keys must be strings`);
      // '__proto__' would replace the object's prototype on assignment; a repeated key would hide a value.
      if (k === '__proto__' || Object.prototype.hasOwnProperty.call(out, k)) throw new MsgpackError(`map key ${JSON.stringify(k).slice(0, 40)} repeated or reserved`);
      out[k] = this.value(depth + 1);
    }
    return out;
  }

  value(depth: number): unknown {
    if (depth > MAX_DEPTH) throw new MsgpackError(`nesting deeper than ${MAX_DEPTH}`);
    const at = this.pos;
    const t = this.u8();
    if (t <= 0x7f) return t;
    if (t >= 0xe0) return t - 0x100;
    if (t >= 0xa0 && t <= 0xbf) return this.str(t & 0x1f);
    if (t >= 0x90 && t <= 0x9f) return this.array(t & 0x0f, depth);
    if (t >= 0x80 && t <= 0x8f) return this.map(t & 0x0f, depth);
    switch (t) {
      case 0xc0: return null;
      case 0xc2: return false;
      case 0xc3: return true;
      case 0xca: return this.dv.getFloat32(this.need(4, 'float32'), false);
      case 0xcb: return this.dv.getFloat64(this.need(8, 'float64'), false);
      case 0xcc: return this.u8();
      case 0xcd: return this.u16();
      case 0xce: return this.u32();
      case 0xcf: return this.int64(false);
      case 0xd0: return this.dv.getInt8(this.need(1, 'int8'));
      case 0xd1: return this.dv.getInt16(this.need(2, 'int16'), false);
      case 0xd2: return this.dv.getInt32(this.need(4, 'int32'), false);
      case 0xd3: return this.int64(true);
      case 0xd9: return this.str(this.u8());
      case 0xda: return this.str(this.u16());
      case 0xdb: return this.str(this.u32());
      case 0xdc: return this.array(this.u16(), depth);
      case 0xdd: return this.array(this.u32(), depth);
      case 0xde: return this.map(this.u16(), depth);
      case 0xdf: return this.map(this.u32(), depth);
      case 0xc4: case 0xc5: case 0xc6:
        throw new MsgpackError(`binary data (type 0x${t.toString(16)}) at offset ${at}; headers carry no bin values`);
      case 0xc7: case 0xc8: case 0xc9: case 0xd4: case 0xd5: case 0xd6: case 0xd7: case 0xd8:
        throw new MsgpackError(`extension type (0x${t.toString(16)}) at offset ${at}; extensions are not accepted`);
      default:
        throw new MsgpackError(`invalid type byte 0x${t.toString(16)} at offset ${at}`);
    }
  }
}
