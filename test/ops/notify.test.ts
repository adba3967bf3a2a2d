import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildTestApp, type TestApp } from '../helpers/app.js';
import { createTestDatabase, type TestDatabase } from '../helpers/database.js';
import { samplePdf, servePdf, startFileHost, type FileHost } from '../helpers/https-file-host.js';
import { PATIRO_SECRET, patiroEvent, signedPatiroRequest } from '../helpers/patiro.js';
import { PHYSITRACK_KEY, physitrackNotice, physitrackRequest } from '../helpers/physitrack.js';
import { waitFor } from '../helpers/wait.js';
import { createTestWorker } from '../helpers/worker.js';

let database: TestDatabase;
let t: TestApp;
let host: FileHost;
let listener: pg.Client;
const received: Record<string, unknown>[] = [];

beforeAll(async () => {
  database = await createTestDatabase();
  t = await buildTestApp(database.url, {
    PATIRO_SIGNING_SECRET: PATIRO_SECRET,
    PHYSITRACK_API_KEY: PHYSITRACK_KEY,
    PHYSITRACK_FILE_URL_HOSTS: 'localhost',
    DOWNLOAD_ALLOW_PRIVATE_ADDRESSES: 'true',
  });
  host = await startFileHost();
  // A PMS would do exactly this: LISTEN on its own connection.
  listener = new pg.Client({ connectionString: database.url });
  await listener.connect();
  listener.on('notification', (n) => received.push(JSON.parse(n.payload ?? '{}') as Record<string, unknown>));
  await listener.query('LISTEN webhook_receiver');
});
afterAll(async () => {
  await listener.end();
  await host.close();
  await t.close();
  await database.drop();
});

describe('NOTIFY webhook_receiver', () => {
  it('tells a listening client about a stored Patiro event, without patient data', async () => {
    const event = patiroEvent({ data: { id: 'patient-notify', lastName: 'Secretname' } });
    expect((await t.app.inject(signedPatiroRequest({ body: JSON.stringify(event) }))).statusCode).toBe(204);
    await waitFor(() => received.some((n) => n.id === event.eventId));
    const note = received.find((n) => n.id === event.eventId);
    expect(note).toEqual({ vendor: 'patiro', table: 'patiro_events', id: event.eventId, source: 'default', eventType: 'PatientUpdated', redelivery: false });
    expect(JSON.stringify(received)).not.toMatch(/patient-notify|Secretname/);
  });

  it('tells it about a Physitrack delivery when stored and again when its PDF is done', async () => {
    host.route('/n.pdf', servePdf(samplePdf()));
    expect((await t.app.inject(physitrackRequest(physitrackNotice({ file_url: host.url('/n.pdf') })))).statusCode).toBe(204);
    const { rows } = await database.pool.query('SELECT id::text FROM physitrack_deliveries');
    const id = rows[0].id as string;
    await waitFor(() => received.some((n) => n.id === id && n.downloadStatus === 'pending'));
    const { worker, close } = createTestWorker({ db: t.db, log: t.logs.logger });
    await worker.runOnce();
    await close();
    await waitFor(() => received.some((n) => n.id === id && n.downloadStatus === 'done'));
    expect(received.filter((n) => n.table === 'physitrack_deliveries')).toEqual([
      { vendor: 'physitrack', table: 'physitrack_deliveries', id, source: 'default', downloadStatus: 'pending', redelivery: false },
      { vendor: 'physitrack', table: 'physitrack_deliveries', id, source: 'default', downloadStatus: 'done' },
    ]);
  });

  it('sends nothing for a delivery that was not committed', async () => {
    const before = received.length;
    const res = await t.app.inject(signedPatiroRequest({ body: JSON.stringify(patiroEvent()), secret: 'not-the-secret-0123456789' }));
    expect(res.statusCode).toBe(401);
    await new Promise((resolve) => setTimeout(resolve, 100));
    expect(received.length).toBe(before);
  });
});
