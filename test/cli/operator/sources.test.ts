import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { loadConfig } from '../../../src/config.js';
import { closeDatabase, createDatabase } from '../../../src/db/client.js';
import { createSourceRegistry } from '../../../src/sources/registry.js';
import { TEST_SOURCES_KEY } from '../../helpers/app.js';
import { captureLogs } from '../../helpers/logs.js';
import { createTestDatabase, type TestDatabase } from '../../helpers/database.js';
import { cli, spawnCli } from './helpers.js';

let database: TestDatabase;
let env: Record<string, string>;

beforeAll(async () => {
  database = await createTestDatabase();
  env = { DATABASE_URL: database.url, SOURCES_SECRET_KEY: TEST_SOURCES_KEY };
});
afterAll(async () => {
  await database.drop();
});
beforeEach(async () => {
  await database.pool.query('TRUNCATE sources, receiver_replicas');
});

async function add(...args: string[]) {
  const result = await cli(['sources', 'add', ...args, '--json'], env);
  expect(result.code, result.stderr).toBe(0);
  return JSON.parse(result.stdout) as Record<string, string>;
}

describe('cli sources add', () => {
  it('creates a Patiro source and prints its path and secret once, as JSON', async () => {
    const source = await add('patiro', '--name', 'Clinic A', '--tenant', 'pms-clinic-17');
    expect(source).toMatchObject({ vendor: 'patiro', name: 'Clinic A', tenantRef: 'pms-clinic-17', status: 'active' });
    expect(source.id).toMatch(/^[a-z2-7]{20}$/);
    expect(source.path).toBe(`/webhooks/patiro/${source.id}`);
    expect(source.signingSecret!.length).toBeGreaterThanOrEqual(43);
    expect(source).not.toHaveProperty('token');
  });

  it('adds a ?token= with --with-token, and an api key for Physitrack', async () => {
    const patiro = await add('patiro', '--name', 'Clinic B', '--with-token');
    expect(patiro.token!.length).toBeGreaterThanOrEqual(43);
    const physitrack = await add('physitrack', '--name', 'Physitrack production');
    expect(physitrack.apiKey!.length).toBeGreaterThanOrEqual(43);
    expect(physitrack.path).toBe(`/webhooks/physitrack/${physitrack.id}`);
  });

  it('prints the whole webhook path, token included, for a person', async () => {
    const result = await cli(['sources', 'add', 'patiro', '--name', 'Clinic C', '--with-token'], env);
    expect(result.code).toBe(0);
    expect(result.stdout).toMatch(/Webhook path: +\/webhooks\/patiro\/[a-z2-7]{20}\?token=[\w-]{43}/);
    expect(result.stdout).toMatch(/Signing secret: +[\w-]{43}/);
    expect(result.stdout).toMatch(/shown only now/);
  });

  it('takes an existing secret from standard input with --secret-stdin', async () => {
    const result = await cli(['sources', 'add', 'patiro', '--name', 'Clinic D', '--secret-stdin', '--json'], env, { stdin: 'typed-into-patiro-before-0123456789\n' });
    expect(result.code, result.stderr).toBe(0);
    expect(JSON.parse(result.stdout).signingSecret).toBe('typed-into-patiro-before-0123456789');
    const short = await cli(['sources', 'add', 'patiro', '--name', 'Clinic E', '--secret-stdin'], env, { stdin: 'short' });
    expect(short.code).toBe(2);
    expect(short.stderr).toMatch(/at least 16 characters/);
  });

  it('refuses usage errors with exit 2 before connecting', async () => {
    for (const args of [['mysql', '--name', 'x'], ['patiro'], ['physitrack', '--name', 'x', '--with-token'], ['patiro', '--name', '']]) {
      expect((await cli(['sources', 'add', ...args], env)).code, args.join(' ')).toBe(2);
    }
    const noKey = await cli(['sources', 'add', 'patiro', '--name', 'Clinic A'], { DATABASE_URL: database.url });
    expect(noKey.code).toBe(2);
    expect(noKey.stderr).toMatch(/set SOURCES_SECRET_KEY/);
  });

  it('refuses to seal with a key that is not the one the existing sources were sealed with', async () => {
    await add('patiro', '--name', 'Clinic A');
    const otherKey = Buffer.alloc(32, 9).toString('base64');
    const refused = await cli(['sources', 'add', 'patiro', '--name', 'Clinic B'], { ...env, SOURCES_SECRET_KEY: otherKey });
    expect(refused.code).toBe(2);
    expect(refused.stderr).toMatch(/does not include key [0-9a-f]{8}, which sealed the sources already in this database/);
    // Listing the old key after the new one is a key rotation, and works.
    expect((await cli(['sources', 'add', 'patiro', '--name', 'Clinic B'], { ...env, SOURCES_SECRET_KEY: `${otherKey},${TEST_SOURCES_KEY}` })).code).toBe(0);
  });

  it('refuses to seal with a key that a running replica cannot open, and allows it once every replica has it', async () => {
    const newKey = Buffer.alloc(32, 11).toString('base64');
    const db = createDatabase({ url: database.url, poolSize: 1, connectTimeoutMs: 5000 });
    const started = new Date();
    const replicaWith = async (id: string, keys: string) => {
      const config = loadConfig({ NODE_ENV: 'test', DATABASE_URL: database.url, SOURCES_SECRET_KEY: keys });
      return createSourceRegistry({ db, config, log: captureLogs().logger, replica: { id, hostname: 'test', pid: 1, startedAt: started } });
    };
    const old = await replicaWith('replica-old', TEST_SOURCES_KEY);
    try {
      // A key rotation done in the wrong order: the CLI has the new key first, the replica lacks it.
      const rotated = { ...env, SOURCES_SECRET_KEY: `${newKey},${TEST_SOURCES_KEY}` };
      const refused = await cli(['sources', 'add', 'patiro', '--name', 'Clinic R'], rotated);
      expect(refused.code).toBe(2);
      expect(refused.stderr).toMatch(/running replica\(s\) replica-old cannot open key [0-9a-f]{8}/);
      expect((await database.pool.query('SELECT count(*)::int AS n FROM sources WHERE name = $1', ['Clinic R'])).rows[0].n).toBe(0);
      // The replica restarted with the new key listed after its own: now the CLI may seal with it.
      await old.close();
      await database.pool.query('TRUNCATE receiver_replicas');
      const updated = await replicaWith('replica-new', `${TEST_SOURCES_KEY},${newKey}`);
      await updated.close();
      expect((await cli(['sources', 'add', 'patiro', '--name', 'Clinic R'], rotated)).code).toBe(0);
    } finally {
      await old.close();
      await closeDatabase(db);
    }
  });

  it('outside production, never makes up a key of its own (a real process, no dev-secrets.json)', async () => {
    const dataDir = await mkdtemp(path.join(os.tmpdir(), 'cli-no-dev-secrets-'));
    try {
      const result = await spawnCli(['sources', 'add', 'patiro', '--name', 'Clinic A'], { DATABASE_URL: database.url, DATA_DIR: dataDir });
      expect(result.code).toBe(2);
      expect(result.stderr).toMatch(/set SOURCES_SECRET_KEY/);
      expect(existsSync(path.join(dataDir, 'dev-secrets.json'))).toBe(false);
    } finally {
      await rm(dataDir, { recursive: true, force: true });
    }
  });
});

