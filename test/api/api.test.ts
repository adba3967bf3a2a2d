import { createHash } from 'node:crypto';
import http from 'node:http';
import { setTimeout as sleep } from 'node:timers/promises';
import type { FastifyInstance } from 'fastify';
import type pg from 'pg';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { buildApiApp } from '../../src/api/app.js';
import { addConsumer, rotateConsumer, setConsumerStatus } from '../../src/api/consumers-table.js';
import { createWakeup, type Wakeup } from '../../src/api/wakeup.js';
import { readPage, START } from '../../src/changes/changes-table.js';
import { newReceipt } from '../../src/audit.js';
import { loadConfig } from '../../src/config.js';
import { closeDatabase, createDatabase, createReadPool, type Database } from '../../src/db/client.js';
import { insertDeliveries } from '../../src/downloads/intake.js';
import { purge } from '../../src/retention.js';
import { startService } from '../../src/server.js';
import { createStorage } from '../../src/storage/pdf-storage.js';
import { toPatiroEvent } from '../../src/webhooks/patiro-payload.js';
import { writePatiroBatch, type PatiroDelivery } from '../../src/webhooks/patiro-store.js';
import { createTestDatabase, type TestDatabase } from '../helpers/database.js';
import { captureLogs, type CapturedLogs } from '../helpers/logs.js';
import { waitFor } from '../helpers/wait.js';
import { newDelivery } from '../helpers/physitrack.js';
import { fakePdf, store } from '../storage/pdf-fixtures.js';

// The internal API: the change feed and the PDFs over HTTP, for a PMS that cannot reach this
// PostgreSQL. Bearer tokens of consumers; a consumer limited to sources sees nothing of others.

let database: TestDatabase;
let db: Database;
let api: FastifyInstance;
let wakeup: Wakeup;
let readPool: pg.Pool;
let logs: CapturedLogs;
const A = 'clinicaaaaaaaaaaaaaa';
const B = 'clinicbbbbbbbbbbbbbb';

beforeAll(async () => {
  database = await createTestDatabase();
  db = createDatabase({ url: database.url, poolSize: 4, connectTimeoutMs: 5000 });
  logs = captureLogs('debug');
  wakeup = createWakeup(database.url, logs.logger);
  readPool = createReadPool(database.url, 4, 5000);
  api = await buildApiApp({ db, pool: readPool, logger: logs.logger, storage: createStorage({ kind: 'database', pdfDir: '/nonexistent' }, db), wakeup, requestTimeoutMs: 10_000, maxConnections: 64 });
  await api.ready();
});
afterAll(async () => {
  await api.close();
  await wakeup.close();
  await readPool.end();
  await closeDatabase(db);
  await database.drop();
});
beforeEach(async () => {
  await database.pool.query('TRUNCATE changes, changes_purged, patiro_events, patiro_patients, webhook_audit, physitrack_deliveries, physitrack_programs, documents, document_owners, consumers');
});

let n = 0;
function patiro(sourceId: string, dataJson?: string): PatiroDelivery {
  n += 1;
  const body = dataJson ?? JSON.stringify({ id: `p-${n}`, name: `name ${n}` });
  return {
    receipt: newReceipt(),
    sourceId,
    event: toPatiroEvent(JSON.parse(`{"eventId":"e-${n}","eventType":"PatientUpdated","data":${body}}`), `{"eventId":"e-${n}","eventType":"PatientUpdated","data":${body}}`),
    signedAt: new Date(),
    bodySha256: 'a'.repeat(64),
    sourceAddress: null,
  };
}

const get = (url: string, token?: string, headers: Record<string, string> = {}) =>
  api.inject({ method: 'GET', url, headers: { ...(token ? { authorization: `Bearer ${token}` } : {}), ...headers } });

