import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestDatabase, type TestDatabase } from '../../helpers/database.js';
import { ago, cli, fromNow, insertDelivery, insertDocument, insertEvent, spawnCli } from './helpers.js';

let database: TestDatabase;
let env: Record<string, string>;

beforeAll(async () => {
  database = await createTestDatabase();
  env = { DATABASE_URL: database.url };
});
afterAll(async () => {
  await database.drop();
});

describe('cli status', () => {
  it('reports zeros and "never" on an empty database', async () => {
    const result = await cli(['status', '--json'], env);
    expect(result.code).toBe(0);
    const status = JSON.parse(result.stdout);
    expect(status.patiro).toEqual({ events: 0, lastReceivedAt: null, byType: {} });
    expect(status.physitrack.deliveries).toEqual({ pending: 0, downloading: 0, done: 0, failed: 0, expired: 0 });
    expect(status.physitrack.oldestPending).toBeNull();
    expect(status.physitrack.soonestDeadline).toBeNull();
  });

  it('counts events per type and deliveries per status, with the oldest pending and the soonest deadline', async () => {
    await insertEvent(database.pool, { event_type: 'PatientRevealed', last_received_at: ago('3 hours') });
    await insertEvent(database.pool, { event_type: 'PatientUpdated', last_received_at: ago('10 minutes') });
    await insertEvent(database.pool, { event_type: 'PatientUpdated', last_received_at: ago('2 hours') });
    const oldest = await insertDelivery(database.pool, { received_at: ago('5 hours'), deadline_at: fromNow('19 hours') });
    await insertDelivery(database.pool, { received_at: ago('1 hour') });
    const soonest = await insertDelivery(database.pool, { download_status: 'downloading', deadline_at: fromNow('2 hours') });
    const doc = await insertDocument(database.pool, { sha256: 'a'.repeat(64), size_bytes: 2048, content: Buffer.alloc(2048) });
    await insertDelivery(database.pool, { download_status: 'done', document_id: doc, received_at: ago('1 minute') });
    await insertDelivery(database.pool, { download_status: 'failed' });
    await insertDelivery(database.pool, { download_status: 'failed', deadline_at: fromNow('1 hour') });
    await insertDelivery(database.pool, { download_status: 'expired', deadline_at: ago('1 hour') });

    const result = await cli(['status', '--json'], env);
    expect(result.code).toBe(0);
    const status = JSON.parse(result.stdout);
    expect(status.patiro.events).toBe(3);
    expect(status.patiro.byType).toEqual({ PatientRevealed: 1, PatientUpdated: 2 });
    expect(Date.parse(status.now) - Date.parse(status.patiro.lastReceivedAt)).toBeGreaterThanOrEqual(10 * 60_000 - 1000);
    expect(status.physitrack.deliveries).toEqual({ pending: 2, downloading: 1, done: 1, failed: 2, expired: 1 });
    expect(status.physitrack.oldestPending).toMatchObject({ id: oldest });
    expect(status.physitrack.oldestPending.ageMs).toBeGreaterThan(5 * 3600_000 - 60_000);
    // failed rows are not waiting for anything: only pending and downloading rows have a deadline that matters
    expect(status.physitrack.soonestDeadline).toMatchObject({ id: soonest });
    expect(status.physitrack.soonestDeadline.timeLeftMs).toBeGreaterThan(2 * 3600_000 - 60_000);
    expect(status.physitrack.soonestDeadline.timeLeftMs).toBeLessThanOrEqual(2 * 3600_000);
    expect(status.documents).toEqual({ count: 1, totalBytes: 2048 });
  });

  it('prints the same for people, with ages and time left', async () => {
    const result = await cli(['status'], env);
    expect(result.code).toBe(0);
    expect(result.stdout).toMatch(/Patiro events:\s+3/);
    expect(result.stdout).toMatch(/PatientUpdated:\s+2/);
    expect(result.stdout).toMatch(/oldest pending:\s+#\d+, waiting 5h/);
    expect(result.stdout).toMatch(/soonest deadline:\s+#\d+ at .* \(1h 59m left\)/);
    expect(result.stdout).toMatch(/^failed\s+2$/m);
  });

  it('runs as a real process: JSON on stdout, exit 0', async () => {
    const result = await spawnCli(['status', '--json'], env);
    expect(result.stderr).toBe('');
    expect(result.code).toBe(0);
    expect(JSON.parse(result.stdout).physitrack.deliveries.pending).toBe(2);
  });

  it('refuses arguments it does not take with exit 2', async () => {
    expect((await cli(['status', 'extra'], env)).code).toBe(2);
    expect((await cli(['status', '--verbose'], env)).code).toBe(2);
  });
});
