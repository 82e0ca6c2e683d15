import { describe, expect, it } from 'vitest';
import { refusal, resolve } from '../test/config-resolve';


describe('training feature flags', () => {
  it('are off by default and resolve when given', () => {
    expect(resolve([])).toMatchObject({ clipGradNorm: 0, labelSmoothing: 0, nesterov: false, emaDecay: 0 });
    expect(resolve(['--clip-grad-norm=2.5', '--label-smoothing=0.1', '--nesterov', '--ema-decay=0.999']))
      .toMatchObject({ clipGradNorm: 2.5, labelSmoothing: 0.1, nesterov: true, emaDecay: 0.999 });
  });

  it('refuse values that cannot work, saying what to give instead', () => {
    expect(refusal(['--nesterov', '--momentum=0'])).toEqual(['BAD_FLAG', expect.stringMatching(/--nesterov needs a momentum: give --momentum > 0/)]);
    expect(refusal(['--label-smoothing=1'])).toEqual(['BAD_FLAG', expect.stringMatching(/expected a value in \[0, 1\)/)]);
    expect(refusal(['--ema-decay=1'])).toEqual(['BAD_FLAG', expect.stringMatching(/expected a value in \[0, 1\), e\.g\. 0\.999/)]);
    expect(refusal(['--clip-grad-norm=-1'])?.[0]).toBe('BAD_FLAG');
  });
});
