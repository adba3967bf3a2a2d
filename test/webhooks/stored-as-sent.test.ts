import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { buildTestApp, type TestApp } from '../helpers/app.js';
import { createTestDatabase, type TestDatabase } from '../helpers/database.js';
import { PATIRO_SECRET, signedPatiroRequest } from '../helpers/patiro.js';
import { PHYSITRACK_KEY, physitrackNotice, physitrackRequest } from '../helpers/physitrack.js';

// What PostgreSQL keeps is what the vendor signed: the JSON text of `data` is parsed by PostgreSQL,
// not by JavaScript, so numbers a double cannot hold keep every digit, and a patient id is the id
// as sent (two ids that round to one double are two patients).

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
  await database.pool.query('TRUNCATE patiro_events, patiro_patients, webhook_audit, physitrack_deliveries, physitrack_programs');
});

const send = (body: string) => t.app.inject(signedPatiroRequest({ body }));

describe('data stored exactly as sent', () => {
  it('keeps two patients whose ids round to the same JavaScript number apart', async () => {
    expect((await send('{"eventId":"big-1","eventType":"PatientUpdated","data":{"id":9007199254740993,"name":"A"}}')).statusCode).toBe(204);
    expect((await send('{"eventId":"big-2","eventType":"PatientUpdated","data":{"id":9007199254740992,"name":"B"}}')).statusCode).toBe(204);
    const { rows } = await database.pool.query(`SELECT patient_id, data->>'name' AS name, data->>'id' AS id FROM patiro_patients ORDER BY patient_id`);
    expect(rows).toEqual([
      { patient_id: '9007199254740992', name: 'B', id: '9007199254740992' },
      { patient_id: '9007199254740993', name: 'A', id: '9007199254740993' },
    ]);
  });

  it('keeps numbers a double cannot hold, and the exact timestamp text', async () => {
    const body = '{"eventId":"num-1","eventType":"SomethingNew","timestamp":{"at":12345678901234567890},"data":{"w":1e309,"p":0.1000000000000000055511151231257827,"n":-0,"big":123456789012345678901234567890}}';
    expect((await send(body)).statusCode).toBe(204);
    const { rows } = await database.pool.query(
      `SELECT (data->'w')::numeric = 1e309::numeric AS w, data->>'p' AS p, data->>'big' AS big, occurred_at_raw FROM patiro_events WHERE event_id = 'num-1'`,
    );
    expect(rows[0]).toEqual({ w: true, p: '0.1000000000000000055511151231257827', big: '123456789012345678901234567890', occurred_at_raw: '{"at":12345678901234567890}' });
  });

  it('stores a Physitrack notice whose date_iso lies outside what PostgreSQL reads as NULL, not a 503', async () => {
    const res = await t.app.inject(physitrackRequest(physitrackNotice({ date_iso: '9999-12-31T23:59:59-14:00' })));
    expect(res.statusCode).toBe(204);
    const { rows } = await database.pool.query('SELECT program_created_at FROM physitrack_deliveries');
    expect(rows).toEqual([{ program_created_at: null }]);
  });
});
