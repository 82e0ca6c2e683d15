/**
 * Initial values as torchvision's GoogLeNet(init_weights=True): conv and linear weights from a normal with
 * std 0.01 truncated at +-2 std, linear biases 0, BatchNorm weight 1 and bias 0 (running mean 0, var 1).
 * Each tensor draws from its own stream keyed by (seed, state_dict name), so a tensor's values do not depend
 * on which other tensors exist (an aux=false model gets the same backbone as an aux=true one).
 */
import { hashString, streamKey, truncatedNormal } from './prng.js';

export const INIT_STD = 0.01;
export const INIT_TRUNCATION = 2; // in standard deviations

/** What a tensor is, by its state_dict name. */
export type TensorRole = 'weight' | 'bias' | 'bn_weight' | 'bn_bias' | 'running_mean' | 'running_var';

export function initialValues(name: string, size: number, role: TensorRole, seed: number): Float32Array {
  const out = new Float32Array(size);
  switch (role) {
    case 'weight':
      truncatedNormal(out, streamKey(seed, hashString(name)), INIT_STD, INIT_TRUNCATION);
      break;
    case 'bn_weight':
    case 'running_var':
      out.fill(1);
      break;
    default:
      break; // zeros
  }
  return out;
}
