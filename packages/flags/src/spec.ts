/** One command-line flag: its type, default and one line of help. A CLI's flags are a table of these. */
export interface FlagSpec {
  type: 'int' | 'number' | 'string' | 'boolean' | 'enum';
  /** One line for --help. */
  help: string;
  /** Value when the flag is not given. Default: undefined (or false for a boolean). */
  default?: string | number | boolean;
  /** enum: the accepted values. */
  values?: readonly string[];
  /** int/number: inclusive bounds. */
  min?: number;
  max?: number;
  /** The command cannot run without it (a required flag has no default). Default false. */
  required?: boolean;
}

/** Flags by their kebab-case name (`batch-size`), in the order --help lists them. */
export type FlagTable = Record<string, FlagSpec>;

/** Parsed values by camelCase name (`batchSize`); `help` is true when -h or --help was given. */
export type FlagValues = Record<string, string | number | boolean | undefined> & { help: boolean };

/** A bad command line. The message names the flag and what it accepts; CLIs print it and exit 2. */
export class FlagError extends Error {
  readonly code = 'BAD_FLAG' as const;
  constructor(message: string) {
    super(message);
    this.name = 'FlagError';
  }
}

export const camelCase = (name: string): string => name.replace(/-([a-z0-9])/g, (_, c: string) => c.toUpperCase());
export const kebabCase = (name: string): string => name.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`);

/** What a flag accepts, for errors and --help: "an integer >= 1", "one of a, b". */
export function accepted(spec: FlagSpec): string {
  const bounds = [spec.min !== undefined ? ` >= ${spec.min}` : '', spec.max !== undefined ? ` <= ${spec.max}` : ''].filter(Boolean).join(' and');
  switch (spec.type) {
    case 'int': return `an integer${bounds}`;
    case 'number': return `a number${bounds}`;
    case 'enum': return `one of ${spec.values!.join(', ')}`;
    case 'boolean': return 'true or false';
    case 'string': return 'a non-empty string';
  }
}
