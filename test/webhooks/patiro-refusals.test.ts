import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildApp } from '../../src/app.js';
import { loadConfig } from '../../src/config.js';
import { addSource } from '../../src/sources/manage.js';
import { setSourceStatus } from '../../src/sources/sources-table.js';
import { buildTestApp, TEST_SOURCES_KEY, type TestApp } from '../helpers/app.js';
import { createTestDatabase, unreachableDatabaseUrl, type TestDatabase } from '../helpers/database.js';
import { captureLogs } from '../helpers/logs.js';
import { PATIRO_SECRET, patiroEvent, signedPatiroRequest } from '../helpers/patiro.js';

let database: TestDatabase;
let t: TestApp;

beforeAll(async () => {
  database = await createTestDatabase();
  t = await buildTestApp(database.url, { PATIRO_SIGNING_SECRET: PATIRO_SECRET, BODY_LIMIT_BYTES: '65536' });
});
afterAll(async () => {
  await t.close();
  await database.drop();
});

async function count(table: string): Promise<number> {
  return Number((await database.pool.query(`SELECT count(*) AS n FROM ${table}`)).rows[0].n);
}

describe('POST /webhooks/patiro: refusals', () => {
  it('answers 401 to a bad signature, stores nothing and logs the reason', async () => {
    const before = await count('webhook_audit');
    const req = signedPatiroRequest({ body: JSON.stringify(patiroEvent()), secret: 'someone-elses-secret-0123456789' });
    const res = await t.app.inject(req);
    expect(res.statusCode).toBe(401);
    expect(res.json()).toEqual({ error: 'WH_ERR_UNAUTHENTICATED', message: 'Authentication failed (bad_signature)' });
    expect(await count('patiro_events')).toBe(0);
    expect(await count('webhook_audit')).toBe(before);
    expect(t.logs.entries().some((e) => e.reason === 'bad_signature')).toBe(true);
  });

  it('answers 401 to a stale timestamp', async () => {
    const res = await t.app.inject(signedPatiroRequest({ body: JSON.stringify(patiroEvent()), timestamp: String(Date.now() - 301_000) }));
    expect(res.statusCode).toBe(401);
    expect(res.json().message).toMatch(/stale_timestamp/);
  });

  it('answers 400 to malformed JSON after a valid signature, and audits it', async () => {
    const res = await t.app.inject(signedPatiroRequest({ body: '{"eventId": "e-1", ' }));
    expect(res.statusCode).toBe(400);
    expect(res.json().error).toBe('WH_ERR_BAD_JSON');
    await expect.poll(async () => (await database.pool.query('SELECT status_code FROM webhook_audit WHERE status_code = 400')).rowCount).toBe(1);
  });

  it.each([
    ['without eventId', { eventType: 'PatientUpdated' }],
    ['with a numeric eventId', { eventId: 7, eventType: 'PatientUpdated' }],
    ['without eventType', { eventId: 'e-2' }],
    ['as an array', [{ eventId: 'e-3', eventType: 'PatientUpdated' }]],
    ['as a string', 'PatientUpdated'],
  ])('answers 400 to a payload %s', async (_label, body) => {
    const res = await t.app.inject(signedPatiroRequest({ body: JSON.stringify(body) }));
    expect(res.statusCode).toBe(400);
    expect(res.json().error).toBe('WH_ERR_BAD_PAYLOAD');
  });

  it('answers 400 to JSON nested 10,000 deep', async () => {
    const res = await t.app.inject(signedPatiroRequest({ body: `${'['.repeat(10_000)}${']'.repeat(10_000)}` }));
    expect(res.statusCode).toBe(400);
  });

  it('answers 400 to a NUL character PostgreSQL cannot store', async () => {
    const res = await t.app.inject(signedPatiroRequest({ body: JSON.stringify(patiroEvent({ data: { id: 'p', note: 'a\u0000b' } })) }));
    expect(res.statusCode).toBe(400);
  });

  it('answers 415 to a body that is not JSON', async () => {
    const res = await t.app.inject(signedPatiroRequest({ body: 'eventId=1', headers: { 'content-type': 'application/x-www-form-urlencoded' } }));
    expect(res.statusCode).toBe(415);
    expect(res.json().error).toBe('WH_ERR_UNSUPPORTED_MEDIA_TYPE');
  });

  it('answers 413 to a body over the limit', async () => {
    const res = await t.app.inject(signedPatiroRequest({ body: JSON.stringify(patiroEvent({ data: { pad: 'x'.repeat(70_000) } })) }));
    expect(res.statusCode).toBe(413);
  });

  it('never logs a secret, a signature or a patient field', async () => {
    const event = patiroEvent({ data: { id: 'patient-secret-id', lastName: 'Zyxwvut', email: 'zyx@example.org' } });
    const req = signedPatiroRequest({ body: JSON.stringify(event) });
    await t.app.inject(req);
    await t.app.inject({ ...req, headers: { ...req.headers, 'x-patiro-hmacsha256': 'f'.repeat(64) } });
    const all = t.logs.lines.join('\n');
    const signature = (req.headers as Record<string, string>)['x-patiro-hmacsha256']!;
    for (const forbidden of [PATIRO_SECRET, signature, 'patient-secret-id', 'Zyxwvut', 'zyx@example.org']) {
      expect(all).not.toContain(forbidden);
    }
  });
});

