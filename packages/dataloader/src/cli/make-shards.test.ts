import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { tempDir } from '../test-fixtures.js';
import { main } from './make-shards.js';

const tmp = tempDir();
afterAll(() => tmp.cleanup());

describe('make-shards CLI', () => {
  it('writes train and test shard sets with manifests', async () => {
    const lines: string[] = [];
    const out = join(tmp.dir, 'out');
    expect(await main(['--from=synthetic', `--out=${out}`, '--shards', '2', '--limit=30', '--image-size=8'], (l) => lines.push(l))).toBe(0);
    expect(existsSync(join(out, 'train', 'manifest.json'))).toBe(true);
    expect(existsSync(join(out, 'test', 'train-00000-of-00002.gnshard'))).toBe(false);
    expect(existsSync(join(out, 'test', 'test-00001-of-00002.gnshard'))).toBe(true);
    expect(lines.at(-1)).toMatch(/test: 30 samples in 2 shard/);
  });

  it('prints help and rejects bad flags with BAD_OPTION naming the flag', async () => {
    const lines: string[] = [];
    expect(await main(['--help'], (l) => lines.push(l))).toBe(0);
    expect(lines.join('\n')).toContain('--shards=<int>');
    await expect(main(['--from=synthetic', '--out=x'])).rejects.toMatchObject({ code: 'BAD_OPTION', message: expect.stringContaining('--shards is required') });
    await expect(main(['--from=synthetic', '--out=x', '--shards=0'])).rejects.toThrowError(/--shards must be an integer >= 1/);
    await expect(main(['--form=synthetic'])).rejects.toThrowError(/unknown flag --form/);
    await expect(main(['--from=cifar10', '--out=x', '--shards=1', '--image-size=32'])).rejects.toThrowError(/--image-size applies to --from=synthetic only/);
    await expect(main(['--from=cifar10', `--out=${join(tmp.dir, 'c')}`, '--shards=1', `--data-dir=${tmp.dir}`])).rejects.toMatchObject({ code: 'DATASET_NOT_FOUND' });
  });
});
