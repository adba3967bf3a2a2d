import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { addSource } from '../../src/sources/manage.js';
import { findSources, recentFailures } from '../../src/sources/sources-table.js';
import { cli } from '../cli/operator/helpers.js';
import { buildTestApp, TEST_SOURCES_KEY, type TestApp } from '../helpers/app.js';
import { createTestDatabase, type TestDatabase } from '../helpers/database.js';
import { PATIRO_SECRET, patiroEvent, signedPatiroRequest } from '../helpers/patiro.js';

const keys = [Buffer.from(TEST_SOURCES_KEY, 'base64')];
let database: TestDatabase;
let t: TestApp;
let source: { id: string; secret: string; path: string };

beforeAll(async () => {
  database = await createTestDatabase();
  t = await buildTestApp(database.url, { PATIRO_SIGNING_SECRET: PATIRO_SECRET });
  // Counts every write to the sources table, to prove that traffic does not turn into writes.
  await database.pool.query(`
    CREATE TABLE source_writes (n int);
    CREATE FUNCTION count_source_write() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN INSERT INTO source_writes VALUES (1); RETURN NEW; END $$;
    CREATE TRIGGER count_source_writes AFTER UPDATE ON sources FOR EACH ROW EXECUTE FUNCTION count_source_write();`);
});
afterAll(async () => {
  await t.close();
  await database.drop();
});
beforeEach(async () => {
  const added = await addSource(t.db, keys, { vendor: 'patiro', name: 'Clinic A' });
  await t.sources.reload();
  source = { id: added.row.id, secret: added.secret, path: `/webhooks/patiro/${added.row.id}` };
  await database.pool.query('TRUNCATE source_writes');
});

const health = async (id: string) => (await findSources(t.db, id))[0]!;
const send = (secret: string, timestamp = String(Date.now())) => t.app.inject(signedPatiroRequest({ body: JSON.stringify(patiroEvent()), secret, path: source.path, timestamp }));

describe('per-source health', () => {
  it('keeps the last 10 failures of a source (time, reason, hint), and `sources show` lists them', async () => {
    for (let i = 0; i < 14; i++) {
      await send(i % 2 ? 'a-secret-patiro-never-gave-us-0123' : source.secret, i % 2 ? String(Date.now()) : String(Math.floor(Date.now() / 1000)));
      await t.health.flush();
    }
    const rows = await recentFailures(t.db, 'patiro', source.id);
    expect(rows).toHaveLength(10);
    expect(rows.map((r) => r.reason)).toEqual(expect.arrayContaining(['bad_signature', 'stale_timestamp']));
    expect(rows.find((r) => r.reason === 'stale_timestamp')?.hint).toMatch(/looks like seconds, not milliseconds/);
    expect(rows.map((r) => r.at.getTime())).toEqual([...rows.map((r) => r.at.getTime())].sort((a, b) => b - a));
    const stored = await database.pool.query('SELECT count(*)::int AS n FROM source_failures WHERE source_id = $1', [source.id]);
    expect(stored.rows[0].n).toBeLessThanOrEqual(10);
    const shown = await cli(['sources', 'show', source.id, '--json'], { DATABASE_URL: database.url, SOURCES_SECRET_KEY: TEST_SOURCES_KEY });
    expect(JSON.parse(shown.stdout).recentFailures).toHaveLength(10);
    const text = await cli(['sources', 'show', source.id], { DATABASE_URL: database.url, SOURCES_SECRET_KEY: TEST_SOURCES_KEY });
    expect(text.stdout).toMatch(/Recent failures:\n  \S+ (bad_signature|stale_timestamp)/);
  });

  it('records why deliveries fail, with a safe hint, and resets the count on success', async () => {
    await send('a-secret-patiro-never-gave-us-0123');
    await send(source.secret, String(Date.now() - 412_000));
    await t.health.flush();
    let row = await health(source.id);
    expect(row.failuresSinceSuccess).toBe(2);
    expect(row.lastFailureReason).toBe('stale_timestamp: timestamp 412 s in the past (tolerance 300 s)');
    expect(row.lastSuccessAt).toBeNull();

    await send(source.secret);
    await t.health.flush();
    row = await health(source.id);
    expect(row.failuresSinceSuccess).toBe(0);
    expect(row.lastSuccessAt).not.toBeNull();
    expect(row.lastFailureAt!.getTime()).toBeLessThanOrEqual(row.lastSuccessAt!.getTime());

    await send('a-secret-patiro-never-gave-us-0123');
    await t.health.flush();
    row = await health(source.id);
    expect(row).toMatchObject({ failuresSinceSuccess: 1, lastFailureReason: 'bad_signature: matched none of 1 secret' });
    expect(JSON.stringify(row)).not.toContain(source.secret);
  });

  it('turns a burst of unauthenticated requests into one write, not one per request', async () => {
    await Promise.all(Array.from({ length: 200 }, () => send('a-secret-patiro-never-gave-us-0123')));
    await t.health.flush();
    expect((await health(source.id)).failuresSinceSuccess).toBe(200);
    expect((await database.pool.query("SELECT count(*)::int AS n FROM source_writes")).rows[0].n).toBeLessThanOrEqual(2); // one per flush interval
  });

  it('keeps the health of the environment source in its own row', async () => {
    await t.app.inject(signedPatiroRequest({ body: JSON.stringify(patiroEvent()), secret: 'a-secret-patiro-never-gave-us-0123' }));
    await t.health.flush();
    const rows = await findSources(t.db, 'default');
    expect(rows.find((r) => r.vendor === 'patiro')).toMatchObject({ status: 'active', credentials: null, lastFailureReason: 'bad_signature: matched none of 1 secret' });
  });

  it('does not track ids that are not sources', async () => {
    await t.health.flush();
    for (let i = 0; i < 50; i++) {
      await t.app.inject(signedPatiroRequest({ body: '{}', secret: source.secret, path: `/webhooks/patiro/zzzzzzzzzzzzzzzzzz${i.toString().padStart(2, '0')}` }));
    }
    expect(t.health.pendingSources()).toBe(0);
    await t.health.flush();
    expect((await database.pool.query('SELECT count(*)::int AS n FROM source_writes')).rows[0].n).toBe(0);
  });
});
