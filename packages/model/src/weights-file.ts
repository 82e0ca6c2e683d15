/**
 * Reading trained weights for inference (export, evaluation): a `.safetensors` state_dict, a trainer
 * checkpoint (`.ckpt`: the same names plus `optimizer.*` tensors), or a run folder (its model.safetensors).
 * Every failure is one WeightsError line naming the file, what is wrong and what to do.
 */
import { readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { GoogLeNet } from './googlenet.js';
import { decodeSafetensors, type HostTensor } from './safetensors.js';
import { loadStateDict } from './state-dict.js';

export type WeightsErrorCode = 'WEIGHTS_NOT_FOUND' | 'WEIGHTS_UNREADABLE' | 'WEIGHTS_MISMATCH';

export class WeightsError extends Error {
  readonly code: WeightsErrorCode;
  constructor(code: WeightsErrorCode, message: string) {
    super(message);
    this.name = 'WeightsError';
    this.code = code;
  }
}

export interface WeightsFile {
  /** The file actually read (a run folder resolves to its model.safetensors). */
  file: string;
  /** PyTorch names and layouts; `optimizer.*` tensors of checkpoints are dropped. */
  tensors: Map<string, HostTensor>;
  /** fc.bias's length. */
  numClasses: number;
}

export async function readWeightsFile(path: string): Promise<WeightsFile> {
  let file = path;
  try {
    if ((await stat(path)).isDirectory()) file = join(path, 'model.safetensors');
  } catch {
    throw new WeightsError('WEIGHTS_NOT_FOUND', `${path} does not exist; give --weights=<run folder>, <file>.safetensors or <file>.ckpt`);
  }
  let bytes: Buffer;
  try {
    bytes = await readFile(file);
  } catch {
    throw new WeightsError('WEIGHTS_NOT_FOUND', `${file} does not exist (a run folder holds model.safetensors once training has finished; ` +
      `for an unfinished run give one of its checkpoints/*.ckpt)`);
  }
  let tensors: Map<string, HostTensor>;
  try {
    tensors = decodeSafetensors(new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength)).tensors;
  } catch (e) {
    throw new WeightsError('WEIGHTS_UNREADABLE', `${file} is not a readable safetensors file (${(e as Error).message}); ` +
      `was it copied completely? Re-copy it or use another checkpoint`);
  }
  for (const name of [...tensors.keys()]) if (name.startsWith('optimizer.')) tensors.delete(name);
  const bias = tensors.get('fc.bias');
  if (!bias || bias.shape.length !== 1) {
    throw new WeightsError('WEIGHTS_MISMATCH', `${file} has no fc.bias tensor: it is not a GoogLeNet state_dict of the seed's model`);
  }
  return { file, tensors, numClasses: bias.shape[0]! };
}

/**
 * An inference model (no aux heads) holding the file's weights. `numClasses`, when given, must match the
 * file's classifier.
 */
export function inferenceModel(w: WeightsFile, numClasses?: number, what = 'the data set'): GoogLeNet {
  if (numClasses !== undefined && numClasses !== w.numClasses) {
    throw new WeightsError('WEIGHTS_MISMATCH', `${w.file} has ${w.numClasses} classes (fc.bias) but ${what} has ${numClasses}; ` +
      `use weights trained on ${what}`);
  }
  const model = new GoogLeNet({ numClasses: w.numClasses, aux: false });
  try {
    loadStateDict(model, w.tensors);
  } catch (e) {
    model.dispose();
    const problems = (e as { problems?: readonly string[] }).problems;
    if (!problems) throw e;
    const shown = problems.slice(0, 3).join('; ') + (problems.length > 3 ? `; and ${problems.length - 3} more` : '');
    throw new WeightsError('WEIGHTS_MISMATCH', `${w.file} does not fit GoogLeNet(numClasses=${w.numClasses}): ${shown}; ` +
      `it must be a state_dict of the seed's model (as model.safetensors or a checkpoint)`);
  }
  return model;
}
