import { describe, expect, it } from 'vitest';
import { helpText } from './help';

describe('helpText', () => {
  it('lists each flag with what it takes, its help and its default or required, then -h/--help', () => {
    const text = helpText('usage: demo [options]', {
      'batch-size': { type: 'int', default: 32, help: 'samples per batch' },
      schedule: { type: 'enum', values: ['step', 'cosine'], help: 'schedule' },
      eval: { type: 'boolean', default: true, help: 'evaluate' },
      port: { type: 'int', required: true, help: 'TCP port' },
    });
    expect(text.split('\n')).toEqual([
      'usage: demo [options]',
      '',
      'Options:',
      '  --batch-size=<int>        samples per batch (default: 32)',
      '  --schedule=<step|cosine>  schedule',
      '  --[no-]eval               evaluate (default: true)',
      '  --port=<int>              TCP port (required)',
      '  -h, --help                print this help',
    ]);
  });

  it('puts the help of a long flag on its own line, aligned with the others', () => {
    const text = helpText('u', { ['x'.repeat(50)]: { type: 'string', help: 'long one' }, y: { type: 'string', help: 'short one' } });
    expect(text).toContain(`  --${'x'.repeat(50)}=<string>\n${' '.repeat(44)}long one`);
    expect(text).toContain(`  --y=<string>${' '.repeat(44 - 14)}short one`);
  });
});
