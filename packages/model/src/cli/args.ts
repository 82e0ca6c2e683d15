/** Flag parsing for the model's CLI scripts: `--name=value` or `--name value`, validated up front. */
import { CliError } from '../errors.js';
import type { BackendName } from '../backend.js';

export interface FlagSpec {
  /** Flag name without dashes, e.g. `num-classes`. */
  name: string;
  type: 'int' | 'string' | 'bool' | 'backend';
  /** One line for --help. */
  help: string;
  /** Omitted: the flag is required (unless `optional`). */
  default?: number | string | boolean;
  /** No default and not required. */
  optional?: boolean;
  /** Smallest allowed value for ints. */
  min?: number;
}

const BACKENDS: readonly BackendName[] = ['auto', 'tensorflow', 'webgpu', 'wasm', 'cpu'];

export function usage(command: string, summary: string, specs: readonly FlagSpec[]): string {
  const lines = specs.map((s) => {
    const dflt = s.default !== undefined ? ` (default ${s.default})` : s.optional ? '' : ' (required)';
    return `  --${s.name}=${s.type === 'backend' ? BACKENDS.join('|') : `<${s.type}>`}`.padEnd(44) + `${s.help}${dflt}`;
  });
  return [`usage: ${command} [flags]`, '', summary, '', 'flags:', ...lines, '  --help'.padEnd(44) + 'print this help'].join('\n');
}

/** Returns the parsed flags, or null when --help was asked for. */
export function parseFlags(argv: readonly string[], specs: readonly FlagSpec[]): Record<string, number | string | boolean> | null {
  const byName = new Map(specs.map((s) => [s.name, s]));
  const out: Record<string, number | string | boolean> = {};
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (arg === '--help' || arg === '-h') return null;
    const m = /^--([a-zA-Z][a-zA-Z0-9-]*)(?:=(.*))?$/s.exec(arg);
    if (!m) throw new CliError(`unexpected argument '${arg}': flags look like --name=value (see --help)`);
    // camelCase is accepted too: `nx run` swallows `--batch-size` (too close to its own --batch), not `--batchSize`.
    const spec = byName.get(m[1].replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`));
    if (!spec) {
      throw new CliError(`unknown flag --${m[1]}; known flags: ${specs.map((s) => `--${s.name}`).join(', ')}`);
    }
    let value = m[2];
    if (value === undefined) {
      if (spec.type === 'bool') value = 'true';
      else if (i + 1 < argv.length && !argv[i + 1].startsWith('--')) value = argv[++i];
      else throw new CliError(`--${spec.name} needs a value (--${spec.name}=...)`);
    }
    out[spec.name] = convert(spec, value);
  }
  for (const s of specs) {
    if (out[s.name] !== undefined) continue;
    if (s.default !== undefined) out[s.name] = s.default;
    else if (!s.optional) throw new CliError(`--${s.name} is required: ${s.help}`);
  }
  return out;
}

function convert(spec: FlagSpec, value: string): number | string | boolean {
  switch (spec.type) {
    case 'int': {
      if (!/^-?\d+$/.test(value.trim())) throw new CliError(`--${spec.name}=${value} is not an integer`);
      const n = Number(value);
      if (!Number.isSafeInteger(n)) throw new CliError(`--${spec.name}=${value} is too large`);
      if (spec.min !== undefined && n < spec.min) throw new CliError(`--${spec.name}=${value} must be at least ${spec.min}`);
      return n;
    }
    case 'bool':
      if (value === 'true' || value === 'false') return value === 'true';
      throw new CliError(`--${spec.name}=${value} must be true or false`);
    case 'backend':
      if (!(BACKENDS as readonly string[]).includes(value)) {
        throw new CliError(`--${spec.name}=${value} is not a backend; use one of ${BACKENDS.join(', ')}`);
      }
      return value;
    default:
      if (value === '') throw new CliError(`--${spec.name} must not be empty`);
      return value;
  }
}

/**
 * Runs a CLI main: prints usage for --help, and for errors with a `code` (bad flags, missing backend, bad
 * weights) one `error [CODE]: message` line instead of a stack trace.
 */
export async function runCli(command: string, summary: string, specs: readonly FlagSpec[],
  main: (flags: Record<string, number | string | boolean>) => Promise<void>): Promise<void> {
  try {
    const flags = parseFlags(process.argv.slice(2), specs);
    if (flags === null) {
      console.log(usage(command, summary, specs));
      return;
    }
    await main(flags);
  } catch (e) {
    const err = e as Error & { code?: string };
    if (typeof err.code === 'string') {
      console.error(`error [${err.code}]: ${err.message}`);
      process.exitCode = err.code === 'BAD_FLAG' ? 2 : 1;
      return;
    }
    throw e;
  }
}
