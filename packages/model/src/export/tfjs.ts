/**
 * GoogLeNet's inference graph (no aux heads) as a TF.js Layers model: model.json + 4 MiB weight shards, the
 * format `tf.loadLayersModel('…/model.json')` reads in a browser (or `file://` with tfjs-node) with no project
 * code: only stock Keras layers. Input NHWC float32 [N, S, S, 3] normalised as in training; output the logits.
 * PyTorch's paddings become explicit ZeroPadding2D where TF's 'same' would pad differently (conv1, stride 2),
 * and each ceil-mode max pool pads the bottom/right: its input is a ReLU output (>= 0), so a zero never wins
 * over the window's own values, exactly as PyTorch's -inf padding. The graph is built for one image size S.
 */
import * as tf from '@tensorflow/tfjs';
import { type ConvSpec, MIN_IMAGE_SIZE, STAGES, convOutSize, inceptionConvs, maxPoolCeilSize } from '../architecture.js';
import { BN_EPS } from '../batchnorm.js';
import { ModelError } from '../errors.js';
import type { GoogLeNet } from '../googlenet.js';

const SHARD_BYTES = 4 * 1024 * 1024; // tensorflowjs_converter's default shard size

export interface TfjsExport {
  /** model.json's contents. */
  modelJson: Record<string, unknown>;
  /** Weight shards, named as model.json's weightsManifest lists them. */
  shards: { name: string; bytes: Uint8Array }[];
}

const layerName = (torchPath: string) => torchPath.replace(/\./g, '_');

/** Builds the Layers model from `model`'s weights (an aux-free or full GoogLeNet) and serialises it. */
export async function exportTfjs(model: GoogLeNet, imageSize: number): Promise<TfjsExport> {
  if (!Number.isInteger(imageSize) || imageSize < MIN_IMAGE_SIZE) {
    throw new ModelError('INVALID_OPTION', `--image-size=${imageSize}: GoogLeNet needs at least ${MIN_IMAGE_SIZE} px`);
  }
  const vars = new Map([...model.params, ...model.buffers].map((p) => [p.name, p.variable as tf.Tensor]));
  const get = (name: string) => vars.get(name)!;
  const assignments: [tf.layers.Layer, tf.Tensor[]][] = [];
  const input = tf.input({ shape: [imageSize, imageSize, 3], name: 'input' });

  const basic = (prefix: string, spec: ConvSpec, x: tf.SymbolicTensor): tf.SymbolicTensor => {
    const { k, stride, pad } = spec;
    const same = stride === 1 && pad * 2 === k - 1;
    if (!same && pad > 0) x = tf.layers.zeroPadding2d({ padding: pad, name: `${layerName(prefix)}_pad` }).apply(x) as tf.SymbolicTensor;
    const conv = tf.layers.conv2d({ filters: spec.cout, kernelSize: k, strides: stride, padding: same ? 'same' : 'valid', useBias: false, name: layerName(`${prefix}.conv.0`) });
    const bn = tf.layers.batchNormalization({ axis: -1, epsilon: BN_EPS, name: layerName(`${prefix}.conv.1`) });
    const y = tf.layers.reLU({ name: layerName(`${prefix}.conv.2`) }).apply(bn.apply(conv.apply(x))) as tf.SymbolicTensor;
    assignments.push([conv, [get(`${prefix}.conv.0.weight`)]]);
    assignments.push([bn, ['weight', 'bias', 'running_mean', 'running_var'].map((s) => get(`${prefix}.conv.1.${s}`))]);
    return y;
  };

  let x = input;
  let size = imageSize;
  for (const st of STAGES) {
    if (st.kind === 'conv') {
      x = basic(st.name, st.spec, x);
      size = convOutSize(size, st.spec);
    } else if (st.kind === 'maxpool') {
      const out = maxPoolCeilSize(size);
      const pad = (out - 1) * 2 + 3 - size; // bottom/right rows a 'valid' 3x3/2 pool needs to give the ceil size
      if (pad > 0) x = tf.layers.zeroPadding2d({ padding: [[0, pad], [0, pad]], name: `${st.name}_pad` }).apply(x) as tf.SymbolicTensor;
      x = tf.layers.maxPooling2d({ poolSize: 3, strides: 2, padding: 'valid', name: st.name }).apply(x) as tf.SymbolicTensor;
      size = out;
    } else if (st.kind === 'inception') {
      const c = Object.fromEntries(inceptionConvs(st.cfg).map((b) => [b.path, b.spec]));
      const conv = (path: string, from: tf.SymbolicTensor) => basic(`${st.name}.${path}`, c[path]!, from);
      // MaxPool2d(3, 1, padding 1): TF's 'same' max pool ignores its padding, as -inf padding does.
      const pooled = tf.layers.maxPooling2d({ poolSize: 3, strides: 1, padding: 'same', name: layerName(`${st.name}.branch4.0`) }).apply(x) as tf.SymbolicTensor;
      x = tf.layers.concatenate({ axis: -1, name: st.name }).apply([
        conv('branch1', x),
        conv('branch2.1', conv('branch2.0', x)),
        conv('branch3.1', conv('branch3.0', x)),
        conv('branch4.1', pooled),
      ]) as tf.SymbolicTensor;
    } else if (st.kind === 'head' && st.name === 'fc') {
      const pooled = tf.layers.globalAveragePooling2d({ name: 'avgpool' }).apply(x) as tf.SymbolicTensor; // N x 1024
      const fc = tf.layers.dense({ units: model.numClasses, name: 'fc' });
      x = fc.apply(pooled) as tf.SymbolicTensor;                                                          // N x classes
      assignments.push([fc, [get('fc.weight'), get('fc.bias')]]);
    }
  }
  const layersModel = tf.model({ inputs: input, outputs: x, name: 'googlenet' });
  try {
    for (const [layer, weights] of assignments) layer.setWeights(weights);
    let artifacts: tf.io.ModelArtifacts | undefined;
    await layersModel.save(tf.io.withSaveHandler(async (a) => {
      artifacts = a;
      return { modelArtifactsInfo: { dateSaved: new Date(), modelTopologyType: 'JSON' } };
    }));
    const a = artifacts!;
    const data = new Uint8Array(tf.io.CompositeArrayBuffer.join(a.weightData!));
    const count = Math.max(1, Math.ceil(data.length / SHARD_BYTES));
    const shards = Array.from({ length: count }, (_, i) => ({
      name: `group1-shard${i + 1}of${count}.bin`,
      bytes: data.subarray(i * SHARD_BYTES, Math.min(data.length, (i + 1) * SHARD_BYTES)),
    }));
    const modelJson = {
      format: 'layers-model',
      generatedBy: `TensorFlow.js tfjs-layers v${tf.version.tfjs}`,
      convertedBy: 'googlenet-dp model:export',
      modelTopology: a.modelTopology,
      weightsManifest: [{ paths: shards.map((s) => s.name), weights: a.weightSpecs }],
    };
    return { modelJson, shards };
  } finally {
    layersModel.dispose();
  }
}
