import { randomBytes } from 'node:crypto';
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { newReceipt } from '../../src/audit.js';
import { closeDatabase, createDatabase, type Database } from '../../src/db/client.js';
import { openJournal, type Journal } from '../../src/spool/journal.js';
import { encodeRecord, type SpooledDelivery } from '../../src/spool/records.js';
import { createReplayer } from '../../src/spool/replayer.js';
import { toPatiroEvent } from '../../src/webhooks/patiro-payload.js';
import { createTestDatabase, unreachableDatabaseUrl, type TestDatabase } from '../helpers/database.js';
import { captureLogs } from '../helpers/logs.js';
import { newDelivery } from '../helpers/physitrack.js';

// The replayer writes what the spool holds through the live statements, oldest first, and removes a
// file only once all of it is committed. What cannot ever be written is set aside, not lost, and
// does not hold the rest back.

let database: TestDatabase;
let db: Database;
let dir: string;
beforeAll(async () => {
  database = await createTestDatabase();
  db = createDatabase({ url: database.url, poolSize: 2, connectTimeoutMs: 5000 });
});
afterAll(async () => {
  await closeDatabase(db);
  await database.drop();
});
beforeEach(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), 'wr-replay-'));
  await database.pool.query('TRUNCATE patiro_events, patiro_patients, webhook_audit, physitrack_deliveries, physitrack_programs, changes');
});
afterEach(async () => rm(dir, { recursive: true, force: true }));

let n = 0;
function patiro(data: Record<string, unknown> = { id: `p${n}` }): SpooledDelivery {
  n += 1;
  return {
    vendor: 'patiro',
    delivery: {
      receipt: newReceipt(new Date(Date.UTC(2026, 10, 1, 10, 0, n))),
      sourceId: 'default',
      event: toPatiroEvent({ eventId: `event-${n}`, eventType: 'PatientUpdated', timestamp: '2026-11-01T10:00:00Z', data }),
      signedAt: new Date(Date.UTC(2026, 10, 1, 10, 0, n)),
      bodySha256: 'e'.repeat(64),
      sourceAddress: '198.51.100.4',
    },
  };
}
const physitrack = (): SpooledDelivery => ({ vendor: 'physitrack', delivery: newDelivery({ fileUrl: `https://files.physitrack.com/replay/${(n += 1)}.pdf`, patientId: `p${n}` }) });

/** A complete journal file, as the journal names them, with these lines (a test may corrupt them). */
async function journalFile(lines: Buffer[], records = lines.length): Promise<string> {
  const journalDir = path.join(dir, 'journal');
  await rm(journalDir, { recursive: true, force: true }).catch(() => undefined);
  const { mkdir } = await import('node:fs/promises');
  await mkdir(journalDir, { recursive: true });
  const name = `${String(Date.now()).padStart(15, '0')}-00000001-${process.pid}-${records}.jnl`;
  await writeFile(path.join(journalDir, name), Buffer.concat([...lines, Buffer.from(`end ${records}\n`)]));
  return name;
}

async function counts() {
  const { rows } = await database.pool.query<{ events: number; deliveries: number; audit: number; receipts: number; notices: number }>(
    `SELECT (SELECT coalesce(sum(delivery_count), 0)::int FROM patiro_events) AS events,
            (SELECT count(*)::int FROM physitrack_deliveries) AS deliveries,
            (SELECT coalesce(sum(notice_count), 0)::int FROM physitrack_deliveries) AS notices,
            (SELECT count(*)::int FROM webhook_audit) AS audit,
            (SELECT count(DISTINCT receipt_id)::int FROM webhook_audit) AS receipts`,
  );
  return rows[0]!;
}

function replayer(journal: Journal, extra: Partial<Parameters<typeof createReplayer>[0]> = {}) {
  const rejected: number[] = [];
  const replayed: string[] = [];
  const r = createReplayer({
    journal,
    rejectedDir: path.join(dir, 'rejected'),
    db,
    log: captureLogs().logger,
    onRejected: (count) => rejected.push(count),
    onReplayed: (vendor, count) => replayed.push(`${vendor}:${count}`),
    ...extra,
  });
  return { r, rejected, replayed };
}

