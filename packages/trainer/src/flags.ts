/**
 * The train command's flags are parsed by the project's shared parser (@googlenet/flags), as every other CLI's
 * are; re-exported here because the trainer's API and its bench have always offered them.
 */
export { parseFlags, helpText, FlagError, type FlagSpec, type FlagValues } from '@googlenet/flags';
