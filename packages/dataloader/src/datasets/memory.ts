/** Source over pixels already in (shared) memory: Fashion-MNIST and CIFAR-10 after loading. */
import type { RawImage, Source, SourceSpec } from './types.js';

type MemorySpec = Extract<SourceSpec, { kind: 'memory' }>;

/** Copies into SharedArrayBuffers so that decode workers read the same pages without a copy. */
export function sharedBytes(n: number): Uint8Array {
  return new Uint8Array(new SharedArrayBuffer(n));
}

export class MemorySource implements Source {
  readonly size: number;
  private readonly spec: MemorySpec;
  private readonly pixels: Uint8Array;
  private readonly labels: Int32Array;
  private readonly stride: number;

  constructor(spec: MemorySpec) {
    this.spec = spec;
    this.size = spec.count;
    this.pixels = new Uint8Array(spec.pixels);
    this.labels = new Int32Array(spec.labels);
    this.stride = spec.width * spec.height * spec.channels;
  }

  label(i: number): number {
    return this.labels[i]!;
  }

  read(i: number): RawImage {
    const { width, height, channels } = this.spec;
    return { data: this.pixels.subarray(i * this.stride, (i + 1) * this.stride), width, height, channels };
  }

  where(i: number): string {
    return `${this.spec.where}#${i}`;
  }
}
