/**
 * Capture and replay of webgpu work (webgpu-replay.ts) on a small step: v <- 2 v + x, out = sum(v). CI runs it
 * on Mesa's lavapipe; without any adapter it says that it skipped, and fails where GOOGLENET_REQUIRE_WEBGPU=1.
 * The whole training step is tested in the trainer (step-replay.test.ts).
 */
import { describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { selectBackend } from './backend.js';
import { capture, diffRecordings, discardRecording, StepGraph } from './webgpu-replay.js';

const why = await selectBackend('webgpu').then(() => '', (e: Error) => e.message);
if (why) {
  if (process.env.GOOGLENET_REQUIRE_WEBGPU === '1') throw new Error(`GOOGLENET_REQUIRE_WEBGPU=1 but webgpu is unavailable: ${why}`);
  console.warn(`SKIPPED webgpu replay tests: ${why}`);
}

const N = 300;
const input = (k: number) => Float32Array.from({ length: N }, (_, i) => Math.sin(i + 7 * k));

/** One step: v is re-pointed to a new buffer (as assign does with BatchNorm's running statistics). */
function step(v: tf.Variable, x: Float32Array): tf.Tensor {
  return tf.tidy(() => {
    const y = tf.add(tf.mul(v, 2), tf.tensor1d(x));
    v.assign(y);
    return tf.sum(y);
  });
}

describe.skipIf(!!why)('webgpu capture and replay', () => {
  it('a replay with new inputs computes what the step computes, carried variables included; numTensors flat', async () => {
    await selectBackend('webgpu');
    const v = tf.variable(tf.zeros([N]));
    // Both captures name their input: recapture the first with a name as well.
    step(v, input(0)).dispose();
    const x1 = input(1);
    const a = capture(() => step(v, x1), { x: x1 });
    a.result.dispose();
    const x2 = input(2);
    const b = capture(() => step(v, x2), { x: x2 });
    expect(diffRecordings(a.recording!, b.recording!)).toBeNull();
    discardRecording(a.recording!);
    const graph = StepGraph.seal(b.recording!, [b.result]);
    b.result.dispose();
    const tensors = tf.memory().numTensors;
    // The host's reference: v <- 2 v + x from the same start.
    const ref = new Float64Array(N);
    for (const k of [0, 1, 2]) { const x = input(k); for (let i = 0; i < N; i++) ref[i] = Math.fround(Math.fround(2 * ref[i]!) + x[i]!); }
    for (const k of [3, 4, 5]) {
      const x = input(k);
      expect(graph.replay({ x }, {})).toBe(true);
      const [sum] = await graph.readOutputs();
      for (let i = 0; i < N; i++) ref[i] = Math.fround(Math.fround(2 * ref[i]!) + x[i]!);
      const want = ref.reduce((s, e) => s + e, 0);
      expect(Math.abs(sum![0]! - want)).toBeLessThanOrEqual(1e-5 * Math.abs(want));
      expect(tf.memory().numTensors).toBe(tensors);
    }
    expect(Array.from((await v.data()) as Float32Array)).toEqual(Array.from(ref, Math.fround));
    graph.dispose();
    v.dispose();
  });

  it('refuses a replay once a tensor the step reads was reassigned, and says so', async () => {
    await selectBackend('webgpu');
    const v = tf.variable(tf.zeros([N]));
    step(v, input(0)).dispose();
    const x1 = input(1);
    const a = capture(() => step(v, x1), { x: x1 });
    a.result.dispose();
    const x2 = input(2);
    const b = capture(() => step(v, x2), { x: x2 });
    discardRecording(a.recording!);
    const graph = StepGraph.seal(b.recording!, [b.result]);
    b.result.dispose();
    tf.tidy(() => v.assign(tf.ones([N]))); // e.g. a checkpoint loaded between steps
    expect(graph.invalidReason()).toMatch(/reassigned or freed/);
    expect(graph.replay({ x: input(3) }, {})).toBe(false);
    graph.dispose();
    v.dispose();
  });

  it('two captured steps whose uploads differ outside the named inputs are not one graph', async () => {
    await selectBackend('webgpu');
    const v = tf.variable(tf.zeros([N]));
    step(v, input(0)).dispose();
    const a = capture(() => step(v, input(1)), {});
    const b = capture(() => step(v, input(2)), {});
    expect(diffRecordings(a.recording!, b.recording!)).toMatch(/changes from step to step and is not a named input/);
    tf.dispose([a.result, b.result]);
    discardRecording(a.recording!);
    discardRecording(b.recording!);
    v.dispose();
  });
});
