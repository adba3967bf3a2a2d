import { describe, expect, it } from 'vitest';
import { ConfigError, loadConfig } from '../src/config.js';

function problemsOf(env: Record<string, string>): string[] {
  try {
    loadConfig(env);
  } catch (err) {
    if (err instanceof ConfigError) return err.problems;
    throw err;
  }
  throw new Error('expected a ConfigError');
}

describe('loadConfig', () => {
  it('applies the documented defaults', () => {
    const config = loadConfig({});
    expect(config).toMatchObject({
      nodeEnv: 'development',
      host: '0.0.0.0',
      port: 3000,
      logLevel: 'info',
      bodyLimitBytes: 1024 * 1024,
      ackDeadlineMs: 1500,
      writeBatchMaxRows: 500,
    });
    expect(config.databaseUrl).toBeUndefined();
    expect(config.dataDir).toMatch(/data$/);
  });

  it('takes WRITE_BATCH_MAX_ROWS from 1 (batching off) to 5000', () => {
    expect(loadConfig({ WRITE_BATCH_MAX_ROWS: '1' }).writeBatchMaxRows).toBe(1);
    expect(problemsOf({ WRITE_BATCH_MAX_ROWS: '0' })).toEqual([expect.stringMatching(/^WRITE_BATCH_MAX_ROWS: /)]);
    expect(problemsOf({ WRITE_BATCH_MAX_ROWS: '5001' })).toEqual([expect.stringMatching(/^WRITE_BATCH_MAX_ROWS: /)]);
  });

  it('lists every bad variable in one error', () => {
    const problems = problemsOf({ PORT: 'eighty', LOG_LEVEL: 'loud', BODY_LIMIT_BYTES: '-1', DATABASE_URL: 'mysql://x' });
    expect(problems).toHaveLength(4);
    expect(problems.join('\n')).toMatch(/PORT/);
    expect(problems.join('\n')).toMatch(/LOG_LEVEL/);
    expect(problems.join('\n')).toMatch(/BODY_LIMIT_BYTES/);
    expect(problems.join('\n')).toMatch(/DATABASE_URL/);
  });

  it('names the problems in the message a user sees', () => {
    expect(() => loadConfig({ PORT: '99999', HOST: '' , LOG_LEVEL: 'x'})).toThrow(/2 problems[\s\S]*PORT[\s\S]*LOG_LEVEL/);
  });

  it('requires DATABASE_URL in production', () => {
    expect(problemsOf({ NODE_ENV: 'production' })).toEqual([expect.stringMatching(/^DATABASE_URL: is required when NODE_ENV=production/)]);
  });

  it('treats an empty variable as unset', () => {
    expect(loadConfig({ PORT: '', LOG_LEVEL: ' ' }).port).toBe(3000);
  });

  it('splits comma-separated secrets for rotation', () => {
    const config = loadConfig({ PATIRO_SIGNING_SECRET: ' first-secret-0123456789 , second-secret-0123456789,' });
    expect(config.patiro.signingSecrets).toEqual(['first-secret-0123456789', 'second-secret-0123456789']);
  });

  it('refuses a short secret', () => {
    expect(problemsOf({ PHYSITRACK_API_KEY: 'short' })).toEqual([expect.stringMatching(/PHYSITRACK_API_KEY/)]);
  });
});
