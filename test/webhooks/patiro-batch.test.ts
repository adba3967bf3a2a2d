import fc from 'fast-check';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { newReceipt } from '../../src/audit.js';
import { createDatabase, type Database } from '../../src/db/client.js';
import { toPatiroEvent } from '../../src/webhooks/patiro-payload.js';
import { writePatiroBatch, type PatiroDelivery } from '../../src/webhooks/patiro-store.js';
import { createTestDatabase, type TestDatabase } from '../helpers/database.js';

let database: TestDatabase;
let db: Database;
beforeAll(async () => {
  database = await createTestDatabase();
  db = createDatabase({ url: database.url, poolSize: 4, connectTimeoutMs: 1000 });
});
afterAll(async () => {
  await db.$disconnect();
  await database.drop();
});
beforeEach(async () => {
  await database.pool.query('TRUNCATE patiro_events, patiro_patients, webhook_audit');
});

const T0 = Date.parse('2026-11-01T00:00:00Z');

function delivery(eventId: string, eventType: string, signedOffset: number, data: Record<string, unknown>): PatiroDelivery {
  return {
    receipt: newReceipt(),
    sourceId: 'default',
    event: toPatiroEvent({ eventId, eventType, timestamp: '2026-10-31T08:00:00.1234567', data }),
    signedAt: new Date(T0 + signedOffset * 1000),
    bodySha256: 'a'.repeat(64),
    sourceAddress: '127.0.0.1',
  };
}

async function tables() {
  const events = await database.pool.query('SELECT source_id, event_id, event_type, occurred_at, data, signed_at, delivery_count FROM patiro_events ORDER BY event_id, source_id');
  const patients = await database.pool.query('SELECT source_id, patient_id, data, signed_at, revealed_at, last_event_id FROM patiro_patients ORDER BY patient_id, source_id');
  const audit = await database.pool.query('SELECT count(*)::int AS n FROM webhook_audit');
  return { events: events.rows, patients: patients.rows, audit: audit.rows[0].n };
}

