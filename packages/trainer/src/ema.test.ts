import * as tf from '@tensorflow/tfjs';
import { describe, expect, it } from 'vitest';
import { GoogLeNet, stateDict } from '@googlenet/model';
import { emaUpdate, ModelEma } from './ema';
import { haveTorch, runTorch } from '../test/torch-ref';

// A module with one parameter and one buffer; AveragedModel copies it on the first update, then averages
// both (use_buffers=True) with the usual EMA formula after each "optimizer step" (here: new values).
const TORCH_EMA = `
import json, sys, torch
from torch.optim.swa_utils import AveragedModel
a = json.load(sys.stdin)
d = a['decay']
class M(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.tensor(a['steps'][0]['w']))
        self.register_buffer('b', torch.tensor(a['steps'][0]['b']))
m = M()
ema = AveragedModel(m, avg_fn=lambda e, w, n: d * e + (1 - d) * w, use_buffers=True)
ema.update_parameters(m)
for s in a['steps'][1:]:
    with torch.no_grad():
        m.w.copy_(torch.tensor(s['w']))
        m.b.copy_(torch.tensor(s['b']))
    ema.update_parameters(m)
print(json.dumps({'w': ema.module.w.tolist(), 'b': ema.module.b.tolist()}))
`;

const steps = [
  { w: [1, -2, 0.5], b: [0.1, 0.2] },
  { w: [1.5, -1, 0], b: [0.3, -0.2] },
  { w: [0.5, 0, 2], b: [1, 1] },
  { w: [-1, 3, 1], b: [0, 0.5] },
];

describe.skipIf(!haveTorch('weight EMA vs PyTorch'))('weight EMA vs PyTorch', () => {
  it('follows AveragedModel(avg_fn = d*ema + (1-d)*w, use_buffers=True) over weights and buffers', async () => {
    const decay = 0.9;
    const want = runTorch<{ w: number[]; b: number[] }>(TORCH_EMA, { decay, steps });
    await tf.setBackend('cpu');
    const src = [tf.variable(tf.tensor1d(steps[0]!.w)), tf.variable(tf.tensor1d(steps[0]!.b))];
    const ema = src.map((v) => tf.variable(v.clone()));
    for (const s of steps.slice(1)) {
      src[0]!.assign(tf.tensor1d(s.w));
      src[1]!.assign(tf.tensor1d(s.b));
      const before = tf.memory().numTensors;
      emaUpdate(ema, src, decay);
      expect(tf.memory().numTensors).toBe(before);
    }
    Array.from(ema[0]!.dataSync()).forEach((v, i) => expect(v).toBeCloseTo(want.w[i]!, 6));
    Array.from(ema[1]!.dataSync()).forEach((v, i) => expect(v).toBeCloseTo(want.b[i]!, 6));
    tf.dispose([...src, ...ema]);
  });
});

describe('the EMA of a GoogLeNet', () => {
  it('starts at the weights, averages params and BN statistics each update, and resumes from saved tensors', async () => {
    await tf.setBackend('cpu');
    const model = new GoogLeNet({ numClasses: 3, aux: true, seed: 1 });
    const ema = ModelEma.create(model, 0.5);
    const p = model.params[0]!.variable;
    const b = model.buffers.find((x) => x.name.endsWith('running_var'))!.variable;
    const [p0, b0] = [p.dataSync()[0]!, b.dataSync()[0]!];
    expect(ema.model.params[0]!.variable.dataSync()[0]).toBe(p0);
    tf.tidy(() => {
      p.assign(tf.add(p, 1));
      b.assign(tf.mul(b, 3));
    });
    model.numBatchesTracked = 7;
    const before = tf.memory().numTensors;
    ema.update();
    expect(tf.memory().numTensors).toBe(before);
    expect(ema.model.params[0]!.variable.dataSync()[0]).toBeCloseTo(p0 + 0.5, 5);
    expect(ema.model.buffers.find((x) => x.name.endsWith('running_var'))!.variable.dataSync()[0]).toBeCloseTo(2 * b0, 5);
    expect(ema.model.numBatchesTracked).toBe(7);

    const saved = await stateDict(ema.model);
    const resumed = ModelEma.create(model, 0.5, saved);
    expect(resumed.model.params[0]!.variable.dataSync()[0]).toBeCloseTo(p0 + 0.5, 6);
    for (const e of [ema, resumed]) e.dispose();
    model.dispose();
  });
});

describe('the EMA update on wasm', () => {
  it('takes the native in-place kernel and holds the same bits as the tensor path, numTensors flat', async () => {
    const { selectBackend, setNativeEnabled, nativeActive, nativeProfile } = await import('@googlenet/model');
    await selectBackend('wasm');
    if (!nativeActive()) throw new Error('the native kernels are not built: run `npm rebuild @googlenet/model` (needs g++)');
    const shapes = [[3, 5], [7]];
    const make = (phase: number) => shapes.map((s, i) =>
      tf.tidy(() => tf.variable(tf.tensor(Float32Array.from({ length: s.reduce((a, b) => a * b) }, (_, k) => Math.sin(k * 1.7 + i + phase)), s))));
    const src = make(0);
    const [fast, slow] = [make(1), make(1)];
    const decay = 0.999;
    nativeProfile(true);
    for (let step = 0; step < 4; step++) {
      src.forEach((v, i) => v.assign(tf.tidy(() => tf.mul(v, 1.1 + 0.01 * i + step))));
      const before = tf.memory().numTensors;
      setNativeEnabled(true);
      emaUpdate(fast, src, decay);
      setNativeEnabled(false);
      emaUpdate(slow, src, decay);
      expect(tf.memory().numTensors).toBe(before);
    }
    setNativeEnabled(true);
    expect(nativeProfile(true).find((r) => r.name === 'native ema')?.calls).toBe(4);
    fast.forEach((v, i) => expect(Buffer.from((v.dataSync() as Float32Array).buffer)
      .equals(Buffer.from((slow[i]!.dataSync() as Float32Array).buffer))).toBe(true));
    tf.dispose([...src, ...fast, ...slow]);
  });
});