describe('the replayer', () => {
  it('writes the files through the live statements, a vendor at a time in arrival order, and removes them', async () => {
    const journal = await openJournal({ dir: path.join(dir, 'journal'), maxBytes: 1 << 30 });
    for (const spooled of [patiro(), patiro(), physitrack(), patiro(), physitrack()]) await journal.append(spooled);
    const { r, replayed } = replayer(journal);
    expect(await r.runOnce()).toEqual({ replayed: 5, rejected: 0, complete: true });
    // Five files of one delivery each, in one round: one statement per vendor.
    expect(replayed).toEqual(['patiro:3', 'physitrack:2']);
    expect(journal.files()).toEqual([]);
    expect(await readdir(path.join(dir, 'journal'))).toEqual([]);
    expect(await counts()).toEqual({ events: 3, deliveries: 2, notices: 2, audit: 5, receipts: 5 });
    // And they reach the change feed, as live deliveries do.
    const feed = await database.pool.query(`SELECT kind, count(*)::int AS n FROM receiver_v1.changes_after('', 100) GROUP BY kind ORDER BY kind`);
    expect(feed.rows).toEqual([
      { kind: 'patiro_events', n: 3 },
      { kind: 'patiro_patients', n: 3 },
      { kind: 'physitrack_deliveries', n: 2 },
      { kind: 'physitrack_programs', n: 2 },
    ]);
  });

  it('sets aside a torn last record and a record with a flipped byte, and replays the rest', async () => {
    const lines = [patiro(), patiro(), patiro(), physitrack(), patiro()].map(encodeRecord);
    lines[1]![40] = lines[1]![40]! ^ 0x04; // a flipped bit inside the JSON
    lines[4] = lines[4]!.subarray(0, 30); // torn: the write stopped mid-record
    const name = await journalFile(lines, 5);
    const journal = await openJournal({ dir: path.join(dir, 'journal'), maxBytes: 1 << 30 });
    const { r, rejected } = replayer(journal);
    expect(await r.runOnce()).toEqual({ replayed: 3, rejected: 2, complete: true });
    expect(rejected).toEqual([2]);
    expect(await counts()).toMatchObject({ events: 2, deliveries: 1, audit: 3 });
    const setAside = await readFile(path.join(dir, 'rejected', `${name}.rejected`));
    expect(setAside.toString('latin1').trimEnd().split('\n')).toHaveLength(2);
    expect(journal.files()).toEqual([]);
  });

  it('counts the records a file lost at its end (cut at a line boundary, no end line) as set aside', async () => {
    const lines = [patiro(), physitrack(), patiro()].map(encodeRecord);
    const journalDir = path.join(dir, 'journal');
    const { mkdir } = await import('node:fs/promises');
    await mkdir(journalDir, { recursive: true });
    // Written with five records, of which three survived, and no `end` line.
    await writeFile(path.join(journalDir, `${String(Date.now()).padStart(15, '0')}-00000001-${process.pid}-5.jnl`), Buffer.concat(lines));
    const journal = await openJournal({ dir: journalDir, maxBytes: 1 << 30 });
    const { r, rejected } = replayer(journal);
    expect(await r.runOnce()).toEqual({ replayed: 3, rejected: 2, complete: true });
    expect(rejected).toEqual([2]);
    expect(await counts()).toMatchObject({ events: 2, deliveries: 1, audit: 3 });
  });

  it('sets aside a record PostgreSQL refuses for good, and writes the others of its batch', async () => {
    const journal = await openJournal({ dir: path.join(dir, 'journal'), maxBytes: 1 << 30 });
    // jsonb cannot hold \u0000: refused with SQLSTATE 22P05 however often it is tried.
    await Promise.all([patiro(), patiro({ id: 'x', note: 'a\u0000b' }), patiro()].map((s) => journal.append(s)));
    const { r, rejected } = replayer(journal);
    expect(await r.runOnce()).toEqual({ replayed: 2, rejected: 1, complete: true });
    expect(rejected).toEqual([1]);
    expect(await counts()).toMatchObject({ events: 2, audit: 2 });
    const [file] = await readdir(path.join(dir, 'rejected'));
    expect(file).toMatch(/\.jnl\.rejected$/);
  });

  it('sets aside a record refused for a reason other than its data (an index entry too large), instead of calling PostgreSQL away', async () => {
    const journal = await openJournal({ dir: path.join(dir, 'journal'), maxBytes: 1 << 30 });
    // Spooled by a build without the length check: an id of 8 KB cannot be a key (SQLSTATE 54000).
    const huge = patiro({ id: 'x' });
    if (huge.vendor === 'patiro') huge.delivery.event.patientId = randomBytes(6000).toString('base64');
    await Promise.all([patiro(), huge, patiro()].map((s) => journal.append(s)));
    let reported = 0;
    const availability = { up: true, reportUnavailable: () => (reported += 1), reportAvailable() {}, check: async () => true, onChange() {}, stop() {} };
    const { r, rejected } = replayer(journal, { availability });
    expect(await r.runOnce()).toEqual({ replayed: 2, rejected: 1, complete: true });
    expect(rejected).toEqual([1]);
    expect(reported).toBe(0);
    expect(journal.files()).toEqual([]);
  });

  it('counts nothing twice when it crashes between the COMMIT and the removal of the file', async () => {
    const journal = await openJournal({ dir: path.join(dir, 'journal'), maxBytes: 1 << 30 });
    await Promise.all([patiro(), physitrack(), patiro()].map((s) => journal.append(s)));
    await journal.append(patiro());
    const files = journal.files().length;
    const crashing = replayer(journal, {
      afterCommit: async () => {
        throw new Error('killed after the COMMIT');
      },
    });
    await expect(crashing.r.runOnce()).rejects.toThrow('killed after the COMMIT');
    expect(journal.files()).toHaveLength(files);
    const afterCrash = await counts();

    // The next start finds the files again and replays them: the receipts are recorded already.
    const reopened = await openJournal({ dir: path.join(dir, 'journal'), maxBytes: 1 << 30 });
    expect(await replayer(reopened).r.runOnce()).toMatchObject({ complete: true });
    expect(reopened.files()).toEqual([]);
    expect(await counts()).toEqual({ ...afterCrash, events: 3, deliveries: 1, notices: 1, audit: 4, receipts: 4 });
  });

  it('stops, keeps the file and says PostgreSQL is away when it cannot write', async () => {
    const journal = await openJournal({ dir: path.join(dir, 'journal'), maxBytes: 1 << 30 });
    await journal.append(patiro());
    const away = createDatabase({ url: await unreachableDatabaseUrl(), poolSize: 1, connectTimeoutMs: 500 });
    let reported = 0;
    const availability = { up: true, reportUnavailable: () => (reported += 1), reportAvailable() {}, check: async () => false, onChange() {}, stop() {} };
    try {
      const result = await replayer(journal, { db: away, availability }).r.runOnce();
      expect(result).toEqual({ replayed: 0, rejected: 0, complete: false });
      expect(reported).toBe(1);
      expect(journal.files()).toHaveLength(1);
    } finally {
      await closeDatabase(away);
    }
  });
});
