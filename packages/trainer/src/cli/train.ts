/**
 * `nx run trainer:train [flags]`: the product's main command.
 *  - started by a scheduler (torchrun's RANK/WORLD_SIZE or Slurm's SLURM_PROCID/SLURM_NTASKS set): run as that one rank;
 *  - --workers=1 on one node without restarts: train in this process, no coordinator, no sockets;
 *  - otherwise: launch the coordinator and one worker process per local device, and supervise them.
 */
import { exitWith } from '@googlenet/flags';
import { resolveTrainConfig, trainHelp, type TrainConfig } from '../config';
import { identityFromEnv } from '../identity';
import { launch } from '../launcher';
import { runWorker } from '../worker';

async function main(argv: string[]): Promise<number> {
  const resolved = resolveTrainConfig(argv);
  if (resolved === 'help') {
    process.stdout.write(trainHelp() + '\n');
    return 0;
  }
  let cfg: TrainConfig = resolved;
  const io = { write: (s: string) => process.stdout.write(s), error: (s: string) => process.stderr.write(s + '\n'), tty: Boolean(process.stdout.isTTY) };

  const scheduled = identityFromEnv({ ...process.env, ...(cfg.coordinator ? { GOOGLENET_COORDINATOR_URL: cfg.coordinator } : {}) });
  if (scheduled) {
    cfg = { ...cfg, workers: 1 };
    await runWorker(cfg, scheduled, io);
    return 0;
  }
  if (cfg.workers === 1 && cfg.nnodes === 1 && !cfg.coordinator && cfg.maxRestarts === 0) {
    await runWorker(cfg, { rank: 0, worldSize: 1, localRank: 0, attempt: 0 }, io);
    return 0;
  }
  return launch(cfg, io);
}

exitWith(main(process.argv.slice(2)));
