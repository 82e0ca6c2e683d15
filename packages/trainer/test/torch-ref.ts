/**
 * PyTorch as the reference of a test, computed in the test itself: a short script run by Debian's
 * /usr/bin/python3 (python3-torch) that reads JSON on stdin and prints JSON. Where torch is missing the test
 * prints `SKIPPED <test>: needs python3-torch (apt-get install python3-torch)` and skips, unless
 * GOOGLENET_REQUIRE_TORCH=1 (CI), which fails it (the model package's test-prereqs helper).
 */
import { spawnSync } from 'node:child_process';
import { hasSystemPrerequisite } from '../../model/src/test-prereqs';

export const PYTHON = '/usr/bin/python3';

/** Why /usr/bin/python3 cannot import torch, or undefined when it can. */
function torchMissing(): string | undefined {
  const r = spawnSync(PYTHON, ['-c', 'import torch.nn'], { encoding: 'utf8' });
  if (r.status === 0) return undefined;
  return `${PYTHON} cannot import torch (${(r.stderr || r.error?.message || '').trim().split('\n').at(-1)})`;
}

/** True when torch is there; else prints SKIPPED for `test` (or throws under GOOGLENET_REQUIRE_TORCH=1). */
export function haveTorch(test: string): boolean {
  return hasSystemPrerequisite({ test, pkg: 'python3-torch', require: 'GOOGLENET_REQUIRE_TORCH', missing: torchMissing() });
}

/** Runs `script` with `input` as JSON on stdin; returns what it printed, parsed. */
export function runTorch<T>(script: string, input: unknown): T {
  const r = spawnSync(PYTHON, ['-c', script], { input: JSON.stringify(input), encoding: 'utf8', maxBuffer: 64 << 20 });
  if (r.status !== 0) throw new Error(`the torch reference failed (${r.status}): ${r.stderr}`);
  return JSON.parse(r.stdout) as T;
}
