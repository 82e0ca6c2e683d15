/**
 * Counter-based random numbers on the host: value i of stream (seed, key) is a pure function of (seed, key, i),
 * so initialisation and dropout masks are reproducible on every backend, in any order, without tf's global RNG.
 */

/** A 32-bit avalanche mixer (lowbias32 by C. Wellons): every input bit flips about half of the output bits. */
export function mix32(x: number): number {
  x ^= x >>> 16;
  x = Math.imul(x, 0x7feb352d);
  x ^= x >>> 15;
  x = Math.imul(x, 0x846ca68b);
  x ^= x >>> 16;
  return x >>> 0;
}

/** Folds a non-negative integer seed of up to 53 bits into 32 bits without dropping the high bits. */
export function foldSeed(seed: number): number {
  if (!Number.isSafeInteger(seed) || seed < 0) throw new RangeError(`seed must be an integer in [0, 2^53), got ${seed}`);
  return mix32((seed >>> 0) ^ mix32(Math.floor(seed / 0x1_0000_0000) + 0x9e3779b9));
}

/** FNV-1a of a string: a stable stream key for a tensor name. */
export function hashString(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 0x01000193);
  return h >>> 0;
}

/** The key of stream `key` under `seed`; combine with `uniformAt(streamKey, i)`. */
export function streamKey(seed: number, key: number): number {
  return mix32(foldSeed(seed) ^ mix32(key + 0x6a09e667));
}

/** Uniform in (0, 1), never 0 or 1 (so log() is safe): value number `i` of a stream. */
export function uniformAt(stream: number, i: number): number {
  // Two rounds: mixing (stream + i) once leaves nearby streams correlated.
  return (mix32(mix32((stream + i) >>> 0) ^ stream) + 0.5) / 0x1_0000_0000;
}

/**
 * Fills `out` with normal(0, std) values truncated to [-bound*std, bound*std] (rejection sampling, Box-Muller).
 */
export function truncatedNormal(out: Float32Array, stream: number, std: number, bound: number): void {
  let counter = 0;
  let filled = 0;
  while (filled < out.length) {
    const u1 = uniformAt(stream, counter++);
    const u2 = uniformAt(stream, counter++);
    const r = Math.sqrt(-2 * Math.log(u1));
    const z0 = r * Math.cos(2 * Math.PI * u2);
    const z1 = r * Math.sin(2 * Math.PI * u2);
    if (Math.abs(z0) <= bound) out[filled++] = z0 * std;
    if (filled < out.length && Math.abs(z1) <= bound) out[filled++] = z1 * std;
  }
}
