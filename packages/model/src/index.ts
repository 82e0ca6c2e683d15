/** @googlenet/model: GoogLeNet on TensorFlow.js, its loss and gradients, backends, and PyTorch-compatible weights. */
export { selectBackend } from './backend.js';
export type { BackendName, BackendInfo, SelectBackendOptions, AdapterInfo } from './backend.js';
export { describeAdapter, WEBGPU_ADAPTER_ENV } from './backend.js';
export { GoogLeNet } from './googlenet.js';
export type { GoogLeNetOptions, GoogLeNetOutput, NamedVariable, ForwardOptions } from './googlenet.js';
export { googlenetLoss, computeGradients, crossEntropy, AUX_WEIGHT } from './loss.js';
export type { GradientResult } from './loss.js';
export { stateDict, loadStateDict, saveWeights, loadWeights } from './state-dict.js';
export { encodeSafetensors, decodeSafetensors } from './safetensors.js';
export type { HostTensor, Dtype } from './safetensors.js';
export { conv2d } from './conv.js';
export { nativeSgd, nativeActive, setNativeEnabled } from './native.js';
export type { Conv2dArgs } from './conv.js';
export { INCEPTIONS, STAGES, MIN_IMAGE_SIZE } from './architecture.js';
export type { InceptionConfig, ConvSpec, Stage } from './architecture.js';
export { summaryRows, formatSummary } from './summary.js';
export type { SummaryOptions, SummaryRow } from './summary.js';
export { BackendError, StateDictError, SafetensorsError, ModelError, CliError } from './errors.js';
