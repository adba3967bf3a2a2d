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

  it('trims the newline a Kubernetes Secret file ends in from every secret, token and list item', () => {
    const config = loadConfig({
      DATABASE_URL: 'postgres://receiver:password@db:5432/receiver\n',
      PATIRO_SIGNING_SECRET: ' first-secret-0123456789\t,\r\nsecond-secret-0123456789\n',
      PATIRO_TOKEN: 'query-token-0123456789\n',
      PATIRO_BASIC_AUTH: ' patiro:basic-password-0123456789\r\n',
      PHYSITRACK_API_KEY: 'physitrack-key-0123456789\n',
      PHYSITRACK_TOKENS: 'practitioner-1\n, practitioner-2 \n',
    });
    expect(config.databaseUrl).toBe('postgres://receiver:password@db:5432/receiver');
    expect(config.patiro).toMatchObject({
      signingSecrets: ['first-secret-0123456789', 'second-secret-0123456789'],
      token: 'query-token-0123456789',
      basicAuth: 'patiro:basic-password-0123456789',
    });
    expect(config.physitrack).toMatchObject({ apiKeys: ['physitrack-key-0123456789'], tokens: ['practitioner-1', 'practitioner-2'] });
  });

  it('counts a secret without the blanks around it', () => {
    expect(problemsOf({ PATIRO_TOKEN: '  fifteen-chars-1  \n' })).toEqual([expect.stringMatching(/^PATIRO_TOKEN: must be at least 16/)]);
  });

  it.each(['0x1F90', '1e3', '1.0', ' 12abc', '12 ', '+12', '-1', '١٢'])('refuses %j as a number: plain decimal digits only', (value) => {
    expect(problemsOf({ PORT: value })).toEqual(['PORT: must be a whole number in plain decimal digits']);
  });

  it('reads plain decimal digits, and says the range of one outside it', () => {
    expect(loadConfig({ PORT: '8080', SHUTDOWN_TIMEOUT_MS: '30000' })).toMatchObject({ port: 8080, shutdownTimeoutMs: 30_000 });
    expect(problemsOf({ SHUTDOWN_TIMEOUT_MS: '30001' })).toEqual(['SHUTDOWN_TIMEOUT_MS: must be from 1000 to 30000']);
  });

  it('serves the internal API only on a port of its own, and only when API_PORT is set', () => {
    expect(loadConfig({}).api).toBeUndefined();
    expect(loadConfig({ API_PORT: '3100' }).api).toEqual({ host: '0.0.0.0', port: 3100 });
    expect(loadConfig({ API_PORT: '3100', API_HOST: '10.0.0.5' }).api).toEqual({ host: '10.0.0.5', port: 3100 });
    expect(problemsOf({ API_PORT: '3000' })).toEqual([expect.stringMatching(/^API_PORT: must differ from PORT and METRICS_PORT/)]);
    expect(problemsOf({ API_PORT: '9090', METRICS_PORT: '9090' })).toEqual([expect.stringMatching(/^API_PORT: /)]);
    expect(problemsOf({ API_HOST: '127.0.0.1' })).toEqual([expect.stringMatching(/^API_HOST: set API_PORT too/)]);
  });

  it('refuses METRICS_PORT equal to PORT in one message naming both', () => {
    expect(problemsOf({ PORT: '9090', METRICS_PORT: '9090' })).toEqual([expect.stringMatching(/^METRICS_PORT, PORT: must differ \(both are 9090\)/)]);
    expect(problemsOf({ METRICS_PORT: '3000' })).toEqual([expect.stringMatching(/^METRICS_PORT, PORT: /)]);
    expect(loadConfig({ PORT: '3000', METRICS_PORT: '9090' }).metrics.port).toBe(9090);
  });

  it('requires a basic-auth password of at least 16 characters, like every secret', () => {
    expect(problemsOf({ PATIRO_BASIC_AUTH: 'patiro:short-password' })).toEqual(['PATIRO_BASIC_AUTH: the password must be at least 16 characters, like every secret']);
    expect(problemsOf({ PATIRO_BASIC_AUTH: 'patiro:fifteen-chars-1\n' })).toHaveLength(1);
    for (const value of ['no-colon-at-all-0123456789', ':password-without-user-0123', 'user-without-password:']) {
      expect(problemsOf({ PATIRO_BASIC_AUTH: value }), value).toEqual(['PATIRO_BASIC_AUTH: must be user:password']);
    }
    expect(loadConfig({ PATIRO_BASIC_AUTH: 'patiro:a:password-with-colons' }).patiro.basicAuth).toBe('patiro:a:password-with-colons');
  });

  it('still lists every problem of the new rules in one error', () => {
    const problems = problemsOf({ PORT: '0x1F90', DATABASE_POOL_SIZE: '1e3', PATIRO_BASIC_AUTH: 'patiro:short', PATIRO_TOKEN: 'short\n' });
    expect(problems.map((p) => p.split(':')[0]).sort()).toEqual(['DATABASE_POOL_SIZE', 'PATIRO_BASIC_AUTH', 'PATIRO_TOKEN', 'PORT']);
  });
});

describe('SHUTDOWN_DRAIN_MS', () => {
  it('drains 5 s in production and not at all otherwise, unless set', () => {
    const production = { NODE_ENV: 'production', DATABASE_URL: 'postgres://db/x' };
    expect(loadConfig(production).shutdownDrainMs).toBe(5000);
    expect(loadConfig({}).shutdownDrainMs).toBe(0);
    expect(loadConfig({ ...production, SHUTDOWN_DRAIN_MS: '0' }).shutdownDrainMs).toBe(0);
    expect(loadConfig({ SHUTDOWN_DRAIN_MS: '8000' }).shutdownDrainMs).toBe(8000);
  });

  it('must leave 5 s of SHUTDOWN_TIMEOUT_MS for the rest of the shutdown', () => {
    expect(problemsOf({ SHUTDOWN_DRAIN_MS: '21000' })).toEqual([expect.stringMatching(/^SHUTDOWN_DRAIN_MS, SHUTDOWN_TIMEOUT_MS: the drain \(21000 ms\) must leave at least 5000 ms/)]);
    expect(problemsOf({ NODE_ENV: 'production', DATABASE_URL: 'postgres://db/x', SHUTDOWN_TIMEOUT_MS: '9000' })).toHaveLength(1);
    expect(loadConfig({ SHUTDOWN_DRAIN_MS: '20000' }).shutdownDrainMs).toBe(20_000);
  });
});
