import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    exclude: ['test/sentinel/**', 'test/faults/**', 'node_modules/**'],
    globalSetup: ['test/global/tls.ts', 'test/global/database.ts'],
    pool: 'forks',
    testTimeout: 20_000,
    hookTimeout: 60_000,
  },
});
