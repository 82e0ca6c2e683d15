/**
 * V8 flags every training process should start with (the launcher gives them to its workers; `nx run
 * trainer:train` to the process it starts, which trains in place with one worker).
 *
 * --max-semi-space-size=64: a 32 px training step allocates ~9 MB of short-lived JS objects (tfjs's tensor and
 * tape records for ~2,500 kernels). With V8's default 16 MiB semi-space that is a scavenge every ~2 steps, each
 * a 3.5-6 ms pause spent copying what the step still holds; with 64 MiB, one every ~8 steps: scavenge pauses per
 * step 2.6 -> 0.45 ms (--trace-gc, 1 worker). It matters more with one worker per core (--cpu-bind): a
 * scavenge's parallel helper threads then find no idle core. Costs up to ~128 MB more memory per process.
 */
export const TRAIN_NODE_FLAGS: readonly string[] = ['--max-semi-space-size=64'];

/** The flags of TRAIN_NODE_FLAGS that neither `execArgv` nor NODE_OPTIONS already set (by name: theirs win). */
export function missingNodeFlags(execArgv: readonly string[], nodeOptions = ''): string[] {
  const given = [...execArgv, ...nodeOptions.split(/\s+/)].map((a) => a.split('=')[0]!.replace(/_/g, '-'));
  return TRAIN_NODE_FLAGS.filter((f) => !given.includes(f.split('=')[0]!));
}
