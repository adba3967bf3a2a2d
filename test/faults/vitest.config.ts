import { defineConfig } from 'vitest/config';

// `npm run test:faults`: the service as real child processes against a real PostgreSQL, killed,
// cut off from its database and shut down under load. The files run one after another: each
// starts service processes and load senders that would compete for the two CPU cores.
export default defineConfig({
  test: {
    root: new URL('../..', import.meta.url).pathname,
    include: ['test/faults/**/*.fault.test.ts'],
    globalSetup: ['test/global/tls.ts', 'test/global/database.ts'],
    pool: 'forks',
    fileParallelism: false,
    testTimeout: 90_000,
    hookTimeout: 60_000,
    teardownTimeout: 30_000,
  },
});
