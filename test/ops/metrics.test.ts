import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildApp } from '../../src/app.js';
import { loadConfig } from '../../src/config.js';
import { createMetrics } from '../../src/metrics.js';
import { createTestDatabase, type TestDatabase } from '../helpers/database.js';
import { samplePdf, servePdf, startFileHost, type FileHost } from '../helpers/https-file-host.js';
import { captureLogs } from '../helpers/logs.js';
import { PATIRO_SECRET, patiroEvent, signedPatiroRequest } from '../helpers/patiro.js';
import { PHYSITRACK_KEY, physitrackNotice, physitrackRequest } from '../helpers/physitrack.js';
import { buildTestApp, type TestApp } from '../helpers/app.js';
import { createDownloadAgent } from '../../src/downloads/guarded-fetch.js';
import { createDownloadQueue } from '../../src/downloads/queue.js';
import { createDownloadWorker } from '../../src/downloads/worker.js';
import { parseHostPatterns } from '../../src/downloads/url-policy.js';
import { createStorage } from '../../src/storage/pdf-storage.js';

let database: TestDatabase;
let t: TestApp;
let host: FileHost;
const env = {
  PATIRO_SIGNING_SECRET: PATIRO_SECRET,
  PHYSITRACK_API_KEY: PHYSITRACK_KEY,
  PHYSITRACK_FILE_URL_HOSTS: 'localhost',
  DOWNLOAD_ALLOW_PRIVATE_ADDRESSES: 'true',
  BODY_LIMIT_BYTES: '4096',
};

beforeAll(async () => {
  database = await createTestDatabase();
  t = await buildTestApp(database.url, env); // only for its database client
  host = await startFileHost();
});
afterAll(async () => {
  await host.close();
  await t.close();
  await database.drop();
});

/** The value of one sample in Prometheus text, e.g. value(text, 'x_total{vendor="patiro",status="204"}'). */
function value(text: string, sample: string): number | undefined {
  const line = text.split('\n').find((l) => l.startsWith(`${sample} `));
  return line === undefined ? undefined : Number(line.slice(sample.length + 1));
}

