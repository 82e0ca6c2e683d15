/**
 * The shared-memory addon (native/shm.cc, built at install by tools/build-native.mjs). Without it the shm data plane
 * is unavailable and jobs use the TCP peer plane: there is no JavaScript fallback, because JavaScript cannot map a
 * file shared with another process. `shmUnavailable()` says why, for the log.
 */
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';

export interface ShmAddon {
  /** sharedElems (addons with reduceSlots): floats of each rank's registered slot, kept in the header for the others. */
  create(path: string, bytes: number, ranks: number, chunkElems: number, sharedElems?: number): ArrayBuffer;
  /** bytes 0 (addons with reduceSlots): the size rank 0 gave the segment. */
  open(path: string, bytes: number): ArrayBuffer;
  attach(seg: ArrayBuffer, rank: number): number;
  unlink(path: string): void;
  unmap(seg: ArrayBuffer): void;
  /** The open descriptor of the segment's mapping (kept while it is mapped): /proc/self/fd/<fd> maps it again. */
  fd(seg: ArrayBuffer): number;
  signal(seg: ArrayBuffer, rank: number, q: number, step: number): void;
  wait(seg: ArrayBuffer, ranks: number, me: number, q: number, step: number, sliceMs: number): number;
  abort(seg: ArrayBuffer, word: number): void;
  reduce(seg: ArrayBuffer, inBase: number, stride: number, ranks: number, me: number, mine: Float32Array, outOff: number, quantize: number): void;
  quantize(seg: ArrayBuffer, off: number, src: Float32Array): void;
  /** Registered slots: the mean of [base, base + count*4) over the slots at base + r*stride, into every slot. Absent in addons built before it. */
  reduceSlots?(seg: ArrayBuffer, base: number, stride: number, ranks: number, count: number, quantize: number): void;
}

const ADDON = fileURLToPath(new URL('../native/build/googlenet_shm.node', import.meta.url));
let addon: ShmAddon | null | undefined;
let why: string | null = null;

/** The addon, or null (then `shmUnavailable()` says why). GOOGLENET_SHM=0 disables it. */
export function shmAddon(): ShmAddon | null {
  if (addon !== undefined) return addon;
  addon = null;
  if (process.platform !== 'linux') why = `shared memory is implemented for Linux only (this is ${process.platform})`;
  else if (process.env.GOOGLENET_SHM === '0') why = 'disabled by GOOGLENET_SHM=0';
  else if (!existsSync(ADDON)) why = `${ADDON} is not built (run npm ci with g++ and Node's headers installed)`;
  else if (!existsSync('/dev/shm')) why = '/dev/shm does not exist';
  else {
    try {
      addon = createRequire(import.meta.url)(ADDON) as ShmAddon;
    } catch (e) {
      why = `cannot load ${ADDON}: ${(e as Error).message}`;
    }
  }
  return addon;
}

/** Why the shm plane cannot be used in this process, or null when it can. */
export function shmUnavailable(): string | null {
  shmAddon();
  return why;
}
