/**
 * Gradient checks of the custom-gradient layers (BatchNorm+ReLU, linear, max-pools) against the cpu backend's
 * stock autodiff of the plain formulation: relative error <= 1e-5, on wasm with the native kernels (where
 * built) and with the tfjs fallbacks.
 */
import { existsSync } from 'node:fs';
import { afterAll, describe, expect, it } from 'vitest';
import { compareWithCpu, GRADIENT_CASES, type Fn } from './gradient-check.js';
import { nativeActive, setNativeEnabled } from './native.js';
import { useBackend } from './test-utils.js';

const TOL = 1e-5;
const compare = (ours: Fn, plain: Fn, shapes: number[][], seed: number, shift = 0) => compareWithCpu('wasm', ours, plain, shapes, seed, shift);

describe.each([true, false])('custom gradients on wasm (native kernels: %s) match cpu autodiff', (native) => {
  afterAll(() => setNativeEnabled(true));
  const use = async () => { setNativeEnabled(native); };

  for (const c of GRADIENT_CASES) {
    it(c.name, async () => {
      await use();
      const errs = await compare(c.ours, c.plain, c.shapes, c.seed, c.shift);
      errs.forEach((e) => (c.exact ? expect(e).toBe(0) : expect(e).toBeLessThanOrEqual(TOL)));
    });
  }

  it('uses the native kernels exactly when they are built and enabled', async () => {
    await use();
    await useBackend('wasm');
    const built = existsSync(new URL('../native/build/googlenet_native.node', import.meta.url));
    if (process.env.GOOGLENET_REQUIRE_NATIVE === '1') expect(built, 'GOOGLENET_REQUIRE_NATIVE=1 but native/build is missing').toBe(true);
    expect(nativeActive()).toBe(native && built); // not built (no compiler at install): the fallbacks above

  });
});
