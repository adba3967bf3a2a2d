import { rm } from 'node:fs/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DEFAULT_MIGRATIONS_DIR, readMigrations } from '../../src/db/migrate.js';
import { newSourceId } from '../../src/sources/credentials.js';
import { TEST_SOURCES_KEY } from '../helpers/app.js';
import { createTestDatabase, type TestDatabase } from '../helpers/database.js';
import { startFileHost, type FileHost } from '../helpers/https-file-host.js';
import { emptyDatabase, type EmptyDatabase } from '../helpers/migrations.js';
import { waitFor } from '../helpers/wait.js';
import { waitForDeliveries } from './deliveries.js';
import { createClient, get, isAcknowledged, sendPatiro, sendPhysitrack, summarise, type Outcome } from './senders.js';
import { killAllServiceProcesses, startServiceProcess, type ServiceProcess } from './service-process.js';
import { checkStoredOnce, journalRecords, makeSpoolDir, pdfUrls, readiness, waitReplayed } from './spool-helpers.js';
import { startTcpProxy, type TcpProxy } from './tcp-proxy.js';

// A replica started while PostgreSQL cannot be reached, on a fresh (never migrated) database and an
// empty SPOOL_DIR: it listens, is alive and ready (from the spool), takes the environment's source
// into the spool, and answers a table source 503 (it cannot check one: no table, no local copy),
// never 404 and never 2xx. When PostgreSQL answers, it migrates the database and replays the spool.

let admin: TestDatabase;
let host: FileHost;
const client = createClient();
const cleanups: (() => Promise<void>)[] = [];

beforeAll(async () => {
  admin = await createTestDatabase();
  host = await startFileHost();
});
afterAll(async () => {
  await killAllServiceProcesses();
  await client.close();
  for (const cleanup of cleanups.reverse()) await cleanup().catch(() => undefined);
  await host?.close();
  await admin?.drop();
});

async function appliedMigrations(empty: EmptyDatabase): Promise<number> {
  return empty.pool.query('SELECT count(*)::int AS n FROM _prisma_migrations WHERE finished_at IS NOT NULL').then(
    (r) => r.rows[0].n as number,
    () => 0, // no such table yet
  );
}

describe.each(['refuse', 'blackhole'] as const)('a start while PostgreSQL is unreachable (new connections: %s)', (mode) => {
  it('listens, is ready from the spool, spools the default source, answers a table source 503, then migrates and replays', async () => {
    const empty = await emptyDatabase(admin, `spool_start_${mode}`);
    cleanups.push(() => empty.drop());
    const target = new URL(empty.url);
    const proxy: TcpProxy = await startTcpProxy({ host: target.hostname, port: Number(target.port) });
    cleanups.push(() => proxy.close());
    const spoolDir = await makeSpoolDir(`start-${mode}`);
    cleanups.push(() => rm(spoolDir, { recursive: true, force: true }));
    proxy.cut({ newConnections: mode });

    const spawnedAt = Date.now();
    const service: ServiceProcess = await startServiceProcess({ databaseUrl: proxy.urlFor(empty.url), env: { SPOOL_DIR: spoolDir, SOURCES_SECRET_KEY: TEST_SOURCES_KEY } });
    await waitFor(async () => (await get(service.baseUrl, '/healthz')).status === 200 || !service.isRunning(), 20_000, 50);
    const listeningMs = Date.now() - spawnedAt;
    expect(service.isRunning(), service.output()).toBe(true);
    const ready = await readiness(service.baseUrl);

    const nextPdf = pdfUrls(host, `start-${mode}`);
    const unknownId = newSourceId();
    const spooled: Outcome[] = [];
    const tableAnswers: Outcome[] = [];
    for (let round = 0; round < 5; round++) {
      spooled.push(await sendPatiro(client, service.baseUrl), await sendPhysitrack(client, service.baseUrl, nextPdf()));
      tableAnswers.push(
        await sendPatiro(client, service.baseUrl, { sourceId: unknownId, secret: 'a-secret-nobody-can-check-0123456789' }),
        await sendPhysitrack(client, service.baseUrl, nextPdf(), { sourceId: unknownId, apiKey: 'a-key-nobody-can-check-0123456789' }),
      );
    }
    const records = await journalRecords(spoolDir);
    const healthDuring = await get(service.baseUrl, '/healthz');

    await proxy.restore();
    const restoredAt = Date.now();
    const migrations = (await readMigrations(DEFAULT_MIGRATIONS_DIR)).length;
    await waitFor(async () => (await appliedMigrations(empty)) === migrations, 20_000, 100);
    const migratedMs = Date.now() - restoredAt;
    await waitReplayed(service.baseUrl);
    const replayedMs = Date.now() - restoredAt;
    const urls = new Set(spooled.filter((o) => o.vendor === 'physitrack').map((o) => o.id));
    await waitForDeliveries(empty.pool, (rows) => rows.filter((r) => urls.has(r.file_url) && r.download_status === 'done').length === urls.size, 20_000);
    // Now the table has been read: a source that is not in it does not exist.
    const unknownAfter = await sendPatiro(client, service.baseUrl, { sourceId: unknownId, secret: 'a-secret-nobody-can-check-0123456789' });

    console.log(
      `[spool start without PostgreSQL, ${mode}] listening ${listeningMs} ms after spawn; /readyz ${ready.status} ${JSON.stringify({ database: ready.database, spool: ready.spool })}; ` +
        `default source ${JSON.stringify(summarise(spooled))} (${records.length} in the spool); table source ${JSON.stringify(summarise(tableAnswers))} ` +
        `(Retry-After ${tableAnswers[0]?.retryAfter}); migrated ${migratedMs} ms and replayed ${replayedMs} ms after PostgreSQL came back; the unknown source then ${unknownAfter.status}`,
    );

    expect(ready).toMatchObject({ status: 200, state: 'ready', database: 'unavailable', spool: { records: 0, state: 'ok' } });
    expect(healthDuring.status).toBe(200);
    expect(summarise(spooled)).toEqual({ 204: spooled.length });
    expect(records.map((r) => `${r.vendor} ${r.id}`).sort()).toEqual(spooled.map((o) => `${o.vendor} ${o.id}`).sort());
    for (const o of tableAnswers) expect({ status: o.status, retryAfter: o.retryAfter }).toEqual({ status: 503, retryAfter: '5' });

    expect((await checkStoredOnce(empty.pool, spooled.filter(isAcknowledged))).problems).toEqual([]);
    expect(unknownAfter.status).toBe(404);
    const after = await sendPatiro(client, service.baseUrl);
    expect(after.status).toBe(204);
    expect((await readiness(service.baseUrl)).database).toBe('ok');
    await service.kill9();
  });
});