describe('GET /metrics', () => {
  it('counts deliveries, auth failures, oversize bodies and downloads after real traffic', async () => {
    const config = loadConfig({ NODE_ENV: 'test', DATABASE_URL: database.url, ...env });
    const metrics = createMetrics(t.db);
    const app = await buildApp({ config, db: t.db, logger: captureLogs().logger, metrics });
    host.route('/m.pdf', servePdf(samplePdf(1000)));
    host.route('/m2.pdf', servePdf(samplePdf(1000)));

    await app.inject(signedPatiroRequest({ body: JSON.stringify(patiroEvent()) }));
    await app.inject(signedPatiroRequest({ body: JSON.stringify(patiroEvent()) }));
    await app.inject(signedPatiroRequest({ body: JSON.stringify(patiroEvent()), secret: 'wrong-secret-0123456789abc' }));
    await app.inject(signedPatiroRequest({ body: JSON.stringify(patiroEvent({ data: { pad: 'x'.repeat(5000) } })) }));
    await app.inject(physitrackRequest(physitrackNotice({ file_url: host.url('/m.pdf') })));
    await app.inject(physitrackRequest(physitrackNotice({ file_url: host.url('/m2.pdf') })));

    const agent = createDownloadAgent({ allowPrivateAddresses: true });
    const worker = createDownloadWorker({
      queue: createDownloadQueue(t.db, 'metrics-test', 60),
      storage: createStorage(config.storage, t.db),
      agent,
      policy: { allowedHosts: parseHostPatterns('localhost'), allowPrivateAddresses: true },
      timeoutMs: 5000,
      maxBytes: 1024 * 1024,
      retryBaseMs: 1000,
      concurrency: 1,
      log: captureLogs().logger,
      onAttempt: (outcome, seconds, bytes) => metrics.downloadAttempt(outcome, seconds, bytes),
    });
    await worker.runOnce();
    await worker.stop(100);
    await agent.close();

    const res = await app.inject({ method: 'GET', url: '/metrics' });
    expect(res.statusCode).toBe(200);
    expect(res.headers['content-type']).toMatch(/text\/plain/);
    const text = res.body;
    expect(value(text, 'webhook_deliveries_total{vendor="patiro",status="204"}')).toBe(2);
    expect(value(text, 'webhook_deliveries_total{vendor="patiro",status="401"}')).toBe(1);
    expect(value(text, 'webhook_deliveries_total{vendor="patiro",status="413"}')).toBe(1);
    expect(value(text, 'webhook_deliveries_total{vendor="physitrack",status="204"}')).toBe(2);
    expect(value(text, 'webhook_auth_failures_total{vendor="patiro",reason="bad_signature"}')).toBe(1);
    expect(value(text, 'webhook_body_too_large_total{vendor="patiro"}')).toBe(1);
    expect(value(text, 'webhook_ack_duration_seconds_bucket{le="2",vendor="patiro"}')).toBe(4);
    expect(value(text, 'webhook_ack_duration_seconds_count{vendor="physitrack"}')).toBe(2);
    expect(value(text, 'pdf_download_attempts_total{outcome="done"}')).toBe(1);
    expect(value(text, 'pdf_download_bytes_total')).toBeGreaterThan(1000);
    expect(value(text, 'physitrack_deliveries{download_status="done"}')).toBe(1);
    expect(value(text, 'physitrack_deliveries{download_status="pending"}')).toBe(1);
    expect(value(text, 'pdf_download_oldest_pending_age_seconds')).toBeGreaterThanOrEqual(0);
    const deadline = value(text, 'pdf_download_soonest_deadline_seconds');
    expect(deadline).toBeGreaterThan(23 * 3600);
    expect(deadline).toBeLessThanOrEqual(24 * 3600);
    expect(text).toMatch(/^process_cpu_user_seconds_total /m);
    expect(text).toMatch(/^nodejs_eventloop_lag_seconds /m);
    await app.close();
  });

  it('leaves the soonest-deadline gauge absent when nothing waits, rather than 0', async () => {
    await database.pool.query("UPDATE physitrack_deliveries SET download_status = 'done'");
    const config = loadConfig({ NODE_ENV: 'test', DATABASE_URL: database.url, ...env });
    const app = await buildApp({ config, db: t.db, logger: captureLogs().logger, metrics: createMetrics(t.db) });
    const text = (await app.inject({ method: 'GET', url: '/metrics' })).body;
    expect(text).toMatch(/^# TYPE pdf_download_soonest_deadline_seconds gauge$/m);
    expect(value(text, 'pdf_download_soonest_deadline_seconds')).toBeUndefined();
    expect(value(text, 'pdf_download_oldest_pending_age_seconds')).toBe(0);
    await app.close();
  });

  it('counts the sources whose latest delivery failed, by vendor', async () => {
    await database.pool.query('TRUNCATE sources');
    await database.pool.query(`INSERT INTO sources (vendor, id, name, last_success_at, last_failure_at) VALUES
      ('patiro', 'aaaaaaaaaaaaaaaaaaaa', 'failing', now() - interval '1 hour', now()),
      ('patiro', 'bbbbbbbbbbbbbbbbbbbb', 'recovered', now(), now() - interval '1 hour'),
      ('patiro', 'cccccccccccccccccccc', 'never worked', NULL, now()),
      ('physitrack', 'dddddddddddddddddddd', 'fine', now(), NULL)`);
    const config = loadConfig({ NODE_ENV: 'test', DATABASE_URL: database.url, ...env });
    const app = await buildApp({ config, db: t.db, logger: captureLogs().logger, metrics: createMetrics(t.db) });
    const text = (await app.inject({ method: 'GET', url: '/metrics' })).body;
    expect(value(text, 'webhook_sources_failing{vendor="patiro"}')).toBe(2);
    expect(value(text, 'webhook_sources_failing{vendor="physitrack"}')).toBe(0);
    await app.close();
  });

  it("shows the change feed's lag: changes held back by a transaction still open, and for how long", async () => {
    const config = loadConfig({ NODE_ENV: 'test', DATABASE_URL: database.url, ...env });
    const app = await buildApp({ config, db: t.db, logger: captureLogs().logger, metrics: createMetrics(t.db) });
    const open = await database.pool.connect();
    try {
      expect(value((await app.inject({ method: 'GET', url: '/metrics' })).body, 'webhook_changes_held_back')).toBe(0);
      await open.query(`BEGIN; INSERT INTO changes (vendor, source_id, kind, key) VALUES ('patiro', 'default', 'patiro_events', 'held')`);
      await database.pool.query(`INSERT INTO changes (vendor, source_id, kind, key, at) VALUES ('patiro', 'default', 'patiro_events', 'later', now() - interval '30 seconds')`);
      await new Promise((resolve) => setTimeout(resolve, 1100)); // the figures are reused for a second
      const text = (await app.inject({ method: 'GET', url: '/metrics' })).body;
      expect(value(text, 'webhook_changes_held_back')).toBe(1);
      expect(value(text, 'webhook_changes_held_back_seconds')).toBeGreaterThanOrEqual(30);
    } finally {
      await open.query('ROLLBACK');
      open.release();
      await app.close();
    }
  });

  it('is not served with the webhooks when METRICS_PORT is set, nor at all when disabled', async () => {
    const onPort = loadConfig({ NODE_ENV: 'test', DATABASE_URL: database.url, METRICS_PORT: '9464' });
    const app = await buildApp({ config: onPort, db: t.db, logger: captureLogs().logger, metrics: createMetrics(t.db) });
    expect((await app.inject({ method: 'GET', url: '/metrics' })).statusCode).toBe(404);
    await app.close();
    const disabled = loadConfig({ NODE_ENV: 'test', DATABASE_URL: database.url, METRICS_ENABLED: 'false' });
    expect(disabled.metrics.enabled).toBe(false);
  });
});
