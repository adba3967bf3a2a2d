import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { buildApp } from '../../src/app.js';
import { loadConfig } from '../../src/config.js';
import { buildTestApp, type TestApp } from '../helpers/app.js';
import { createTestDatabase, unreachableDatabaseUrl, type TestDatabase } from '../helpers/database.js';
import { captureLogs } from '../helpers/logs.js';
import { PHYSITRACK_KEY, PHYSITRACK_OLD_KEY, physitrackNotice, physitrackRequest } from '../helpers/physitrack.js';

let database: TestDatabase;
let t: TestApp;

beforeAll(async () => {
  database = await createTestDatabase();
  t = await buildTestApp(database.url, { PHYSITRACK_API_KEY: `${PHYSITRACK_KEY},${PHYSITRACK_OLD_KEY}` });
});
afterAll(async () => {
  await t.close();
  await database.drop();
});
beforeEach(async () => {
  await database.pool.query('TRUNCATE physitrack_deliveries, webhook_audit');
});

async function deliveries() {
  return (await database.pool.query('SELECT * FROM physitrack_deliveries ORDER BY id')).rows;
}

describe('POST /webhooks/physitrack: storing', () => {
  it('stores the notice as a pending download and answers 204', async () => {
    const notice = physitrackNotice({ updated: true });
    const res = await t.app.inject(physitrackRequest(notice));
    expect(res.statusCode).toBe(204);
    const [row] = await deliveries();
    expect(row).toMatchObject({
      practitioner_token: notice.token,
      patient_id: notice.patient_id,
      file_url: notice.file_url,
      program_name: 'Knee Rehab Program',
      updated: true,
      download_status: 'pending',
      attempts: 0,
      last_error: null,
      document_id: null,
    });
    expect(row.program_date.toISOString().slice(0, 10)).toBe('2017-02-20');
    expect(row.program_created_at.toISOString()).toBe('2019-09-06T07:09:46.000Z');
    expect(row.deadline_at.getTime() - row.received_at.getTime()).toBe(24 * 3600 * 1000);
    const audit = (await database.pool.query('SELECT * FROM webhook_audit')).rows;
    expect(audit).toEqual([expect.objectContaining({ vendor: 'physitrack', event_id: String(row.id), status_code: 204 })]);
  });

  it('accepts a rotated key', async () => {
    expect((await t.app.inject(physitrackRequest(physitrackNotice({ api_key: PHYSITRACK_OLD_KEY })))).statusCode).toBe(204);
  });

  it('keeps the PDF even when the dates are unreadable', async () => {
    const res = await t.app.inject(physitrackRequest(physitrackNotice({ date: '20/02/2017', date_iso: 'yesterday' })));
    expect(res.statusCode).toBe(204);
    expect((await deliveries())[0]).toMatchObject({ program_date: null, program_created_at: null });
  });

  it('never stores the api_key anywhere', async () => {
    await t.app.inject(physitrackRequest(physitrackNotice()));
    const dump = await database.pool.query(`SELECT concat(
      (SELECT coalesce(string_agg(t::text, ''), '') FROM physitrack_deliveries t),
      (SELECT coalesce(string_agg(a::text, ''), '') FROM webhook_audit a)) AS everything`);
    expect(dump.rows[0].everything).not.toContain(PHYSITRACK_KEY);
  });
});

