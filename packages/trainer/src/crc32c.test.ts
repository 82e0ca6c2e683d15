import { describe, expect, it } from 'vitest';
import { crc32c, maskedCrc32c } from './crc32c';

const ascii = (s: string) => new TextEncoder().encode(s);

describe('crc32c', () => {
  // The check value of the CRC catalogue and the test vectors of RFC 3720 (iSCSI), appendix B.4.
  it('matches the known CRC-32C vectors', () => {
    expect(crc32c(ascii('123456789'))).toBe(0xe3069283);
    expect(crc32c(new Uint8Array(32))).toBe(0x8a9136aa);
    expect(crc32c(new Uint8Array(32).fill(0xff))).toBe(0x62a8ab43);
    expect(crc32c(Uint8Array.from({ length: 32 }, (_, i) => i))).toBe(0x46dd794e);
    expect(crc32c(Uint8Array.from({ length: 32 }, (_, i) => 31 - i))).toBe(0x113fdb5c);
    expect(crc32c(new Uint8Array(0))).toBe(0);
  });

  it('masks as TensorFlow does: rotate right by 15 and add 0xa282ead8', () => {
    const c = crc32c(ascii('123456789'));
    const rotated = ((c >>> 15) | (c << 17)) >>> 0;
    expect(maskedCrc32c(ascii('123456789'))).toBe((rotated + 0xa282ead8) % 2 ** 32);
    // The CRC of nothing is 0, so its mask is the offset alone.
    expect(maskedCrc32c(new Uint8Array(0))).toBe(0xa282ead8);
  });
});