describe('writePatiroBatch', () => {
  it('folds duplicates within one batch: newest data wins and every delivery counts', async () => {
    const results = await writePatiroBatch(db, [
      delivery('e1', 'PatientUpdated', 1, { id: 'p1', v: 1 }),
      delivery('e1', 'PatientUpdated', 3, { id: 'p1', v: 3 }),
      delivery('e1', 'PatientUpdated', 2, { id: 'p1', v: 2 }),
      delivery('e2', 'SomethingNew', 1, { id: 'x' }),
    ]);
    expect(results).toEqual([{ inserted: true }, { inserted: false }, { inserted: false }, { inserted: true }]);
    const { events, patients, audit } = await tables();
    expect(events.map((e) => [e.event_id, e.data.v, e.delivery_count])).toEqual([
      ['e1', 3, 3],
      ['e2', undefined, 1],
    ]);
    expect(patients).toEqual([expect.objectContaining({ patient_id: 'p1', data: { id: 'p1', v: 3 }, last_event_id: 'e1' })]);
    expect(audit).toBe(4);
  });

  it('keeps the earliest reveal and the newest data for one patient across events in a batch', async () => {
    await writePatiroBatch(db, [
      delivery('r1', 'PatientRevealed', 1, { id: 'p9', v: 'revealed' }),
      delivery('u2', 'PatientUpdated', 5, { id: 'p9', v: 'newest' }),
      delivery('u1', 'PatientUpdated', 3, { id: 'p9', v: 'older' }),
    ]);
    const { patients } = await tables();
    expect(patients).toEqual([expect.objectContaining({ data: { id: 'p9', v: 'newest' }, last_event_id: 'u2' })]);
    expect(patients[0].revealed_at.toISOString()).toBe('2026-10-31T08:00:00.123Z');
  });

  it('writes no new patient row version for a delivery that changes nothing, and does for one that does', async () => {
    // xmin is the transaction that wrote the row's current version: unchanged means not rewritten.
    const version = async () => (await database.pool.query(`SELECT xmin::text AS v, revealed_at FROM patiro_patients WHERE patient_id = 'p5'`)).rows[0];
    await writePatiroBatch(db, [delivery('u5', 'PatientUpdated', 5, { id: 'p5', v: 'newest' })]);
    const written = await version();
    await writePatiroBatch(db, [delivery('u5', 'PatientUpdated', 5, { id: 'p5', v: 'newest' })]); // the same delivery again
    await writePatiroBatch(db, [delivery('u3', 'PatientUpdated', 3, { id: 'p5', v: 'older' })]); // an older one, late
    expect(await version()).toEqual(written);
    // An older reveal still moves revealed_at back (and keeps the newest data).
    await writePatiroBatch(db, [delivery('r1', 'PatientRevealed', 1, { id: 'p5', v: 'revealed' })]);
    const revealed = await version();
    expect(revealed.v).not.toBe(written.v);
    expect(revealed.revealed_at.toISOString()).toBe('2026-10-31T08:00:00.123Z');
    // A newer delivery is written.
    await writePatiroBatch(db, [delivery('u9', 'PatientUpdated', 9, { id: 'p5', v: 'newer still' })]);
    expect((await version()).v).not.toBe(revealed.v);
    const { events, patients } = await tables();
    expect(patients).toEqual([expect.objectContaining({ data: { id: 'p5', v: 'newer still' }, last_event_id: 'u9' })]);
    expect(events.find((e) => e.event_id === 'u5')?.delivery_count).toBe(2); // the event itself still counts every delivery
  });

  it('keeps the earliest of two reveals within one millisecond to the microsecond, as one by one would', async () => {
    const reveal = (eventId: string, timestamp: string) => ({ ...delivery(eventId, 'PatientRevealed', 1, { id: 'p7' }), event: toPatiroEvent({ eventId, eventType: 'PatientRevealed', timestamp, data: { id: 'p7' } }) });
    await writePatiroBatch(db, [reveal('r-late', '2026-10-31T08:00:00.123789'), reveal('r-early', '2026-10-31T08:00:00.123456')]);
    const { rows } = await database.pool.query(`SELECT to_char(revealed_at AT TIME ZONE 'UTC', 'HH24:MI:SS.US') AS at FROM patiro_patients WHERE patient_id = 'p7'`);
    expect(rows).toEqual([{ at: '08:00:00.123456' }]);
  });

  it('keeps two sources apart within one batch: the same eventId and patient id are two rows each', async () => {
    const results = await writePatiroBatch(db, [
      { ...delivery('e1', 'PatientUpdated', 1, { id: 'p1', clinic: 'A' }), sourceId: 'clinicaaaaaaaaaaaaaa' },
      { ...delivery('e1', 'PatientUpdated', 2, { id: 'p1', clinic: 'B' }), sourceId: 'clinicbbbbbbbbbbbbbb' },
    ]);
    expect(results).toEqual([{ inserted: true }, { inserted: true }]);
    const events = await database.pool.query('SELECT source_id, data FROM patiro_events ORDER BY source_id');
    expect(events.rows.map((r) => [r.source_id, r.data.clinic])).toEqual([['clinicaaaaaaaaaaaaaa', 'A'], ['clinicbbbbbbbbbbbbbb', 'B']]);
    const patients = await database.pool.query('SELECT source_id, data FROM patiro_patients ORDER BY source_id');
    expect(patients.rows.map((r) => [r.source_id, r.data.clinic])).toEqual([['clinicaaaaaaaaaaaaaa', 'A'], ['clinicbbbbbbbbbbbbbb', 'B']]);
  });

  it('ends in the same tables whether deliveries are written one by one or in any batches', async () => {
    const arbitraryDelivery = fc.record({
      event: fc.constantFrom('e1', 'e2', 'e3'),
      type: fc.constantFrom('PatientRevealed', 'PatientUpdated', 'Other'),
      patient: fc.constantFrom('p1', 'p2'),
      source: fc.constantFrom('default', 'clinicaaaaaaaaaaaaaa'),
      signed: fc.integer({ min: 0, max: 20 }),
      v: fc.integer({ min: 0, max: 1000 }),
    });
    await fc.assert(
      fc.asyncProperty(fc.array(arbitraryDelivery, { minLength: 1, maxLength: 12 }), fc.array(fc.integer({ min: 1, max: 5 }), { minLength: 12, maxLength: 12 }), async (items, cuts) => {
        const deliveries = items.map((d) => ({ ...delivery(d.event, d.type, d.signed, { id: d.patient, v: d.v }), sourceId: d.source }));
        await database.pool.query('TRUNCATE patiro_events, patiro_patients, webhook_audit');
        for (const d of deliveries) await writePatiroBatch(db, [d]);
        const oneByOne = await tables();

        await database.pool.query('TRUNCATE patiro_events, patiro_patients, webhook_audit');
        for (let start = 0, i = 0; start < deliveries.length; start += cuts[i++]!) {
          await writePatiroBatch(db, deliveries.slice(start, start + cuts[i]!));
        }
        expect(await tables()).toEqual(oneByOne);
      }),
      { numRuns: 25 },
    );
  });
});
