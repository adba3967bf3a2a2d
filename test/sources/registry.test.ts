import { randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config.js';
import { closeDatabase, createDatabase, type Database } from '../../src/db/client.js';
import { addSource } from '../../src/sources/manage.js';
import { createSourceRegistry, type SourceRegistry } from '../../src/sources/registry.js';
import { newSourceId } from '../../src/sources/credentials.js';
import { createKeyring, keyIdOf } from '../../src/sources/sealed.js';
import { insertSource, setSourceStatus } from '../../src/sources/sources-table.js';
import { sourcesCopyIn } from '../../src/spool/sources-copy.js';
import { createTestDatabase, unreachableDatabaseUrl, type TestDatabase } from '../helpers/database.js';
import { captureLogs } from '../helpers/logs.js';
import { waitFor } from '../helpers/wait.js';
import { startTcpProxy } from '../faults/tcp-proxy.js';

const key = randomBytes(32);
const otherKey = randomBytes(32);
let database: TestDatabase;
let db: Database;
const opened: SourceRegistry[] = [];

function registry(keys: Buffer[], env: Record<string, string> = {}) {
  const config = loadConfig({ NODE_ENV: 'test', DATABASE_URL: database.url, SOURCES_SECRET_KEY: keys.map((k) => k.toString('base64')).join(','), ...env });
  return createSourceRegistry({ db, config, log: captureLogs().logger }).then((r) => (opened.push(r), r));
}

beforeAll(async () => {
  database = await createTestDatabase();
  db = createDatabase({ url: database.url, poolSize: 2, connectTimeoutMs: 2000 });
});
afterEach(async () => {
  for (const r of opened.splice(0)) await r.close();
});
afterAll(async () => {
  await closeDatabase(db);
  await database.drop();
});
beforeEach(async () => {
  await database.pool.query('TRUNCATE sources');
});

describe('the source registry', () => {
  it('starts without SOURCES_SECRET_KEY when the table holds credentials: those sources are unreadable and named in an error', async () => {
    const { row } = await addSource(db, [key], { vendor: 'patiro', name: 'Clinic A' });
    const logs = captureLogs();
    const config = loadConfig({ NODE_ENV: 'test', DATABASE_URL: database.url, PATIRO_SIGNING_SECRET: 'a'.repeat(32) });
    const r = await createSourceRegistry({ db, config, log: logs.logger });
    opened.push(r);
    const lookup = r.lookup('patiro', row.id);
    expect(lookup.found === 'active' && lookup.source.unreadable).toMatch(/not in SOURCES_SECRET_KEY/);
    expect(r.lookup('patiro', 'default')).toMatchObject({ found: 'active' });
    const errors = logs.entries().filter((e) => e.level === 50);
    expect(errors).toEqual([expect.objectContaining({ sourceId: row.id, hint: 'SOURCES_SECRET_KEY is not set' })]);
    // Logged once, not at every reload.
    await r.reload();
    expect(logs.entries().filter((e) => e.level === 50)).toHaveLength(1);
  });

  it('starts when a source was sealed with a key it lacks, serves every other source, and opens it once the key is listed', async () => {
    const { row } = await addSource(db, [key], { vendor: 'patiro', name: 'Clinic A' });
    const other = await addSource(db, [otherKey, key], { vendor: 'patiro', name: 'Clinic B' });
    const r = await registry([otherKey]);
    const lookup = r.lookup('patiro', row.id);
    expect(lookup.found === 'active' && lookup.source.unreadable).toMatch(`sealed with key ${keyIdOf(key)}`);
    const served = r.lookup('patiro', other.row.id);
    expect(served.found === 'active' && served.source.unreadable).toBeUndefined();
    // The old key listed second still opens them (key rotation).
    const rotated = await registry([otherKey, key]);
    const opened = rotated.lookup('patiro', row.id);
    expect(opened.found === 'active' && opened.source.unreadable).toBeUndefined();
  });

  it('marks a source added later with a key it does not have as unreadable, and keeps serving the others', async () => {
    const good = await addSource(db, [key], { vendor: 'patiro', name: 'Clinic A' });
    const r = await registry([key]);
    // Sealed with a key the service does not have (the CLI refuses to do this, see its tests).
    const bad = { row: await insertSource(db, { vendor: 'patiro', id: newSourceId(), name: 'Clinic B', tenantRef: null, credentials: createKeyring([otherKey]).seal('{}', 'x'), fingerprints: [] }) };
    await r.reload();
    const lookup = r.lookup('patiro', bad.row.id);
    expect(lookup.found === 'active' && lookup.source.unreadable).toMatch(/not in SOURCES_SECRET_KEY/);
    const goodLookup = r.lookup('patiro', good.row.id);
    expect(goodLookup.found === 'active' && goodLookup.source.unreadable).toBeUndefined();
  });

  it('knows the vendor of each source: a Patiro id is nothing on the Physitrack side', async () => {
    const { row } = await addSource(db, [key], { vendor: 'patiro', name: 'Clinic A' });
    const r = await registry([key]);
    expect(r.lookup('physitrack', row.id)).toEqual({ found: 'none' });
    expect(r.lookup('patiro', 'default')).toEqual({ found: 'none' });
  });

  it('hears a change on the control channel within 2 s, without a reload call', async () => {
    const r = await registry([key]);
    await r.listen(database.url);
    const { row } = await addSource(db, [key], { vendor: 'physitrack', name: 'Physitrack production' });
    const started = Date.now();
    await waitFor(() => r.lookup('physitrack', row.id).found === 'active', 2000);
    expect(Date.now() - started).toBeLessThan(2000);
    await setSourceStatus(db, row.id, 'disabled');
    await waitFor(() => r.lookup('physitrack', row.id).found === 'disabled', 2000);
  });

  it('listens again after its connection is cut, and catches up on what changed meanwhile', async () => {
    const r = await registry([key]);
    await r.listen(database.url);
    await database.pool.query(`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() AND query LIKE 'LISTEN%'`);
    const { row } = await addSource(db, [key], { vendor: 'patiro', name: 'Clinic A' });
    await waitFor(() => r.lookup('patiro', row.id).found === 'active', 5000);
    await waitFor(async () => (await database.pool.query("SELECT 1 FROM pg_stat_activity WHERE datname = current_database() AND query LIKE 'LISTEN%'")).rows.length === 1, 5000);
    const second = await addSource(db, [key], { vendor: 'patiro', name: 'Clinic B' });
    await waitFor(() => r.lookup('patiro', second.row.id).found === 'active', 2000);
  });

  it('replaces a listening connection that went silent (a half-open link), found by its periodic check', async () => {
    const target = new URL(database.url);
    const proxy = await startTcpProxy({ host: target.hostname, port: Number(target.port) });
    try {
      const config = loadConfig({ NODE_ENV: 'test', DATABASE_URL: database.url, SOURCES_SECRET_KEY: key.toString('base64') });
      const r = await createSourceRegistry({ db, config, log: captureLogs().logger, refreshIntervalMs: 300 });
      opened.push(r);
      await r.listen(proxy.urlFor(database.url));
      const listening = async () =>
        (await database.pool.query<{ pid: number }>("SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND query LIKE 'LISTEN%'")).rows.map((row) => row.pid);
      const [before] = await listening();
      proxy.cut({ newConnections: 'blackhole', currentConnections: 'freeze' });
      await proxy.restore(); // new connections get through again; the frozen one stays silent
      await waitFor(async () => (await listening()).some((pid) => pid !== before), 10_000);
    } finally {
      await proxy.close();
    }
  });

  it('keeps serving the sources it has when the table cannot be read', async () => {
    const { row } = await addSource(db, [key], { vendor: 'patiro', name: 'Clinic A' });
    const r = await registry([key]);
    await database.pool.query('ALTER TABLE sources RENAME TO sources_away');
    try {
      await r.reload();
      expect(r.lookup('patiro', row.id)).toMatchObject({ found: 'active' });
    } finally {
      await database.pool.query('ALTER TABLE sources_away RENAME TO sources');
    }
  });

  it('serves the sources of its local copy when the table cannot be read at start, and calls an id missing from the copy unknown (503), not absent (404)', async () => {
    const { row } = await addSource(db, [key], { vendor: 'patiro', name: 'Clinic A' });
    const dir = await mkdtemp(path.join(os.tmpdir(), 'wr-copy-'));
    try {
      const copy = sourcesCopyIn(dir);
      const config = loadConfig({ NODE_ENV: 'test', DATABASE_URL: database.url, SOURCES_SECRET_KEY: key.toString('base64') });
      opened.push(await createSourceRegistry({ db, config, log: captureLogs().logger, localCopy: copy }));
      const text = await readFile(path.join(dir, 'sources.json'), 'utf8');
      expect(text).toContain(row.id);
      expect(text).not.toMatch(/"secrets"|signingSecret/);

      // Started again while PostgreSQL is away: from the copy.
      const away = createDatabase({ url: await unreachableDatabaseUrl(), poolSize: 1, connectTimeoutMs: 300 });
      try {
        const r = await createSourceRegistry({ db: away, config, log: captureLogs().logger, localCopy: sourcesCopyIn(dir) });
        opened.push(r);
        expect(r.lookup('patiro', row.id)).toMatchObject({ found: 'active', source: { id: row.id } });
        expect(r.lookup('patiro', newSourceId())).toEqual({ found: 'unknown' });
        // Without a copy, no table source can be checked at all.
        const bare = await createSourceRegistry({ db: away, config, log: captureLogs().logger });
        opened.push(bare);
        expect(bare.lookup('patiro', row.id)).toEqual({ found: 'unknown' });
      } finally {
        for (const r of opened.splice(0)) await r.close();
        await closeDatabase(away);
      }
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('keeps no credential in plain text: no column of the table holds a secret or token', async () => {
    const patiro = await addSource(db, [key], { vendor: 'patiro', name: 'Clinic A', withToken: true });
    const physitrack = await addSource(db, [key], { vendor: 'physitrack', name: 'Physitrack production' });
    const { rows } = await database.pool.query<{ row: string }>('SELECT s::text AS row FROM sources s');
    const everything = rows.map((r) => r.row).join('\n');
    for (const secret of [patiro.secret, patiro.token!, physitrack.secret]) {
      expect(everything).not.toContain(secret);
      expect(everything).not.toContain(Buffer.from(secret).toString('base64'));
    }
    expect(everything).toContain(patiro.row.id);
  });
});
