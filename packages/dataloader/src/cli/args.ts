/**
 * The package scripts' flags (make-shards, bench), parsed by the project's shared parser (@googlenet/flags):
 * `--name=value`, `--name value`, camelCase spellings, `--no-x` booleans, -h/--help. A bad flag is a DataError
 * BAD_OPTION (this package's code for bad options and flags) whose message names the flag and what it accepts.
 */
import { FlagError, camelCase, helpText, parseFlags as parseTable, type FlagTable } from '@googlenet/flags';
import { DataError } from '../errors.js';

export interface FlagSpec {
  type: 'string' | 'int' | 'boolean';
  help: string;
  /** string: the accepted values. */
  choices?: readonly string[];
  /** int: smallest accepted value. Default 0. */
  min?: number;
  /** The command cannot run without it. Default false. */
  required?: boolean;
}

function table(flags: Record<string, FlagSpec>): FlagTable {
  return Object.fromEntries(Object.entries(flags).map(([name, f]) => [name, {
    type: f.choices ? 'enum' : f.type,
    values: f.choices,
    help: f.help,
    min: f.type === 'int' ? (f.min ?? 0) : undefined,
    required: f.required,
  }]));
}

export function usage(command: string, summary: string, flags: Record<string, FlagSpec>): string {
  return `${helpText(`usage: ${command}\n\n${summary}`, table(flags))}\n`;
}

/** The flags by their dashed names; an absent one is absent (false for a switch): the caller applies its defaults. */
export function parseFlags(argv: string[], flags: Record<string, FlagSpec>, command: string): { help: boolean; values: Record<string, string | number | boolean> } {
  let f;
  try {
    f = parseTable(argv, table(flags));
  } catch (e) {
    throw e instanceof FlagError ? new DataError('BAD_OPTION', `${command}: ${e.message}`) : e;
  }
  const values: Record<string, string | number | boolean> = {};
  for (const name of Object.keys(flags)) {
    const v = f[camelCase(name)];
    if (v !== undefined) values[name] = v;
  }
  return { help: f.help, values };
}
