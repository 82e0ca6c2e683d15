/**
 * A small strict flag parser for the package's scripts: `--name=value`, `--name value` or `--flag`;
 * kebab-case or camelCase (Nx may forward either). Unknown flags and bad values are a DataError BAD_OPTION
 * whose message names the flag, never a stack trace.
 */
import { DataError } from '../errors.js';

export interface FlagSpec {
  type: 'string' | 'int' | 'boolean';
  help: string;
  choices?: readonly string[];
  min?: number;
}

const kebab = (s: string) => s.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`);

export function usage(command: string, summary: string, flags: Record<string, FlagSpec>): string {
  const lines = Object.entries(flags).map(([name, f]) => `  --${name}${f.type === 'boolean' ? '' : '=<' + (f.choices ? f.choices.join('|') : f.type) + '>'}  ${f.help}`);
  return `${command}\n${summary}\n\nFlags:\n${lines.join('\n')}\n  --help  print this help\n`;
}

export function parseFlags(argv: string[], flags: Record<string, FlagSpec>, command: string): { help: boolean; values: Record<string, string | number | boolean> } {
  const values: Record<string, string | number | boolean> = {};
  let help = false;
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (arg === '--help' || arg === '-h') {
      help = true;
      continue;
    }
    if (!arg.startsWith('--')) throw new DataError('BAD_OPTION', `${command}: unexpected argument ${JSON.stringify(arg)}; flags look like --name=value (see --help)`);
    const eq = arg.indexOf('=');
    const name = kebab(eq < 0 ? arg.slice(2) : arg.slice(2, eq));
    const spec = flags[name];
    if (!spec) throw new DataError('BAD_OPTION', `${command}: unknown flag --${name}; known: ${Object.keys(flags).map((f) => `--${f}`).join(', ')}`);
    let raw: string | undefined = eq < 0 ? undefined : arg.slice(eq + 1);
    if (raw === undefined && spec.type !== 'boolean') {
      raw = argv[++i];
      if (raw === undefined) throw new DataError('BAD_OPTION', `${command}: --${name} needs a value`);
    }
    if (spec.type === 'boolean') {
      if (raw !== undefined && raw !== 'true' && raw !== 'false') throw new DataError('BAD_OPTION', `${command}: --${name} is a switch; got ${JSON.stringify(raw)}`);
      values[name] = raw !== 'false';
    } else if (spec.type === 'int') {
      const v = Number(raw);
      if (!Number.isInteger(v) || v < (spec.min ?? 0)) throw new DataError('BAD_OPTION', `${command}: --${name} must be an integer >= ${spec.min ?? 0}, got ${JSON.stringify(raw)}`);
      values[name] = v;
    } else {
      if (spec.choices && !spec.choices.includes(raw!)) throw new DataError('BAD_OPTION', `${command}: --${name} must be one of ${spec.choices.join(', ')}, got ${JSON.stringify(raw)}`);
      if (raw === '') throw new DataError('BAD_OPTION', `${command}: --${name} must not be empty`);
      values[name] = raw!;
    }
  }
  return { help, values };
}