describe('the internal API: who may read', () => {
  it('answers 401 to no token, a wrong one, a disabled consumer and a rotated-out token, in the webhooks error shape', async () => {
    const { id, token } = await addConsumer(db, { name: 'PMS' });
    expect((await get('/v1/changes', token)).statusCode).toBe(200);
    for (const bad of [undefined, 'nonsense', `wrc_${id}_${'x'.repeat(43)}`, token.slice(0, -1), token.replace(/^wrc_[a-z2-7]{16}/, `wrc_${'a'.repeat(16)}`)]) {
      const res = await get('/v1/changes', bad);
      expect(res.statusCode, String(bad)).toBe(401);
      expect(res.headers['www-authenticate']).toBe('Bearer');
      expect(res.json()).toEqual({ error: 'API_ERR_UNAUTHENTICATED', message: expect.any(String) });
    }
    // Every route, including unknown ones, wants a token first.
    expect((await get('/v1/documents/1')).statusCode).toBe(401);
    expect((await get('/nothing')).statusCode).toBe(401);

    await setConsumerStatus(db, id, 'disabled');
    expect((await get('/v1/changes', token)).statusCode).toBe(401);
    await setConsumerStatus(db, id, 'active');

    const graced = await rotateConsumer(db, id, 60_000);
    expect((await get('/v1/changes', token)).statusCode).toBe(200);
    expect((await get('/v1/changes', graced!.token)).statusCode).toBe(200);
    const rotated = await rotateConsumer(db, id, 0);
    expect((await get('/v1/changes', graced!.token)).statusCode).toBe(401);
    expect((await get('/v1/changes', token)).statusCode).toBe(401);
    expect((await get('/v1/changes', rotated!.token)).statusCode).toBe(200);
    // No token, nor any part of one, in the logs.
    const logged = logs.lines.join('\n');
    for (const t of [token, graced!.token, rotated!.token]) expect(logged).not.toContain(t.slice(21));
  });

  it('shows a consumer limited to a source only its changes and PDFs', async () => {
    await writePatiroBatch(db, [patiro(A), patiro(B), patiro(A)]);
    const pdfA = await storedDelivery(A, 'p-a', fakePdf(3000));
    const pdfB = await storedDelivery(B, 'p-b', fakePdf(3100));
    const onlyA = await addConsumer(db, { name: 'clinic A only', sourceIds: [A] });
    const everyone = await addConsumer(db, { name: 'all' });

    const seen = await readAll(onlyA.token);
    expect(seen.length).toBeGreaterThan(0);
    expect(new Set(seen.map((c) => c.source_id))).toEqual(new Set([A]));
    expect(new Set((await readAll(everyone.token)).map((c) => c.source_id))).toEqual(new Set([A, B]));
    expect((await get(`/v1/documents/${pdfA}`, onlyA.token)).statusCode).toBe(200);
    expect((await get(`/v1/documents/${pdfB}`, onlyA.token)).statusCode).toBe(404);
    expect((await get(`/v1/documents/${pdfB}`, everyone.token)).statusCode).toBe(200);
  });

  it("moves a limited consumer's cursor past others' changes, a bounded scan at a time, and misses none of its own", async () => {
    await database.pool.query(`INSERT INTO changes (vendor, source_id, kind, key) SELECT 'patiro', $1, 'patiro_events', 'b-' || g FROM generate_series(1, 12000) g`, [B]);
    await writePatiroBatch(db, [patiro(A)]);
    const onlyA = await addConsumer(db, { name: 'clinic A only', sourceIds: [A] });
    const first = (await get('/v1/changes?limit=100', onlyA.token)).json() as { changes: Change[]; next: string };
    // 10,000 of B's changes scanned, none given, and the cursor moved past them.
    expect(first.changes).toEqual([]);
    expect(first.next).not.toBe('');
    const second = (await get(`/v1/changes?limit=100&after=${first.next}`, onlyA.token)).json() as { changes: Change[]; next: string };
    expect(second.changes.map((c) => c.kind)).toEqual(['patiro_events', 'patiro_patients']);
    expect(second.changes.every((c) => c.source_id === A)).toBe(true);
  });

  it("does not wake a limited consumer's long poll for another source's write: it answers at the deadline, its cursor moved on", async () => {
    const onlyA = await addConsumer(db, { name: 'A', sourceIds: [A] });
    const head = ((await get('/v1/changes/head', onlyA.token)).json() as { cursor: string }).cursor;
    const started = Date.now();
    const waiting = get(`/v1/changes?wait=2&after=${head}`, onlyA.token);
    await new Promise((resolve) => setTimeout(resolve, 200));
    await writePatiroBatch(db, [patiro(B)]);
    const res = (await waiting).json() as { changes: Change[]; next: string };
    expect(Date.now() - started).toBeGreaterThanOrEqual(1900);
    expect(res.changes).toEqual([]);
    expect(res.next).not.toBe(head);
  });

  it('lists the consumer its sources (as receiver_v1.sources: no credentials)', async () => {
    await database.pool.query(`INSERT INTO sources (vendor, id, name, tenant_ref) VALUES ('patiro', $1, 'Clinic A', 'pms-17'), ('patiro', $2, 'Clinic B', NULL) ON CONFLICT DO NOTHING`, [A, B]);
    const onlyA = await addConsumer(db, { name: 'A', sourceIds: [A] });
    const res = await get('/v1/sources', onlyA.token);
    expect(res.json()).toEqual({ sources: [expect.objectContaining({ id: A, name: 'Clinic A', tenant_ref: 'pms-17' })] });
    expect(res.body).not.toContain('credential');
    await database.pool.query('DELETE FROM sources WHERE id = ANY ($1)', [[A, B]]);
  });

  it('is not served on the webhook port, and not at all without API_PORT', async () => {
    const { token } = await addConsumer(db, { name: 'PMS' });
    const base = { NODE_ENV: 'test', DATABASE_URL: database.url, HOST: '127.0.0.1', PORT: '0', METRICS_ENABLED: 'false', SHUTDOWN_DRAIN_MS: '0' };
    const service = await startService(loadConfig({ ...base, API_PORT: '0' }), captureLogs().logger);
    try {
      const port = (s: FastifyInstance) => (s.server.address() as { port: number }).port;
      const onWebhookPort = await fetch(`http://127.0.0.1:${port(service.app)}/v1/changes`, { headers: { authorization: `Bearer ${token}` } });
      expect(onWebhookPort.status).toBe(404);
      expect(((await onWebhookPort.json()) as { error: string }).error).toBe('WH_ERR_NOT_FOUND');
      const onApiPort = await fetch(`http://127.0.0.1:${port(service.api!)}/v1/changes`, { headers: { authorization: `Bearer ${token}` } });
      expect(onApiPort.status).toBe(200);
    } finally {
      await service.stop();
    }
    const without = await startService(loadConfig(base), captureLogs().logger);
    try {
      expect(without.api).toBeUndefined();
    } finally {
      await without.stop();
    }
  });
});

