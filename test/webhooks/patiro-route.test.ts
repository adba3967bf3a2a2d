import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { buildTestApp, type TestApp } from '../helpers/app.js';
import { createTestDatabase, type TestDatabase } from '../helpers/database.js';
import { PATIRO_OLD_SECRET, PATIRO_SECRET, patiroEvent, signedPatiroRequest } from '../helpers/patiro.js';

let database: TestDatabase;
let t: TestApp;

beforeAll(async () => {
  database = await createTestDatabase();
  t = await buildTestApp(database.url, { PATIRO_SIGNING_SECRET: `${PATIRO_SECRET},${PATIRO_OLD_SECRET}` });
});
afterAll(async () => {
  await t.close();
  await database.drop();
});
beforeEach(async () => {
  await database.pool.query('TRUNCATE patiro_events, patiro_patients, webhook_audit');
});

async function eventRow(eventId: string) {
  const { rows } = await database.pool.query('SELECT * FROM patiro_events WHERE event_id = $1', [eventId]);
  return rows[0];
}

describe('POST /webhooks/patiro: storing', () => {
  it('stores a signed event and answers 204', async () => {
    const event = patiroEvent();
    const timestamp = String(Date.now());
    const res = await t.app.inject(signedPatiroRequest({ body: JSON.stringify(event), timestamp }));
    expect(res.statusCode).toBe(204);
    expect(res.body).toBe('');
    const row = await eventRow(event.eventId as string);
    expect(row).toMatchObject({
      event_type: 'PatientUpdated',
      occurred_at_raw: '2026-03-27T10:04:03.4247725',
      data: event.data,
      delivery_count: 1,
    });
    expect(row.occurred_at.toISOString()).toBe('2026-03-27T10:04:03.424Z');
    const micros = await database.pool.query("SELECT to_char(occurred_at AT TIME ZONE 'UTC', 'HH24:MI:SS.US') AS t FROM patiro_events");
    expect(micros.rows[0].t).toBe('10:04:03.424772');
    expect(row.signed_at.getTime()).toBe(Number(timestamp));
    expect(row.first_received_at).toEqual(row.last_received_at);
  });

  it('accepts a delivery signed with the second rotation secret', async () => {
    const event = patiroEvent();
    const res = await t.app.inject(signedPatiroRequest({ body: JSON.stringify(event), secret: PATIRO_OLD_SECRET }));
    expect(res.statusCode).toBe(204);
  });

  it('stores pretty-printed JSON signed as sent', async () => {
    const event = patiroEvent();
    const res = await t.app.inject(signedPatiroRequest({ body: `${JSON.stringify(event, null, 4)}\n` }));
    expect(res.statusCode).toBe(204);
    expect((await eventRow(event.eventId as string)).data).toEqual(event.data);
  });

  it('accepts application/json with a charset', async () => {
    const res = await t.app.inject(signedPatiroRequest({ body: JSON.stringify(patiroEvent()), headers: { 'content-type': 'application/json; charset=utf-8' } }));
    expect(res.statusCode).toBe(204);
  });

  it('stores an unknown event type like the others, without a patient projection', async () => {
    const event = patiroEvent({ eventType: 'AppointmentBooked', data: { id: 'appt-1' } });
    expect((await t.app.inject(signedPatiroRequest({ body: JSON.stringify(event) }))).statusCode).toBe(204);
    expect((await eventRow(event.eventId as string)).event_type).toBe('AppointmentBooked');
    expect((await database.pool.query('SELECT * FROM patiro_patients')).rowCount).toBe(0);
  });

  it('stores a null occurred_at with the raw string when the timestamp is unreadable', async () => {
    const event = patiroEvent({ timestamp: 'yesterday at noon' });
    expect((await t.app.inject(signedPatiroRequest({ body: JSON.stringify(event) }))).statusCode).toBe(204);
    expect(await eventRow(event.eventId as string)).toMatchObject({ occurred_at: null, occurred_at_raw: 'yesterday at noon' });
  });

  it('writes an audit row with the body hash and no body', async () => {
    const event = patiroEvent();
    await t.app.inject(signedPatiroRequest({ body: JSON.stringify(event) }));
    const { rows } = await database.pool.query('SELECT * FROM webhook_audit');
    expect(rows).toEqual([expect.objectContaining({ vendor: 'patiro', event_id: event.eventId, status_code: 204, source_address: '127.0.0.1' })]);
    expect(rows[0].body_sha256).toMatch(/^[0-9a-f]{64}$/);
  });
});

