/** `nx run model:init`: writes freshly initialised weights (torchvision's init, seeded) as safetensors. */
import { selectBackend, type BackendName } from '../backend.js';
import { GoogLeNet } from '../googlenet.js';
import { saveWeights } from '../state-dict.js';
import { runCli, type FlagSpec } from './args.js';

const FLAGS: FlagSpec[] = [
  { name: 'out', type: 'string', help: 'weights file to write (.safetensors, the seed\'s state_dict)' },
  { name: 'seed', type: 'int', default: 0, min: 0, help: 'initialisation seed' },
  { name: 'num-classes', type: 'int', default: 1000, min: 1, help: 'classes of the classifiers' },
  { name: 'aux', type: 'bool', default: true, help: 'include the aux heads\' tensors (needed for training)' },
  { name: 'backend', type: 'backend', default: 'auto', help: 'tfjs backend' },
];

await runCli('nx run model:init', 'Writes freshly initialised GoogLeNet weights that PyTorch\'s seed model loads.', FLAGS,
  async (f) => {
    await selectBackend(f.backend as BackendName, { log: (l) => console.error(l) });
    const model = new GoogLeNet({ numClasses: f['num-classes'] as number, seed: f.seed as number, aux: f.aux as boolean });
    await saveWeights(model, f.out as string, { seed: String(f.seed) });
    const count = model.params.reduce((a, p) => a + p.variable.size, 0);
    console.error(`wrote ${f.out}: ${count.toLocaleString('en-US')} params, seed ${f.seed}, ${model.numClasses} classes`);
    model.dispose();
  });