describe('cli sources list and show', () => {
  it('shows status, tenant and fingerprints, never a secret', async () => {
    const a = await add('patiro', '--name', 'Clinic A', '--tenant', 't-1', '--with-token');
    const p = await add('physitrack', '--name', 'Physitrack production');
    const list = await cli(['sources', 'list', '--json'], env);
    expect(list.code).toBe(0);
    const rows = JSON.parse(list.stdout) as Record<string, unknown>[];
    expect(rows.map((r) => r.id)).toEqual([a.id, p.id]);
    expect(rows[0]).toMatchObject({ status: 'active', tenantRef: 't-1', credentials: [{ kind: 'signingSecret', notAfter: null }, { kind: 'token' }] });
    const table = await cli(['sources', 'list'], env);
    const show = await cli(['sources', 'show', a.id!], env);
    for (const output of [list.stdout, table.stdout, show.stdout]) {
      for (const secret of [a.signingSecret!, a.token!, p.apiKey!]) expect(output).not.toContain(secret);
    }
    expect(show.stdout).toMatch(/Status: +active/);
    expect(show.stdout).toMatch(/signingSecret [0-9a-f]{8}/);
    expect(show.stdout).toMatch(/Last failure: +never/);
    expect((await cli(['sources', 'list', '--vendor', 'physitrack', '--json'], env)).stdout).toContain(p.id);
    expect((await cli(['sources', 'list', '--vendor', 'physitrack', '--json'], env)).stdout).not.toContain(a.id);
  });

  it('exits 1 for a source that does not exist', async () => {
    expect((await cli(['sources', 'show', 'abcdefghijklmnopqrst'], env)).code).toBe(1);
    expect((await cli(['sources', 'disable', 'abcdefghijklmnopqrst'], env)).code).toBe(1);
  });
});

