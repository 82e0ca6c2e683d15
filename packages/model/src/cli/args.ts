/**
 * The model scripts' flags (summary, init, infer, check-gradients), parsed by the project's shared parser
 * (@googlenet/flags): each script lists its flags as below, and runCli turns a bad one into one
 * `error [BAD_FLAG]: ...` line and exit status 2.
 */
import { FlagError, camelCase, helpText, parseFlags as parseTable, type FlagTable } from '@googlenet/flags';
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

function table(specs: readonly FlagSpec[]): FlagTable {
  return Object.fromEntries(specs.map((s) => [s.name, {
    type: s.type === 'bool' ? 'boolean' : s.type === 'backend' ? 'enum' : s.type,
    ...(s.type === 'backend' ? { values: BACKENDS } : {}),
    help: s.help,
    default: s.default,
    min: s.min,
    required: s.default === undefined && !s.optional,
  }]));
}

export function usage(command: string, summary: string, specs: readonly FlagSpec[]): string {
  return helpText(`usage: ${command} [flags]\n\n${summary}`, table(specs));
}

/** Returns the parsed flags by their dashed names (`f['num-classes']`), or null when -h/--help was asked for. */
export function parseFlags(argv: readonly string[], specs: readonly FlagSpec[]): Record<string, number | string | boolean> | null {
  let f;
  try {
    f = parseTable(argv, table(specs));
  } catch (e) {
    throw e instanceof FlagError ? new CliError(e.message) : e;
  }
  if (f.help) return null;
  const out: Record<string, number | string | boolean> = {};
  for (const s of specs) {
    const v = f[camelCase(s.name)];
    if (v !== undefined) out[s.name] = v;
  }
  return out;
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
