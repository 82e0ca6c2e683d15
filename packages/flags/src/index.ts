export { FlagError, accepted, camelCase, kebabCase, type FlagSpec, type FlagTable, type FlagValues } from './spec';
export { parseFlags } from './parse';
export { helpText } from './help';
export { exitWith, reportError } from './main';
