export const PACKAGE = '@googlenet/dataloader';
