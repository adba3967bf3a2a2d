import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestDatabase, unreachableDatabaseUrl, type TestDatabase } from '../../helpers/database.js';
import { cli, spawnCli } from './helpers.js';

let database: TestDatabase;

beforeAll(async () => {
  database = await createTestDatabase();
});
afterAll(async () => {
  await database.drop();
});

const COMMANDS = [
  ['status'],
  ['deliveries', 'list'],
  ['deliveries', 'show'],
  ['deliveries', 'retry'],
  ['documents', 'export'],
  ['events', 'list'],
  ['events', 'show'],
  ['patients', 'show'],
  ['purge'],
];

describe('cli usage', () => {
  it('prints the overall help with every command and the exit codes, exit 0', async () => {
    const result = await cli(['--help'], {});
    expect(result.code).toBe(0);
    for (const words of COMMANDS) expect(result.stdout).toContain(`  ${words.join(' ')}`);
    expect(result.stdout).toMatch(/Exit codes: 0 ok; 1 not found/);
  });

  it('prints help for each command without needing a database', async () => {
    for (const words of COMMANDS) {
      const result = await cli([...words, '--help'], {});
      expect(result.code, words.join(' ')).toBe(0);
      expect(result.stdout).toContain(`Usage: npm run cli -- ${words.join(' ')}`);
    }
    const group = await cli(['deliveries', '--help'], {});
    expect(group.code).toBe(0);
    expect(group.stdout).toMatch(/deliveries list[\s\S]*deliveries show[\s\S]*deliveries retry/);
  });

  it('exits 2 with the help for no command, an unknown command or subcommand, or an unknown flag', async () => {
    expect((await cli([], {})).code).toBe(2);
    const unknown = await cli(['frobnicate'], {});
    expect(unknown.code).toBe(2);
    expect(unknown.stderr).toMatch(/Unknown command "frobnicate"/);
    const sub = await cli(['deliveries', 'delete', '1'], {});
    expect(sub.code).toBe(2);
    expect(sub.stderr).toMatch(/Unknown or missing subcommand for "deliveries"/);
    const flag = await cli(['deliveries', 'list', '--colour'], { DATABASE_URL: database.url });
    expect(flag.code).toBe(2);
    expect(flag.stderr).toMatch(/Unknown option '--colour'/);
  });

  it('asks for DATABASE_URL when it is unset, exit 2', async () => {
    const result = await cli(['status'], { NODE_ENV: 'development' });
    expect(result.code).toBe(2);
    expect(result.stderr).toMatch(/set DATABASE_URL \(the running service logs the embedded database's psql URL at start\)/);
    const production = await cli(['status'], { NODE_ENV: 'production' });
    expect(production.code).toBe(2);
    expect(production.stderr).toMatch(/DATABASE_URL: is required when NODE_ENV=production/);
  });

  it('reports an invalid configuration with exit 2', async () => {
    const result = await cli(['status'], { DATABASE_URL: 'mysql://nope', PDF_STORAGE: 's3' });
    expect(result.code).toBe(2);
    expect(result.stderr).toMatch(/DATABASE_URL: must be a postgres:\/\/[\s\S]*PDF_STORAGE/);
  });

  it('exits 3 when the database cannot be reached', async () => {
    const result = await cli(['status'], { DATABASE_URL: await unreachableDatabaseUrl() });
    expect(result.code).toBe(3);
    expect(result.stderr).toMatch(/^status failed: /);
  });

  it('behaves the same as a real process', async () => {
    const help = await spawnCli(['--help'], {});
    expect(help.code).toBe(0);
    expect(help.stdout).toMatch(/^Usage: npm run cli -- <command>/);
    const noUrl = await spawnCli(['status'], { NODE_ENV: 'development' });
    expect(noUrl.code).toBe(2);
    expect(noUrl.stderr).toMatch(/set DATABASE_URL/);
  });
});
