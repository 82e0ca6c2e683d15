import { defineConfig } from 'vitest/config';

/**
 * Every package's vitest settings. Test files run one at a time in forked processes: the machines have two
 * cores, and the multi-process tests start worker processes of their own.
 */
export default defineConfig({
  test: {
    include: ['src/**/*.test.ts', 'test/**/*.test.ts'],
    testTimeout: 120_000,
    hookTimeout: 120_000,
    pool: 'forks',
    fileParallelism: false,
  },
});
