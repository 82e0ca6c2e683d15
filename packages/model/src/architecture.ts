/**
 * GoogLeNet (Inception v1 with BatchNorm, as in the project's seed notebook) as data, plus the shape arithmetic
 * the model and the summary share. Channel counts are the seed's; shape comments are NHWC at a 224 input.
 */

/** A BasicConv2d: conv (no bias) + BatchNorm + ReLU. */
export interface ConvSpec {
  /** Input channels. */
  cin: number;
  /** Output channels. */
  cout: number;
  /** Square kernel size. */
  k: number;
  /** Stride (default 1). */
  stride: number;
  /** Symmetric zero padding (default 0). */
  pad: number;
}

export const conv = (cin: number, cout: number, k: number, stride = 1, pad = 0): ConvSpec => ({ cin, cout, k, stride, pad });

/** One Inception block: four branches concatenated on channels (1x1 | 1x1->3x3 | 1x1->5x5 | maxpool->1x1). */
export interface InceptionConfig {
  name: string;
  /** Input channels. */
  cin: number;
  ch1x1: number;
  ch3x3red: number;
  ch3x3: number;
  ch5x5red: number;
  /** A real 5x5 conv (torchvision's "5x5" is 3x3, vision#906; the seed's is not). */
  ch5x5: number;
  poolProj: number;
}

const inc = (name: string, cin: number, ch1x1: number, ch3x3red: number, ch3x3: number, ch5x5red: number,
  ch5x5: number, poolProj: number): InceptionConfig => ({ name, cin, ch1x1, ch3x3red, ch3x3, ch5x5red, ch5x5, poolProj });

/** The nine Inception blocks of the seed. */
export const INCEPTIONS: readonly InceptionConfig[] = [
  inc('inception3a', 192, 64, 96, 128, 16, 32, 32),      // N x 28 x 28 x 256
  inc('inception3b', 256, 128, 128, 192, 32, 96, 64),    // N x 28 x 28 x 480
  //                                                        maxpool3: N x 14 x 14 x 480
  inc('inception4a', 480, 192, 96, 208, 16, 48, 64),     // N x 14 x 14 x 512 (-> aux1)
  inc('inception4b', 512, 160, 112, 224, 24, 64, 64),    // N x 14 x 14 x 512
  inc('inception4c', 512, 128, 128, 256, 24, 64, 64),    // N x 14 x 14 x 512
  inc('inception4d', 512, 112, 144, 288, 32, 64, 64),    // N x 14 x 14 x 528 (-> aux2)
  inc('inception4e', 528, 256, 160, 320, 32, 128, 128),  // N x 14 x 14 x 832
  //                                                        maxpool4: N x 7 x 7 x 832
  inc('inception5a', 832, 256, 160, 320, 32, 128, 128),  // N x 7 x 7 x 832
  inc('inception5b', 832, 384, 192, 384, 48, 128, 128),  // N x 7 x 7 x 1024
];

export const inceptionOut = (c: InceptionConfig): number => c.ch1x1 + c.ch3x3 + c.ch5x5 + c.poolProj;

/** The four branches' BasicConv2d layers, with their PyTorch module paths relative to the block. */
export function inceptionConvs(c: InceptionConfig): { path: string; spec: ConvSpec }[] {
  return [
    { path: 'branch1', spec: conv(c.cin, c.ch1x1, 1) },
    { path: 'branch2.0', spec: conv(c.cin, c.ch3x3red, 1) },
    { path: 'branch2.1', spec: conv(c.ch3x3red, c.ch3x3, 3, 1, 1) },
    { path: 'branch3.0', spec: conv(c.cin, c.ch5x5red, 1) },
    { path: 'branch3.1', spec: conv(c.ch5x5red, c.ch5x5, 5, 1, 2) },
    { path: 'branch4.1', spec: conv(c.cin, c.poolProj, 1) }, // branch4.0 is the 3x3/1 max-pool
  ];
}

/** The whole network in execution order (the order torchinfo prints). */
export type Stage =
  | { kind: 'conv'; name: string; spec: ConvSpec }
  | { kind: 'maxpool'; name: string }                  // 3x3, stride 2, ceil mode, no padding
  | { kind: 'inception'; name: string; cfg: InceptionConfig }
  | { kind: 'aux'; name: 'aux1' | 'aux2'; cin: number }   // aux heads read the previous stage's output
  | { kind: 'head'; name: 'avgpool' | 'dropout' | 'fc' };