describe('cli sources rotate, disable and enable', () => {
  it('rotates: prints the new secret once, and the old one gets an end', async () => {
    const a = await add('patiro', '--name', 'Clinic A');
    const result = await cli(['sources', 'rotate', a.id!, '--keep-old', '2h', '--json'], env);
    expect(result.code, result.stderr).toBe(0);
    const rotated = JSON.parse(result.stdout);
    expect(rotated.signingSecret).not.toBe(a.signingSecret);
    const until = Date.parse(rotated.oldValidUntil);
    expect(until - Date.now()).toBeGreaterThan(7_100_000);
    expect(rotated.credentials).toEqual([
      expect.objectContaining({ kind: 'signingSecret', notAfter: rotated.oldValidUntil }),
      expect.objectContaining({ kind: 'signingSecret', notAfter: null }),
    ]);
    // The overlap ends at once with 0: only the newest secret is left.
    const again = JSON.parse((await cli(['sources', 'rotate', a.id!, '--keep-old', '0', '--json'], env)).stdout);
    expect(again.credentials).toHaveLength(1);
  });

  it('refuses to rotate, disable or enable the environment source', async () => {
    for (const command of ['rotate', 'disable', 'enable']) {
      const result = await cli(['sources', command, 'default'], env);
      expect(result.code, command).toBe(2);
      expect(result.stderr).toMatch(/environment variables/);
    }
  });

  it('disables and enables a source', async () => {
    const a = await add('physitrack', '--name', 'Physitrack staging');
    const disabled = await cli(['sources', 'disable', a.id!], env);
    expect(disabled.code).toBe(0);
    expect(disabled.stdout).toMatch(/is disabled: its deliveries are answered 404/);
    expect((await database.pool.query('SELECT status FROM sources WHERE id = $1', [a.id])).rows[0].status).toBe('disabled');
    expect((await cli(['sources', 'enable', a.id!], env)).code).toBe(0);
    expect((await database.pool.query('SELECT status FROM sources WHERE id = $1', [a.id])).rows[0].status).toBe('active');
  });

  it('runs as a real process', async () => {
    const result = await spawnCli(['sources', 'add', 'physitrack', '--name', 'Physitrack production', '--json'], env);
    expect(result.code, result.stderr).toBe(0);
    const { id } = JSON.parse(result.stdout);
    const show = await spawnCli(['sources', 'show', id, '--json'], env);
    expect(JSON.parse(show.stdout)).toMatchObject({ id, vendor: 'physitrack', status: 'active' });
  });
});
