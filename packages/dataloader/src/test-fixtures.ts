/** Small data-set fixtures that the tests write themselves into temp folders (not part of the public API). */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import sharp from 'sharp';

export function tempDir(prefix = 'dataloader-'): { dir: string; cleanup: () => void } {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  return { dir, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

/** Pixel value of fixture image i at (y, x, channel): deterministic and distinct per image. */
export const fixturePixel = (i: number, y: number, x: number, c = 0) => (i * 37 + y * 5 + x * 3 + c * 71) & 0xff;

function idx(dims: number[], data: Uint8Array): Buffer {
  const head = Buffer.alloc(4 + 4 * dims.length);
  head[2] = 0x08;
  head[3] = dims.length;
  dims.forEach((d, k) => head.writeUInt32BE(d, 4 + 4 * k));
  return gzipSync(Buffer.concat([head, data]));
}

/** Fashion-MNIST-like IDX gz files: `train` and `test` images of 28x28 with labels i % 10. */
export function writeIdxFixture(dir: string, counts = { train: 12, test: 5 }): void {
  for (const [prefix, n] of [['train', counts.train], ['t10k', counts.test]] as const) {
    const pixels = new Uint8Array(n * 28 * 28);
    for (let i = 0; i < n; i++) for (let y = 0; y < 28; y++) for (let x = 0; x < 28; x++) pixels[i * 784 + y * 28 + x] = fixturePixel(i, y, x);
    const labels = Uint8Array.from({ length: n }, (_, i) => i % 10);
    writeFileSync(join(dir, `${prefix}-images-idx3-ubyte.gz`), idx([n, 28, 28], pixels));
    writeFileSync(join(dir, `${prefix}-labels-idx1-ubyte.gz`), idx([n], labels));
  }
}

/** CIFAR-10 binary batches with `perBatch` records each (label (i*3) % 10, CHW planes of fixturePixel). */
export function writeCifarFixture(dir: string, perBatch = 3): void {
  const files = ['data_batch_1.bin', 'data_batch_2.bin', 'data_batch_3.bin', 'data_batch_4.bin', 'data_batch_5.bin', 'test_batch.bin'];
  let i = 0;
  for (const f of files) {
    const buf = Buffer.alloc(perBatch * 3073);
    for (let r = 0; r < perBatch; r++, i++) {
      const o = r * 3073;
      buf[o] = (i * 3) % 10;
      for (let c = 0; c < 3; c++) for (let y = 0; y < 32; y++) for (let x = 0; x < 32; x++) buf[o + 1 + c * 1024 + y * 32 + x] = fixturePixel(i, y, x, c);
    }
    writeFileSync(join(dir, f), buf);
  }
}

export const FOLDER_COLOURS: Record<string, [number, number, number]> = { ant: [200, 30, 30], bee: [30, 200, 30], cat: [30, 30, 200] };

/** root/<split>/<class>/*.jpg|png of solid class colours (split '' = flat layout). */
export async function writeImageFolderFixture(root: string, split: string, perClass = 2, size: [number, number] = [40, 30]): Promise<void> {
  for (const [cls, rgb] of Object.entries(FOLDER_COLOURS)) {
    const dir = join(root, split, cls);
    mkdirSync(dir, { recursive: true });
    for (let k = 0; k < perClass; k++) {
      const img = sharp({ create: { width: size[0], height: size[1], channels: 3, background: { r: rgb[0], g: rgb[1], b: rgb[2] } } });
      if (k % 2 === 0) await img.jpeg({ quality: 95 }).toFile(join(dir, `img${k}.jpg`));
      else await img.png().toFile(join(dir, `img${k}.png`));
    }
  }
}
