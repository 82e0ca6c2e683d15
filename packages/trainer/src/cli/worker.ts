/**
 * A worker process started by the launcher: its config arrives as JSON in GOOGLENET_CONFIG_JSON and its
 * identity in RANK / WORLD_SIZE / LOCAL_RANK / GOOGLENET_COORDINATOR_URL.
 */
import { identityFromEnv } from '../identity';
import { runWorker } from '../worker';
import type { TrainConfig } from '../config';
import { TrainerError } from '../errors';
import { EXIT_NO_RESTART, NO_RESTART_CODES } from '../exit-codes';

// A worker never outlives its launcher: the IPC channel closes when the launcher dies, however it dies.
process.on('disconnect', () => process.exit(1));
process.on('SIGTERM', () => process.exit(143));

async function main(): Promise<number> {
  const raw = process.env.GOOGLENET_CONFIG_JSON;
  if (!raw) throw new TrainerError('BAD_ENV', 'GOOGLENET_CONFIG_JSON is not set: start workers with `nx run trainer:train`');
  const cfg = JSON.parse(raw) as TrainConfig;
  const id = identityFromEnv();
  if (!id) throw new TrainerError('BAD_ENV', 'RANK and WORLD_SIZE are not set');
  await runWorker(cfg, id, { write: (s) => process.stdout.write(s), tty: process.env.GOOGLENET_TTY === '1' });
  return 0;
}

main().then(
  (code) => process.exit(code),
  (e: unknown) => {
    const err = e as Error & { code?: string };
    process.stderr.write(`error${err.code ? ` [${err.code}]` : ''}: ${err.message}\n`);
    if (!err.code && err.stack) process.stderr.write(err.stack + '\n');
    process.exit(err.code && NO_RESTART_CODES.has(err.code) ? EXIT_NO_RESTART : 1);
  },
);
