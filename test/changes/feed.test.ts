import pg from 'pg';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { newReceipt } from '../../src/audit.js';
import { changesInsertSql, changesSkipped, CursorExpiredError, decodeCursor, heldBack, readHead, readPage, START, type Cursor } from '../../src/changes/changes-table.js';
import { closeDatabase, createDatabase, poolOf, type Database } from '../../src/db/client.js';
import { purge } from '../../src/retention.js';
import { toPatiroEvent } from '../../src/webhooks/patiro-payload.js';
import { writePatiroBatch, type PatiroDelivery } from '../../src/webhooks/patiro-store.js';
import { createTestDatabase, type TestDatabase } from '../helpers/database.js';

// The feed is gap-free: a reader never moves past a change that may still commit. These tests hold
// transactions open on real connections and read through the SQL function a PMS calls and the
// page read the HTTP API uses.

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
  await database.pool.query('TRUNCATE changes, changes_purged, patiro_events, patiro_patients, webhook_audit');
});

let n = 0;
function patiro(eventId = `e-${(n += 1)}`): PatiroDelivery {
  return {
    receipt: newReceipt(),
    sourceId: 'default',
    event: toPatiroEvent({ eventId, eventType: 'PatientUpdated', data: { id: `p-${eventId}` } }),
    signedAt: new Date(),
    bodySha256: 'a'.repeat(64),
    sourceAddress: null,
  };
}

/** A transaction left open with `keys.length` change rows, written by the module's own fragment. */
async function openWriter(keys: string[]): Promise<pg.Client> {
  const client = new pg.Client({ connectionString: database.url });
  await client.connect();
  await client.query('BEGIN');
  const values = keys.map((k) => `('patiro', 'default', 'patiro_events', '${k}')`).join(', ');
  await client.query(`WITH w AS (${changesInsertSql(`VALUES ${values}`)}) SELECT 1`);
  return client;
}

/** Through the SQL function, as a PMS on PostgreSQL reads. */
async function sqlPage(after: string, max = 500): Promise<{ cursor: string; key: string; id: string }[]> {
  return (await database.pool.query(`SELECT cursor, key, id::text FROM receiver_v1.changes_after($1, $2)`, [after, max])).rows;
}

