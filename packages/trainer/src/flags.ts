import { TrainerError } from './errors';

/** One command-line flag: its type, default and one line of help. */
export interface FlagSpec {
  type: 'int' | 'number' | 'string' | 'boolean' | 'enum';
  help: string;
  default?: string | number | boolean;
  values?: readonly string[];
  /** Inclusive lower bound for numbers. */
  min?: number;
  max?: number;
}

export type FlagValues = Record<string, string | number | boolean | undefined>;

const camel = (s: string) => s.replace(/-([a-z])/g, (_, c: string) => c.toUpperCase());

/**
 * Parses `--name=value`, `--name value` and boolean `--name` / `--no-name` against a table of specs.
 * Unknown flags and bad values are errors that name the flag and what it accepts, so a typo never
 * silently trains with a default.
 */
export function parseFlags(argv: readonly string[], specs: Record<string, FlagSpec>): FlagValues {
  const out: FlagValues = {};
  for (const [name, spec] of Object.entries(specs)) out[camel(name)] = spec.default;
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (!arg.startsWith('--')) {
      throw new TrainerError('BAD_FLAG', `unexpected argument '${arg}': flags look like --name=value (see --help)`);
    }
    let [name, value] = arg.slice(2).split(/=(.*)/s, 2) as [string, string | undefined];
    // Nx swallows flags that begin with one of its own (`--batch-size` starts with `--batch`), so every flag
    // is also accepted in camelCase (`--batchSize=64`), which Nx passes through untouched.
    if (!specs[name] && /[A-Z]/.test(name)) name = name.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`);
    let spec = specs[name];
    if (!spec && name.startsWith('no-') && specs[name.slice(3)]?.type === 'boolean' && value === undefined) {
      name = name.slice(3);
      spec = specs[name];
      value = 'false';
    }
    if (!spec) {
      const near = Object.keys(specs).filter((k) => k.includes(name) || name.includes(k)).slice(0, 3);
      throw new TrainerError(
        'BAD_FLAG',
        `unknown flag --${name}${near.length ? ` (did you mean ${near.map((k) => `--${k}`).join(', ')}?)` : ''}; see --help`,
      );
    }
    if (value === undefined) {
      if (spec.type === 'boolean') value = 'true';
      else {
        const nextArg = argv[i + 1];
        if (nextArg === undefined || nextArg.startsWith('--')) {
          throw new TrainerError('BAD_FLAG', `--${name} needs a value (${describe(spec)})`);
        }
        value = nextArg;
        i++;
      }
    }
    out[camel(name)] = convert(name, spec, value);
  }
  return out;
}

function describe(spec: FlagSpec): string {
  if (spec.type === 'enum') return `one of ${spec.values!.join(', ')}`;
  if (spec.type === 'int') return `an integer${spec.min !== undefined ? ` >= ${spec.min}` : ''}${spec.max !== undefined ? ` <= ${spec.max}` : ''}`;
  if (spec.type === 'number') return `a number${spec.min !== undefined ? ` >= ${spec.min}` : ''}`;
  if (spec.type === 'boolean') return 'true or false';
  return 'a string';
}

function convert(name: string, spec: FlagSpec, raw: string): string | number | boolean {
  const bad = () => new TrainerError('BAD_FLAG', `--${name}=${raw} is invalid: expected ${describe(spec)}`);
  switch (spec.type) {
    case 'string':
      if (raw === '') throw bad();
      return raw;
    case 'boolean':
      if (raw === 'true' || raw === '1') return true;
      if (raw === 'false' || raw === '0') return false;
      throw bad();
    case 'enum':
      if (!spec.values!.includes(raw)) throw bad();
      return raw;
    case 'int':
    case 'number': {
      const v = Number(raw);
      if (raw.trim() === '' || !Number.isFinite(v)) throw bad();
      if (spec.type === 'int' && !Number.isInteger(v)) throw bad();
      if (spec.min !== undefined && v < spec.min) throw bad();
      if (spec.max !== undefined && v > spec.max) throw bad();
      return v;
    }
  }
}

/** `--help` text: one line per flag with its default. */
export function helpText(usage: string, specs: Record<string, FlagSpec>): string {
  const rows = Object.entries(specs).map(([name, s]) => {
    const left = `  --${name}${s.type === 'boolean' ? '' : `=<${s.type === 'enum' ? s.values!.join('|') : s.type}>`}`;
    const def = s.default === undefined ? '' : ` (default: ${s.default})`;
    return [left, `${s.help}${def}`] as const;
  });
  const width = Math.min(44, Math.max(...rows.map(([l]) => l.length)) + 2);
  return [usage, '', 'Options:', ...rows.map(([l, r]) => (l.length >= width ? `${l}\n${' '.repeat(width)}${r}` : l.padEnd(width) + r))].join('\n');
}
