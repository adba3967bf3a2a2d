import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    root: new URL('../..', import.meta.url).pathname,
    include: ['test/sentinel/**/*.test.ts'],
    globalSetup: ['test/global/database.ts'],
    pool: 'forks',
  },
});
