/** `nx run model:summary`: the torchinfo-style depth-1 table of the seed's model. */
import { MIN_IMAGE_SIZE } from '../architecture.js';
import { formatSummary } from '../summary.js';
import { runCli, type FlagSpec } from './args.js';

const FLAGS: FlagSpec[] = [
  { name: 'num-classes', type: 'int', default: 1000, min: 1, help: 'classes of the classifiers' },
  { name: 'image-size', type: 'int', default: 224, min: MIN_IMAGE_SIZE, help: 'square input size' },
  { name: 'batch-size', type: 'int', default: 10, min: 1, help: 'batch size shown in the output shapes' },
  { name: 'aux', type: 'bool', default: true, help: 'include the two aux heads (the seed\'s model)' },
];

await runCli('nx run model:summary', 'Prints the model as torchinfo.summary(model, depth=1) does for the seed.', FLAGS,
  async (f) => {
    console.log(formatSummary({
      numClasses: f['num-classes'] as number, imageSize: f['image-size'] as number,
      batchSize: f['batch-size'] as number, aux: f.aux as boolean,
    }));
  });
