/**
 * Fashion-MNIST from the IDX gz files (Debian's dataset-fashion-mnist installs them in
 * /usr/share/datasets/fashion-mnist). Grey 28x28; the resampler replicates grey into 3 channels.
 */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { DataError } from '../errors.js';
import { sharedBytes } from './memory.js';
import type { Dataset, Split } from './types.js';

export const FASHION_MNIST_DIR = '/usr/share/datasets/fashion-mnist';
export const FASHION_MNIST_CLASSES = ['T-shirt/top', 'Trouser', 'Pullover', 'Dress', 'Coat', 'Sandal', 'Shirt', 'Sneaker', 'Bag', 'Ankle boot'];

const HOW_TO_GET =
  `install Debian's package (apt-get install dataset-fashion-mnist, which puts them in ${FASHION_MNIST_DIR}) ` +
  `or download them from https://github.com/zalandoresearch/fashion-mnist and pass --data-dir`;

/** Parses an IDX file (optionally gzipped): magic 0x0000, type 0x08 (uint8), rank, big-endian dims, data. */
export function parseIdx(bytes: Uint8Array, path: string): { dims: number[]; data: Uint8Array } {
  const buf = bytes[0] === 0x1f && bytes[1] === 0x8b ? gunzipOrThrow(bytes, path) : bytes;
  const dv = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  const layout = (why: string) =>
    new DataError('DATASET_LAYOUT', `${path} is not an IDX uint8 file (${why}); re-download it: ${HOW_TO_GET}`, { path });
  if (buf.length < 4 || dv.getUint16(0) !== 0 || buf[2] !== 0x08) throw layout('bad magic number');
  const rank = buf[3]!;
  if (buf.length < 4 + 4 * rank) throw layout('truncated header');
  const dims: number[] = [];
  for (let d = 0; d < rank; d++) dims.push(dv.getUint32(4 + 4 * d));
  const n = dims.reduce((a, b) => a * b, 1);
  const start = 4 + 4 * rank;
  if (buf.length !== start + n) throw layout(`expected ${start + n} bytes for dims ${dims.join('x')}, found ${buf.length}`);
  return { dims, data: buf.subarray(start) };
}

function gunzipOrThrow(bytes: Uint8Array, path: string): Uint8Array {
  try {
    return gunzipSync(bytes);
  } catch (err) {
    throw new DataError('DATASET_LAYOUT', `${path} is not a valid gzip file (${(err as Error).message}); re-download it: ${HOW_TO_GET}`, { path, cause: err });
  }
}

/** Finds `<stem>` or `<stem>.gz` in dir. */
function findFile(dir: string, stem: string): string | undefined {
  for (const name of [`${stem}.gz`, stem]) if (existsSync(join(dir, name))) return join(dir, name);
  return undefined;
}

export function fashionMnistDataset(split: Split, dataDir = FASHION_MNIST_DIR): Dataset {
  const prefix = split === 'train' ? 'train' : 't10k';
  const imagesStem = `${prefix}-images-idx3-ubyte`;
  const labelsStem = `${prefix}-labels-idx1-ubyte`;
  const imagesPath = findFile(dataDir, imagesStem);
  const labelsPath = findFile(dataDir, labelsStem);
  if (!imagesPath || !labelsPath) {
    const what = existsSync(dataDir) ? `${dataDir} has no ${imagesPath ? labelsStem : imagesStem}.gz` : `${dataDir} does not exist`;
    throw new DataError(
      'DATASET_NOT_FOUND',
      `fashion-mnist: ${what}; expected {train,t10k}-{images-idx3,labels-idx1}-ubyte.gz there. To get them, ${HOW_TO_GET}`,
      { path: dataDir },
    );
  }
  const images = parseIdx(readFileSync(imagesPath), imagesPath);
  const labels = parseIdx(readFileSync(labelsPath), labelsPath);
  if (images.dims.length !== 3 || labels.dims.length !== 1 || images.dims[0] !== labels.dims[0]) {
    throw new DataError(
      'DATASET_LAYOUT',
      `fashion-mnist: ${imagesPath} (${images.dims.join('x')}) and ${labelsPath} (${labels.dims.join('x')}) do not match; re-download them: ${HOW_TO_GET}`,
      { path: imagesPath },
    );
  }
  const [count, height, width] = images.dims as [number, number, number];
  const pixels = sharedBytes(images.data.length);
  pixels.set(images.data);
  const labelBuf = new Int32Array(new SharedArrayBuffer(count * 4));
  for (let i = 0; i < count; i++) {
    const l = labels.data[i]!;
    if (l >= FASHION_MNIST_CLASSES.length) throw new DataError('DATASET_LAYOUT', `fashion-mnist: ${labelsPath} label ${i} is ${l}, expected 0-9; re-download it: ${HOW_TO_GET}`, { path: labelsPath });
    labelBuf[i] = l;
  }
  return {
    name: 'fashion-mnist',
    split,
    size: count,
    classNames: [...FASHION_MNIST_CLASSES],
    mean: [0.286, 0.286, 0.286],
    std: [0.353, 0.353, 0.353],
    spec: { kind: 'memory', count, width, height, channels: 1, pixels: pixels.buffer as SharedArrayBuffer, labels: labelBuf.buffer as SharedArrayBuffer, where: imagesPath },
  };
}
