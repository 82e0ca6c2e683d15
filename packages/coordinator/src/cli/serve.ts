// nx run coordinator:serve --port=P --workers=N [--host=ADDR --token=... --tls-cert=... --tls-key=...
//   --round-timeout=MS --rendezvous-timeout=MS --max-message-bytes=B --run-id=ID]
// Stand-alone coordinator for multi-machine jobs. After a job ends or aborts it accepts a new rendezvous
// (the next generation), so workers restarted for another attempt can join without restarting it.
import { parseArgs } from 'node:util';
import { CoordinatorError, TOKEN_ENV, startCoordinator } from '../index.js';

const USAGE = `usage: nx run coordinator:serve --port=P --workers=N [options]

  --port=P                 TCP port (0 = ephemeral)                          required
  --workers=N              workers per job                                   required
  --host=ADDR              bind address; non-loopback needs a token          127.0.0.1
  --token=T                shared secret (or env ${TOKEN_ENV})
  --tls-cert=PEM           certificate file: serve wss:// (needs --tls-key)
  --tls-key=PEM            private key file
  --round-timeout=MS       abort a collective a rank has not delivered       30000
  --rendezvous-timeout=MS  all ranks must join within                        120000
  --max-message-bytes=B    largest accepted message                          67108864
  --run-id=ID              run id workers must present                        first worker's
  --help                   this text`;

function fail(message: string): never {
  console.error(`serve: ${message}\n\n${USAGE}`);
  process.exit(2);
}

function int(name: string, v: string | undefined, min: number): number | undefined {
  if (v === undefined) return undefined;
  if (!/^\d+$/.test(v) || Number(v) < min) fail(`--${name} must be an integer >= ${min}, got '${v}'`);
  return Number(v);
}

let args;
try {
  args = parseArgs({
    options: {
      port: { type: 'string' }, workers: { type: 'string' }, host: { type: 'string' }, token: { type: 'string' },
      'tls-cert': { type: 'string' }, 'tls-key': { type: 'string' }, 'round-timeout': { type: 'string' },
      'rendezvous-timeout': { type: 'string' }, 'max-message-bytes': { type: 'string' }, 'run-id': { type: 'string' },
      help: { type: 'boolean' },
    },
    strict: true,
  }).values;
} catch (e) {
  fail((e as Error).message);
}
if (args.help) {
  console.log(USAGE);
  process.exit(0);
}
if (args.port === undefined) fail('--port is required');
if (args.workers === undefined) fail('--workers is required');
if ((args['tls-cert'] === undefined) !== (args['tls-key'] === undefined)) fail('--tls-cert and --tls-key go together');

try {
  const coord = await startCoordinator({
    port: int('port', args.port, 0)!,
    worldSize: int('workers', args.workers, 1)!,
    host: args.host,
    token: args.token,
    runId: args['run-id'],
    tls: args['tls-cert'] ? { cert: args['tls-cert'], key: args['tls-key']! } : undefined,
    roundTimeoutMs: int('round-timeout', args['round-timeout'], 1),
    rendezvousTimeoutMs: int('rendezvous-timeout', args['rendezvous-timeout'], 1),
    maxMessageBytes: int('max-message-bytes', args['max-message-bytes'], 4096),
    log: (line) => console.log(`${new Date().toISOString()} ${line}`),
  });
  const stop = () => void coord.close().then(() => process.exit(0));
  process.on('SIGINT', stop);
  process.on('SIGTERM', stop);
} catch (e) {
  if (e instanceof CoordinatorError) fail(`${e.code}: ${e.message}`);
  throw e;
}
