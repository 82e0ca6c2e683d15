/**
 * `root/<class>/*.{jpg,jpeg,png}` (torchvision's ImageFolder). Classes and files are sorted by name
 * (code-unit order) so that every process numbers them identically.
 * Splits: if root/train exists, split 'train' reads root/train and split 'test' reads root/val (or root/test);
 * otherwise root itself is the training split and asking for 'test' is an error: evaluating on the training
 * images silently would report a meaningless accuracy.
 */
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { DataError } from '../errors.js';
import { decodeImage } from './codec.js';
import type { Dataset, RawImage, Source, Split } from './types.js';

const IMAGE = /\.(jpe?g|png)$/i;
const LAYOUT_HELP = 'expected root/<class>/*.jpg|jpeg|png, or root/train/<class>/... with root/val/<class>/... for evaluation';

const isDir = (p: string) => {
  try {
    return statSync(p).isDirectory();
  } catch {
    return false;
  }
};

const subdirs = (dir: string) =>
  readdirSync(dir)
    .filter((n) => !n.startsWith('.') && isDir(join(dir, n)))
    .sort();

/** Resolves which folder holds a split's class folders. */
export function imagefolderSplitRoot(root: string, split: Split): string {
  if (!existsSync(root) || !isDir(root)) {
    throw new DataError('DATASET_NOT_FOUND', `imagefolder: ${root} does not exist or is not a folder; ${LAYOUT_HELP}. Pass the folder as --data-dir`, { path: root });
  }
  const train = join(root, 'train');
  if (!isDir(train)) {
    if (split === 'train') return root;
    throw new DataError(
      'DATASET_LAYOUT',
      `imagefolder: ${root} has no train/ and val/ folders, so it has no separate evaluation split; ` +
        `move the images to ${root}/train/<class>/ and held-out ones to ${root}/val/<class>/, or turn evaluation off`,
      { path: root },
    );
  }
  if (split === 'train') return train;
  for (const name of ['val', 'test']) if (isDir(join(root, name))) return join(root, name);
  throw new DataError('DATASET_LAYOUT', `imagefolder: ${root} has train/ but no val/ (or test/) for evaluation; ${LAYOUT_HELP}`, { path: root });
}

export function imagefolderDataset(split: Split, root: string | undefined): Dataset {
  if (!root) throw new DataError('DATASET_NOT_FOUND', `imagefolder: no data folder given; ${LAYOUT_HELP}. Pass it as --data-dir`);
  const splitRoot = imagefolderSplitRoot(root, split);
  // Class ids come from the training folder so that train and test agree even if a val class is empty.
  const classRoot = imagefolderSplitRoot(root, 'train');
  const classNames = subdirs(classRoot);
  if (classNames.length === 0) throw new DataError('DATASET_LAYOUT', `imagefolder: ${classRoot} has no class folders; ${LAYOUT_HELP}`, { path: classRoot });
  const classId = new Map(classNames.map((c, i) => [c, i]));
  const paths: string[] = [];
  const labels: number[] = [];
  for (const cls of subdirs(splitRoot)) {
    const id = classId.get(cls);
    if (id === undefined) {
      throw new DataError('DATASET_LAYOUT', `imagefolder: ${join(splitRoot, cls)} is a class that ${classRoot} does not have; train and evaluation folders need the same class names`, { path: join(splitRoot, cls) });
    }
    for (const f of readdirSync(join(splitRoot, cls)).filter((n) => IMAGE.test(n)).sort()) {
      paths.push(join(splitRoot, cls, f));
      labels.push(id);
    }
  }
  if (paths.length === 0) throw new DataError('DATASET_LAYOUT', `imagefolder: no .jpg/.jpeg/.png files under ${splitRoot}; ${LAYOUT_HELP}`, { path: splitRoot });
  return {
    name: 'imagefolder',
    split,
    size: paths.length,
    classNames,
    // ImageNet statistics: the usual choice for natural photographs.
    mean: [0.485, 0.456, 0.406],
    std: [0.229, 0.224, 0.225],
    spec: { kind: 'files', paths, labels: Int32Array.from(labels) },
  };
}

export class FileSource implements Source {
  readonly size: number;
  private readonly paths: string[];
  private readonly labels: Int32Array;

  constructor(spec: { paths: string[]; labels: Int32Array }) {
    this.paths = spec.paths;
    this.labels = spec.labels;
    this.size = spec.paths.length;
  }

  label(i: number): number {
    return this.labels[i]!;
  }

  read(i: number): Promise<RawImage> {
    return decodeImage(readFileSync(this.paths[i]!));
  }

  encoded(i: number): Uint8Array {
    return readFileSync(this.paths[i]!);
  }

  where(i: number): string {
    return this.paths[i]!;
  }
}