describe('POST /webhooks/patiro: never the status that stops Patiro retrying', () => {
  it('answers no random request with 403 or any 5xx, on any source path', async () => {
    const valid = JSON.stringify(patiroEvent());
    const keys = [Buffer.from(TEST_SOURCES_KEY, 'base64')];
    const active = (await addSource(t.db, keys, { vendor: 'patiro', name: 'Clinic A' })).row.id;
    const disabled = (await addSource(t.db, keys, { vendor: 'patiro', name: 'Clinic B' })).row.id;
    await setSourceStatus(t.db, disabled, 'disabled');
    await t.sources.reload();
    // The environment's source, a table source, a disabled one, and ids that name no source.
    const path = fc.oneof(
      fc.constantFrom('/webhooks/patiro', '/webhooks/patiro/default', `/webhooks/patiro/${active}`, `/webhooks/patiro/${disabled}`),
      fc.string({ minLength: 1 }).map((id) => `/webhooks/patiro/${encodeURIComponent(id)}`),
    );
    await fc.assert(
      fc.asyncProperty(
        fc.record({
          body: fc.oneof(fc.constant(valid), fc.string(), fc.uint8Array({ maxLength: 200 }).map((b) => Buffer.from(b)), fc.json()),
          contentType: fc.constantFrom('application/json', 'text/plain', 'application/json; charset=latin1', '', 'application/xml'),
          signature: fc.oneof(fc.constant(undefined), fc.string({ unit: fc.constantFrom(...'0123456789abcdefABCDEF'), minLength: 64, maxLength: 64 }), fc.string()),
          timestamp: fc.oneof(fc.constant(undefined), fc.constant(String(Date.now())), fc.string(), fc.bigInt({ min: 0n, max: 10n ** 30n }).map(String)),
          query: fc.oneof(fc.constant(''), fc.string().map((s) => `?token=${encodeURIComponent(s)}`), fc.constant('?a[b]=1&__proto__=x')),
          path,
        }),
        async ({ body, contentType, signature, timestamp, query, path: url }) => {
          const headers: Record<string, string> = {};
          if (contentType) headers['content-type'] = contentType;
          if (signature !== undefined) headers['x-patiro-hmacsha256'] = signature.replace(/[^\x20-\x7e]/g, '');
          if (timestamp !== undefined) headers['x-patiro-timestamp'] = timestamp.replace(/[^\x20-\x7e]/g, '');
          const res = await t.app.inject({ method: 'POST', url: `${url}${query}`, headers, payload: body });
          expect(res.statusCode).not.toBe(403);
          expect(res.statusCode).toBeLessThan(500);
          expect([204, 400, 401, 404, 413, 415]).toContain(res.statusCode);
          // 404 only where there is no active source; an active one authenticates.
          if (res.statusCode === 404) expect(url === `/webhooks/patiro/${active}` || url === '/webhooks/patiro' || url === '/webhooks/patiro/default').toBe(false);
        },
      ),
      { numRuns: 300 },
    );
    await database.pool.query('DELETE FROM sources WHERE id = ANY($1)', [[active, disabled]]);
  });
});

describe('POST /webhooks/patiro: configuration', () => {
  it('is not registered when no protection is configured, and says so at startup', async () => {
    const logs = captureLogs();
    const config = loadConfig({ NODE_ENV: 'test', DATABASE_URL: database.url });
    const app = await buildApp({ config, db: t.db, logger: logs.logger });
    const res = await app.inject(signedPatiroRequest({ body: JSON.stringify(patiroEvent()) }));
    expect(res.statusCode).toBe(404);
    expect(logs.lines.join('\n')).toMatch(/webhooks\/patiro is disabled/);
    await app.close();
  });

  it('accepts the token and basic auth modes, each required when configured', async () => {
    const token = 'patiro-query-token-0123456789';
    const basic = 'patiro:s3cret-password-0123456789';
    const tokenApp = await buildTestApp(database.url, { PATIRO_TOKEN: token, PATIRO_BASIC_AUTH: basic });
    const body = JSON.stringify(patiroEvent());
    const authorization = `Basic ${Buffer.from(basic).toString('base64')}`;
    const post = (url: string, headers: Record<string, string>) =>
      tokenApp.app.inject({ method: 'POST', url, headers: { 'content-type': 'application/json', ...headers }, payload: body });
    expect((await post(`/webhooks/patiro?token=${token}`, { authorization })).statusCode).toBe(204);
    expect((await post(`/webhooks/patiro?token=${token}`, {})).statusCode).toBe(401);
    expect((await post('/webhooks/patiro', { authorization })).statusCode).toBe(401);
    expect(tokenApp.logs.lines.join('\n')).not.toContain(token);
    await tokenApp.close();
  });

  it('answers 503 with Retry-After within the ack deadline when the database is unreachable', async () => {
    const dead = await buildTestApp(await unreachableDatabaseUrl(), { PATIRO_SIGNING_SECRET: PATIRO_SECRET });
    const started = Date.now();
    const res = await dead.app.inject(signedPatiroRequest({ body: JSON.stringify(patiroEvent()) }));
    expect(res.statusCode).toBe(503);
    expect(res.headers['retry-after']).toBe('5');
    expect(Date.now() - started).toBeLessThan(2000);
    await dead.close();
  });
});
