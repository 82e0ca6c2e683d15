import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { refusal, resolve } from '../test/config-resolve';
import { recipeNames } from './recipe';

const scratch = (name: string, body: string) => {
  const file = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'googlenet-recipe-')), name);
  fs.writeFileSync(file, body);
  return file;
};

describe('--recipe', () => {
  it('fashion-mnist gives its values as defaults, and records its name in the config', () => {
    expect(recipeNames()).toContain('fashion-mnist');
    const c = resolve(['--recipe=fashion-mnist']);
    expect(c).toMatchObject({
      recipe: 'fashion-mnist', dataset: 'fashion-mnist', imageSize: 32, batchSize: 32, workers: 2, epochs: 36, evalEvery: 3752, lr: 0.05, lrSchedule: 'cosine',
      nesterov: true, labelSmoothing: 0.1, augment: 'pad-crop', emaDecay: 0.999, weightDecay: 0.0005,
    });
  });

  it('flags on the command line override the recipe, wherever they stand, in either spelling', () => {
    const c = resolve(['--lr=0.01', '--recipe', 'fashion-mnist', '--no-nesterov', '--batchSize=16', '--workers=1']);
    expect(c).toMatchObject({ lr: 0.01, nesterov: false, batchSize: 16, workers: 1, labelSmoothing: 0.1 });
  });

  it('--steps on the command line replaces the recipe\'s epochs instead of clashing with it', () => {
    const c = resolve(['--recipe=fashion-mnist', '--steps=300']);
    expect([c.steps, c.epochs]).toEqual([300, undefined]);
  });

  it('reads a recipe from a path, and refuses unknown names, unknown flags and bad values with BAD_FLAG', () => {
    const own = scratch('mine.json', JSON.stringify({ flags: { lr: 0.2, 'label-smoothing': 0.05 } }));
    expect(resolve([`--recipe=${own}`])).toMatchObject({ lr: 0.2, labelSmoothing: 0.05, recipe: own });
    expect(refusal(['--recipe=imagenet-in-5-minutes'])).toEqual(['BAD_FLAG', expect.stringMatching(/no recipe at .*imagenet-in-5-minutes\.json; shipped recipes: .*fashion-mnist/)]);
    expect(refusal([`--recipe=${scratch('typo.json', JSON.stringify({ flags: { 'learning-rate': 0.1 } }))}`]))
      .toEqual(['BAD_FLAG', expect.stringMatching(/sets "learning-rate", which is not a train flag/)]);
    expect(refusal([`--recipe=${scratch('broken.json', '{ "flags": ')}`])).toEqual(['BAD_FLAG', expect.stringMatching(/is not valid JSON/)]);
    expect(refusal([`--recipe=${scratch('range.json', JSON.stringify({ flags: { 'label-smoothing': 2 } }))}`])?.[0]).toBe('BAD_FLAG');
  });
});
