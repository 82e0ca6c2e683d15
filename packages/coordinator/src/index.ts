export const PACKAGE = '@googlenet/coordinator';
