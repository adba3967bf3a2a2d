import { spawn } from 'node:child_process';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { patiroSignature } from '../../src/webhooks/patiro-signature.js';
import { TEST_SOURCES_KEY } from '../helpers/app.js';
import { createTestDatabase, type TestDatabase } from '../helpers/database.js';
import { patiroEvent } from '../helpers/patiro.js';
import { killAllServiceProcesses, startServiceProcess, type ServiceProcess } from './service-process.js';

// A source added, disabled or rotated by the operator CLI (a third process) takes effect in every
// running replica within 2 s, without a restart: each replica hears it on its control channel.

const root = path.resolve(import.meta.dirname, '../..');
let database: TestDatabase;

beforeAll(async () => {
  database = await createTestDatabase();
});
afterAll(async () => {
  await killAllServiceProcesses();
  await database?.drop();
});

function operatorCli(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const child = spawn(process.execPath, ['--import', 'tsx', 'src/cli/main.ts', ...args], {
    cwd: root,
    env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '/tmp', NODE_ENV: 'production', DATABASE_URL: database.url, SOURCES_SECRET_KEY: TEST_SOURCES_KEY },
  });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
  child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
  return new Promise((resolve) => child.on('close', (code) => resolve({ code, stdout, stderr })));
}

async function post(service: ServiceProcess, sourceId: string, secret: string): Promise<number> {
  const body = JSON.stringify(patiroEvent());
  const timestamp = String(Date.now());
  const response = await fetch(`${service.baseUrl}/webhooks/patiro/${sourceId}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', 'x-patiro-timestamp': timestamp, 'x-patiro-hmacsha256': patiroSignature(secret, timestamp, Buffer.from(body)) },
    body,
  });
  await response.arrayBuffer();
  return response.status;
}

async function changedAt(id: string, column: 'created_at' | 'updated_at'): Promise<number> {
  const { rows } = await database.pool.query<{ at: Date }>(`SELECT ${column} AS at FROM sources WHERE id = $1`, [id]);
  return rows[0]!.at.getTime();
}

/** Milliseconds until `service` answers `status` for this source, polling every 20 ms (fails past 5 s). */
async function msUntil(service: ServiceProcess, sourceId: string, secret: string, status: number, since: number): Promise<number> {
  while ((await post(service, sourceId, secret)) !== status) {
    if (Date.now() - since > 5000) throw new Error(`${service.baseUrl} did not answer ${status} within 5 s`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  return Date.now() - since;
}

describe('sources: hot reload across replicas', () => {
  it('two running services accept a source added by a third process within 2 s, and stop within 2 s when it is disabled', async () => {
    const env = { SOURCES_SECRET_KEY: TEST_SOURCES_KEY };
    const replicas = await Promise.all([startServiceProcess({ databaseUrl: database.url, env }), startServiceProcess({ databaseUrl: database.url, env })]);
    await Promise.all(replicas.map((r) => r.waitReady()));

    const added = await operatorCli(['sources', 'add', 'patiro', '--name', 'Clinic A', '--json']);
    expect(added.code, added.stderr).toBe(0);
    const { id, signingSecret } = JSON.parse(added.stdout) as { id: string; signingSecret: string };
    // From the commit (the database's clock, on this machine), not from when the CLI process ended.
    const addedAt = await changedAt(id, 'created_at');
    const accepted = await Promise.all(replicas.map((r) => msUntil(r, id, signingSecret, 204, addedAt)));
    for (const ms of accepted) expect(ms).toBeLessThan(2000);

    const disabled = await operatorCli(['sources', 'disable', id]);
    expect(disabled.code, disabled.stderr).toBe(0);
    const disabledAt = await changedAt(id, 'updated_at');
    const refused = await Promise.all(replicas.map((r) => msUntil(r, id, signingSecret, 404, disabledAt)));
    for (const ms of refused) expect(ms).toBeLessThan(2000);

    const { rows } = await database.pool.query('SELECT count(*)::int AS n FROM patiro_events WHERE source_id = $1', [id]);
    expect(rows[0].n).toBeGreaterThanOrEqual(2);
    console.log(`sources hot reload: accepted after ${accepted.join(' / ')} ms, refused after ${refused.join(' / ')} ms`);
  });
});
