import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const SERVE = fileURLToPath(new URL('./serve.ts', import.meta.url));
const serve = (...args: string[]) => spawnSync(process.execPath, ['--import', 'tsx', SERVE, ...args], { encoding: 'utf8', timeout: 60_000 });

describe('coordinator:serve flags', () => {
  it('prints help for -h and --help, listing the required flags', () => {
    for (const h of ['-h', '--help']) {
      const r = serve(h);
      expect(r.status).toBe(0);
      expect(r.stdout).toMatch(/--port=<int>\s+TCP port \(0 = ephemeral\) \(required\)/);
      expect(r.stdout).toMatch(/--data-plane=<auto\|shm\|peer\|coordinator>/);
    }
  });

  it('rejects a missing, unknown or malformed flag with one BAD_FLAG line and exit status 2', () => {
    for (const [args, message] of [
      [['--workers=2'], 'error [BAD_FLAG]: --port is required'],
      [['--port=0', '--workerz=2'], 'error [BAD_FLAG]: unknown flag --workerz (did you mean --workers?)'],
      [['--port=0', '--workers=0'], 'error [BAD_FLAG]: --workers=0 is invalid: expected an integer >= 1'],
      [['--port=0', '--workers=1', '--roundTimeout=soon'], 'error [BAD_FLAG]: --round-timeout=soon is invalid'],
      [['--port=0', '--workers=1', '--data-plane=udp'], 'error [BAD_FLAG]: --data-plane=udp is invalid'],
    ] as const) {
      const r = serve(...args);
      expect(r.status, r.stderr).toBe(2);
      expect(r.stderr).toContain(message);
      expect(r.stderr).not.toContain('    at '); // no stack trace
    }
  });
});