describe('POST /webhooks/physitrack: refusals', () => {
  it.each([
    ['a missing api_key', { api_key: undefined }, 'missing_api_key'],
    ['a wrong api_key', { api_key: `${PHYSITRACK_KEY}x` }, 'bad_api_key'],
    ['a numeric api_key', { api_key: 12345 }, 'missing_api_key'],
  ])('answers 401 to %s and stores nothing', async (_label, override, reason) => {
    const res = await t.app.inject(physitrackRequest(physitrackNotice(override)));
    expect(res.statusCode).toBe(401);
    expect(res.json().message).toContain(reason);
    expect(await deliveries()).toHaveLength(0);
    expect((await database.pool.query('SELECT 1 FROM webhook_audit')).rowCount).toBe(0);
  });

  it('answers 401 to a token not in PHYSITRACK_TOKENS', async () => {
    const app = await buildTestApp(database.url, { PHYSITRACK_API_KEY: PHYSITRACK_KEY, PHYSITRACK_TOKENS: 'token-a,token-b' });
    expect((await app.app.inject(physitrackRequest(physitrackNotice({ token: 'token-c' })))).statusCode).toBe(401);
    expect((await app.app.inject(physitrackRequest(physitrackNotice({ token: 'token-b' })))).statusCode).toBe(204);
    await app.close();
  });

  it.each([
    ['updated as a string', { updated: 'true' }, 'updated'],
    ['no file_url', { file_url: undefined }, 'file_url'],
    ['a numeric patient_id', { patient_id: 2345 }, 'patient_id'],
    ['an empty token', { token: '' }, 'token'],
    ['no name', { name: undefined }, 'name'],
  ])('answers 400 to a notice with %s', async (_label, override, field) => {
    const res = await t.app.inject(physitrackRequest(physitrackNotice(override)));
    expect(res.statusCode).toBe(400);
    expect(res.json()).toMatchObject({ error: 'WH_ERR_BAD_PAYLOAD', message: expect.stringContaining(field) });
    expect(await deliveries()).toHaveLength(0);
  });

  it('answers 400 to a body that is not JSON', async () => {
    expect((await t.app.inject(physitrackRequest('{"api_key": '))).statusCode).toBe(400);
  });

  it('answers 415 to form data and 413 to a body over the limit', async () => {
    expect((await t.app.inject(physitrackRequest('a=b', { 'content-type': 'application/x-www-form-urlencoded' }))).statusCode).toBe(415);
    const big = physitrackNotice({ name: 'x'.repeat(2 * 1024 * 1024) });
    expect((await t.app.inject(physitrackRequest(big))).statusCode).toBe(413);
  });

  it.each([
    ['plain http', 'http://files.physitrack.com/p.pdf', /only https/],
    ['another host', 'https://evil.example/p.pdf', /not in PHYSITRACK_FILE_URL_HOSTS/],
    ['a look-alike host', 'https://evilphysitrack.com/p.pdf', /not in PHYSITRACK_FILE_URL_HOSTS/],
    ['the metadata address', 'https://169.254.169.254/latest/meta-data', /not in PHYSITRACK_FILE_URL_HOSTS/],
    ['a user and password', 'https://user:pw@files.physitrack.com/p.pdf', /user name or password/],
    ['a file: URL', 'file:///etc/passwd', /only https/],
    ['no URL at all', 'not a url', /not a valid/],
  ])('answers 422 to %s, and records the delivery as failed', async (_label, fileUrl, reason) => {
    const res = await t.app.inject(physitrackRequest(physitrackNotice({ file_url: fileUrl })));
    expect(res.statusCode).toBe(422);
    expect(res.json()).toMatchObject({ error: 'WH_ERR_URL_REFUSED', message: expect.stringMatching(reason) });
    const [row] = await deliveries();
    expect(row).toMatchObject({ download_status: 'failed', attempts: 0 });
    expect(row.last_error).toMatch(reason);
    const audit = (await database.pool.query('SELECT status_code FROM webhook_audit')).rows;
    expect(audit).toEqual([{ status_code: 422 }]);
  });

  it('logs no key, token, file URL path or patient id', async () => {
    const notice = physitrackNotice();
    await t.app.inject(physitrackRequest(notice));
    await t.app.inject(physitrackRequest({ ...notice, api_key: 'wrong-key-0123456789' }));
    await t.app.inject(physitrackRequest({ ...notice, file_url: 'https://evil.example/secret-evil-path.pdf' }));
    const all = t.logs.lines.join('\n');
    for (const forbidden of [PHYSITRACK_KEY, 'wrong-key-0123456789', notice.token as string, 'secret-path', 'secret-evil-path', notice.patient_id as string]) {
      expect(all).not.toContain(forbidden);
    }
  });
});

describe('POST /webhooks/physitrack: configuration and outages', () => {
  it('is not registered without PHYSITRACK_API_KEY', async () => {
    const logs = captureLogs();
    const app = await buildApp({ config: loadConfig({ NODE_ENV: 'test', DATABASE_URL: database.url }), db: t.db, logger: logs.logger });
    expect((await app.inject(physitrackRequest(physitrackNotice()))).statusCode).toBe(404);
    expect(logs.lines.join('\n')).toMatch(/webhooks\/physitrack is disabled/);
    await app.close();
  });

  it('wakes the worker after storing', async () => {
    let woken = 0;
    const config = loadConfig({ NODE_ENV: 'test', DATABASE_URL: database.url, PHYSITRACK_API_KEY: PHYSITRACK_KEY });
    const app = await buildApp({ config, db: t.db, logger: captureLogs().logger, onPhysitrackStored: () => (woken += 1) });
    await app.inject(physitrackRequest(physitrackNotice()));
    expect(woken).toBe(1);
    await app.close();
  });

  it('answers 503 with Retry-After within 2 s when the database is unreachable', async () => {
    const dead = await buildTestApp(await unreachableDatabaseUrl(), { PHYSITRACK_API_KEY: PHYSITRACK_KEY });
    const started = Date.now();
    const res = await dead.app.inject(physitrackRequest(physitrackNotice()));
    expect(res.statusCode).toBe(503);
    expect(res.headers['retry-after']).toBe('5');
    expect(Date.now() - started).toBeLessThan(2000);
    await dead.close();
  });
});
