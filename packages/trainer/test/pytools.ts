/**
 * The Python-tools check (tensorboard, onnx, onnxruntime in the venv .ci/run makes) is the model package's
 * test helper: one definition of where the venv is and how a missing tool says SKIPPED.
 */
export { hasPythonModules, toolsPython } from '../../model/src/test-pytools';
