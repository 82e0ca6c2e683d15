import { describe, expect, it } from 'vitest';
import { missingNodeFlags, TRAIN_NODE_FLAGS } from './node-flags';

describe('missingNodeFlags', () => {
  it('adds the training flags unless the user set them on the command line or in NODE_OPTIONS', () => {
    expect(missingNodeFlags([])).toEqual([...TRAIN_NODE_FLAGS]);
    expect(missingNodeFlags(['--import', 'tsx'], '--enable-source-maps')).toEqual(['--max-semi-space-size=64']);
    expect(missingNodeFlags(['--max-semi-space-size=16'])).toEqual([]);
    expect(missingNodeFlags([], '--max_semi_space_size=128 --trace-warnings')).toEqual([]);
  });
});
