export const PACKAGE = '@googlenet/model';
