import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { tempDir } from '../test-fixtures.js';
import { openDataset, openSource } from '../datasets/index.js';
import type { ShardManifest } from '../datasets/shards.js';
import { main } from './make-shards.js';

const tmp = tempDir();
afterAll(() => tmp.cleanup());

describe('make-shards CLI', () => {
  it('writes each split as its own shard files, limited, at the drawn size, with manifests that list them', async () => {
    const lines: string[] = [];
    const out = join(tmp.dir, 'out');
    expect(await main(['--from=synthetic', `--out=${out}`, '--shards', '2', '--limit=30', '--imageSize=8'], (l) => lines.push(l))).toBe(0);
    for (const split of ['train', 'test'] as const) {
      // Exactly the manifest and this split's two shards: no shard of the other split, no leftover temp file.
      const files = readdirSync(join(out, split)).sort();
      expect(files).toEqual(['manifest.json', `${split}-00000-of-00002.gnshard`, `${split}-00001-of-00002.gnshard`]);
      const m = JSON.parse(readFileSync(join(out, split, 'manifest.json'), 'utf8')) as ShardManifest;
      expect([m.split, m.source, m.total, m.shards.map((s) => s.count)]).toEqual([split, 'synthetic', 30, [15, 15]]);
      for (const s of m.shards) expect(statSync(join(out, split, s.file)).size).toBe(s.bytes);
      // The flags reached the writer: every record is drawn at --image-size=8.
      const ds = openDataset('shards', split, { dataDir: out, imageSize: 8, syntheticSize: { train: 1, test: 1 } });
      const first = await openSource(ds.spec).read(0);
      expect([ds.size, first.width, first.height]).toEqual([30, 8, 8]);
    }
    expect(lines.at(-1)).toMatch(/test: 30 samples in 2 shard/);
  });

  it('prints help and rejects bad flags with BAD_OPTION naming the flag', async () => {
    const lines: string[] = [];
    expect(await main(['--help'], (l) => lines.push(l))).toBe(0);
    expect(lines.join('\n')).toContain('--shards=<int>');
    expect(await main(['-h'], (l) => lines.push(l))).toBe(0);
    await expect(main(['--from=synthetic', '--out=x'])).rejects.toMatchObject({ code: 'BAD_OPTION', message: expect.stringContaining('--shards is required') });
    await expect(main(['--from=synthetic', '--out=x', '--shards=0'])).rejects.toThrowError('--shards=0 is invalid: expected an integer >= 1');
    await expect(main(['--form=synthetic'])).rejects.toMatchObject({ code: 'BAD_OPTION', message: expect.stringContaining('unknown flag --form (did you mean --from?)') });
    await expect(main(['--from=cifar10', '--out=x', '--shards=1', '--image-size=32'])).rejects.toThrowError(/--image-size applies to --from=synthetic only/);
    await expect(main(['--from=cifar10', `--out=${join(tmp.dir, 'c')}`, '--shards=1', `--data-dir=${tmp.dir}`])).rejects.toMatchObject({ code: 'DATASET_NOT_FOUND' });
  });
});
