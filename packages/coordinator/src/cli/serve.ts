// nx run coordinator:serve --port=P --workers=N [--host=ADDR --token=... --tls-cert=... --tls-key=...
//   --round-timeout=MS --rendezvous-timeout=MS --max-message-bytes=B --run-id=ID --data-plane=auto|shm|peer|coordinator]
// Stand-alone coordinator for multi-machine jobs. After a job ends or aborts it accepts a new rendezvous
// (the next generation), so workers restarted for another attempt can join without restarting it.
import { FlagError, helpText, parseFlags, type FlagTable } from '@googlenet/flags';
import { CoordinatorError, TOKEN_ENV, startCoordinator } from '../index.js';

// Timeouts and the size cap have no default here: absent, the library's own defaults apply (quoted in the help).
const FLAGS = {
  port: { type: 'int', min: 0, max: 65535, required: true, help: 'TCP port (0 = ephemeral)' },
  workers: { type: 'int', min: 1, required: true, help: 'workers per job' },
  host: { type: 'string', default: '127.0.0.1', help: 'bind address; non-loopback needs a token' },
  token: { type: 'string', help: `shared secret (or env ${TOKEN_ENV})` },
  'tls-cert': { type: 'string', help: 'certificate file: serve wss:// (needs --tls-key)' },
  'tls-key': { type: 'string', help: 'private key file' },
  'round-timeout': { type: 'int', min: 1, help: 'ms: abort a collective a rank has not delivered (default 30000)' },
  'rendezvous-timeout': { type: 'int', min: 1, help: 'ms: all ranks must join within (default 120000)' },
  'max-message-bytes': { type: 'int', min: 4096, help: 'largest accepted message (default 67108864)' },
  'run-id': { type: 'string', help: 'run id workers must present (default: the first worker\'s)' },
  'data-plane': { type: 'enum', values: ['auto', 'shm', 'peer', 'coordinator'], default: 'auto', help: 'tensor bytes: auto (shared memory when every worker is on one host, else worker-to-worker TCP), shm, peer, coordinator (through here)' },
} satisfies FlagTable;

const USAGE = 'usage: nx run coordinator:serve --port=P --workers=N [options]';

function fail(code: string, message: string): never {
  console.error(`error [${code}]: ${message}`);
  process.exit(2);
}

let f;
try {
  f = parseFlags(process.argv.slice(2), FLAGS);
} catch (e) {
  if (e instanceof FlagError) fail(e.code, e.message);
  throw e;
}
if (f.help) {
  console.log(helpText(USAGE, FLAGS));
  process.exit(0);
}
if ((f.tlsCert === undefined) !== (f.tlsKey === undefined)) fail('BAD_FLAG', '--tls-cert and --tls-key go together');

try {
  const coord = await startCoordinator({
    port: f.port as number,
    worldSize: f.workers as number,
    host: f.host as string,
    token: f.token as string | undefined,
    runId: f.runId as string | undefined,
    tls: f.tlsCert ? { cert: f.tlsCert as string, key: f.tlsKey as string } : undefined,
    roundTimeoutMs: f.roundTimeout as number | undefined,
    rendezvousTimeoutMs: f.rendezvousTimeout as number | undefined,
    maxMessageBytes: f.maxMessageBytes as number | undefined,
    dataPlane: f.dataPlane as 'auto' | 'shm' | 'peer' | 'coordinator',
    log: (line) => console.log(`${new Date().toISOString()} ${line}`),
  });
  const stop = () => void coord.close().then(() => process.exit(0));
  process.on('SIGINT', stop);
  process.on('SIGTERM', stop);
} catch (e) {
  if (e instanceof CoordinatorError) fail(e.code, e.message);
  throw e;
}
