import { describe, expect, it } from 'vitest';
import { Packr } from 'msgpackr';
import { CloseCode, HEADER_ROOM, MAX_HEADER_BYTES, PREFIX_BYTES, ProtocolViolation, decode, encode, writeHeader } from './protocol.js';
import { signatureDifference, Rendezvous } from './rendezvous.js';
import { tokenMatches } from './auth.js';

const closeCodeOf = (buf: Buffer): number => {
  try {
    decode(buf);
  } catch (e) {
    return (e as ProtocolViolation).closeCode;
  }
  return 0;
};

describe('protocol', () => {
  it('round-trips a data header with the payload at an 8-aligned offset', () => {
    const buf = Buffer.alloc(HEADER_ROOM + 16);
    writeHeader(buf, { v: 1, type: 'data', seq: 1, op: 'mean', dtype: 'f32', numel: 4, bucketElems: 4, bucket: 0, count: 4, metrics: [1.5, 2] }, HEADER_ROOM);
    const { msg, payload } = decode(buf);
    expect(msg).toMatchObject({ type: 'data', numel: 4, metrics: [1.5, 2] });
    expect(payload.length).toBe(16);
    expect(encode({ v: 1, type: 'bye' }).readUInt32LE(4) % 8).toBe(0);
  });

  it('rejects garbage, unknown types, wrong versions and bad fields with distinct 4xxx codes', () => {
    expect(closeCodeOf(Buffer.from([1, 2, 3]))).toBe(CloseCode.MALFORMED);
    expect(closeCodeOf(Buffer.from('0123456789abcdef'))).toBe(CloseCode.MALFORMED);
    expect(closeCodeOf(encode({ v: 1, type: 'launch' } as never))).toBe(CloseCode.UNKNOWN_TYPE);
    expect(closeCodeOf(encode({ v: 2, type: 'bye' } as never))).toBe(CloseCode.BAD_VERSION);
    expect(closeCodeOf(encode({ v: 1, type: 'data', seq: -1 } as never))).toBe(CloseCode.MALFORMED);
    expect(closeCodeOf(encode({ v: 1, type: 'hello', rank: 0, worldSize: 1, signature: [{ name: 3 }] } as never))).toBe(CloseCode.MALFORMED);
  });
});

/** A message whose msgpack header is `packed` (any bytes), framed as the protocol frames it. */
function framed(packed: Uint8Array, claimedHeader = packed.length): Buffer {
  const p = (PREFIX_BYTES + packed.length + 7) & ~7;
  const buf = Buffer.alloc(p);
  buf.writeUInt32LE(claimedHeader, 0);
  buf.writeUInt32LE(p, 4);
  buf.set(packed, PREFIX_BYTES);
  return buf;
}

describe('protocol bounds', () => {
  const plain = new Packr({ useRecords: false, variableMapSize: true });

  it('accepts a header of exactly 256 KiB and refuses one byte more before decoding it', () => {
    const base = plain.pack({ v: 1, type: 'bye', pad: '' }).length;
    // str32 from 65536 characters: 5 bytes of type + length, where the empty string took 1
    const pad = 'x'.repeat(MAX_HEADER_BYTES - base - 4);
    const atCap = plain.pack({ v: 1, type: 'bye', pad });
    expect(atCap.length).toBe(MAX_HEADER_BYTES);
    expect(decode(framed(atCap)).msg.type).toBe('bye');
    const over = plain.pack({ v: 1, type: 'bye', pad: pad + 'x' });
    expect(over.length).toBe(MAX_HEADER_BYTES + 1);
    expect(closeCodeOf(framed(over))).toBe(CloseCode.MALFORMED);
    expect(() => decode(framed(over))).toThrow(/bad prefix \(header 262145 bytes/);
    // a prefix that claims a huge header is refused from the prefix alone
    expect(() => decode(framed(plain.pack({ v: 1, type: 'bye' }), 0xffffffff))).toThrow(/bad prefix/);
  });

  it('rejects msgpack extension types and records in a header with 4000, even in fields nobody reads', () => {
    const rich = new Packr({ useRecords: false, moreTypes: true, structuredClone: true });
    for (const x of [new Date(0), /a+/, new Error('e'), new Set([1]), new Uint8Array(4), new Float64Array(1)]) {
      const bytes = framed(rich.pack({ v: 1, type: 'bye', x }));
      expect(closeCodeOf(bytes)).toBe(CloseCode.MALFORMED);
      expect(() => decode(bytes)).toThrow(/header is not msgpack/);
    }
    expect(closeCodeOf(framed(new Packr({ useRecords: true }).pack({ v: 1, type: 'bye' })))).toBe(CloseCode.MALFORMED);
  });
});

describe('rendezvous', () => {
  const sig = [{ name: 'a', shape: [2, 3] }, { name: 'b', shape: [4] }];
  it('names the first differing tensor', () => {
    expect(signatureDifference(sig, sig)).toBeNull();
    expect(signatureDifference(sig, [sig[0]!, { name: 'b', shape: [5] }])).toContain("'b' has shape [4]");
    expect(signatureDifference(sig, [sig[0]!])).toContain('2 tensors here but 1');
  });

  it('rejects duplicate ranks, wrong world sizes and run ids, and lists missing ranks', () => {
    const r = new Rendezvous(3, 'run');
    expect(r.join({ v: 1, type: 'hello', rank: 0, worldSize: 3, runId: 'run', signature: sig }).ok).toBe(true);
    expect(r.join({ v: 1, type: 'hello', rank: 0, worldSize: 3, signature: sig })).toMatchObject({ code: 'DUPLICATE_RANK' });
    expect(r.join({ v: 1, type: 'hello', rank: 1, worldSize: 4, signature: sig })).toMatchObject({ code: 'WORLD_SIZE_MISMATCH' });
    expect(r.join({ v: 1, type: 'hello', rank: 1, worldSize: 3, runId: 'other', signature: sig })).toMatchObject({ code: 'RUN_ID_MISMATCH' });
    expect(r.join({ v: 1, type: 'hello', rank: 3, worldSize: 3, signature: sig })).toMatchObject({ code: 'INVALID_RANK' });
    expect(r.missing()).toEqual([1, 2]);
  });

  it('compares tokens through hashes', () => {
    expect(tokenMatches('s3cret', 's3cret')).toBe(true);
    expect(tokenMatches('s3cre', 's3cret')).toBe(false);
    expect(tokenMatches(undefined, 's3cret')).toBe(false);
  });
});
