import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { addSource, rotateSource } from '../../src/sources/manage.js';
import { setSourceStatus } from '../../src/sources/sources-table.js';
import { buildTestApp, TEST_SOURCES_KEY, type TestApp } from '../helpers/app.js';
import { createTestDatabase, type TestDatabase } from '../helpers/database.js';
import { PATIRO_SECRET, patiroEvent, signedPatiroRequest } from '../helpers/patiro.js';
import { PHYSITRACK_KEY, physitrackNotice, physitrackRequest } from '../helpers/physitrack.js';

const keys = [Buffer.from(TEST_SOURCES_KEY, 'base64')];
let database: TestDatabase;
let t: TestApp;

beforeAll(async () => {
  database = await createTestDatabase();
  t = await buildTestApp(database.url, { PATIRO_SIGNING_SECRET: PATIRO_SECRET, PHYSITRACK_API_KEY: PHYSITRACK_KEY });
});
afterAll(async () => {
  await t.close();
  await database.drop();
});
beforeEach(async () => {
  await database.pool.query('TRUNCATE patiro_events, patiro_patients, webhook_audit, physitrack_deliveries');
});

async function patiroSource(name: string, options: { withToken?: boolean } = {}) {
  const added = await addSource(t.db, keys, { vendor: 'patiro', name, ...options });
  await t.sources.reload();
  return { id: added.row.id, secret: added.secret, token: added.token, path: `/webhooks/patiro/${added.row.id}` };
}

const send = (path: string, body: unknown, secret: string, query = '') =>
  t.app.inject(signedPatiroRequest({ body: JSON.stringify(body), secret, path, query }));

