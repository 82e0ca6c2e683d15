import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { TrainerError } from './errors';
import type { FlagSpec } from './flags';

/** Where `--recipe=<name>` looks: packages/trainer/recipes/<name>.json. */
export const RECIPES_DIR = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', 'recipes');

/**
 * A recipe file: the flag values that train one data set well, as defaults. Flags given on the command line
 * override them (a recipe is a starting point, not a lock).
 */
export interface Recipe {
  /** The name given to --recipe (a file name without .json, or a path). */
  name: string;
  file: string;
  /** What it is for and where its values come from. */
  description?: string;
  /** Flag name (kebab-case, as on the command line) -> value. */
  flags: Record<string, string | number | boolean>;
}

/** Flags that exclude each other: a recipe's `epochs` gives way to a command line's --steps, and back. */
const EXCLUSIVE: Record<string, string> = { epochs: 'steps', steps: 'epochs' };

const bad = (msg: string) => new TrainerError('BAD_FLAG', msg);

/** Names of the recipes shipped in RECIPES_DIR. */
export function recipeNames(dir = RECIPES_DIR): string[] {
  try {
    return fs.readdirSync(dir).filter((f) => f.endsWith('.json')).map((f) => f.slice(0, -5)).sort();
  } catch {
    return [];
  }
}

/** Reads `--recipe`'s value: a shipped recipe's name, or a path to a .json file. Validates it against `table`. */
export function loadRecipe(nameOrPath: string, table: Record<string, FlagSpec>, dir = RECIPES_DIR): Recipe {
  const isPath = nameOrPath.endsWith('.json') || nameOrPath.includes('/');
  const file = isPath ? path.resolve(nameOrPath) : path.join(dir, `${nameOrPath}.json`);
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch {
    throw bad(`--recipe=${nameOrPath}: no recipe at ${file}; shipped recipes: ${recipeNames(dir).join(', ') || '(none)'}, or give a path to a .json file`);
  }
  let parsed: { description?: unknown; flags?: unknown };
  try {
    parsed = JSON.parse(text);
  } catch (e) {
    throw bad(`--recipe=${nameOrPath}: ${file} is not valid JSON (${(e as Error).message})`);
  }
  const flags = parsed?.flags;
  if (!flags || typeof flags !== 'object' || Array.isArray(flags)) throw bad(`--recipe=${nameOrPath}: ${file} needs a "flags" object of flag name -> value`);
  for (const [k, v] of Object.entries(flags)) {
    if (!(k in table) || k === 'recipe' || k === 'help') throw bad(`--recipe=${nameOrPath}: ${file} sets "${k}", which is not a train flag (see --help)`);
    if (!['string', 'number', 'boolean'].includes(typeof v)) throw bad(`--recipe=${nameOrPath}: ${file} sets "${k}" to ${JSON.stringify(v)}: expected a string, number or boolean`);
  }
  return { name: nameOrPath, file, description: typeof parsed.description === 'string' ? parsed.description : undefined, flags: flags as Recipe['flags'] };
}

/** The `--recipe` value in argv, if any (`--recipe=x` or `--recipe x`). */
export function recipeArg(argv: readonly string[]): string | undefined {
  let found: string | undefined;
  argv.forEach((a, i) => {
    if (a.startsWith('--recipe=')) found = a.slice('--recipe='.length);
    else if (a === '--recipe' && argv[i + 1] !== undefined) found = argv[i + 1];
  });
  return found;
}

/**
 * The recipe as command-line flags to put before argv (the parser keeps the last value of a flag, so the user's
 * win); flags the user gave, and their exclusive partners, are left out so that they cannot clash.
 */
export function recipeArgv(recipe: Recipe, argv: readonly string[]): string[] {
  const given = new Set<string>();
  for (const a of argv) {
    const m = /^--(?:no-)?([A-Za-z0-9-]+)(?:=|$)/.exec(a);
    if (m) given.add(m[1]!.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`));
  }
  return Object.entries(recipe.flags)
    .filter(([k]) => !given.has(k) && !(EXCLUSIVE[k] && given.has(EXCLUSIVE[k]!)))
    .map(([k, v]) => `--${k}=${v}`);
}
