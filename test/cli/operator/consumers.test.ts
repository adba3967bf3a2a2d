import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { authenticate } from '../../../src/api/consumers-table.js';
import { createTestDatabase, type TestDatabase } from '../../helpers/database.js';
import { cli } from './helpers.js';

// consumers add|list|show|rotate|disable|enable: the token is printed once and stored as a hash.

let database: TestDatabase;
let env: Record<string, string>;
beforeAll(async () => {
  database = await createTestDatabase();
  env = { DATABASE_URL: database.url };
});
afterAll(async () => database.drop());

describe('consumers', () => {
  it('makes a consumer whose token works, keeps only its hash, lists it, rotates, disables and enables it', async () => {
    const added = await cli(['consumers', 'add', '--name', 'PMS importer', '--json'], env);
    expect(added.code, added.stderr).toBe(0);
    const { id, token, sources } = JSON.parse(added.stdout) as { id: string; token: string; sources: string };
    expect(sources).toBe('all');
    expect(token).toMatch(/^wrc_[a-z2-7]{16}_[A-Za-z0-9_-]{43}$/);
    expect(await authenticate(database.pool, token)).toEqual({ id, scope: { all: true } });
    const stored = JSON.stringify((await database.pool.query('SELECT * FROM consumers')).rows);
    expect(stored).not.toContain(token.slice(21));

    const list = await cli(['consumers', 'list'], env);
    expect(list.stdout).toContain('PMS importer');
    expect(list.stdout).not.toContain(token.slice(21));
    expect((await cli(['consumers', 'show', id], env)).stdout).toMatch(/Last seen: +never/);

    const rotated = JSON.parse((await cli(['consumers', 'rotate', id, '--keep-old', '1h', '--json'], env)).stdout) as { token: string };
    expect(await authenticate(database.pool, token)).toBeDefined();
    expect(await authenticate(database.pool, rotated.token)).toBeDefined();
    expect((await cli(['consumers', 'disable', id], env)).code).toBe(0);
    expect(await authenticate(database.pool, rotated.token)).toBeUndefined();
    expect((await cli(['consumers', 'enable', id], env)).code).toBe(0);
    expect(await authenticate(database.pool, rotated.token)).toBeDefined();
    expect((await cli(['consumers', 'rotate', id], env)).code).toBe(0);
    expect(await authenticate(database.pool, token)).toBeUndefined();
    expect(await authenticate(database.pool, rotated.token)).toBeUndefined();
  });

  it('limits a consumer to sources that exist, and refuses a bad name', async () => {
    const unknown = await cli(['consumers', 'add', '--name', 'x', '--source', 'nosuchsource'], env);
    expect(unknown.code).toBe(2);
    expect(unknown.stderr).toMatch(/no source "nosuchsource"/);
    const scoped = await cli(['consumers', 'add', '--name', 'clinic', '--source', 'default', '--json'], env);
    expect(scoped.code, scoped.stderr).toBe(0);
    const { token } = JSON.parse(scoped.stdout) as { token: string };
    expect((await authenticate(database.pool, token))?.scope).toEqual({ all: false, sourceIds: ['default'] });
    expect((await cli(['consumers', 'add', '--name', ''], env)).code).toBe(2);
    expect((await cli(['consumers', 'disable', 'nosuchconsumer'], env)).code).toBe(1);
  });
});
