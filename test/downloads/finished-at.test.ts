import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { newReceipt } from '../../src/audit.js';
import { closeDatabase, createDatabase, type Database } from '../../src/db/client.js';
import { insertDeliveries } from '../../src/downloads/intake.js';
import { createDownloadQueue, requeueByStatus } from '../../src/downloads/queue.js';
import { createTestDatabase, type TestDatabase } from '../helpers/database.js';
import { newDelivery } from '../helpers/physitrack.js';

// Every end of a download records when it ended (finished_at): a PMS that was away finds failed and
// expired deliveries by time, as it finds done ones by downloaded_at.

let database: TestDatabase;
let db: Database;
beforeAll(async () => {
  database = await createTestDatabase();
  db = createDatabase({ url: database.url, poolSize: 2, connectTimeoutMs: 5000 });
});
afterAll(async () => {
  await closeDatabase(db);
  await database.drop();
});
beforeEach(async () => {
  await database.pool.query('TRUNCATE physitrack_deliveries, physitrack_programs, webhook_audit');
});

const finished = async (id: bigint | null) =>
  (await database.pool.query<{ status: string; finished: boolean; at: Date | null }>(
    'SELECT download_status AS status, finished_at IS NOT NULL AS finished, finished_at AS at FROM physitrack_deliveries WHERE id = $1',
    [id],
  )).rows[0]!;

describe('finished_at', () => {
  it('is set when a download fails, expires or is refused, and cleared when the delivery is queued again', async () => {
    const queue = createDownloadQueue(db, 'w', 60);
    const [a, b] = await insertDeliveries(db, [newDelivery({ fileUrl: 'https://files.physitrack.com/f/a.pdf' }), newDelivery({ fileUrl: 'https://files.physitrack.com/f/b.pdf' })]);
    expect(await finished(a!.id)).toMatchObject({ status: 'pending', finished: false });

    const claimed = await queue.claim(2);
    const leaseA = claimed.find((c) => c.id === a!.id)!;
    const leaseB = claimed.find((c) => c.id === b!.id)!;
    expect(await queue.markFailed(leaseA, 'gone', 404)).toBe(true);
    expect(await finished(a!.id)).toMatchObject({ status: 'failed', finished: true });
    // A retry that would land past the deadline expires it.
    await database.pool.query(`UPDATE physitrack_deliveries SET deadline_at = now() + interval '10 seconds' WHERE id = $1`, [b!.id]);
    expect(await queue.retryLater(leaseB, 'timeout', null, 60_000)).toBe(true);
    expect(await finished(b!.id)).toMatchObject({ status: 'expired', finished: true });

    const refusedReceipt = newReceipt(new Date(Date.now() - 5000));
    const [refused] = await insertDeliveries(db, [newDelivery({ fileUrl: 'http://files.physitrack.com/f/c.pdf' }, { refusal: 'only https', receipt: refusedReceipt })]);
    expect(await finished(refused!.id)).toEqual({ status: 'failed', finished: true, at: refusedReceipt.receivedAt });

    const { ids } = await requeueByStatus(db, 'failed', () => undefined);
    expect(ids).toContain(String(a!.id));
    expect(await finished(a!.id)).toMatchObject({ status: 'pending', finished: false });
  });
});