interface Change {
  id: string;
  cursor: string;
  kind: string;
  source_id: string;
  key: string;
  row: Record<string, unknown> | null;
}

async function readAll(token: string, limit = 2): Promise<Change[]> {
  const out: Change[] = [];
  let after = '';
  for (;;) {
    const res = await get(`/v1/changes?after=${encodeURIComponent(after)}&limit=${limit}`, token);
    expect(res.statusCode).toBe(200);
    const page = res.json() as { changes: Change[]; next: string };
    out.push(...page.changes);
    if (page.next === after) return out;
    after = page.next;
  }
}

async function storedDelivery(sourceId: string, patientId: string, pdf: Buffer): Promise<string> {
  const [stored] = await insertDeliveries(db, [newDelivery({ patientId, fileUrl: `https://files.physitrack.com/${sourceId}-${patientId}.pdf` }, { sourceId })]);
  const { documentId } = await store(createStorage({ kind: 'database', pdfDir: '/nonexistent' }, db), pdf);
  await database.pool.query(`UPDATE physitrack_deliveries SET download_status = 'done', document_id = $2 WHERE id = $1`, [stored!.id, documentId]);
  return String(documentId);
}

describe('the internal API: shutdown', () => {
  it('stops at once with long polls in flight, one cut short by its client, and keep-alive connections open: a waiting poll answers its page', async () => {
    const { token } = await addConsumer(db, { name: 'PMS' });
    const base = { NODE_ENV: 'test', DATABASE_URL: database.url, HOST: '127.0.0.1', PORT: '0', METRICS_ENABLED: 'false', SHUTDOWN_DRAIN_MS: '0', SHUTDOWN_TIMEOUT_MS: '30000' };
    const serviceLogs = captureLogs('debug');
    const service = await startService(loadConfig({ ...base, API_PORT: '0' }), serviceLogs.logger);
    const port = (service.api!.server.address() as { port: number }).port;
    const pollsLeft = () => serviceLogs.entries().filter((e) => e.msg === 'api request left by its client').length;
    const agent = new http.Agent({ keepAlive: true, maxSockets: 8 });
    const request = (path: string, signal?: AbortSignal) => new Promise<{ status: number; body: string; connection: string | undefined }>((resolve, reject) => {
      const req = http.get({ host: '127.0.0.1', port, path, agent, headers: { authorization: `Bearer ${token}` }, signal }, (res) => {
        let body = '';
        res.setEncoding('utf8').on('data', (chunk: string) => (body += chunk)).on('end', () => resolve({ status: res.statusCode!, body, connection: res.headers.connection }));
      });
      req.on('error', reject);
    });
    let stopped = false;
    try {
      // Keep-alive connections left idle, a poll its client gives up on, and one that waits on.
      await Promise.all([request('/v1/changes/head'), request('/v1/changes/head'), request('/v1/sources')]);
      const cut = new AbortController();
      const abandoned = request('/v1/changes?wait=60', cut.signal).catch((err: Error) => err.name);
      const waiting = request('/v1/changes?wait=60');
      await sleep(300);
      cut.abort();
      expect(await abandoned).toBe('AbortError');
      // The poll its client left stops (within its recheck), long before its wait of 60 s.
      await waitFor(() => pollsLeft() === 1, 3000);
      const started = performance.now();
      await service.stop();
      stopped = true;
      const tookMs = performance.now() - started;
      const answer = await waiting;
      expect(answer.status).toBe(200);
      expect(JSON.parse(answer.body)).toEqual({ changes: [], next: expect.any(String) });
      expect(answer.connection).toBe('close');
      expect(tookMs).toBeLessThan(5000);
    } finally {
      agent.destroy();
      if (!stopped) await service.stop();
    }
  });
});

