/**
 * How every command of the project ends: its main's exit code, or for an error one `error [CODE]: message`
 * line (a stack trace only for an error without a code, i.e. a bug) and exit status 2 for a bad flag, 1
 * otherwise. Scripts can tell "you typed it wrong" from "it failed".
 */
export function exitWith(main: Promise<number>, io: { write(s: string): void } = process.stderr): void {
  main.then(
    (code) => process.exit(code),
    (e: unknown) => {
      process.exit(reportError(e, io));
    },
  );
}

/** Writes the error line (and a stack for uncoded errors); returns the exit status for it. */
export function reportError(e: unknown, io: { write(s: string): void }): number {
  const err = e as Error & { code?: unknown };
  const code = typeof err.code === 'string' ? err.code : undefined;
  io.write(`error${code ? ` [${code}]` : ''}: ${err?.message ?? String(e)}\n`);
  if (!code && err?.stack) io.write(err.stack + '\n');
  return code === 'BAD_FLAG' ? 2 : 1;
}
