import { parseArgs, type ParseArgsConfig } from 'node:util';
import { FlagError, accepted, camelCase, kebabCase, type FlagSpec, type FlagTable, type FlagValues } from './spec';

type Options = NonNullable<ParseArgsConfig['options']>;

/**
 * Parses a command line against a flag table, the same way for every CLI of the project:
 *  - `--name=value` and `--name value`; every flag also in camelCase (`--batchSize=64`), because Nx swallows
 *    kebab flags that begin with one of its own option names (`--batch-size` begins with `--batch`);
 *  - booleans as `--name`, `--name=true|false|1|0` and `--no-name`; a boolean never takes the next argument;
 *  - `-h` or `--help` anywhere: `help` is true and nothing else is checked, so help always prints;
 *  - defaults filled in, then required flags checked.
 * Unknown flags, missing or bad values and stray arguments are a FlagError (BAD_FLAG) naming the flag and what
 * it accepts, so a typo never silently runs with a default.
 */
export function parseFlags(argv: readonly string[], table: FlagTable): FlagValues {
  // parseArgs does the tokenising (=, next-argument values, short options, `--`); the table's own rules are
  // applied below, in strict=false mode, so that every error is ours and says what is accepted.
  const options: Options = {};
  for (const [name, spec] of Object.entries(table)) {
    const type = spec.type === 'boolean' ? 'boolean' : 'string';
    options[name] = { type };
    options[camelCase(name)] = { type };
  }
  options.help = { type: 'boolean', short: 'h' }; // last: a table may list `help` for its --help text
  const { tokens } = parseArgs({ args: [...argv], options, strict: false, allowPositionals: true, tokens: true });

  const values: FlagValues = { help: false };
  for (const [name, spec] of Object.entries(table)) {
    if (name !== 'help') values[camelCase(name)] = spec.default ?? (spec.type === 'boolean' ? false : undefined);
  }
  if (tokens.some((t) => t.kind === 'option' && t.name === 'help' && t.value !== 'false' && t.value !== '0')) {
    values.help = true;
    return values;
  }

  for (const t of tokens) {
    if (t.kind === 'option-terminator') continue;
    if (t.kind === 'positional') {
      throw new FlagError(`unexpected argument '${t.value}': flags look like --name=value (see --help)`);
    }
    if (t.name === 'help') continue;
    let name = kebabCase(t.name);
    let spec: FlagSpec | undefined = t.rawName.startsWith('--') ? table[name] : undefined;
    let raw = t.value;
    if (!spec && /^no-./.test(name) && table[name.slice(3)]?.type === 'boolean') {
      if (raw !== undefined) throw new FlagError(`${t.rawName} takes no value: write ${t.rawName} or --${name.slice(3)}=true|false`);
      name = name.slice(3);
      spec = table[name];
      raw = 'false';
    }
    if (!spec) throw new FlagError(unknown(t.rawName, table));
    if (spec.type === 'boolean') raw ??= 'true';
    // parseArgs takes the next argument as the value whatever it looks like; `--out --seed=1` is a forgotten value.
    else if (raw === undefined || (!t.inlineValue && raw.startsWith('--'))) {
      throw new FlagError(`--${name} needs a value (${accepted(spec)}): --${name}=...`);
    }
    values[camelCase(name)] = convert(name, spec, raw);
  }

  for (const [name, spec] of Object.entries(table)) {
    if (spec.required && values[camelCase(name)] === undefined) throw new FlagError(`--${name} is required: ${spec.help}`);
  }
  return values;
}

function convert(name: string, spec: FlagSpec, raw: string): string | number | boolean {
  const bad = () => new FlagError(`--${name}=${raw} is invalid: expected ${accepted(spec)}${spec.type === 'boolean' ? ` (or --no-${name})` : ''}`);
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
      if (spec.type === 'int' && !Number.isSafeInteger(v)) throw bad();
      if ((spec.min !== undefined && v < spec.min) || (spec.max !== undefined && v > spec.max)) throw bad();
      return v;
    }
  }
}

/** Names the near misses, or for a short table every accepted flag. */
function unknown(rawName: string, table: FlagTable): string {
  const given = kebabCase(rawName.replace(/^-+/, ''));
  const names = Object.keys(table).filter((k) => k !== 'help');
  const near = names.filter((k) => k.includes(given) || given.includes(k) || sameLetters(k, given)).slice(0, 3);
  const list = (xs: string[]) => xs.map((k) => `--${k}`).join(', ');
  if (near.length) return `unknown flag ${rawName} (did you mean ${list(near)}?); see --help`;
  if (names.length <= 12) return `unknown flag ${rawName}; accepted: ${list(names)}, --help`;
  return `unknown flag ${rawName}; see --help for the ${names.length} accepted flags`;
}

/** One swapped pair or one changed letter, the usual typos: `--form` for `--from`, `--sead` for `--seed`. */
function sameLetters(a: string, b: string): boolean {
  if (a.length !== b.length || a.length < 3) return false;
  const diff = [...a].filter((c, i) => c !== b[i]).length;
  return diff === 1 || (diff === 2 && [...a].sort().join('') === [...b].sort().join(''));
}
