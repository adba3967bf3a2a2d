import { spawn } from 'node:child_process';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestDatabase, type TestDatabase } from '../helpers/database.js';

const root = path.resolve(import.meta.dirname, '../..');
let database: TestDatabase;
beforeAll(async () => {
  database = await createTestDatabase();
});
afterAll(async () => database.drop());

function migrateCommand(env: Record<string, string>): Promise<{ code: number | null; output: string }> {
  const child = spawn(process.execPath, ['--import', 'tsx', 'src/cli/migrate.ts'], { cwd: root, env: { PATH: process.env.PATH ?? '', ...env } });
  let output = '';
  child.stdout.on('data', (c: Buffer) => (output += c.toString()));
  child.stderr.on('data', (c: Buffer) => (output += c.toString()));
  return new Promise((resolve) => child.on('exit', (code) => resolve({ code, output })));
}

describe('the migrate command (one run per rollout)', () => {
  it('applies pending migrations and exits 0', async () => {
    await database.pool.query('DROP SCHEMA public CASCADE; CREATE SCHEMA public');
    const result = await migrateCommand({ DATABASE_URL: database.url });
    expect(result.code).toBe(0);
    expect(result.output).toMatch(/applied database migrations/);
    const { rows } = await database.pool.query("SELECT to_regclass('public.physitrack_deliveries') AS t");
    expect(rows[0].t).toBe('physitrack_deliveries');
    expect((await migrateCommand({ DATABASE_URL: database.url })).code).toBe(0);
  });

  it('exits 2 naming the variable when the configuration is invalid', async () => {
    const result = await migrateCommand({ DATABASE_URL: 'mysql://somewhere/db' });
    expect(result.code).toBe(2);
    expect(result.output).toMatch(/DATABASE_URL: must be a postgres/);
  });

  it('exits 2 without DATABASE_URL', async () => {
    const result = await migrateCommand({});
    expect(result.code).toBe(2);
    expect(result.output).toMatch(/DATABASE_URL/);
  });
});
