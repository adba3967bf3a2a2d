import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { newReceipt } from '../../src/audit.js';
import { closeDatabase, createDatabase, type Database } from '../../src/db/client.js';
import { createGroupCommitter } from '../../src/db/group-commit.js';
import { insertDeliveries } from '../../src/downloads/intake.js';
import { createDownloadQueue } from '../../src/downloads/queue.js';
import { toPatiroEvent } from '../../src/webhooks/patiro-payload.js';
import { writePatiroBatch, type PatiroDelivery } from '../../src/webhooks/patiro-store.js';
import { createTestDatabase, type TestDatabase } from '../helpers/database.js';
import { newDelivery } from '../helpers/physitrack.js';

// Every delivery carries a receipt from its arrival, and its audit row is keyed by it: a write that
// runs again (a replayed spool, a batch retried after a COMMIT whose answer was lost) counts nothing
// twice, and the rows keep the receive time of the receipt, not the time of the write.

let database: TestDatabase;
let db: Database;
beforeAll(async () => {
  database = await createTestDatabase();
  db = createDatabase({ url: database.url, poolSize: 4, connectTimeoutMs: 5000 });
});
afterAll(async () => {
  await closeDatabase(db);
  await database.drop();
});
beforeEach(async () => {
  await database.pool.query('TRUNCATE patiro_events, patiro_patients, webhook_audit, physitrack_deliveries, physitrack_programs');
});

const HOUR = 3_600_000;
const at = (iso: string) => new Date(iso);

function patiro(eventId: string, receivedAt: Date, signedAt = receivedAt, data: Record<string, unknown> = { id: 'p1' }): PatiroDelivery {
  return {
    receipt: newReceipt(receivedAt),
    sourceId: 'default',
    event: toPatiroEvent({ eventId, eventType: 'PatientUpdated', timestamp: '2026-10-31T08:00:00Z', data }),
    signedAt,
    bodySha256: 'c'.repeat(64),
    sourceAddress: '127.0.0.1',
  };
}

async function auditCount(): Promise<number> {
  return (await database.pool.query<{ n: number }>('SELECT count(*)::int AS n FROM webhook_audit')).rows[0]!.n;
}

describe('a Patiro write that runs again', () => {
  it('counts each receipt once, however often the same batch is written', async () => {
    const batch = [patiro('e1', at('2026-11-01T10:00:00Z')), patiro('e1', at('2026-11-01T10:00:05Z')), patiro('e2', at('2026-11-01T10:00:06Z'))];
    expect(await writePatiroBatch(db, batch)).toEqual([{ inserted: true }, { inserted: false }, { inserted: true }]);
    const before = (await database.pool.query('SELECT * FROM patiro_events ORDER BY event_id')).rows;
    expect(await writePatiroBatch(db, batch)).toEqual([{ inserted: false }, { inserted: false }, { inserted: false }]);
    expect(await writePatiroBatch(db, [batch[1]!])).toEqual([{ inserted: false }]);
    expect((await database.pool.query('SELECT * FROM patiro_events ORDER BY event_id')).rows).toEqual(before);
    expect(before.map((e) => [e.event_id, e.delivery_count])).toEqual([
      ['e1', 2],
      ['e2', 1],
    ]);
    expect(await auditCount()).toBe(3);
  });

  it('counts a new receipt of an event beside one written before', async () => {
    const first = patiro('e1', at('2026-11-01T10:00:00Z'));
    await writePatiroBatch(db, [first]);
    await writePatiroBatch(db, [first, patiro('e1', at('2026-11-01T10:01:00Z'))]);
    const { rows } = await database.pool.query('SELECT delivery_count FROM patiro_events');
    expect(rows).toEqual([{ delivery_count: 2 }]);
    expect(await auditCount()).toBe(2);
  });

  it('keeps the receive times of the receipts, whatever order they are written in', async () => {
    const early = patiro('e1', at('2026-11-01T09:00:00Z'), at('2026-11-01T09:00:00Z'), { id: 'p1', v: 1 });
    const late = patiro('e1', at('2026-11-01T11:00:00Z'), at('2026-11-01T11:00:00Z'), { id: 'p1', v: 2 });
    await writePatiroBatch(db, [late]);
    await writePatiroBatch(db, [early]);
    const { rows } = await database.pool.query('SELECT first_received_at, last_received_at, data FROM patiro_events');
    expect(rows).toEqual([{ first_received_at: early.receipt.receivedAt, last_received_at: late.receipt.receivedAt, data: { id: 'p1', v: 2 } }]);
    const audit = await database.pool.query('SELECT received_at FROM webhook_audit ORDER BY received_at');
    expect(audit.rows.map((r) => r.received_at)).toEqual([early.receipt.receivedAt, late.receipt.receivedAt]);
  });

  it('counts once when the group committer retries a batch whose COMMIT answer was lost', async () => {
    let lost = false;
    const committer = createGroupCommitter({
      // The first batch of several commits, then its connection breaks before the answer arrives:
      // the committer splits it and writes the halves again.
      writeBatch: async (batch: PatiroDelivery[]) => {
        const results = await writePatiroBatch(db, batch);
        if (batch.length > 1 && !lost) {
          lost = true;
          throw Object.assign(new Error('Connection terminated unexpectedly'), { code: 'ECONNRESET' });
        }
        return results;
      },
    });
    const first = committer.submit(patiro('lost-1', at('2026-11-01T10:00:00Z')), Date.now() + 5000);
    const batch = ['lost-1', 'lost-2', 'lost-2', 'lost-3'].map((id) => committer.submit(patiro(id, at('2026-11-01T10:00:01Z')), Date.now() + 5000));
    await Promise.all([first, ...batch]);
    expect(lost).toBe(true);
    const { rows } = await database.pool.query('SELECT event_id, delivery_count FROM patiro_events ORDER BY event_id');
    expect(rows).toEqual([
      { event_id: 'lost-1', delivery_count: 2 },
      { event_id: 'lost-2', delivery_count: 2 },
      { event_id: 'lost-3', delivery_count: 1 },
    ]);
    expect(await auditCount()).toBe(5);
    expect(committer.stats.fallbacks).toBe(1);
  });

  it('counts once when two writes of the same receipts run at once', async () => {
    const batch = Array.from({ length: 20 }, (_, i) => patiro(`e${i % 5}`, at('2026-11-01T10:00:00Z')));
    await Promise.all([writePatiroBatch(db, batch), writePatiroBatch(db, batch), writePatiroBatch(db, batch.slice(5))]);
    const { rows } = await database.pool.query<{ total: number }>('SELECT sum(delivery_count)::int AS total FROM patiro_events');
    expect(rows[0]!.total).toBe(20);
    expect(await auditCount()).toBe(20);
  });
});

