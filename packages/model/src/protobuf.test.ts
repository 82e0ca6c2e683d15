import { describe, expect, it } from 'vitest';
import { ProtoWriter } from './protobuf.js';

const hex = (b: Uint8Array) => Buffer.from(b).toString('hex');

// The byte strings are the worked examples of https://protobuf.dev/programming-guides/encoding/.
describe('ProtoWriter', () => {
  it('encodes an int field as the documented varint bytes', () => {
    expect(hex(new ProtoWriter().int(1, 150).finish())).toBe('089601');
  });

  it('encodes a negative int64 as ten bytes of two\'s complement', () => {
    expect(hex(new ProtoWriter().int(1, -1).finish())).toBe('08ffffffffffffffffff01');
  });

  it('encodes a string as a length-delimited field', () => {
    expect(hex(new ProtoWriter().string(2, 'testing').finish())).toBe('120774657374696e67');
  });

  it('encodes a nested message as bytes of its own encoding', () => {
    const inner = new ProtoWriter().int(1, 150);
    expect(hex(new ProtoWriter().message(3, inner).finish())).toBe('1a03089601');
  });

  it('packs repeated ints into one length-delimited field', () => {
    expect(hex(new ProtoWriter().packedInts(4, [3, 270, 86942]).finish())).toBe('2206038e029ea705');
  });

  it('writes doubles and floats little-endian with their wire types', () => {
    expect(hex(new ProtoWriter().double(1, 1).finish())).toBe('09000000000000f03f');
    expect(hex(new ProtoWriter().float(2, 1).finish())).toBe('150000803f');
  });

  it('grows its buffer for large byte fields', () => {
    const big = new Uint8Array(100_000).fill(7);
    const out = new ProtoWriter().bytes(9, big).finish();
    expect(out.length).toBe(1 + 3 + big.length);
    expect(out[out.length - 1]).toBe(7);
  });

  it('rejects field number 0', () => {
    expect(() => new ProtoWriter().int(0, 1)).toThrow(/field numbers start at 1/);
  });
});
