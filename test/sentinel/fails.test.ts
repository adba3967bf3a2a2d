import { expect, it } from 'vitest';

// Run only by .ci/run, with the real global setup (embedded PostgreSQL included): this run must exit
// non-zero. If it ever exits 0, a hook is swallowing failures and a green CI proves nothing.
it('fails on purpose', () => {
  expect('the test runner reports failures').toBe('as exit code 0');
});
