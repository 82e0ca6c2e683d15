/**
 * The coordinator as a child of the launcher, so that it has an event loop of its own (never stalled by
 * the launcher) and can die and be restarted like any worker. Prints {"url": ...} once listening.
 */
import { startCoordinator, type CoordinatorOptions } from '@googlenet/coordinator';

process.on('disconnect', () => process.exit(1));

const opts = JSON.parse(process.env.GOOGLENET_COORDINATOR_OPTIONS ?? '{}') as CoordinatorOptions;
startCoordinator({ ...opts, log: (line) => process.stderr.write(line + '\n') }).then(
  (c) => {
    process.stdout.write(JSON.stringify({ url: c.url }) + '\n');
    const stop = () => void c.close().finally(() => process.exit(0));
    process.on('SIGTERM', stop);
    process.on('SIGINT', stop);
  },
  (e: Error & { code?: string }) => {
    process.stderr.write(`error${e.code ? ` [${e.code}]` : ''}: ${e.message}\n`);
    process.exit(1);
  },
);
