/**
 * A depth-1 model summary in torchinfo's form (layer, output shape in NCHW, param #) and its parameter counts,
 * computed from the architecture table (no forward pass). Counted as torchinfo counts the seed's model:
 * parameters only (BN running statistics are buffers, not params), all trainable.
 */
import { AUX, FEATURES, INCEPTIONS, STAGES, type ConvSpec, inceptionConvs, spatialSizes } from './architecture.js';

export interface SummaryOptions {
  /** Default 1000. */
  numClasses?: number;
  /** Include the aux heads (the seed's model). Default true. */
  aux?: boolean;
  /** Square input size. Default 224. */
  imageSize?: number;
  /** Batch size shown in the output shapes. Default 10 (the seed notebook's). */
  batchSize?: number;
}

export interface SummaryRow {
  /** Module name in the seed, e.g. `inception4a`. */
  name: string;
  /** torchinfo's type column, e.g. `Inception`. */
  type: string;
  /** NCHW (or [N, classes]) as torchinfo prints it. */
  outputShape: number[];
  params: number;
}

const basicParams = (s: ConvSpec): number => s.k * s.k * s.cin * s.cout + 2 * s.cout;
const linearParams = (cin: number, cout: number): number => cin * cout + cout;

export function auxParams(cin: number, numClasses: number): number {
  return basicParams({ cin, cout: AUX.convOut, k: 1, stride: 1, pad: 0 })
    + linearParams(AUX.grid * AUX.grid * AUX.convOut, AUX.hidden) + linearParams(AUX.hidden, numClasses);
}

export function summaryRows(opts: SummaryOptions = {}): SummaryRow[] {
  const { numClasses = 1000, aux = true, imageSize = 224, batchSize = 10 } = opts;
  const sizes = spatialSizes(imageSize);
  const rows: SummaryRow[] = [];
  let channels = 3;
  for (const st of STAGES) {
    const s = sizes.get(st.name)!;
    switch (st.kind) {
      case 'conv':
        channels = st.spec.cout;
        rows.push({ name: st.name, type: 'BasicConv2d', outputShape: [batchSize, channels, s, s], params: basicParams(st.spec) });
        break;
      case 'maxpool':
        rows.push({ name: st.name, type: 'MaxPool2d', outputShape: [batchSize, channels, s, s], params: 0 });
        break;
      case 'inception': {
        const c = INCEPTIONS.find((i) => i.name === st.name)!;
        channels = c.ch1x1 + c.ch3x3 + c.ch5x5 + c.poolProj;
        const params = inceptionConvs(c).reduce((a, b) => a + basicParams(b.spec), 0);
        rows.push({ name: st.name, type: 'Inception', outputShape: [batchSize, channels, s, s], params });
        break;
      }
      case 'aux':
        if (aux) rows.push({ name: st.name, type: 'AuxClf', outputShape: [batchSize, numClasses], params: auxParams(st.cin, numClasses) });
        break;
      case 'head':
        if (st.name === 'avgpool') rows.push({ name: st.name, type: 'AdaptiveAvgPool2d', outputShape: [batchSize, FEATURES, 1, 1], params: 0 });
        if (st.name === 'dropout') rows.push({ name: st.name, type: 'Dropout', outputShape: [batchSize, FEATURES], params: 0 });
        if (st.name === 'fc') rows.push({ name: st.name, type: 'Linear', outputShape: [batchSize, numClasses], params: linearParams(FEATURES, numClasses) });
        break;
    }
  }
  return rows;
}

const num = (n: number): string => n.toLocaleString('en-US');

/** The table torchinfo's summary(model, input_size, depth=1) prints for the seed's model. */
export function formatSummary(opts: SummaryOptions = {}): string {
  const rows = summaryRows(opts);
  const total = rows.reduce((a, r) => a + r.params, 0);
  const rule = '='.repeat(93);
  const line = (a: string, b: string, c: string) => `${a.padEnd(46)}${b.padEnd(26)}${c}`.trimEnd();
  const out = [rule, line('Layer (type:depth-idx)', 'Output Shape', 'Param #'), rule, line('GoogLeNet', '--', '--')];
  rows.forEach((r, i) => {
    out.push(line(`├─${r.type}: 1-${i + 1}`, `[${r.outputShape.join(', ')}]`, r.params ? num(r.params) : '--'));
  });
  out.push(rule, `Total params: ${num(total)}`, `Trainable params: ${num(total)}`, 'Non-trainable params: 0', rule);
  return out.join('\n');
}
