import type { InjectOptions } from 'fastify';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { patiroSignature } from '../../src/webhooks/patiro-signature.js';
import { buildTestApp, type TestApp } from '../helpers/app.js';
import { createTestDatabase, type TestDatabase } from '../helpers/database.js';
import { PATIRO_SECRET, patiroEvent, signedPatiroRequest } from '../helpers/patiro.js';
import { expectAnswer, expectNoPollution, printable, prototypeKeyBodies, type Expected } from './hostile-input.js';

// Whatever a stranger (or a broken sender) POSTs to /webhooks/patiro: never a 5xx, never a crash,
// and the one 4xx the README names for it.

const LIMIT = 65_536;
let database: TestDatabase;
let t: TestApp;

beforeAll(async () => {
  database = await createTestDatabase();
  t = await buildTestApp(database.url, { PATIRO_SIGNING_SECRET: PATIRO_SECRET, BODY_LIMIT_BYTES: String(LIMIT) });
});
afterAll(async () => {
  await t.close();
  await database.drop();
});

/** A request signed over `timestamp` as given, whatever it is, so only the part under test is wrong. */
function signedWith(body: string | Buffer, timestamp: string, signature?: string): InjectOptions {
  const raw = Buffer.isBuffer(body) ? body : Buffer.from(body);
  const request = signedPatiroRequest({ body: raw, timestamp });
  const headers = { ...(request.headers as Record<string, string>) };
  if (signature !== undefined) headers['x-patiro-hmacsha256'] = signature;
  return { ...request, headers };
}

const validBody = () => JSON.stringify(patiroEvent());
const now = () => String(Date.now());

/** What the route answers to authenticated bytes that are not a valid event. */
function expectedForSignedBytes(raw: Buffer): Expected {
  const text = raw.toString('utf8');
  if (text.includes('\\u0000')) return [400, 'WH_ERR_BAD_JSON'];
  try {
    JSON.parse(text);
  } catch {
    return [400, 'WH_ERR_BAD_JSON'];
  }
  return [400, 'WH_ERR_BAD_PAYLOAD'];
}

