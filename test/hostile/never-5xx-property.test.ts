import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildTestApp, type TestApp } from '../helpers/app.js';
import { createTestDatabase, type TestDatabase } from '../helpers/database.js';
import { PATIRO_SECRET, signedPatiroRequest } from '../helpers/patiro.js';
import { PHYSITRACK_KEY, physitrackNotice, physitrackRequest } from '../helpers/physitrack.js';

// Bad input is a 4xx, never a 5xx: for generated bodies (deep, wide, huge arrays and strings, odd
// numbers, odd dates), with and without credentials, both vendors answer 2xx or 4xx. A 5xx would
// tell the vendor to retry a delivery that can never succeed (and Patiro retries for ten hours).

let database: TestDatabase;
let t: TestApp;
beforeAll(async () => {
  database = await createTestDatabase();
  t = await buildTestApp(database.url, { PATIRO_SIGNING_SECRET: PATIRO_SECRET, PHYSITRACK_API_KEY: PHYSITRACK_KEY, LOG_LEVEL: 'warn', PHYSITRACK_FILE_URL_HOSTS: 'files.physitrack.com' });
});
afterAll(async () => {
  await t.close();
  await database.drop();
});

const oddNumber = fc.oneof(
  fc.constantFrom('9007199254740993', '1e309', '-1e309', '-0', '0.1000000000000000055511151231257827', '1E-400', '123456789012345678901234567890',
    // Beyond what PostgreSQL's numeric holds: refused as bad input, never a write failing on every retry.
    '1e131072', '1e-16384', '1e999999999', '-12e131071', `1${'0'.repeat(140_000)}`),
  fc.double().map(String).filter((n) => Number.isFinite(Number(n))),
);
const oddDate = fc.oneof(
  fc.constantFrom('9999-12-31T23:59:59-14:00', '0000-01-01T00:00:00Z', '0001-01-01T00:00:00+14:00', '2026-02-30T10:00:00', '2026-03-27T10:04:03.4247725', '', 'yesterday', '+275760-09-13T00:00:00Z'),
  fc.date({ noInvalidDate: true }).map((d) => d.toISOString()),
);
const text = fc.oneof(fc.string(), fc.string({ unit: 'binary' }), fc.constantFrom('\ud800', 'a\u0000b', 'x'.repeat(5000)));

/** JSON text, written by hand so that numbers stay as generated (1e309, 9007199254740993). */
const jsonValue: fc.Arbitrary<string> = fc.letrec<{ value: string }>((tie) => ({
  value: fc.oneof(
    { depthSize: 'small', withCrossShrink: true },
    oddNumber,
    text.map((s) => JSON.stringify(s)),
    oddDate.map((d) => JSON.stringify(d)),
    fc.constantFrom('true', 'false', 'null'),
    fc.array(tie('value'), { maxLength: 5 }).map((items) => `[${items.join(',')}]`),
    fc.array(fc.tuple(text, tie('value')), { maxLength: 5 }).map((members) => `{${members.map(([k, v]) => `${JSON.stringify(k)}:${v}`).join(',')}}`),
    // Wide and deep, each within the body limit.
    fc.constantFrom(`[${new Array(150_000).fill(0).join(',')}]`, `${'['.repeat(70)}${']'.repeat(70)}`, `${'{"a":'.repeat(40)}1${'}'.repeat(40)}`),
  ),
})).value;

const patiroBody = fc.oneof(
  jsonValue,
  fc.record({ eventId: fc.oneof(text, oddNumber), eventType: fc.constantFrom('PatientRevealed', 'PatientUpdated', 'Other'), timestamp: fc.oneof(oddDate, jsonValue), data: jsonValue }).map(
    ({ eventId, eventType, timestamp, data }) =>
      `{"eventId":${eventId.startsWith('"') || /^[-\d]/.test(eventId) ? eventId : JSON.stringify(eventId)},"eventType":"${eventType}","timestamp":${timestamp.startsWith('"') || /^[[{tfn\d-]/.test(timestamp) ? timestamp : JSON.stringify(timestamp)},"data":${data}}`,
  ),
  fc.record({ id: fc.oneof(oddNumber, text.map((s) => JSON.stringify(s)), jsonValue), rest: jsonValue }).map(
    ({ id, rest }) => `{"eventId":"e-${Math.random().toString(36).slice(2)}","eventType":"PatientUpdated","data":{"id":${id},"more":${rest}}}`,
  ),
);

const physitrackBody = fc.oneof(
  jsonValue,
  fc.record({ field: fc.constantFrom('token', 'patient_id', 'file_url', 'name', 'date', 'date_iso', 'updated', 'extra'), value: jsonValue, key: fc.boolean() }).map(({ field, value, key }) => {
    const notice = physitrackNotice({ api_key: key ? PHYSITRACK_KEY : 'not-the-key-0123456789abcdef' });
    const text = JSON.stringify(notice);
    return `${text.slice(0, -1)},${JSON.stringify(field)}:${value}}`;
  }),
  fc.record({ date: oddDate, dateIso: oddDate }).map(({ date, dateIso }) => JSON.stringify(physitrackNotice({ date, date_iso: dateIso }))),
);

const never5xx = (status: number) => expect(status, `answered ${status}`).toBeLessThan(500);

describe('whatever a vendor sends', () => {
  it('Patiro answers 2xx or 4xx, signed or not', async () => {
    await fc.assert(
      fc.asyncProperty(patiroBody, fc.boolean(), async (body, signed) => {
        const request = signedPatiroRequest({ body, ...(signed ? {} : { secret: 'not-the-secret-0123456789abcdef' }) });
        never5xx((await t.app.inject(request)).statusCode);
      }),
      { numRuns: 150 },
    );
  });

  it('Patiro stores a patient event whose data.id is a large array or object (no index entry holds it as text)', async () => {
    // Found by the property above: an index on the id's text refused such rows (SQLSTATE 54000) with 503.
    for (const id of [`[${Array(5000).fill(0).join(',')}]`, `{"v":"${'x'.repeat(10_000)}"}`, JSON.stringify('y'.repeat(3000))]) {
      for (const type of ['PatientRevealed', 'PatientUpdated']) {
        const body = `{"eventId":"e-big-${type}-${id.length}","eventType":"${type}","data":{"id":${id}}}`;
        const status = (await t.app.inject(signedPatiroRequest({ body }))).statusCode;
        // A string id over 200 characters is refused as the payload's fault; the others are stored.
        expect(status, id.slice(0, 10)).toBe(id.startsWith('"') ? 400 : 204);
      }
    }
  });

  it('Physitrack answers 2xx or 4xx, with the key or without', async () => {
    await fc.assert(
      fc.asyncProperty(physitrackBody, async (body) => {
        never5xx((await t.app.inject(physitrackRequest(body))).statusCode);
      }),
      { numRuns: 150 },
    );
  });
});