describe('POST /webhooks/patiro: redeliveries', () => {
  it('replaces the data when a redelivery is signed later, and counts it', async () => {
    const event = patiroEvent();
    const t0 = Date.now() - 60_000;
    await t.app.inject(signedPatiroRequest({ body: JSON.stringify(event), timestamp: String(t0) }));
    const newer = { ...event, data: { ...(event.data as object), lastName: 'Byron' } };
    expect((await t.app.inject(signedPatiroRequest({ body: JSON.stringify(newer), timestamp: String(t0 + 1000) }))).statusCode).toBe(204);
    const row = await eventRow(event.eventId as string);
    expect(row.data.lastName).toBe('Byron');
    expect(row.delivery_count).toBe(2);
    expect(row.signed_at.getTime()).toBe(t0 + 1000);
    expect(row.last_received_at.getTime()).toBeGreaterThanOrEqual(row.first_received_at.getTime());
  });

  it('keeps the newer data when an older delivery is replayed, but still counts it', async () => {
    const event = patiroEvent();
    const t0 = Date.now() - 60_000;
    const newer = { ...event, data: { ...(event.data as object), lastName: 'Byron' } };
    await t.app.inject(signedPatiroRequest({ body: JSON.stringify(newer), timestamp: String(t0 + 1000) }));
    expect((await t.app.inject(signedPatiroRequest({ body: JSON.stringify(event), timestamp: String(t0) }))).statusCode).toBe(204);
    const row = await eventRow(event.eventId as string);
    expect(row.data.lastName).toBe('Byron');
    expect(row.delivery_count).toBe(2);
    expect(row.signed_at.getTime()).toBe(t0 + 1000);
  });

  it('stores 20 concurrent duplicates as one row, answering 204 to each', async () => {
    const body = JSON.stringify(patiroEvent());
    const timestamp = String(Date.now());
    const answers = await Promise.all(Array.from({ length: 20 }, () => t.app.inject(signedPatiroRequest({ body, timestamp }))));
    expect(answers.map((a) => a.statusCode)).toEqual(Array(20).fill(204));
    const { rows } = await database.pool.query('SELECT delivery_count FROM patiro_events');
    expect(rows).toEqual([{ delivery_count: 20 }]);
    expect((await database.pool.query('SELECT 1 FROM webhook_audit')).rowCount).toBe(20);
  });
});

describe('POST /webhooks/patiro: concurrent redeliveries with different data', () => {
  it('keeps the newest data when 30 versions of one event arrive at once, in any order', async () => {
    const event = patiroEvent();
    const t0 = Date.now() - 60_000;
    const versions = Array.from({ length: 30 }, (_, i) => ({ i, body: JSON.stringify({ ...event, data: { id: 'p-c', version: i } }) }));
    versions.sort(() => Math.random() - 0.5);
    const answers = await Promise.all(versions.map(({ i, body }) => t.app.inject(signedPatiroRequest({ body, timestamp: String(t0 + i * 10) }))));
    expect(answers.every((a) => a.statusCode === 204)).toBe(true);
    const row = await eventRow(event.eventId as string);
    expect(row).toMatchObject({ delivery_count: 30, data: { id: 'p-c', version: 29 } });
    const patient = await database.pool.query('SELECT data FROM patiro_patients WHERE patient_id = $1', ['p-c']);
    expect(patient.rows[0].data.version).toBe(29);
  });
});

describe('POST /webhooks/patiro: patient projection', () => {
  it('keeps the latest patient data by signed time, and when the patient was revealed', async () => {
    const t0 = Date.now() - 60_000;
    const revealed = patiroEvent({ eventType: 'PatientRevealed', timestamp: '2026-03-27T09:00:00', data: { id: 'p-42', lastName: 'First' } });
    const updated = patiroEvent({ eventType: 'PatientUpdated', data: { id: 'p-42', lastName: 'Second' } });
    const stale = patiroEvent({ eventType: 'PatientUpdated', data: { id: 'p-42', lastName: 'Stale' } });
    await t.app.inject(signedPatiroRequest({ body: JSON.stringify(revealed), timestamp: String(t0) }));
    await t.app.inject(signedPatiroRequest({ body: JSON.stringify(updated), timestamp: String(t0 + 2000) }));
    await t.app.inject(signedPatiroRequest({ body: JSON.stringify(stale), timestamp: String(t0 + 1000) }));
    const { rows } = await database.pool.query('SELECT * FROM patiro_patients');
    expect(rows).toHaveLength(1);
    expect(rows[0]).toMatchObject({ patient_id: 'p-42', data: { id: 'p-42', lastName: 'Second' }, last_event_id: updated.eventId });
    expect(rows[0].revealed_at.toISOString()).toBe('2026-03-27T09:00:00.000Z');
    expect(rows[0].signed_at.getTime()).toBe(t0 + 2000);
  });

  it('accepts a numeric patient id', async () => {
    const event = patiroEvent({ data: { id: 12345 } });
    await t.app.inject(signedPatiroRequest({ body: JSON.stringify(event) }));
    expect((await database.pool.query('SELECT patient_id FROM patiro_patients')).rows).toEqual([{ patient_id: '12345' }]);
  });
});
