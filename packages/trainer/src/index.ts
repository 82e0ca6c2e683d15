export const PACKAGE = '@googlenet/trainer';