describe('GET /v1/changes', () => {
  it('gives each change with the current row, numbers exactly as sent, and a cursor to store', async () => {
    const { token } = await addConsumer(db, { name: 'PMS' });
    const exact = '{"id":"p-exact","n":12345678901234567890.123456789012,"small":1e-20}';
    await writePatiroBatch(db, [patiro(A, exact)]);
    const res = await get('/v1/changes?limit=10', token);
    expect(res.headers['content-type']).toMatch(/^application\/json/);
    // The text itself: JSON.parse would round the number.
    expect(res.body).toContain('12345678901234567890.123456789012');
    const page = res.json() as { changes: Change[]; next: string };
    expect(page.changes.map((c) => c.kind)).toEqual(['patiro_events', 'patiro_patients']);
    expect(page.changes[1]!.row).toMatchObject({ source_id: A, patient_id: 'p-exact' });
    expect(page.next).toBe(page.changes[1]!.cursor);
    expect((await get(`/v1/changes?after=${page.next}`, token)).json()).toEqual({ changes: [], next: page.next });
  });

  it('long-polls: answers as soon as a write commits, and with nothing once the wait is over', async () => {
    const { token } = await addConsumer(db, { name: 'PMS' });
    const started = Date.now();
    const empty = await get('/v1/changes?wait=1', token);
    expect(empty.json().changes).toEqual([]);
    expect(Date.now() - started).toBeGreaterThanOrEqual(900);

    const waiting = get('/v1/changes?wait=20', token);
    await new Promise((resolve) => setTimeout(resolve, 300));
    const wroteAt = Date.now();
    await writePatiroBatch(db, [patiro(A)]);
    const res = await waiting;
    expect(res.json().changes).toHaveLength(2);
    // Woken by the NOTIFY, not by the periodic check (which would come 700 ms after the write).
    expect(Date.now() - wroteAt).toBeLessThan(500);
  });

  it('answers 410 for a cursor retention purged past, and gives the head to start again from', async () => {
    const { token } = await addConsumer(db, { name: 'PMS' });
    await writePatiroBatch(db, [patiro(A)]);
    const first = (await get('/v1/changes?limit=1', token)).json().next as string;
    await database.pool.query(`UPDATE changes SET at = now() - interval '40 days'`);
    await purge(db, { olderThanMs: 30 * 86_400_000, dryRun: false, includeDocuments: false, pdfDir: '/nonexistent' });
    const gone = await get(`/v1/changes?after=${first}`, token);
    expect(gone.statusCode).toBe(410);
    expect(gone.json()).toMatchObject({ error: 'API_ERR_CURSOR_EXPIRED', message: expect.stringContaining('/v1/changes/head') });
    const head = (await get('/v1/changes/head', token)).json().cursor as string;
    expect((await get(`/v1/changes?after=${head}`, token)).statusCode).toBe(200);
  });

  it('answers 410 to a cursor of a transaction this database has not had (another database, a restored backup)', async () => {
    const { token } = await addConsumer(db, { name: 'PMS' });
    const res = await get('/v1/changes?after=c1.999999999999.1', token);
    expect(res.statusCode).toBe(410);
    await expect(database.pool.query(`SELECT * FROM receiver_v1.changes_after('c1.999999999999.1', 10)`)).rejects.toMatchObject({ code: 'WRC10' });
  });

  it('ends a page once its text passes the byte bound, after at least one change, and goes on from there', async () => {
    const big = (i: number) => `{"id":"p-big-${i}","blob":"${'x'.repeat(200_000)}"}`;
    await writePatiroBatch(db, [patiro(A, big(1)), patiro(A, big(2)), patiro(A, big(3))]);
    const first = await readPage(readPool, START, 100, { all: true }, 300_000);
    // Three events and three patients, each carrying the 200 kB blob: a page stops after the second change.
    expect(first.count).toBe(2);
    const rest = await readPage(readPool, first.next, 100, { all: true }, 300_000);
    const last = await readPage(readPool, rest.next, 100, { all: true }, 1);
    expect(first.count + rest.count + last.count + (await readPage(readPool, last.next, 100, { all: true })).count).toBe(6);
    expect(last.count).toBe(1);
  });

  it('answers 400 to what is not a cursor, a limit or a wait', async () => {
    const { token } = await addConsumer(db, { name: 'PMS' });
    for (const query of ['after=abc', 'after=c1.1', 'limit=0', 'limit=1001', 'limit=x', 'wait=61', 'wait=-1', 'limit=1&limit=2', `after=${'c'.repeat(100)}`]) {
      const res = await get(`/v1/changes?${query}`, token);
      expect(res.statusCode, query).toBe(400);
      expect(res.json().error).toBe('API_ERR_BAD_REQUEST');
    }
  });
});

