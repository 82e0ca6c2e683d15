import { describe, expect, it } from 'vitest';
import { reportError } from './main';

const capture = () => {
  const lines: string[] = [];
  return { io: { write: (s: string) => void lines.push(s) }, text: () => lines.join('') };
};

describe('reportError', () => {
  it('prints one coded line for a bad flag and asks for exit status 2', () => {
    const c = capture();
    expect(reportError(Object.assign(new Error('--lr=x is invalid: expected a number'), { code: 'BAD_FLAG' }), c.io)).toBe(2);
    expect(c.text()).toBe('error [BAD_FLAG]: --lr=x is invalid: expected a number\n');
  });

  it('gives other coded errors status 1 without a stack, and uncoded ones (bugs) their stack', () => {
    const coded = capture();
    expect(reportError(Object.assign(new Error('no checkpoint'), { code: 'RESUME_NOT_FOUND' }), coded.io)).toBe(1);
    expect(coded.text()).toBe('error [RESUME_NOT_FOUND]: no checkpoint\n');
    const bug = capture();
    expect(reportError(new TypeError('x is undefined'), bug.io)).toBe(1);
    expect(bug.text()).toMatch(/^error: x is undefined\nTypeError: x is undefined\n {4}at /);
  });
});
