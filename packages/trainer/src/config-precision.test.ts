import { describe, expect, it } from 'vitest';
import { refusal, resolve } from '../test/config-resolve';
import { RESUME_KEYS } from './resume-check';


describe('--precision', () => {
  it('defaults to fp32 and accepts f16 and auto', () => {
    expect(resolve([]).precision).toBe('fp32');
    expect(resolve(['--precision=f16', '--backend=webgpu']).precision).toBe('f16');
    expect(resolve(['--precision=auto', '--backend=wasm']).precision).toBe('auto');
  });

  it('refuses f16 on a backend without f16 kernels before anything starts, and an unknown precision', () => {
    expect(refusal(['--precision=f16', '--backend=wasm'])).toEqual(['BAD_FLAG', expect.stringMatching(/shader-f16; --backend=wasm has no f16 kernels: use --backend=webgpu, or --precision=fp32/)]);
    expect(refusal(['--precision=bf16'])?.[0]).toBe('BAD_FLAG');
  });

  it('is a setting a resume must keep (loss scaling changes which steps are taken)', () => {
    expect(RESUME_KEYS.precision).toEqual({ key: 'precision' });
  });
});
