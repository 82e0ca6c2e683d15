import { describe, expect, it } from 'vitest';
import { CloseCode, HEADER_ROOM, ProtocolViolation, decode, encode, writeHeader } from './protocol.js';
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