const byName = (name: string) => INCEPTIONS.find((c) => c.name === name)!;

export const STAGES: readonly Stage[] = [
  { kind: 'conv', name: 'conv1', spec: conv(3, 64, 7, 2, 3) },   // N x 112 x 112 x 64
  { kind: 'maxpool', name: 'maxpool1' },                          // N x 56 x 56 x 64
  { kind: 'conv', name: 'conv2', spec: conv(64, 64, 1) },         // N x 56 x 56 x 64
  { kind: 'conv', name: 'conv3', spec: conv(64, 192, 3, 1, 1) },  // N x 56 x 56 x 192
  { kind: 'maxpool', name: 'maxpool2' },                          // N x 28 x 28 x 192
  { kind: 'inception', name: 'inception3a', cfg: byName('inception3a') },
  { kind: 'inception', name: 'inception3b', cfg: byName('inception3b') },
  { kind: 'maxpool', name: 'maxpool3' },                          // N x 14 x 14 x 480
  { kind: 'inception', name: 'inception4a', cfg: byName('inception4a') },
  { kind: 'aux', name: 'aux1', cin: 512 },                        // N x classes
  { kind: 'inception', name: 'inception4b', cfg: byName('inception4b') },
  { kind: 'inception', name: 'inception4c', cfg: byName('inception4c') },
  { kind: 'inception', name: 'inception4d', cfg: byName('inception4d') },
  { kind: 'aux', name: 'aux2', cin: 528 },                        // N x classes
  { kind: 'inception', name: 'inception4e', cfg: byName('inception4e') },
  { kind: 'maxpool', name: 'maxpool4' },                          // N x 7 x 7 x 832
  { kind: 'inception', name: 'inception5a', cfg: byName('inception5a') },
  { kind: 'inception', name: 'inception5b', cfg: byName('inception5b') },
  { kind: 'head', name: 'avgpool' },                              // N x 1 x 1 x 1024
  { kind: 'head', name: 'dropout' },                              // N x 1024
  { kind: 'head', name: 'fc' },                                   // N x classes
];

/** The aux head: pool to 4x4, 1x1 conv to 128, FC 2048 -> 1024, ReLU, dropout 0.7, FC -> classes. */
export const AUX = { convOut: 128, grid: 4, hidden: 1024, dropout: 0.7 } as const;
export const MAIN_DROPOUT = 0.4;
export const FEATURES = 1024;
/** Below this, maxpool3/4 would see maps smaller than 1x1. */
export const MIN_IMAGE_SIZE = 28;

export const convOutSize = (size: number, s: ConvSpec): number => Math.floor((size + 2 * s.pad - s.k) / s.stride) + 1;

/**
 * PyTorch's MaxPool2d output size with ceil_mode=True, padding 0 (aten pooling_output_shape): the last window
 * may hang over the bottom/right edge but must start inside the input. Where PyTorch would give 0 (a map
 * smaller than the kernel, e.g. maxpool4 at a 28 input) we give 1: the max of the whole map.
 */
export function maxPoolCeilSize(size: number, k = 3, stride = 2): number {
  let out = Math.ceil((size - k) / stride) + 1;
  if ((out - 1) * stride >= size) out--;
  return Math.max(1, out);
}

/**
 * How the aux head reaches 4x4: the seed's AvgPool2d(5, stride 3) wherever that gives exactly 4x4 (a 14x14
 * map, i.e. a 224 input: there the seed's model is reproduced exactly), else PyTorch's adaptive average pool
 * to 4x4 as torchvision does (the seed's `view(-1, 2048)` cannot work there).
 */
export const auxUsesSeedPool = (h: number, w: number): boolean =>
  Math.floor((h - 5) / 3) + 1 === AUX.grid && Math.floor((w - 5) / 3) + 1 === AUX.grid && h >= 5 && w >= 5;

/** Spatial size after each stage, for an input of `size` (square): what the summary prints. */
export function spatialSizes(size: number): Map<string, number> {
  const sizes = new Map<string, number>();
  let s = size;
  for (const st of STAGES) {
    if (st.kind === 'conv') s = convOutSize(s, st.spec);
    else if (st.kind === 'maxpool') s = maxPoolCeilSize(s);
    sizes.set(st.name, s);
  }
  return sizes;
}
