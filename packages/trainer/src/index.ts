export { TrainerError } from './errors';
export { parseFlags, helpText, type FlagSpec, type FlagValues } from './flags';
export { resolveTrainConfig, trainHelp, publicConfig, runFolderOf, TRAIN_FLAGS, type TrainConfig } from './config';
export { identityFromEnv, type WorkerIdentity } from './identity';
export {
  discoverGpus, parseNvidiaSmi, scanSysfs, normalizePciAddress, driPrimeTag, planWorkerGpus, webgpuPinEnv, workerDeviceEnv,
  pinThisProcess, deviceNote, nvidiaContainerHint, NVIDIA_SMI_ARGS, GPU_ENV, type GpuDevice, type GpuPin, type GpuDiscovery,
} from './devices';
export { learningRate, type LrScheduleName, type LrScheduleOptions } from './schedule';
export { Sgd, type SgdOptions } from './optim';
export { LocalReducer, CoordinatorReducer, type GradientReducer } from './reducer';
export { TrainStep, correctCounts, type StepTimes, type StepResult, type TrainStepOptions } from './step';
export {
  encodeCheckpoint, decodeCheckpoint, restoreCheckpoint, writeCheckpoint, findResumeCheckpoint, latestCheckpointFile, readCheckpointFile,
  removeStaleTemps, checkpointDir, CHECKPOINT_FORMAT, CHECKPOINT_VERSION, type CheckpointMeta, type DecodedCheckpoint, type CheckpointFs, type ResumePoint,
} from './checkpoint';
export { checkResumeConfig, RESUME_KEYS, type ResumeCheck } from './resume-check';
export { runWorker, evaluate, weightsDigest, summaryLines, type RunSummary, type EvalResult, type WorkerIo } from './worker';
export { runIdOf } from './run-id';
export { launch, type LaunchIo, type LaunchOptions } from './launcher';
export { renderChart, type ChartData } from './chart';
export { readInto } from './host';
export { evaluateSplit, type EvalDataOptions, type ConfusionEval } from './eval';
export { renderConfusion, type ConfusionChart } from './confusion-svg';
export { TensorBoardWriter, tfRecord, encodeEvent, recordScalars } from './tensorboard';
export { crc32c, maskedCrc32c } from './crc32c';
export { ModelEma, emaUpdate } from './ema';
export { clipCoefficient, clipFlatGradients, clipGradientTensors } from './grad-clip';
export { loadRecipe, recipeNames, RECIPES_DIR, type Recipe } from './recipe';
