import { afterAll, describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { GoogLeNet } from './googlenet.js';
import { computeGradients } from './loss.js';
import { randomInput, useBackend } from './test-utils.js';

// The gradient tap behind --overlap: every parameter's gradient is handed out once, during the backward, as the
// very tensor variableGrads returns (nothing is added to it afterwards), the last layers first.
describe.each(['wasm', 'cpu'] as const)('gradient tap on %s', (backend) => {
  let model: GoogLeNet | undefined;
  afterAll(() => model?.dispose());

  it('hands every parameter gradient out once, final, in reverse layer order, with no tensor left behind', async () => {
    await useBackend(backend);
    model = new GoogLeNet({ numClasses: 10, seed: 2 });
    const index = new Map(model.params.map((p, i) => [p.variable.id, i]));
    const run = () => {
      const seen: { i: number; id: number; values: Float32Array }[] = [];
      const before = tf.memory().numTensors;
      tf.tidy(() => {
        const x = randomInput([2, 32, 32, 3], 5);
        const r = computeGradients(model!, x, tf.tensor1d([3, 7], 'int32'), {
          auxWeight: 0.3, dropoutSeed: 4,
          onGradient: (param, grad) => seen.push({ i: index.get(param.id) ?? -1, id: grad.id, values: grad.dataSync() as Float32Array }),
        });
        expect(seen.map((s) => s.i).sort((a, b) => a - b)).toEqual(model!.params.map((_, i) => i));
        for (const s of seen) {
          expect(r.grads[s.i]!.id).toBe(s.id); // the tensor seen is the one returned: no later accumulation
          expect(Buffer.from(r.grads[s.i]!.dataSync().buffer).equals(Buffer.from(s.values.buffer))).toBe(true);
        }
      });
      expect(tf.memory().numTensors).toBe(before);
      return seen.map((s) => model!.params[s.i]!.name);
    };
    const order = run();
    expect(run()).toEqual(order); // the same order every step (buckets are planned from it)
    // The main classifier comes first, conv1 last; the aux heads between the stages they branch from.
    expect(order[0]).toMatch(/^fc\./);
    expect(order.at(-1)).toMatch(/^conv1\./);
    expect(order.findIndex((n) => n.startsWith('aux2.'))).toBeLessThan(order.findIndex((n) => n.startsWith('inception4d.')));
    expect(order.findIndex((n) => n.startsWith('aux1.'))).toBeGreaterThan(order.findIndex((n) => n.startsWith('inception4b.')));
  }, 120_000);
});
