import type * as tf from '@tensorflow/tfjs';
import type { GoogLeNet, GradTap } from '@googlenet/model';
import { readInto } from './host';

/**
 * Copies each parameter's gradient into the step's flat vector the moment the backward produces it (the model's
 * gradient tap), while it is still in cache, instead of all 13.4 M values from memory after the backward: one
 * pass over the vector less at the end of the step, at the moment every rank does the same (the ranks run in
 * lockstep, so that pass took the memory bandwidth of both at once). Wasm only: there a gradient is read in
 * place on the heap (host.ts readInto); other backends read it with a transfer each.
 *
 * A gradient the tap saw is final unless tfjs adds to it later (a parameter feeding several ops; none here), so
 * after the backward every returned gradient is checked against the tensor the tap copied and copied again
 * where they differ: the vector always ends with the returned gradients.
 */
export class EagerGradCopy {
  private readonly index: Map<number, number>;
  /** Per step: the gradient tensor id copied for each param (-1: none yet). */
  private readonly seen: Int32Array;

  constructor(model: GoogLeNet, private readonly flat: Float32Array, private readonly paramOffsets: readonly number[]) {
    this.index = new Map(model.params.map((p, i) => [p.variable.id, i]));
    this.seen = new Int32Array(model.params.length).fill(-1);
  }

  /** Before the backward. */
  begin(): void {
    this.seen.fill(-1);
  }

  readonly tap: GradTap = (param, grad) => {
    const i = this.index.get(param.id);
    if (i === undefined) return;
    readInto(grad, this.flat, this.paramOffsets[i]!);
    this.seen[i] = grad.id;
  };

  /** After the backward: copies every returned gradient the tap did not copy as it is. Returns how many. */
  finish(grads: readonly tf.Tensor[]): number {
    let late = 0;
    for (let i = 0; i < grads.length; i++) {
      if (this.seen[i] === grads[i]!.id) continue;
      readInto(grads[i]!, this.flat, this.paramOffsets[i]!);
      late++;
    }
    return late;
  }
}
