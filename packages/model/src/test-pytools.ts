/**
 * Python tools the export tests check against (onnx, onnxruntime): no Debian package has them, so .ci/run
 * pip-installs them into a venv. Where they are missing a test prints `SKIPPED <test>: needs ...` and skips;
 * GOOGLENET_REQUIRE_PYTOOLS=1 (set by .ci/run after installing them) turns that into a failure.
 * Not part of the package's API.
 */
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';

const repoRoot = join(import.meta.dirname, '../../..');

/** GOOGLENET_PYTHON, else the venv .ci/run makes (/opt/googlenet-venv or <repo>/.venv), else python3. */
export function toolsPython(): string {
  const candidates = [process.env.GOOGLENET_PYTHON, '/opt/googlenet-venv/bin/python', join(repoRoot, '.venv/bin/python')];
  return candidates.find((p): p is string => !!p && existsSync(p)) ?? 'python3';
}

/** True when `python -c "import <modules>"` works; else prints SKIPPED (or throws where required). */
export function hasPythonModules(test: string, modules: string[]): boolean {
  const python = toolsPython();
  const r = spawnSync(python, ['-c', `import ${modules.join(', ')}`], { encoding: 'utf8' });
  if (r.status === 0) return true;
  const why = (r.stderr || r.error?.message || '').trim().split('\n').pop();
  const line = `${test}: needs the Python packages ${modules.join(', ')} in ${python} ` +
    `(python3 -m venv /opt/googlenet-venv && /opt/googlenet-venv/bin/pip install ${modules.join(' ')}); ${why}`;
  if (process.env.GOOGLENET_REQUIRE_PYTOOLS === '1') throw new Error(`GOOGLENET_REQUIRE_PYTOOLS=1 but ${line}`);
  console.warn(`SKIPPED ${line}`);
  return false;
}