describe('a Physitrack write that runs again', () => {
  it('counts each receipt once and requeues nothing again', async () => {
    const first = newDelivery({ fileUrl: 'https://files.physitrack.com/r/1.pdf' }, { receipt: newReceipt(at('2026-11-01T10:00:00Z')) });
    const again = newDelivery({ fileUrl: 'https://files.physitrack.com/r/1.pdf' }, { receipt: newReceipt(at('2026-11-01T10:05:00Z')) });
    const [stored] = await insertDeliveries(db, [first, again]);
    expect(stored).toMatchObject({ redelivery: false, downloadStatus: 'pending' });
    await database.pool.query(`UPDATE physitrack_deliveries SET download_status = 'failed'`);
    expect(await insertDeliveries(db, [first, again])).toEqual([
      { id: null, redelivery: true, downloadStatus: null },
      { id: null, redelivery: true, downloadStatus: null },
    ]);
    const { rows } = await database.pool.query('SELECT notice_count, download_status, received_at, last_notice_at, deadline_at FROM physitrack_deliveries');
    expect(rows).toEqual([
      {
        notice_count: 2,
        download_status: 'failed',
        received_at: first.receipt.receivedAt,
        last_notice_at: again.receipt.receivedAt,
        deadline_at: new Date(first.receipt.receivedAt.getTime() + 24 * HOUR),
      },
    ]);
    expect(await auditCount()).toBe(2);
  });

  it('keeps the earliest receive time and deadline when an older notice is written after a newer one', async () => {
    const url = 'https://files.physitrack.com/r/2.pdf';
    const late = newDelivery({ fileUrl: url }, { receipt: newReceipt(at('2026-11-01T12:00:00Z')) });
    const early = newDelivery({ fileUrl: url }, { receipt: newReceipt(at('2026-11-01T10:00:00Z')) });
    await insertDeliveries(db, [late]);
    await insertDeliveries(db, [early]);
    const { rows } = await database.pool.query('SELECT notice_count, received_at, last_notice_at, deadline_at FROM physitrack_deliveries');
    expect(rows).toEqual([
      { notice_count: 2, received_at: early.receipt.receivedAt, last_notice_at: late.receipt.receivedAt, deadline_at: new Date(early.receipt.receivedAt.getTime() + 24 * HOUR) },
    ]);
  });

  it("makes the version received last the program's latest, even when it is written first", async () => {
    const version = (n: number, iso: string) =>
      newDelivery({ fileUrl: `https://files.physitrack.com/r/v${n}.pdf`, programName: `Knee v${n}` }, { receipt: newReceipt(at(iso)) });
    const v1 = version(1, '2026-11-01T10:00:00Z');
    const v2 = version(2, '2026-11-01T11:00:00Z');
    const v3 = version(3, '2026-11-01T12:00:00Z');
    await insertDeliveries(db, [v2]);
    await insertDeliveries(db, [v3, v1]);
    const { rows } = await database.pool.query(
      `SELECT p.versions, p.program_name, p.first_notice_at, d.file_url AS latest FROM physitrack_programs p JOIN physitrack_deliveries d ON d.id = p.latest_delivery_id`,
    );
    expect(rows).toEqual([{ versions: 3, program_name: 'Knee v3', first_notice_at: v1.receipt.receivedAt, latest: v3.notice.fileUrl }]);
  });

  it('chooses the current document again when a spooled receipt moves the current version back in time', async () => {
    const url = (v: string) => `https://files.physitrack.com/r/current-${v}.pdf`;
    const a = newDelivery({ fileUrl: url('a'), programName: 'Knee A' }, { receipt: newReceipt(at('2026-11-01T12:00:00Z')) });
    const b = newDelivery({ fileUrl: url('b'), programName: 'Knee B' }, { receipt: newReceipt(at('2026-11-01T11:00:00Z')) });
    const [storedA] = await insertDeliveries(db, [a]);
    const [storedB] = await insertDeliveries(db, [b]);
    // Both downloaded; A, received last, is current.
    const docs = await database.pool.query<{ id: string }>(
      `INSERT INTO documents (sha256, size_bytes, content_type, storage, content) VALUES ('${'a'.repeat(64)}', 1, 'application/pdf', 'database', '\\x00'),
       ('${'b'.repeat(64)}', 1, 'application/pdf', 'database', '\\x00') RETURNING id::text`,
    );
    await database.pool.query(`UPDATE physitrack_deliveries SET download_status = 'done', document_id = $2 WHERE id = $1`, [storedA!.id, docs.rows[0]!.id]);
    await database.pool.query(`UPDATE physitrack_deliveries SET download_status = 'done', document_id = $2 WHERE id = $1`, [storedB!.id, docs.rows[1]!.id]);
    await database.pool.query(`UPDATE physitrack_programs SET current_delivery_id = $1, current_document_id = $2`, [storedA!.id, docs.rows[0]!.id]);

    // A had been received before, at 10:00, and spooled: replayed now, A is the older version.
    await insertDeliveries(db, [newDelivery({ fileUrl: url('a'), programName: 'Knee A' }, { receipt: newReceipt(at('2026-11-01T10:00:00Z')) })]);
    const { rows } = await database.pool.query(
      `SELECT latest.file_url AS latest, cur.file_url AS current, p.program_name, p.first_notice_at, p.versions
       FROM physitrack_programs p JOIN physitrack_deliveries latest ON latest.id = p.latest_delivery_id JOIN physitrack_deliveries cur ON cur.id = p.current_delivery_id`,
    );
    expect(rows).toEqual([{ latest: url('b'), current: url('b'), program_name: 'Knee B', first_notice_at: at('2026-11-01T10:00:00Z'), versions: 2 }]);
  });

  it('makes a newer download current when the current delivery was purged by retention', async () => {
    const url = (v: string) => `https://files.physitrack.com/r/purged-${v}.pdf`;
    // Received within the download deadline, so that version 2 can still be claimed.
    const [v1] = await insertDeliveries(db, [newDelivery({ fileUrl: url('1') }, { receipt: newReceipt(new Date(Date.now() - 2 * HOUR)) })]);
    const [v2] = await insertDeliveries(db, [newDelivery({ fileUrl: url('2') }, { receipt: newReceipt(new Date(Date.now() - HOUR)) })]);
    const docs = await database.pool.query<{ id: string }>(
      `INSERT INTO documents (sha256, size_bytes, content_type, storage, content) VALUES ('${'c'.repeat(64)}', 1, 'application/pdf', 'database', '\\x00'),
       ('${'d'.repeat(64)}', 1, 'application/pdf', 'database', '\\x00') RETURNING id::text`,
    );
    await database.pool.query(`UPDATE physitrack_programs SET current_delivery_id = $1, current_document_id = $2`, [v1!.id, docs.rows[0]!.id]);
    await database.pool.query('DELETE FROM physitrack_deliveries WHERE id = $1', [v1!.id]);
    // Version 2 downloaded now, through the queue's own statement.
    const queue = createDownloadQueue(db, 'test-worker', 60);
    const [claimed] = await queue.claim(1);
    expect(claimed!.id).toBe(v2!.id);
    expect(await queue.markDone(claimed!, BigInt(docs.rows[1]!.id))).toBe(true);
    const { rows } = await database.pool.query('SELECT current_delivery_id::text AS current FROM physitrack_programs');
    expect(rows).toEqual([{ current: String(v2!.id) }]);
  });

  it('counts once when two writes of the same receipts run at once', async () => {
    const batch = Array.from({ length: 12 }, (_, i) => newDelivery({ fileUrl: `https://files.physitrack.com/r/c${i % 4}.pdf`, patientId: `p${i % 3}` }));
    const results = await Promise.all([insertDeliveries(db, batch), insertDeliveries(db, batch), insertDeliveries(db, batch.slice(4))]);
    expect(results.flat().filter((r) => r.id !== null && !r.redelivery)).toHaveLength(4);
    const { rows } = await database.pool.query<{ total: number }>('SELECT sum(notice_count)::int AS total FROM physitrack_deliveries');
    expect(rows[0]!.total).toBe(12);
    expect(await auditCount()).toBe(12);
  });
});
