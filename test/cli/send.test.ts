import { spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config.js';
import { startService, type RunningService } from '../../src/server.js';
import { addSource } from '../../src/sources/manage.js';
import { TEST_SOURCES_KEY } from '../helpers/app.js';
import { createTestDatabase, type TestDatabase } from '../helpers/database.js';
import { waitFor } from '../helpers/wait.js';
import { captureLogs } from '../helpers/logs.js';

const root = path.resolve(import.meta.dirname, '../..');
const secrets = {
  PATIRO_SIGNING_SECRET: 'send-test-patiro-secret-0123456789',
  PHYSITRACK_API_KEY: 'send-test-physitrack-key-0123456789',
};

let database: TestDatabase;
let service: RunningService;
let base: string;

beforeAll(async () => {
  database = await createTestDatabase();
  const config = loadConfig({ NODE_ENV: 'test', DATABASE_URL: database.url, HOST: '127.0.0.1', PORT: '0', SOURCES_SECRET_KEY: TEST_SOURCES_KEY, ...secrets });
  service = await startService(config, captureLogs().logger);
  const address = service.app.server.address();
  if (typeof address !== 'object' || !address) throw new Error('no address');
  base = `http://127.0.0.1:${address.port}`;
});
afterAll(async () => {
  await service.stop();
  await database.drop();
});

function send(args: string[], env: Record<string, string>): Promise<{ code: number | null; output: string }> {
  const child = spawn(process.execPath, ['--import', 'tsx', 'src/cli/send.ts', ...args], {
    cwd: root,
    env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '/tmp', NODE_ENV: 'production', DATABASE_URL: database.url, ...env },
  });
  let output = '';
  child.stdout.on('data', (c: Buffer) => (output += c.toString()));
  child.stderr.on('data', (c: Buffer) => (output += c.toString()));
  return new Promise((resolve) => child.on('exit', (code) => resolve({ code, output })));
}

describe('npm run send', () => {
  it('sends a signed Patiro event that the service stores', async () => {
    const result = await send(['patiro', '--url', base], secrets);
    expect(result.output).toMatch(/→ 204/);
    expect(result.code).toBe(0);
    const { rows } = await database.pool.query("SELECT event_type, occurred_at FROM patiro_events");
    expect(rows).toEqual([{ event_type: 'PatientUpdated', occurred_at: expect.any(Date) }]);
  });

  it('sends a Physitrack notice that the service stores as a pending download', async () => {
    const result = await send(['physitrack', '--url', base], secrets);
    expect(result.code).toBe(0);
    const { rows } = await database.pool.query('SELECT program_name FROM physitrack_deliveries');
    expect(rows).toEqual([{ program_name: 'Knee Rehab Program' }]);
  });

  it('in development, serves its sample PDF itself, and the service downloads it (the quick start on any machine)', async () => {
    const dataDir = await mkdtemp(path.join(os.tmpdir(), 'wr-send-dev-'));
    const config = loadConfig({ NODE_ENV: 'development', DATA_DIR: dataDir, DATABASE_URL: database.url, HOST: '127.0.0.1', PORT: '0', ...secrets });
    expect(config.download.allowHttpLocalhost).toBe(true);
    const dev = await startService(config, captureLogs().logger);
    try {
      const address = dev.app.server.address();
      if (typeof address !== 'object' || !address) throw new Error('no address');
      const result = await send(['physitrack', '--url', `http://127.0.0.1:${address.port}`], { ...secrets, NODE_ENV: 'development', DATA_DIR: dataDir });
      expect(result.output).toMatch(/→ 204/);
      expect(result.output).toMatch(/The service downloaded the sample PDF/);
      expect(result.code).toBe(0);
      await waitFor(async () => (await database.pool.query("SELECT 1 FROM physitrack_deliveries WHERE file_url LIKE 'http://127.0.0.1:%' AND download_status = 'done'")).rowCount === 1, 5000);
    } finally {
      await dev.stop();
      await rm(dataDir, { recursive: true, force: true });
    }
    // Production's defaults stay strict: no plain http, no localhost.
    const production = loadConfig({ NODE_ENV: 'production', DATABASE_URL: database.url });
    expect(production.download).toMatchObject({ allowHttpLocalhost: false, allowPrivateAddresses: false });
    expect(production.physitrack.fileUrlHosts.map((h) => ('host' in h ? h.host : h.suffix))).not.toContain('localhost');
  });

  it('exits non-zero when the service refuses the delivery', async () => {
    const result = await send(['patiro', '--url', base], { ...secrets, PATIRO_SIGNING_SECRET: 'a-different-secret-0123456789' });
    expect(result.output).toMatch(/→ 401/);
    expect(result.code).toBe(1);
  });

  it('sends to a database source with --source and its credentials', async () => {
    const keys = [Buffer.from(TEST_SOURCES_KEY, 'base64')];
    const patiro = await addSource(service.db, keys, { vendor: 'patiro', name: 'Clinic A', withToken: true });
    const physitrack = await addSource(service.db, keys, { vendor: 'physitrack', name: 'Physitrack production' });
    // The running service hears of new sources on its control channel: a known source answers 401, not 404.
    const known = async (path: string) => (await fetch(`${base}${path}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{}' })).status === 401;
    await waitFor(async () => (await known(`/webhooks/patiro/${patiro.row.id}`)) && (await known(`/webhooks/physitrack/${physitrack.row.id}`)), 2000);

    const sent = await send(['patiro', '--url', base, '--source', patiro.row.id, '--secret', patiro.secret, '--token', patiro.token!], {});
    expect(sent.output).toMatch(/→ 204/);
    expect(sent.output).toContain('?token=[redacted]');
    expect(sent.output).not.toContain(patiro.token!);
    const notice = await send(['physitrack', '--url', base, '--source', physitrack.row.id, '--api-key', physitrack.secret], {});
    expect(notice.output).toMatch(/→ 204/);
    const events = await database.pool.query('SELECT source_id FROM patiro_events WHERE source_id = $1', [patiro.row.id]);
    expect(events.rows).toHaveLength(1);
    const deliveries = await database.pool.query('SELECT source_id FROM physitrack_deliveries WHERE source_id = $1', [physitrack.row.id]);
    expect(deliveries.rows).toHaveLength(1);
    expect((await send(['patiro', '--url', base, '--source', patiro.row.id], {})).code).toBe(2);
  });

  it('exits 2 with the usage for an unknown vendor', async () => {
    const result = await send(['stripe'], secrets);
    expect(result.code).toBe(2);
    expect(result.output).toMatch(/Usage: npm run send/);
  });
});
