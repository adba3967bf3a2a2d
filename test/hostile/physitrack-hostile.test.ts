import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildTestApp, type TestApp } from '../helpers/app.js';
import { createTestDatabase, type TestDatabase } from '../helpers/database.js';
import { PHYSITRACK_KEY, physitrackNotice, physitrackRequest } from '../helpers/physitrack.js';
import { expectAnswer, expectNoPollution, printable, prototypeKeyBodies, type Expected } from './hostile-input.js';

// Whatever arrives at /webhooks/physitrack: never a 5xx, never a crash, the README's 4xx. The key is
// inside the body, so the body is parsed (size- and depth-limited) before anything is authenticated:
// garbage gets 400, well-formed JSON without the key 401.

const LIMIT = 65_536;
let database: TestDatabase;
let t: TestApp;

beforeAll(async () => {
  database = await createTestDatabase();
  t = await buildTestApp(database.url, { PHYSITRACK_API_KEY: PHYSITRACK_KEY, BODY_LIMIT_BYTES: String(LIMIT) });
});
afterAll(async () => {
  await t.close();
  await database.drop();
});

const send = (body: unknown) => physitrackRequest(body);
const bad = (error: string): Expected => [400, error];
const unauthenticated = (reason: string): Expected => [401, 'WH_ERR_UNAUTHENTICATED', reason];

/** Unauthenticated bytes: not JSON (or unstorable, or too deep) is 400; any JSON without the key is 401. */
function expectedForBytes(raw: Buffer): Expected {
  const text = raw.toString('utf8');
  if (text.includes('\\u0000')) return bad('WH_ERR_BAD_JSON');
  try {
    JSON.parse(text);
  } catch {
    return bad('WH_ERR_BAD_JSON');
  }
  return [401, 'WH_ERR_UNAUTHENTICATED'];
}

describe('POST /webhooks/physitrack: hostile bodies', () => {
  it('answers random bytes with 400 when they are not JSON and 401 when they are', async () => {
    await fc.assert(
      fc.asyncProperty(fc.uint8Array({ maxLength: 512 }), async (bytes) => {
        const body = Buffer.from(bytes);
        await expectAnswer(t.app, { ...send(''), payload: body }, expectedForBytes(body));
      }),
      { numRuns: 100 },
    );
  });

  it('answers 400 WH_ERR_BAD_JSON to a valid notice truncated anywhere', async () => {
    await fc.assert(
      fc.asyncProperty(fc.double({ min: 0, max: 1, noNaN: true }), async (at) => {
        const full = JSON.stringify(physitrackNotice());
        await expectAnswer(t.app, send(full.slice(0, Math.min(full.length - 1, Math.floor(at * full.length)))), bad('WH_ERR_BAD_JSON'));
      }),
      { numRuns: 60 },
    );
  });

  it.each([
    ['arrays', '[', ']'],
    ['objects', '{"a":', '}'],
  ])('answers 400 to %s nested 10,000 deep, before looking for a key', async (_label, open, close) => {
    await expectAnswer(t.app, send(`${open.repeat(10_000)}1${close.repeat(10_000)}`), bad('WH_ERR_BAD_JSON'));
  });

  it('stores a notice of exactly the limit and answers 413 to one byte more, with or without the key', async () => {
    const sized = (bytes: number, notice = physitrackNotice({ padding: '' })) => {
      const base = JSON.stringify(notice).length;
      return JSON.stringify({ ...notice, padding: 'x'.repeat(bytes - base) });
    };
    expect(Buffer.byteLength(sized(LIMIT))).toBe(LIMIT);
    await expectAnswer(t.app, send(sized(LIMIT)), [204]);
    await expectAnswer(t.app, send(sized(LIMIT, physitrackNotice({ api_key: 'wrong-key-0123456789', padding: '' }))), unauthenticated('bad_api_key'));
    await expectAnswer(t.app, send(sized(LIMIT + 1)), [413, 'WH_ERR_BODY_TOO_LARGE']);
    await expectAnswer(t.app, send(physitrackNotice({ name: 'n'.repeat(1001) })), bad('WH_ERR_BAD_PAYLOAD'));
    await expectAnswer(t.app, send(physitrackNotice({ file_url: `https://files.physitrack.com/${'p'.repeat(5000)}` })), bad('WH_ERR_BAD_PAYLOAD'));
  });

  it('answers 400 WH_ERR_BAD_PAYLOAD to anything but a string (or boolean for updated) in each field', async () => {
    const fields = fc.constantFrom('token', 'patient_id', 'file_url', 'name', 'date', 'date_iso', 'updated');
    const value = fc.jsonValue({ maxDepth: 2 });
    await fc.assert(
      fc.asyncProperty(fields, value, async (field, v) => {
        const fits = field === 'updated' ? typeof v === 'boolean' : typeof v === 'string';
        fc.pre(!fits);
        await expectAnswer(t.app, send(physitrackNotice({ [field]: v })), bad('WH_ERR_BAD_PAYLOAD'));
      }),
      { numRuns: 100 },
    );
    for (const missing of ['token', 'patient_id', 'file_url', 'updated']) {
      await expectAnswer(t.app, send(physitrackNotice({ [missing]: undefined })), bad('WH_ERR_BAD_PAYLOAD'));
    }
  });

  it('answers 401 to a key that is missing, empty, not a string, or any other string', async () => {
    await fc.assert(
      fc.asyncProperty(fc.jsonValue({ maxDepth: 1 }), async (key) => {
        fc.pre(key !== PHYSITRACK_KEY);
        const reason = typeof key === 'string' && key !== '' ? 'bad_api_key' : 'missing_api_key';
        await expectAnswer(t.app, send(physitrackNotice({ api_key: key })), unauthenticated(reason));
      }),
      { numRuns: 100 },
    );
    for (const near of [PHYSITRACK_KEY.toUpperCase(), ` ${PHYSITRACK_KEY}`, PHYSITRACK_KEY.slice(0, -1), `${PHYSITRACK_KEY}\n`]) {
      await expectAnswer(t.app, send(physitrackNotice({ api_key: near })), unauthenticated('bad_api_key'));
    }
    await expectAnswer(t.app, send([physitrackNotice()]), unauthenticated('missing_api_key'));
    await expectAnswer(t.app, send(JSON.stringify(PHYSITRACK_KEY)), unauthenticated('missing_api_key'));
  });

  it('takes no api_key from __proto__, constructor or prototype, and is not polluted by them', async () => {
    const { api_key: _key, ...withoutKey } = physitrackNotice();
    for (const smuggled of [
      `${JSON.stringify(withoutKey).slice(0, -1)},"__proto__":{"api_key":${JSON.stringify(PHYSITRACK_KEY)}}}`,
      `${JSON.stringify(withoutKey).slice(0, -1)},"constructor":{"prototype":{"api_key":${JSON.stringify(PHYSITRACK_KEY)}}}}`,
    ]) {
      await expectAnswer(t.app, send(smuggled), unauthenticated('missing_api_key'));
    }
    for (const body of prototypeKeyBodies(physitrackNotice(), 'patient_id')) await expectAnswer(t.app, send(body), [204]);
    expectNoPollution();
  });
});

