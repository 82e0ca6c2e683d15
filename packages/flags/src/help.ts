import type { FlagTable } from './spec';

/**
 * `--help` text: the usage line(s), then one row per flag with what it takes, its help and its default (or
 * "required"), and the -h/--help row every CLI accepts.
 */
export function helpText(usage: string, table: FlagTable): string {
  const rows = Object.entries(table).filter(([name]) => name !== 'help').map(([name, s]) => {
    const left = s.type === 'boolean' ? `  --[no-]${name}` : `  --${name}=<${s.type === 'enum' ? s.values!.join('|') : s.type}>`;
    const note = s.required ? ' (required)' : s.default === undefined ? '' : ` (default: ${s.default})`;
    return [left, `${s.help}${note}`] as const;
  });
  rows.push(['  -h, --help', table.help?.help ?? 'print this help']);
  const width = Math.min(44, Math.max(...rows.map(([l]) => l.length)) + 2);
  const lines = rows.map(([l, r]) => (l.length >= width ? `${l}\n${' '.repeat(width)}${r}` : l.padEnd(width) + r));
  return [usage, '', 'Options:', ...lines].join('\n');
}