describe('POST /webhooks/patiro: hostile bodies', () => {
  it('answers 401 to random bytes without a signature, or with a made-up one', async () => {
    await fc.assert(
      fc.asyncProperty(fc.uint8Array({ maxLength: 512 }), fc.stringMatching(/^[0-9a-f]{64}$/), async (bytes, signature) => {
        const body = Buffer.from(bytes);
        await expectAnswer(t.app, { method: 'POST', url: '/webhooks/patiro', headers: { 'content-type': 'application/json' }, payload: body }, [401, 'WH_ERR_UNAUTHENTICATED', 'missing_signature']);
        await expectAnswer(t.app, signedWith(body, now(), signature), [401, 'WH_ERR_UNAUTHENTICATED', 'bad_signature']);
      }),
      { numRuns: 50 },
    );
  });

  it('answers 400 to correctly signed random bytes', async () => {
    await fc.assert(
      fc.asyncProperty(fc.uint8Array({ maxLength: 512 }), async (bytes) => {
        const body = Buffer.from(bytes);
        await expectAnswer(t.app, signedWith(body, now()), expectedForSignedBytes(body));
      }),
      { numRuns: 100 },
    );
  });

  it('answers 400 WH_ERR_BAD_JSON to signed JSON truncated anywhere', async () => {
    const event = fc.record({ eventId: fc.uuid(), eventType: fc.string({ minLength: 1 }), data: fc.jsonValue({ maxDepth: 3 }) });
    await fc.assert(
      fc.asyncProperty(event, fc.double({ min: 0, max: 1, noNaN: true }), async (value, at) => {
        const full = Buffer.from(JSON.stringify(value));
        const cut = full.subarray(0, Math.min(full.length - 1, Math.floor(at * full.length)));
        await expectAnswer(t.app, signedWith(cut, now()), [400, 'WH_ERR_BAD_JSON']);
      }),
      { numRuns: 100 },
    );
  });

  it('stores any signed event whose eventId and eventType are strings, whatever its data', async () => {
    const data = fc.jsonValue({ maxDepth: 4, stringUnit: 'grapheme' });
    const text = fc.string({ minLength: 1, maxLength: 200, unit: 'grapheme' }).filter((s) => s.length <= 200);
    await fc.assert(
      fc.asyncProperty(text, text, data, async (eventId, eventType, value) => {
        const body = JSON.stringify({ eventId, eventType, data: value });
        await expectAnswer(t.app, signedWith(body, now()), body.includes('\\u0000') ? [400, 'WH_ERR_BAD_JSON'] : [204]);
      }),
      { numRuns: 100 },
    );
  });

  it('answers 400 WH_ERR_BAD_PAYLOAD to numbers, objects or nulls where eventId or eventType belong', async () => {
    const notString = fc.jsonValue({ maxDepth: 2 }).filter((v) => typeof v !== 'string');
    await fc.assert(
      fc.asyncProperty(notString, fc.boolean(), async (value, inEventId) => {
        const body = JSON.stringify(inEventId ? { eventId: value, eventType: 'PatientUpdated' } : { eventId: 'e-1', eventType: value });
        await expectAnswer(t.app, signedWith(body, now()), [400, 'WH_ERR_BAD_PAYLOAD']);
      }),
      { numRuns: 50 },
    );
    await expectAnswer(t.app, signedWith(JSON.stringify({ eventId: '', eventType: 'PatientUpdated' }), now()), [400, 'WH_ERR_BAD_PAYLOAD']);
    await expectAnswer(t.app, signedWith(JSON.stringify({ eventId: 'x'.repeat(201), eventType: 'PatientUpdated' }), now()), [400, 'WH_ERR_BAD_PAYLOAD']);
  });

  it.each([
    ['arrays', '['],
    ['objects', '{"a":'],
  ])('answers 401 unsigned and 400 signed to %s nested 10,000 deep', async (_label, open) => {
    const close = open === '[' ? ']' : '}';
    const body = `${open.repeat(10_000)}1${close.repeat(10_000)}`;
    await expectAnswer(t.app, { method: 'POST', url: '/webhooks/patiro', headers: { 'content-type': 'application/json' }, payload: body }, [401, 'WH_ERR_UNAUTHENTICATED']);
    await expectAnswer(t.app, signedWith(body, now()), [400, 'WH_ERR_BAD_JSON']);
  });

  it('stores a body of exactly the limit and answers 413 to one byte more, signed or not', async () => {
    const base = JSON.stringify({ ...patiroEvent(), data: { pad: '' } });
    const sized = (bytes: number) => JSON.stringify({ ...patiroEvent(), data: { pad: 'x'.repeat(bytes - base.length) } });
    const atLimit = sized(LIMIT);
    expect(Buffer.byteLength(atLimit)).toBe(LIMIT);
    await expectAnswer(t.app, signedWith(atLimit, now()), [204]);
    await expectAnswer(t.app, signedWith(sized(LIMIT + 1), now()), [413, 'WH_ERR_BODY_TOO_LARGE']);
    await expectAnswer(t.app, signedWith(sized(LIMIT + 1), now(), 'not-a-signature'), [413, 'WH_ERR_BODY_TOO_LARGE']);
  });

  it('stores __proto__, constructor and prototype keys as plain data without polluting Object.prototype', async () => {
    for (const body of prototypeKeyBodies({ eventType: 'PatientUpdated' }, 'eventId')) {
      await expectAnswer(t.app, signedWith(body, now()), [204]);
      const eventId = (JSON.parse(body) as { eventId: string }).eventId;
      const { rows } = await database.pool.query('SELECT data::text AS data FROM patiro_events WHERE event_id = $1', [eventId]);
      expect(JSON.parse(rows[0].data)).toEqual(JSON.parse(body).data ?? null);
    }
    expectNoPollution();
  });

});

