/**
 * The optional compiled render loop (native/render.cc, built at install by tools/build-native.mjs). It writes
 * the same bits as Resampler's JavaScript loop, ~4x faster, which is what lets one core feed 224 px JPEG
 * crops at the rate training needs. Missing build (no compiler at install) or GOOGLENET_NATIVE=0: the
 * JavaScript loop runs instead, and nativeRenderStatus() says why.
 */
import { createRequire } from 'node:module';

export interface RenderAddon {
  render(src: Uint8Array, W: number, H: number, C: number, x: number, y: number, w: number, h: number, flip: boolean,
    scale: Float32Array, bias: Float32Array, out: Float32Array, offset: number, srcLeft: number, srcTop: number,
    srcWidth: number, size: number): void;
}

let addon: RenderAddon | null | undefined;
let why = '';

/** The addon, or null (then nativeRenderStatus() has the reason). Loaded once per thread. */
export function nativeRender(): RenderAddon | null {
  if (addon !== undefined) return addon;
  addon = null;
  if (process.env.GOOGLENET_NATIVE === '0') {
    why = 'disabled by GOOGLENET_NATIVE=0';
    return addon;
  }
  try {
    addon = createRequire(import.meta.url)('../native/build/googlenet_render.node') as RenderAddon;
  } catch (err) {
    why = `not built (${err instanceof Error ? err.message.split('\n')[0] : String(err)}); run npm install with g++ present`;
  }
  return addon;
}

/** 'native' or 'javascript (reason)': for logs and the bench table. */
export function nativeRenderStatus(): string {
  return nativeRender() ? 'native' : `javascript (${why})`;
}
