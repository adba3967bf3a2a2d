import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { newReceipt } from '../../../src/audit.js';
import { openSpool } from '../../../src/spool/spool.js';
import { toPatiroEvent } from '../../../src/webhooks/patiro-payload.js';
import { createTestDatabase, type TestDatabase } from '../../helpers/database.js';
import { captureLogs } from '../../helpers/logs.js';
import { newDelivery } from '../../helpers/physitrack.js';
import { cli } from './helpers.js';

let database: TestDatabase;
let dir: string;
beforeAll(async () => {
  database = await createTestDatabase();
});
afterAll(async () => database.drop());
beforeEach(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), 'wr-cli-spool-'));
});
afterEach(async () => rm(dir, { recursive: true, force: true }));

/** A spool as a replica leaves it: three deliveries waiting, the directory given up. */
async function fillSpool(): Promise<void> {
  const spool = await openSpool({ dir, maxBytes: 1 << 30, log: captureLogs().logger });
  await spool.journal.append({
    vendor: 'patiro',
    delivery: {
      receipt: newReceipt(),
      sourceId: 'default',
      event: toPatiroEvent({ eventId: 'cli-spool-1', eventType: 'PatientUpdated', data: { id: 'p1' } }),
      signedAt: new Date(),
      bodySha256: 'f'.repeat(64),
      sourceAddress: null,
    },
  });
  await spool.journal.append({ vendor: 'physitrack', delivery: newDelivery({ fileUrl: 'https://files.physitrack.com/cli/1.pdf' }) });
  await spool.journal.append({ vendor: 'physitrack', delivery: newDelivery({ fileUrl: 'https://files.physitrack.com/cli/2.pdf' }) });
  await spool.close();
}

describe('cli spool status', () => {
  it('reads SPOOL_DIR without a database: waiting deliveries, bytes, oldest', async () => {
    await fillSpool();
    const result = await cli(['spool', 'status', '--json'], { SPOOL_DIR: dir });
    expect(result.code, result.stderr).toBe(0);
    expect(JSON.parse(result.stdout)).toMatchObject({ dir, records: 3, rejectedFiles: 0, owner: null });
    const text = await cli(['spool', 'status'], { SPOOL_DIR: dir });
    expect(text.stdout).toMatch(/Waiting deliveries:\s+3/);
  });

  it('says so when the spool is off', async () => {
    const result = await cli(['spool', 'status'], {});
    expect(result.code).toBe(2);
    expect(result.stderr).toMatch(/the spool is off/);
  });
});

describe('cli spool replay', () => {
  it('drains a spool directory into the database once; a second run writes nothing', async () => {
    await fillSpool();
    const first = await cli(['spool', 'replay', '--dir', dir, '--json'], { DATABASE_URL: database.url });
    expect(first.code, first.stderr).toBe(0);
    expect(JSON.parse(first.stdout)).toMatchObject({ waiting: 3, replayed: 3, rejected: 0, left: 0, complete: true });
    const again = await cli(['spool', 'replay', '--dir', dir, '--json'], { DATABASE_URL: database.url });
    expect(JSON.parse(again.stdout)).toMatchObject({ waiting: 0, replayed: 0 });
    const { rows } = await database.pool.query(
      `SELECT (SELECT count(*)::int FROM patiro_events WHERE event_id = 'cli-spool-1') AS events,
              (SELECT count(*)::int FROM physitrack_deliveries WHERE file_url LIKE 'https://files.physitrack.com/cli/%') AS deliveries`,
    );
    expect(rows[0]).toEqual({ events: 1, deliveries: 2 });
  });

  it('refuses a directory that is not a spool, and needs --dir', async () => {
    expect((await cli(['spool', 'replay', '--dir', dir], { DATABASE_URL: database.url })).stderr).toMatch(/not a spool directory/);
    expect((await cli(['spool', 'replay'], { DATABASE_URL: database.url })).code).toBe(2);
  });
});