describe('Patiro sources: one receiver for many clinics', () => {
  it('keeps the same patient and the same eventId of two clinics apart', async () => {
    const a = await patiroSource('Clinic A');
    const b = await patiroSource('Clinic B');
    const eventId = '6f1c2a4e-0000-4000-8000-000000004711';
    const forA = patiroEvent({ eventId, data: { id: 4711, firstName: 'Ada', lastName: 'A' } });
    const forB = patiroEvent({ eventId, data: { id: 4711, firstName: 'Bea', lastName: 'B' } });
    expect((await send(a.path, forA, a.secret)).statusCode).toBe(204);
    expect((await send(b.path, forB, b.secret)).statusCode).toBe(204);

    const patients = await database.pool.query('SELECT source_id, patient_id, data FROM patiro_patients ORDER BY data->>\'firstName\'');
    expect(patients.rows).toEqual([
      { source_id: a.id, patient_id: '4711', data: forA.data },
      { source_id: b.id, patient_id: '4711', data: forB.data },
    ]);
    const events = await database.pool.query('SELECT source_id, event_id, delivery_count FROM patiro_events ORDER BY source_id');
    expect(events.rows).toEqual([a.id, b.id].sort().map((source_id) => ({ source_id, event_id: eventId, delivery_count: 1 })));
    const audit = await database.pool.query('SELECT source_id, event_id FROM webhook_audit ORDER BY source_id');
    expect(audit.rows.map((r) => r.source_id)).toEqual([a.id, b.id].sort());
  });

  it("refuses clinic A's signature on clinic B's URL with 401, and stores nothing", async () => {
    const a = await patiroSource('Clinic A');
    const b = await patiroSource('Clinic B');
    const res = await send(b.path, patiroEvent(), a.secret);
    expect(res.statusCode).toBe(401);
    expect(res.json()).toMatchObject({ error: 'WH_ERR_UNAUTHENTICATED' });
    // Nor does the environment's secret open a table source.
    expect((await send(b.path, patiroEvent(), PATIRO_SECRET)).statusCode).toBe(401);
    expect((await database.pool.query('SELECT count(*)::int AS n FROM patiro_events')).rows[0].n).toBe(0);
  });

  it('answers 404 to an unknown source, without storing or auditing anything', async () => {
    const res = await send('/webhooks/patiro/abcdefghijklmnopqrst', patiroEvent(), PATIRO_SECRET);
    expect(res.statusCode).toBe(404);
    expect(res.json()).toEqual({ error: 'WH_ERR_UNKNOWN_SOURCE', message: expect.any(String) });
    expect((await database.pool.query('SELECT count(*)::int AS n FROM webhook_audit')).rows[0].n).toBe(0);
    expect(t.logs.lines.some((l) => l.includes('"reason":"unknown_source"'))).toBe(true);
  });

  it('answers 404 (never 403) to a disabled source, and 204 again once it is enabled', async () => {
    const a = await patiroSource('Clinic A');
    await setSourceStatus(t.db, a.id, 'disabled');
    await t.sources.reload();
    const refused = await send(a.path, patiroEvent(), a.secret);
    expect(refused.statusCode).toBe(404);
    expect((await database.pool.query('SELECT count(*)::int AS n FROM patiro_events')).rows[0].n).toBe(0);
    await setSourceStatus(t.db, a.id, 'active');
    await t.sources.reload();
    expect((await send(a.path, patiroEvent(), a.secret)).statusCode).toBe(204);
  });

  it('does not serve a Patiro source on the Physitrack path', async () => {
    const a = await patiroSource('Clinic A');
    const res = await t.app.inject(physitrackRequest(physitrackNotice({ api_key: a.secret }), {}, `/webhooks/physitrack/${a.id}`));
    expect(res.statusCode).toBe(404);
  });

  it('requires the ?token= of a source made with a token, as well as its signature', async () => {
    const a = await patiroSource('Clinic A', { withToken: true });
    expect((await send(a.path, patiroEvent(), a.secret)).statusCode).toBe(401);
    expect((await send(a.path, patiroEvent(), a.secret, '?token=wrong-token-0123456789')).statusCode).toBe(401);
    expect((await send(a.path, patiroEvent(), a.secret, `?token=${a.token}`)).statusCode).toBe(204);
  });

  it('accepts the old and the new secret during a rotation overlap, then only the new one', async () => {
    const a = await patiroSource('Clinic A');
    const { secret: newSecret } = await rotateSource(t.db, keys, a.id, { keepOldMs: 1500 });
    await t.sources.reload();
    expect((await send(a.path, patiroEvent(), a.secret)).statusCode).toBe(204);
    expect((await send(a.path, patiroEvent(), newSecret)).statusCode).toBe(204);
    await new Promise((resolve) => setTimeout(resolve, 1600));
    expect((await send(a.path, patiroEvent(), a.secret)).statusCode).toBe(401);
    expect((await send(a.path, patiroEvent(), newSecret)).statusCode).toBe(204);
  });

  it('keeps serving the environment source on the old path and on /default', async () => {
    const event = patiroEvent();
    expect((await send('/webhooks/patiro', event, PATIRO_SECRET)).statusCode).toBe(204);
    expect((await send('/webhooks/patiro/default', patiroEvent(), PATIRO_SECRET)).statusCode).toBe(204);
    const { rows } = await database.pool.query('SELECT DISTINCT source_id FROM patiro_events');
    expect(rows).toEqual([{ source_id: 'default' }]);
  });
});

describe('Physitrack sources', () => {
  async function physitrackSource(name: string) {
    const added = await addSource(t.db, keys, { vendor: 'physitrack', name });
    await t.sources.reload();
    return { id: added.row.id, apiKey: added.secret, path: `/webhooks/physitrack/${added.row.id}` };
  }

  it("stores a notice with its source's id, and refuses another integration's key with 401", async () => {
    const staging = await physitrackSource('Physitrack staging');
    const production = await physitrackSource('Physitrack production');
    const ok = await t.app.inject(physitrackRequest(physitrackNotice({ api_key: staging.apiKey }), {}, staging.path));
    expect(ok.statusCode).toBe(204);
    const crossed = await t.app.inject(physitrackRequest(physitrackNotice({ api_key: staging.apiKey }), {}, production.path));
    expect(crossed.statusCode).toBe(401);
    const envKey = await t.app.inject(physitrackRequest(physitrackNotice({ api_key: PHYSITRACK_KEY }), {}, production.path));
    expect(envKey.statusCode).toBe(401);
    const { rows } = await database.pool.query('SELECT source_id FROM physitrack_deliveries');
    expect(rows).toEqual([{ source_id: staging.id }]);
  });

  it('answers 404 to an unknown Physitrack source before reading the key', async () => {
    const res = await t.app.inject(physitrackRequest(physitrackNotice(), {}, '/webhooks/physitrack/abcdefghijklmnopqrst'));
    expect(res.statusCode).toBe(404);
  });
});