describe('POST /webhooks/patiro: hostile headers and query strings', () => {
  it.each([
    ['missing', undefined, 415],
    ['empty', '', 415],
    ['text/plain', 'text/plain', 415],
    ['a form', 'application/x-www-form-urlencoded', 415],
    ['multipart', 'multipart/form-data; boundary=x', 415],
    ['application/jsonp', 'application/jsonp', 415],
    ['JSON with a charset', 'application/json; charset=utf-8', 204],
    ['JSON in capitals', 'APPLICATION/JSON', 204],
    ['a +json type', 'application/vnd.patiro+json', 204],
  ])('answers %s content type (%s) with %i', async (_label, contentType, status) => {
    const request = signedWith(validBody(), now());
    const headers = { ...(request.headers as Record<string, string>) };
    if (contentType === undefined) delete headers['content-type'];
    else headers['content-type'] = contentType;
    await expectAnswer(t.app, { ...request, headers }, status === 415 ? [415, 'WH_ERR_UNSUPPORTED_MEDIA_TYPE'] : [204]);
  });

  it('refuses a repeated signature or timestamp header rather than pick one', async () => {
    const request = signedWith(validBody(), now());
    const headers = request.headers as Record<string, string>;
    const twice = (name: string) => ({ ...request, headers: { ...headers, [name]: [headers[name]!, headers[name]!] } });
    await expectAnswer(t.app, twice('x-patiro-hmacsha256'), [401, 'WH_ERR_UNAUTHENTICATED', 'malformed_signature']);
    await expectAnswer(t.app, twice('x-patiro-timestamp'), [401, 'WH_ERR_UNAUTHENTICATED', 'malformed_timestamp']);
  });

  it('answers 401 malformed_signature to anything but 64 hex digits, and bad_signature to the wrong 64', async () => {
    const notHex64 = fc.string({ unit: printable, minLength: 1, maxLength: 200 }).filter((s) => !/^[0-9a-fA-F]{64}$/.test(s) && s.trim() === s);
    await fc.assert(
      fc.asyncProperty(notHex64, async (signature) => {
        await expectAnswer(t.app, signedWith(validBody(), now(), signature), [401, 'WH_ERR_UNAUTHENTICATED', 'malformed_signature']);
      }),
      { numRuns: 100 },
    );
    await expectAnswer(t.app, signedWith(validBody(), now(), 'a'.repeat(20_000)), [401, 'WH_ERR_UNAUTHENTICATED', 'malformed_signature']);
    await expectAnswer(t.app, signedWith(validBody(), now(), 'ab'.repeat(33)), [401, 'WH_ERR_UNAUTHENTICATED', 'malformed_signature']);
    await expectAnswer(t.app, signedWith(validBody(), now(), 'ab'.repeat(32)), [401, 'WH_ERR_UNAUTHENTICATED', 'bad_signature']);
    const body = validBody();
    const timestamp = now();
    await expectAnswer(t.app, signedWith(body, timestamp, patiroSignature(PATIRO_SECRET, timestamp, Buffer.from(body)).toUpperCase()), [204]);
  });

  it('answers 401 malformed_timestamp to a timestamp that is not 1 to 15 digits, and stale_timestamp to one out of tolerance', async () => {
    const notMillis = fc.string({ unit: printable, minLength: 1, maxLength: 40 }).filter((s) => !/^\d{1,15}$/.test(s) && s.trim() === s);
    await fc.assert(
      fc.asyncProperty(notMillis, async (timestamp) => {
        await expectAnswer(t.app, signedWith(validBody(), timestamp), [401, 'WH_ERR_UNAUTHENTICATED', 'malformed_timestamp']);
      }),
      { numRuns: 100 },
    );
    for (const malformed of ['1'.repeat(16), '9'.repeat(400), '-1', '1e12', `${Date.now()}.5`, ` ${Date.now()}x`]) {
      await expectAnswer(t.app, signedWith(validBody(), malformed), [401, 'WH_ERR_UNAUTHENTICATED', 'malformed_timestamp']);
    }
    for (const stale of ['0', '999999999999999', String(Date.now() - 301_000), String(Date.now() + 301_000)]) {
      await expectAnswer(t.app, signedWith(validBody(), stale), [401, 'WH_ERR_UNAUTHENTICATED', 'stale_timestamp']);
    }
    await expectAnswer(t.app, signedWith(validBody(), String(Date.now() - 290_000)), [204]);
  });

  it('ignores any query string when no ?token= is configured, without polluting Object.prototype', async () => {
    const fixed = ['?a=%zz', '?__proto__[polluted]=1', '?constructor[prototype][polluted]=1', '?token=a&token=b', '?a[b][c]=1&&=&', `?${'q='.repeat(2000)}`];
    await fc.assert(
      fc.asyncProperty(fc.oneof(fc.webQueryParameters(), fc.constantFrom(...fixed.map((q) => q.slice(1)))), async (query) => {
        const request = signedPatiroRequest({ body: validBody(), query: `?${query}` });
        await expectAnswer(t.app, request, [204]);
      }),
      { numRuns: 60 },
    );
    expectNoPollution();
  });

  it('took the unexpected-error path for none of the requests above, and is still alive', async () => {
    expect(t.logs.entries().filter((e) => e.msg === 'request failed' || e.level === 50)).toEqual([]);
    expect((await t.app.inject({ method: 'GET', url: '/healthz' })).statusCode).toBe(200);
  });
});

// Last, so the errors these log do not count against the check above.
describe('POST /webhooks/patiro: bodies PostgreSQL cannot store', () => {
  it.each([
    ['in data', '{"eventId":"lone-1","eventType":"PatientUpdated","data":{"note":"\\ud800"}}'],
    ['in a key', '{"eventId":"lone-2","eventType":"PatientUpdated","data":{"\\udfff":1}}'],
    ['in eventId', '{"eventId":"lone-3\\ud800","eventType":"PatientUpdated"}'],
  ])('answers 400 to a lone UTF-16 surrogate %s, which PostgreSQL cannot store', async (_label, body) => {
    await expectAnswer(t.app, signedWith(body, now()), [400, 'WH_ERR_BAD_JSON']);
  });
});
