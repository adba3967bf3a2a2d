import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { numberOutOfRange } from '../../src/webhooks/json-body.js';
import { buildTestApp, type TestApp } from '../helpers/app.js';
import { createTestDatabase, type TestDatabase } from '../helpers/database.js';
import { PATIRO_SECRET, patiroEvent, signedPatiroRequest } from '../helpers/patiro.js';

// Patiro's data is stored as sent, as jsonb, whose numbers are PostgreSQL's numeric. A number it
// cannot hold is refused with a 400 before anything is written; the check must agree with
// PostgreSQL exactly: never refuse what it stores, never let through what it refuses.

let database: TestDatabase;
let t: TestApp;
beforeAll(async () => {
  database = await createTestDatabase();
  t = await buildTestApp(database.url, { PATIRO_SIGNING_SECRET: PATIRO_SECRET, BODY_LIMIT_BYTES: '1048576' });
});
afterAll(async () => {
  await t.close();
  await database.drop();
});

async function postgresStores(json: string): Promise<boolean> {
  try {
    await database.pool.query('SELECT $1::jsonb', [json]);
    return true;
  } catch (err) {
    if ((err as { code?: string }).code?.startsWith('22')) return false;
    throw err;
  }
}

const EDGES = [
  '1e131071', '1e131072', '9.99e131071', '0.00001e131073', '0.00001e131072', `1${'0'.repeat(131_071)}`, `1${'0'.repeat(131_072)}`,
  '1e-16383', '1e-16384', '1.0e-16383', '0e-16384', '0e-16383', `0.${'0'.repeat(16_383)}`, `0.${'0'.repeat(16_384)}`, `1.${'0'.repeat(16_384)}`,
  '-1e131072', '1E+131072', '1e999999999999', '1e-999999999999', '0e999999999', '0.5e-16382', '12.5e-16382', '1.5e3', '-0', '0', '17',
];

describe('numbers PostgreSQL cannot store', () => {
  it.each(EDGES.map((n) => [n.length > 40 ? `${n.slice(0, 12)}…(${n.length} chars)` : n, n]))('agree with PostgreSQL on %s', async (_label, n) => {
    const json = `{"a": [${n}], "s": "1e999999"}`;
    expect(numberOutOfRange(json) === undefined).toBe(await postgresStores(json));
  });

  it('agree with PostgreSQL on random numbers near the limits', async () => {
    const digits = (max: number) => fc.integer({ min: 0, max }).chain((len) => fc.stringMatching(new RegExp(`^[0-9]{${len}}$`)));
    const number = fc.tuple(fc.boolean(), fc.integer({ min: 1, max: 3 }), fc.option(digits(40)), fc.option(fc.oneof(fc.integer({ min: 131_025, max: 131_080 }), fc.integer({ min: -16_430, max: -16_330 }), fc.integer({ min: -20, max: 20 }))), fc.nat(9))
      // JSON allows no leading zero: a zero integer part is a single 0.
      .map(([minus, intLen, frac, exponent, lead]) => `${minus ? '-' : ''}${lead === 0 ? '0' : `${lead}${'0'.repeat(intLen - 1)}`}${frac === null ? '' : `.${frac || '0'}`}${exponent === null ? '' : `e${exponent}`}`);
    await fc.assert(
      fc.asyncProperty(number, async (n) => {
        const json = `[${n}]`;
        expect(numberOutOfRange(json) === undefined, n).toBe(await postgresStores(json));
      }),
      { numRuns: 300 },
    );
  });

  it('answers 400 for one in Patiro data, writes nothing, and audits the 400', async () => {
    const body = `{"eventId":"e-range","eventType":"PatientUpdated","data":{"id":"p-1","x":1e131072}}`;
    const res = await t.app.inject(signedPatiroRequest({ body }));
    expect(res.statusCode).toBe(400);
    expect(res.json()).toMatchObject({ error: 'WH_ERR_BAD_PAYLOAD' });
    expect(res.body).not.toContain('131072}');
    expect((await database.pool.query(`SELECT count(*)::int AS n FROM patiro_events WHERE event_id = 'e-range'`)).rows[0].n).toBe(0);
    await expect.poll(async () => (await database.pool.query('SELECT status_code FROM webhook_audit WHERE status_code = 400')).rowCount).toBe(1);
  });

  it('answers 400, and audits 400, when PostgreSQL itself refuses a value as data (SQLSTATE class 22)', async () => {
    // A value the checks before the write let through and PostgreSQL refuses: made here by a trigger.
    await database.pool.query(`CREATE FUNCTION refuse_poison() RETURNS trigger LANGUAGE plpgsql AS $$
      BEGIN IF NEW.data ? 'poison' THEN RAISE EXCEPTION 'poisoned' USING ERRCODE = '22023'; END IF; RETURN NEW; END $$`);
    await database.pool.query('CREATE TRIGGER refuse_poison BEFORE INSERT ON patiro_events FOR EACH ROW EXECUTE FUNCTION refuse_poison()');
    try {
      const before = (await database.pool.query('SELECT count(*)::int AS n FROM webhook_audit WHERE status_code = 400')).rows[0].n as number;
      const res = await t.app.inject(signedPatiroRequest({ body: JSON.stringify(patiroEvent({ eventId: 'e-poison', data: { id: 'p-2', poison: true } })) }));
      expect(res.statusCode).toBe(400);
      expect(res.json()).toMatchObject({ error: 'WH_ERR_BAD_PAYLOAD', message: expect.stringContaining('22023') });
      await expect.poll(async () => (await database.pool.query('SELECT count(*)::int AS n FROM webhook_audit WHERE status_code = 400')).rows[0].n).toBe(before + 1);
      expect((await database.pool.query('SELECT count(*)::int AS n FROM webhook_audit WHERE status_code = 503')).rows[0].n).toBe(0);
      // Another delivery goes through.
      expect((await t.app.inject(signedPatiroRequest({ body: JSON.stringify(patiroEvent({ eventId: 'e-fine' })) }))).statusCode).toBe(204);
    } finally {
      await database.pool.query('DROP TRIGGER refuse_poison ON patiro_events; DROP FUNCTION refuse_poison()');
    }
  });
});