describe('the change feed', () => {
  it('returns nothing past a transaction still open, then both once it commits, once each, in order', async () => {
    const first = await openWriter(['held-1', 'held-2']);
    try {
      await writePatiroBatch(db, [patiro('later')]);
      expect(await sqlPage('')).toEqual([]);
      expect((await readPage(poolOf(db), START, 500, { all: true })).count).toBe(0);
      // The later transaction's changes are committed but held back: the lag shows them.
      expect((await heldBack(poolOf(db))).changes).toBe(2); // its event and its patient
      await first.query('COMMIT');
    } finally {
      await first.end();
    }
    const rows = await sqlPage('');
    expect(rows.map((r) => r.key)).toEqual(['held-1', 'held-2', 'later', 'p-later']);
    expect(await sqlPage(rows.at(-1)!.cursor)).toEqual([]);
    expect((await heldBack(poolOf(db))).changes).toBe(0);
  });

  it('never shows a rolled-back write, and moves past it without waiting', async () => {
    const first = await openWriter(['doomed']);
    await writePatiroBatch(db, [patiro('kept')]);
    await first.query('ROLLBACK');
    await first.end();
    expect((await sqlPage('')).map((r) => r.key)).toEqual(['kept', 'p-kept']);
  });

  it('pages a transaction bigger than a page, each change once, the cursor always growing', async () => {
    const big = await openWriter(Array.from({ length: 1200 }, (_, i) => `k-${i}`));
    await big.query('COMMIT');
    await big.end();
    const seen: string[] = [];
    let cursor = '';
    const sizes: number[] = [];
    for (;;) {
      const rows = await sqlPage(cursor, 500);
      if (rows.length === 0) break;
      sizes.push(rows.length);
      for (const r of rows) seen.push(r.key);
      const next = rows.at(-1)!.cursor;
      expect(compare(decodeCursor(next)!, decodeCursor(cursor)!)).toBe(1);
      cursor = next;
    }
    expect(sizes).toEqual([500, 500, 200]);
    expect(seen).toEqual(Array.from({ length: 1200 }, (_, i) => `k-${i}`));
    // The HTTP read pages the same way.
    const page = await readPage(poolOf(db), START, 500, { all: true });
    expect(page.count).toBe(500);
    expect(JSON.parse(page.changesJson)[499].cursor).toBe(`c1.${page.next.txid}.${page.next.id}`);
  });

  it('tells a cursor retention purged past to resynchronise (SQLSTATE WRC10), and gives where to start after', async () => {
    await writePatiroBatch(db, [patiro('old-1'), patiro('old-2')]);
    const early = (await sqlPage(''))[0]!.cursor;
    await database.pool.query(`UPDATE changes SET at = now() - interval '40 days'`);
    await writePatiroBatch(db, [patiro('new')]);
    const result = await purge(db, { olderThanMs: 30 * 86_400_000, dryRun: false, includeDocuments: false, pdfDir: '/nonexistent' });
    expect(result.counts.changes).toBe(4);
    await expect(sqlPage(early)).rejects.toMatchObject({ code: 'WRC10' });
    await expect(sqlPage('')).rejects.toMatchObject({ code: 'WRC10' });
    await expect(readPage(poolOf(db), decodeCursor(early)!, 10, { all: true })).rejects.toBeInstanceOf(CursorExpiredError);
    // Resynchronising: the head, taken before copying the tables, is a cursor that works.
    const head = (await database.pool.query('SELECT receiver_v1.changes_head() AS head')).rows[0].head as string;
    expect(await sqlPage(head)).toEqual([]);
    expect(decodeCursor(head)).toEqual(await readHead(poolOf(db)));
    await writePatiroBatch(db, [patiro('after')]);
    expect((await sqlPage(head)).map((r) => r.key)).toEqual(['after', 'p-after']);
  });

  it("writes no changes on a database with the benchmark's switch on, and says it is on", async () => {
    const name = new URL(database.url).pathname.slice(1);
    await database.pool.query(`ALTER DATABASE ${name} SET webhook_receiver.bench_skip_changes = 'on'`);
    const switched = createDatabase({ url: database.url, poolSize: 1, connectTimeoutMs: 5000 });
    try {
      expect(await changesSkipped(poolOf(switched))).toBe(true);
      expect(await changesSkipped(poolOf(db))).toBe(false); // its connections predate the switch
      await writePatiroBatch(switched, [patiro('unlogged')]);
      expect((await database.pool.query(`SELECT count(*)::int AS n FROM patiro_events WHERE event_id = 'unlogged'`)).rows[0].n).toBe(1);
      expect((await database.pool.query('SELECT count(*)::int AS n FROM changes')).rows[0].n).toBe(0);
    } finally {
      await closeDatabase(switched);
      await database.pool.query(`ALTER DATABASE ${name} RESET webhook_receiver.bench_skip_changes`);
    }
  });

  it('never purges a change held back behind an open transaction, nor moves the purge mark past that transaction', async () => {
    const first = await openWriter(['held']);
    try {
      await writePatiroBatch(db, [patiro('old-but-held')]);
      await database.pool.query(`UPDATE changes SET at = now() - interval '40 days'`);
      const result = await purge(db, { olderThanMs: 30 * 86_400_000, dryRun: false, includeDocuments: false, pdfDir: '/nonexistent' });
      expect(result.counts.changes).toBe(0);
      expect((await database.pool.query('SELECT count(*)::int AS n FROM changes_purged')).rows[0].n).toBe(0);
      await first.query('COMMIT');
    } finally {
      await first.end();
    }
    // Once the transaction ends, everything is there for a reader from the start.
    expect((await sqlPage('')).map((r) => r.key)).toEqual(['held', 'old-but-held', 'p-old-but-held']);
  });

  it('refuses what is not a cursor', async () => {
    for (const bad of ['c1.x.1', 'c2.1.1', '1.1', 'c1.1', `c1.${'9'.repeat(21)}.1`, `c1.${'9'.repeat(20)}.1`, `c1.1.${'9'.repeat(19)}`]) {
      await expect(sqlPage(bad), bad).rejects.toMatchObject({ code: '22023' });
      expect(decodeCursor(bad), bad).toBeUndefined();
    }
    await expect(sqlPage('', 0)).rejects.toMatchObject({ code: '22023' });
  });

  it('loses and repeats nothing under 16 writers with random delays and rollbacks, and readers killed between applying a page and saving its cursor', async () => {
    const committed = new Set<string>();
    const applied = new Map<string, number>();
    let stop = false;
    let saved = '';
    const cursors: string[] = [];
    const writer = async (w: number) => {
      const client = new pg.Client({ connectionString: database.url });
      await client.connect();
      try {
        for (let i = 0; !stop && i < 40; i++) {
          const keys = Array.from({ length: 1 + Math.floor(Math.random() * 4) }, (_, j) => `w${w}-${i}-${j}`);
          await client.query('BEGIN');
          await client.query(`WITH w AS (${changesInsertSql(`VALUES ${keys.map((k) => `('patiro', 'default', 'patiro_events', '${k}')`).join(', ')}`)}) SELECT 1`);
          await new Promise((resolve) => setTimeout(resolve, Math.random() * 15));
          if (Math.random() < 0.1) await client.query('ROLLBACK');
          else {
            await client.query('COMMIT');
            for (const k of keys) committed.add(k);
          }
        }
      } finally {
        await client.end();
      }
    };
    // A reader applies a page, then saves its cursor, and is "killed" (its work lost) at random in
    // between: the next one starts from the saved cursor and applies some changes again.
    const reader = async () => {
      while (!stop) {
        const rows = await sqlPage(saved, 1 + Math.floor(Math.random() * 50));
        for (const r of rows) applied.set(r.id, (applied.get(r.id) ?? 0) + 1);
        if (rows.length > 0 && Math.random() > 0.2) {
          cursors.push(rows.at(-1)!.cursor);
          saved = rows.at(-1)!.cursor;
        }
        await new Promise((resolve) => setTimeout(resolve, 2));
      }
    };
    const writers = Promise.all(Array.from({ length: 16 }, (_, w) => writer(w)));
    const readers = reader();
    await writers;
    stop = true;
    await readers;
    // Drain what is left.
    for (;;) {
      const rows = await sqlPage(saved, 500);
      if (rows.length === 0) break;
      for (const r of rows) applied.set(r.id, (applied.get(r.id) ?? 0) + 1);
      saved = rows.at(-1)!.cursor;
    }
    const keysById = new Map((await database.pool.query<{ id: string; key: string }>('SELECT id::text, key FROM changes')).rows.map((r) => [r.id, r.key]));
    expect(new Set([...applied.keys()].map((id) => keysById.get(id)))).toEqual(committed);
    expect(applied.size).toBe(committed.size);
    // The cursor only ever grows.
    for (let i = 1; i < cursors.length; i++) expect(compare(decodeCursor(cursors[i]!)!, decodeCursor(cursors[i - 1]!)!)).toBeGreaterThanOrEqual(0);
  });
});

function compare(a: Cursor, b: Cursor): number {
  const [at, bt] = [BigInt(a.txid), BigInt(b.txid)];
  if (at !== bt) return at > bt ? 1 : -1;
  const [ai, bi] = [BigInt(a.id), BigInt(b.id)];
  return ai === bi ? 0 : ai > bi ? 1 : -1;
}
