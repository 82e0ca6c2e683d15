import { describe, expect, it } from 'vitest';
import { parseFlags } from './parse';
import { FlagError, type FlagTable } from './spec';

const TABLE = {
  'batch-size': { type: 'int', min: 1, default: 32, help: 'samples per batch' },
  lr: { type: 'number', min: 0, max: 10, default: 0.1, help: 'learning rate' },
  schedule: { type: 'enum', values: ['step', 'cosine'], default: 'step', help: 'schedule' },
  out: { type: 'string', help: 'output folder' },
  eval: { type: 'boolean', default: true, help: 'evaluate' },
  verbose: { type: 'boolean', help: 'say more' },
  port: { type: 'int', min: 0, max: 65535, required: true, help: 'TCP port' },
} satisfies FlagTable;

const parse = (...argv: string[]) => parseFlags(argv, TABLE);
const error = (...argv: string[]) => {
  try {
    parse(...argv);
  } catch (e) {
    expect(e).toBeInstanceOf(FlagError);
    expect((e as FlagError).code).toBe('BAD_FLAG');
    return (e as Error).message;
  }
  throw new Error(`${argv.join(' ')} parsed without an error`);
};

describe('parseFlags', () => {
  it('fills in defaults and keys every value by its camelCase name', () => {
    expect(parse('--port=1')).toEqual({ help: false, batchSize: 32, lr: 0.1, schedule: 'step', out: undefined, eval: true, verbose: false, port: 1 });
  });

  it('accepts --name=value, --name value and camelCase spellings alike', () => {
    expect(parse('--port', '2', '--batch-size=8', '--out', 'runs/a')).toMatchObject({ port: 2, batchSize: 8, out: 'runs/a' });
    expect(parse('--port=2', '--batchSize', '16', '--lr=0.5')).toMatchObject({ batchSize: 16, lr: 0.5 });
  });

  it('reads booleans as --x, --x=true|false|1|0 and --no-x, and never takes the next argument as their value', () => {
    expect(parse('--port=1', '--no-eval', '--verbose')).toMatchObject({ eval: false, verbose: true });
    expect(parse('--port=1', '--eval=false', '--verbose=1')).toMatchObject({ eval: false, verbose: true });
    expect(parse('--port=1', '--noEval')).toMatchObject({ eval: false });
    expect(error('--port=1', '--verbose', 'yes')).toContain("unexpected argument 'yes'");
    expect(error('--port=1', '--eval=maybe')).toBe('--eval=maybe is invalid: expected true or false (or --no-eval)');
    expect(error('--port=1', '--no-eval=true')).toContain('--no-eval takes no value');
  });

  it('lets the last of a repeated flag win', () => {
    expect(parse('--port=1', '--lr=1', '--lr=2')).toMatchObject({ lr: 2 });
  });

  it('answers -h or --help anywhere, before checking anything else', () => {
    for (const argv of [['-h'], ['--help'], ['--bogus', '--help'], ['--lr=abc', '-h']]) expect(parse(...argv).help).toBe(true);
    expect(parse('--port=1', '--help=false').help).toBe(false);
    // a table may list help itself (for its --help line); -h still means help
    expect(parseFlags(['-h'], { ...TABLE, help: { type: 'boolean', default: false, help: 'print this help' } }).help).toBe(true);
  });

  it('requires required flags, and names the flag and its help', () => {
    expect(error()).toBe('--port is required: TCP port');
    expect(error('--lr=1')).toBe('--port is required: TCP port');
  });

  it.each([
    [['--batch-size=0'], '--batch-size=0 is invalid: expected an integer >= 1'],
    [['--batch-size=3.5'], '--batch-size=3.5 is invalid: expected an integer >= 1'],
    [['--batch-size=1e400'], 'expected an integer'],
    [['--lr=abc'], '--lr=abc is invalid: expected a number >= 0 and <= 10'],
    [['--lr=11'], '--lr=11 is invalid'],
    [['--lr='], '--lr= is invalid'],
    [['--schedule=paper'], '--schedule=paper is invalid: expected one of step, cosine'],
    [['--out='], '--out= is invalid: expected a non-empty string'],
    [['--out'], '--out needs a value (a non-empty string): --out=...'],
    [['--out', '--lr=1'], '--out needs a value'],
    [['stray'], "unexpected argument 'stray': flags look like --name=value (see --help)"],
    [['--bogus=1'], 'unknown flag --bogus; accepted: --batch-size, --lr, --schedule, --out, --eval, --verbose, --port, --help'],
    [['--batch=1'], 'unknown flag --batch (did you mean --batch-size?); see --help'],
    [['--shcedule=step'], 'did you mean --schedule?'],
    [['-x'], 'unknown flag -x'],
    [['--no-lr'], 'unknown flag --no-lr'],
  ])('rejects %j with BAD_FLAG: %s', (argv, message) => {
    expect(error('--port=1', ...argv)).toContain(message);
  });

  it('passes a value that begins with a single dash (a negative number) to the flag', () => {
    expect(error('--port=1', '--lr', '-1')).toBe('--lr=-1 is invalid: expected a number >= 0 and <= 10');
    expect(parseFlags(['--x', '-2'], { x: { type: 'int', help: 'x' } }).x).toBe(-2);
  });

  it('names at most three near misses in a long table', () => {
    const long: FlagTable = Object.fromEntries(Array.from({ length: 20 }, (_, i) => [`flag-${i}`, { type: 'int', help: 'x' }]));
    expect(() => parseFlags(['--nothing-like-it'], long)).toThrowError('unknown flag --nothing-like-it; see --help for the 20 accepted flags');
    expect(() => parseFlags(['--flag'], long)).toThrowError('(did you mean --flag-0, --flag-1, --flag-2?)');
  });
});
