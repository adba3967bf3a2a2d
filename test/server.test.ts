import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { loadConfig } from '../src/config.js';
import { freePort } from '../src/db/embedded.js';
import { startService } from '../src/server.js';
import { createTestDatabase, type TestDatabase } from './helpers/database.js';
import { captureLogs } from './helpers/logs.js';

let database: TestDatabase;
beforeAll(async () => {
  database = await createTestDatabase();
});
afterAll(async () => database.drop());

describe('startService / stop', () => {
  it('serves, then on stop finishes in-flight requests and closes the listener', async () => {
    const config = loadConfig({ NODE_ENV: 'test', DATABASE_URL: database.url, HOST: '127.0.0.1', PORT: '0' });
    const service = await startService(config, captureLogs().logger);
    const address = service.app.server.address();
    if (typeof address !== 'object' || !address) throw new Error('no address');
    const base = `http://127.0.0.1:${address.port}`;
    expect((await fetch(`${base}/readyz`)).status).toBe(200);

    const arrived = new Promise((resolve) => service.app.server.once('request', resolve));
    const inFlight = fetch(`${base}/readyz`);
    await arrived;
    await service.stop();
    expect((await inFlight).status).toBe(200);
    await expect(fetch(`${base}/healthz`)).rejects.toThrow();
  });

  it('serves /metrics on METRICS_PORT, apart from the webhooks', async () => {
    const metricsPort = await freePort();
    const config = loadConfig({ NODE_ENV: 'test', DATABASE_URL: database.url, HOST: '127.0.0.1', PORT: '0', METRICS_PORT: String(metricsPort) });
    const service = await startService(config, captureLogs().logger);
    try {
      const res = await fetch(`http://127.0.0.1:${metricsPort}/metrics`);
      expect(res.status).toBe(200);
      expect(await res.text()).toMatch(/^physitrack_deliveries\{download_status="pending"\} 0$/m);
    } finally {
      await service.stop();
    }
    await expect(fetch(`http://127.0.0.1:${metricsPort}/metrics`)).rejects.toThrow();
  });

  it('serves HTTPS itself when TLS_CERT_FILE and TLS_KEY_FILE are set', async () => {
    const tls = inject('tls');
    const config = loadConfig({
      NODE_ENV: 'test', DATABASE_URL: database.url, HOST: '127.0.0.1', PORT: '0',
      TLS_CERT_FILE: tls.serverCertPath, TLS_KEY_FILE: tls.serverKeyPath,
    });
    const service = await startService(config, captureLogs().logger);
    try {
      const address = service.app.server.address();
      if (typeof address !== 'object' || !address) throw new Error('no address');
      // Trusted through NODE_EXTRA_CA_CERTS, like any certificate a clinic installs.
      const res = await fetch(`https://localhost:${address.port}/readyz`);
      expect(res.status).toBe(200);
      await expect(fetch(`http://localhost:${address.port}/readyz`)).rejects.toThrow();
    } finally {
      await service.stop();
    }
  });

  it('refuses a certificate without its key', () => {
    expect(() => loadConfig({ TLS_CERT_FILE: '/etc/cert.pem' })).toThrow(/TLS_CERT_FILE, TLS_KEY_FILE: set both/);
  });

  it('applies migrations at start', async () => {
    await database.pool.query('DROP SCHEMA public CASCADE; CREATE SCHEMA public');
    const config = loadConfig({ NODE_ENV: 'test', DATABASE_URL: database.url, HOST: '127.0.0.1', PORT: '0' });
    const service = await startService(config, captureLogs().logger);
    await service.stop();
    const { rows } = await database.pool.query("SELECT to_regclass('public.webhook_audit') AS t");
    expect(rows[0].t).toBe('webhook_audit');
    const applied = await database.pool.query('SELECT count(*)::int AS n FROM _prisma_migrations');
    expect(applied.rows[0].n).toBeGreaterThan(1);
  });
});
