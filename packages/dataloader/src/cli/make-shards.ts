/** `nx run dataloader:make-shards --from=<data set> --out=DIR --shards=N [...]` */
import { pathToFileURL } from 'node:url';
import { DataError } from '../errors.js';
import { makeShards, type MakeShardsOptions } from '../make-shards.js';
import { parseFlags, usage, type FlagSpec } from './args.js';

const FLAGS: Record<string, FlagSpec> = {
  from: { type: 'string', help: 'source data set (required)', choices: ['synthetic', 'fashion-mnist', 'cifar10', 'imagefolder'] },
  out: { type: 'string', help: 'output folder; each split is written to OUT/<split>/ (required)' },
  shards: { type: 'int', min: 1, help: 'shard files per split (required)' },
  'data-dir': { type: 'string', help: 'source folder (fashion-mnist defaults to /usr/share/datasets/fashion-mnist)' },
  split: { type: 'string', choices: ['both', 'train', 'test'], help: 'which split(s) to write (default both)' },
  'image-size': { type: 'int', min: 1, help: 'synthetic only: image size to draw (default 32)' },
  seed: { type: 'int', min: 0, help: 'seed of the record order (default 0)' },
  limit: { type: 'int', min: 1, help: 'write only this many samples per split' },
};

const COMMAND = 'make-shards';
const SUMMARY = 'Writes a data set as shard files plus manifest.json (format: packages/dataloader/README.md).';

export async function main(argv: string[], log: (line: string) => void = console.log): Promise<number> {
  const { help, values } = parseFlags(argv, FLAGS, COMMAND);
  if (help) {
    log(usage(`nx run dataloader:make-shards --from=<data set> --out=DIR --shards=N [flags]`, SUMMARY, FLAGS));
    return 0;
  }
  for (const required of ['from', 'out', 'shards']) {
    if (values[required] === undefined) throw new DataError('BAD_OPTION', `${COMMAND}: --${required} is required (see --help)`);
  }
  if (values['image-size'] !== undefined && values.from !== 'synthetic') throw new DataError('BAD_OPTION', `${COMMAND}: --image-size applies to --from=synthetic only; other sources keep their own size`);
  const opts: MakeShardsOptions = {
    from: values.from as MakeShardsOptions['from'],
    out: values.out as string,
    shards: values.shards as number,
    dataDir: values['data-dir'] as string | undefined,
    split: (values.split as MakeShardsOptions['split']) ?? 'both',
    imageSize: values['image-size'] as number | undefined,
    seed: values.seed as number | undefined,
    limit: values.limit as number | undefined,
    log,
  };
  const manifests = await makeShards(opts);
  for (const m of manifests) log(`make-shards: ${m.split}: ${m.total} samples in ${m.shards.length} shard(s), ${m.classNames.length} classes -> ${opts.out}/${m.split}/manifest.json`);
  return 0;
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  main(process.argv.slice(2)).then(
    (code) => process.exit(code),
    (err) => {
      if (err instanceof DataError) {
        console.error(`${err.message} [${err.code}]`);
        process.exit(err.code === 'BAD_OPTION' ? 2 : 1);
      }
      console.error(err);
      process.exit(1);
    },
  );
}