describe('GET /v1/rows/:kind', () => {
  it('pages through the current rows of each kind, in the views\' shape, only of the consumer\'s sources, numbers exact', async () => {
    const exact = '{"id":"p-rows","n":98765432109876543210.5}';
    await writePatiroBatch(db, [patiro(A, exact), patiro(A), patiro(B), patiro(A)]);
    await storedDelivery(A, 'p-r', fakePdf(2000));
    await storedDelivery(B, 'p-r', fakePdf(2100));
    const all = await addConsumer(db, { name: 'all' });
    const onlyA = await addConsumer(db, { name: 'A', sourceIds: [A] });
    const bodies: string[] = [];
    const pageAll = async (kind: string, token: string) => {
      const out: Record<string, unknown>[] = [];
      let after = '';
      for (let i = 0; i < 20; i++) {
        const res = await get(`/v1/rows/${kind}?limit=1&after=${encodeURIComponent(after)}`, token);
        expect(res.statusCode).toBe(200);
        bodies.push(res.body);
        const page = res.json() as { rows: Record<string, unknown>[]; next: string | null };
        out.push(...page.rows);
        if (page.next === null) return out;
        after = page.next;
      }
      throw new Error('did not end');
    };
    for (const [kind, view, key] of [
      ['patiro_events', 'patiro_events', 'source_id, event_id'],
      ['patiro_patients', 'patiro_patients', 'source_id, patient_id'],
      ['physitrack_deliveries', 'physitrack_deliveries', 'id'],
      ['physitrack_programs', 'physitrack_programs', 'id'],
    ] as const) {
      const expected = (await database.pool.query(`SELECT to_jsonb(v)::text AS row, v.source_id FROM receiver_v1.${view} v ORDER BY ${key}`)).rows;
      const strip = (rows: Record<string, unknown>[]) => rows.map(({ document_sha256: _d, current_document_sha256: _c, ...rest }) => rest);
      expect(strip(await pageAll(kind, all.token)), kind).toEqual(expected.map((r) => JSON.parse(r.row)));
      expect(strip(await pageAll(kind, onlyA.token)), kind).toEqual(expected.filter((r) => r.source_id === A).map((r) => JSON.parse(r.row)));
    }
    // The text itself: JSON.parse would round it.
    expect(bodies.some((body) => body.includes('98765432109876543210.5'))).toBe(true);
    expect((await get('/v1/rows/documents', all.token)).statusCode).toBe(404);
    expect((await get('/v1/rows/patiro_events?after=notaposition', all.token)).statusCode).toBe(400);
    const badId = Buffer.from(JSON.stringify(['x', 'not-a-number'])).toString('base64url');
    expect((await get(`/v1/rows/physitrack_deliveries?after=${badId}`, all.token)).statusCode).toBe(400);
  });
});

describe('GET /v1/documents/:id', () => {
  it('streams the PDF with its sha256 as ETag, 304 when the client has it, 404 for what is not there', async () => {
    const { token } = await addConsumer(db, { name: 'PMS' });
    const pdf = fakePdf(70_000);
    const id = await storedDelivery(A, 'p-doc', pdf);
    const sha = createHash('sha256').update(pdf).digest('hex');
    const res = await get(`/v1/documents/${id}`, token);
    expect(res.statusCode).toBe(200);
    expect(res.headers['content-type']).toBe('application/pdf');
    expect(res.headers.etag).toBe(`"${sha}"`);
    expect(res.rawPayload.equals(pdf)).toBe(true);
    expect((await get(`/v1/documents/${id}`, token, { 'if-none-match': `"${sha}"` })).statusCode).toBe(304);
    for (const missing of ['999999', '0', 'abc', '1'.repeat(30)]) expect((await get(`/v1/documents/${missing}`, token)).statusCode, missing).toBe(404);
  });
});
