/**
 * CIFAR-10 from the official binary batches (cifar-10-binary.tar.gz): data_batch_1..5.bin and test_batch.bin,
 * each record 1 label byte + 3072 bytes of 32x32 pixels stored channel-major (CHW), converted here to HWC.
 */
import { existsSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { DataError } from '../errors.js';
import { sharedBytes } from './memory.js';
import type { Dataset, Split } from './types.js';

export const CIFAR10_CLASSES = ['airplane', 'automobile', 'bird', 'cat', 'deer', 'dog', 'frog', 'horse', 'ship', 'truck'];
const RECORD = 1 + 3072;
const HOW_TO_GET =
  'download https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz, extract it (tar xzf) and pass its ' +
  'cifar-10-batches-bin folder (or the folder containing it) as --data-dir';

export function cifar10Files(split: Split): string[] {
  return split === 'train' ? [1, 2, 3, 4, 5].map((k) => `data_batch_${k}.bin`) : ['test_batch.bin'];
}

export function cifar10Dataset(split: Split, dataDir: string | undefined): Dataset {
  if (!dataDir) throw new DataError('DATASET_NOT_FOUND', `cifar10: no data folder given; ${HOW_TO_GET}`);
  // The tarball extracts into cifar-10-batches-bin/; accept either that folder or its parent.
  const dir = existsSync(join(dataDir, 'cifar-10-batches-bin')) ? join(dataDir, 'cifar-10-batches-bin') : dataDir;
  const files = cifar10Files(split).map((f) => join(dir, f));
  const missing = files.filter((f) => !existsSync(f));
  if (missing.length > 0) {
    throw new DataError('DATASET_NOT_FOUND', `cifar10: missing ${missing.join(', ')}; expected data_batch_1..5.bin and test_batch.bin in ${dir}. To get them, ${HOW_TO_GET}`, { path: dir });
  }
  let count = 0;
  for (const f of files) {
    const size = statSync(f).size;
    if (size === 0 || size % RECORD !== 0) {
      throw new DataError('DATASET_LAYOUT', `cifar10: ${f} has ${size} bytes, not a multiple of ${RECORD} (1 label + 3072 pixel bytes per record); re-download it: ${HOW_TO_GET}`, { path: f });
    }
    count += size / RECORD;
  }
  const pixels = sharedBytes(count * 3072);
  const labels = new Int32Array(new SharedArrayBuffer(count * 4));
  let i = 0;
  for (const f of files) {
    const buf = readFileSync(f);
    for (let off = 0; off < buf.length; off += RECORD, i++) {
      const label = buf[off]!;
      if (label > 9) throw new DataError('DATASET_LAYOUT', `cifar10: ${f} record ${off / RECORD} has label ${label}, expected 0-9; is this the CIFAR-100 or python version? ${HOW_TO_GET}`, { path: f });
      labels[i] = label;
      // CHW planes -> HWC pixels.
      const src = off + 1;
      const dst = i * 3072;
      for (let p = 0; p < 1024; p++) {
        pixels[dst + 3 * p] = buf[src + p]!;
        pixels[dst + 3 * p + 1] = buf[src + 1024 + p]!;
        pixels[dst + 3 * p + 2] = buf[src + 2048 + p]!;
      }
    }
  }
  const metaPath = join(dir, 'batches.meta.txt');
  const names = existsSync(metaPath) ? readFileSync(metaPath, 'utf8').split('\n').map((s) => s.trim()).filter(Boolean) : [];
  return {
    name: 'cifar10',
    split,
    size: count,
    classNames: names.length === 10 ? names : [...CIFAR10_CLASSES],
    mean: [0.4914, 0.4822, 0.4465],
    std: [0.247, 0.2435, 0.2616],
    spec: { kind: 'memory', count, width: 32, height: 32, channels: 3, pixels: pixels.buffer as SharedArrayBuffer, labels: labels.buffer as SharedArrayBuffer, where: dir },
  };
}
