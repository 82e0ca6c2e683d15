import { Packr } from 'msgpackr';
import { describe, expect, it } from 'vitest';
import { MAX_DEPTH, MsgpackError, strictUnpack } from './msgpack.js';

const packr = new Packr({ useRecords: false, variableMapSize: true });
const rejects = (bytes: Uint8Array | number[]): string => {
  try {
    strictUnpack(Uint8Array.from(bytes as ArrayLike<number>));
  } catch (e) {
    expect(e).toBeInstanceOf(MsgpackError);
    return (e as MsgpackError).message;
  }
  throw new Error('expected a rejection');
};

describe('strict msgpack decoder', () => {
  it('reads what the protocol encoder writes, as plain objects', () => {
    const msg = { v: 1, type: 'hello', rank: 3, worldSize: 70_000, neg: -40_000, big: 2 ** 40, f: 0.1, ok: true, no: null,
      signature: [{ name: 'conv1.weight', shape: [64, 3, 7, 7] }], s: 'x'.repeat(300), u: 'ünï' };
    const out = strictUnpack(packr.pack(msg)) as Record<string, unknown>;
    expect(out).toEqual(msg);
    expect(Object.getPrototypeOf(out)).toBe(Object.prototype);
  });

  it('rejects every extension type msgpackr would turn into an object', () => {
    for (const v of [new Date(0), /x/g, new Error('boom'), new Set([1]), new Float32Array(2), new Map([[1, 2]]), 10n ** 30n]) {
      const bytes = new Packr({ useRecords: false, moreTypes: true, structuredClone: true }).pack({ v: 1, type: 'bye', x: v });
      expect(() => strictUnpack(bytes)).toThrow(MsgpackError);
    }
    for (const t of [0xd4, 0xd5, 0xd6, 0xd7, 0xd8, 0xc7, 0xc8, 0xc9]) expect(rejects([0x81, 0xa1, 0x78, t, 0, 0, 0, 0])).toMatch(/extension/);
  });

  it('rejects records, binary data, non-string keys, reserved and repeated keys', () => {
    expect(() => strictUnpack(new Packr({ useRecords: true }).pack({ v: 1, type: 'bye' }))).toThrow(MsgpackError);
    expect(rejects([0xc4, 1, 0])).toMatch(/binary/);
    expect(rejects([0x81, 0x01, 0x02])).toMatch(/keys must be strings/);
    expect(rejects([0x81, 0xa9, ...Buffer.from('__proto__'), 0x80])).toMatch(/reserved/);
    expect(rejects([0x82, 0xa1, 0x61, 1, 0xa1, 0x61, 2])).toMatch(/repeated/);
  });

  it('refuses lengths larger than the bytes present before allocating, deep nesting, wide maps and trailing bytes', () => {
    expect(rejects([0xdd, 0xff, 0xff, 0xff, 0xff])).toMatch(/array of 4294967295 elements/);
    expect(rejects([0xdb, 0x7f, 0xff, 0xff, 0xff, 0x61])).toMatch(/runs past the end/);
    expect(rejects([0xdf, 0x00, 0x01, 0x00, 0x00])).toMatch(/map of 65536 entries/);
    expect(rejects(Array(MAX_DEPTH + 2).fill(0x91).concat([1]))).toMatch(/nesting/);
    expect(rejects([0xc0, 0xc0])).toMatch(/trailing/);
    expect(rejects([0xc1])).toMatch(/invalid type byte/);
    expect(rejects([0xa2, 0xc3, 0x28])).toMatch(/UTF-8/);
    expect(rejects([0xcf, 0xff, 0, 0, 0, 0, 0, 0, 0])).toMatch(/not a safe integer/);
  });
});