describe('POST /webhooks/physitrack: hostile headers and query strings', () => {
  it.each([
    ['missing', undefined, 415],
    ['text/plain', 'text/plain', 415],
    ['a form', 'application/x-www-form-urlencoded', 415],
    ['application/json5', 'application/json5', 415],
    ['JSON with a charset', 'application/json;charset=UTF-8', 204],
  ])('answers %s content type (%s) with %i', async (_label, contentType, status) => {
    const request = send(physitrackNotice());
    const headers = { ...(request.headers as Record<string, string>) };
    if (contentType === undefined) delete headers['content-type'];
    else headers['content-type'] = contentType;
    await expectAnswer(t.app, { ...request, headers }, status === 415 ? [415, 'WH_ERR_UNSUPPORTED_MEDIA_TYPE'] : [204]);
  });

  it('stores a valid notice whatever the query string or extra headers say', async () => {
    const header = fc.string({ unit: printable, minLength: 1, maxLength: 100 }).filter((s) => s.trim() === s);
    await fc.assert(
      fc.asyncProperty(fc.webQueryParameters(), header, async (query, value) => {
        const request = send(physitrackNotice());
        const headers = { ...(request.headers as Record<string, string>), 'x-api-key': value, authorization: value };
        await expectAnswer(t.app, { ...request, url: `${request.url}?${query}`, headers }, [204]);
      }),
      { numRuns: 60 },
    );
    await expectAnswer(t.app, { ...send(physitrackNotice()), url: '/webhooks/physitrack?__proto__[polluted]=1&api_key=x' }, [204]);
    expectNoPollution();
  });

  it('took the unexpected-error path for none of the requests above, and is still alive', async () => {
    expect(t.logs.entries().filter((e) => e.msg === 'request failed' || e.level === 50)).toEqual([]);
    expect((await t.app.inject({ method: 'GET', url: '/healthz' })).statusCode).toBe(200);
  });
});

// Last, so the errors these log do not count against the check above.
describe('POST /webhooks/physitrack: notices PostgreSQL cannot store', () => {
  it.each([['name'], ['patient_id'], ['token']])('answers 400 to a lone UTF-16 surrogate in %s', async (field) => {
    const body = JSON.stringify(physitrackNotice({ [field]: 'x-SURROGATE' })).replace('SURROGATE', '\\ud800');
    await expectAnswer(t.app, send(body), bad('WH_ERR_BAD_JSON'));
  });
});
