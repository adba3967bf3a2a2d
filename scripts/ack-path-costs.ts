/**
 * Where the time of one acknowledged Patiro delivery goes, step by step, on this machine:
 * HMAC, JSON parse, validation, a log line, and the durable write done four ways
 * (Prisma's query builder, Prisma raw SQL, plain pg, and our batched statement with 1 and 32 rows).
 *
 *   npm run bench:ack-path            (embedded PostgreSQL; BENCH_DATABASE_URL to use another)
 */
import { randomUUID } from 'node:crypto';
import { chmod, mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import pg from 'pg';
import { pino } from 'pino';
import { newReceipt } from '../src/audit.js';
import { createDatabase } from '../src/db/client.js';
import { startEmbeddedPostgres } from '../src/db/embedded.js';
import { migrate } from '../src/db/migrate.js';
import { loggerOptions } from '../src/logger.js';
import { verifyPatiroSignature, patiroSignature } from '../src/webhooks/patiro-signature.js';
import { toPatiroEvent } from '../src/webhooks/patiro-payload.js';
import { writePatiroBatch, type PatiroDelivery } from '../src/webhooks/patiro-store.js';

const SECRET = 'ack-path-costs-secret-0123456789';

function body(): Buffer {
  return Buffer.from(
    JSON.stringify({
      eventId: randomUUID(),
      eventType: 'PatientUpdated',
      timestamp: '2026-03-27T10:04:03.4247725',
      data: { id: `p-${Math.random()}`, firstName: 'Ada', lastName: 'Lovelace', email: 'ada@example.org', phone: '+31 6 1234 5678', address: { street: 'Main 1', city: 'Utrecht' } },
    }),
  );
}

async function measure(label: string, iterations: number, step: (i: number) => unknown): Promise<[string, number]> {
  for (let i = 0; i < Math.min(200, iterations); i++) await step(i); // warm up
  const started = process.hrtime.bigint();
  for (let i = 0; i < iterations; i++) await step(i);
  const micros = Number(process.hrtime.bigint() - started) / 1000 / iterations;
  return [label, micros];
}

function delivery(raw: Buffer): PatiroDelivery {
  return { receipt: newReceipt(), sourceId: 'default', event: toPatiroEvent(JSON.parse(raw.toString())), signedAt: new Date(), bodySha256: 'a'.repeat(64), sourceAddress: '127.0.0.1' };
}

async function main(): Promise<void> {
  let url = process.env.BENCH_DATABASE_URL;
  let cleanup = async () => {};
  if (!url) {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'ack-path-costs-'));
    await chmod(dir, 0o755);
    const server = await startEmbeddedPostgres({ dir, log: { info() {}, warn() {}, debug() {} }, ephemeral: true });
    url = server.url;
    cleanup = async () => {
      await server.stop();
      await rm(dir, { recursive: true, force: true });
    };
  }
  try {
    await migrate(url);
    const db = createDatabase({ url, poolSize: 4, connectTimeoutMs: 1000 });
    const client = new pg.Client({ connectionString: url });
    await client.connect();
    const raw = body();
    const ts = String(Date.now());
    const signature = patiroSignature(SECRET, ts, raw);
    const log = pino(loggerOptions('info', false), new Writable({ write: (_c, _e, done) => done() }));
    const rows: [string, number][] = [];
    const cpuN = 20_000;
    const dbN = 2_000;

    rows.push(await measure('HMAC-SHA256 verify (1 secret)', cpuN, () => verifyPatiroSignature({ rawBody: raw, signature, timestamp: ts, secrets: [SECRET], toleranceSeconds: 300, now: new Date() })));
    rows.push(await measure('JSON.parse of the body', cpuN, () => JSON.parse(raw.toString())));
    rows.push(await measure('validation (zod) and timestamp parse', cpuN, () => toPatiroEvent(JSON.parse(raw.toString()))));
    rows.push(await measure('one pino log line (redaction on)', cpuN, () => log.info({ vendor: 'patiro', eventId: 'e', eventType: 'PatientUpdated' }, 'patiro event stored')));
    rows.push(await measure('write: Prisma query builder (create, event only)', dbN, () =>
      db.patiroEvent.create({ data: { sourceId: 'default', eventId: randomUUID(), eventType: 'PatientUpdated', data: { id: 'p' }, signedAt: new Date() } })));
    rows.push(await measure('write: Prisma raw SQL (event only)', dbN, () =>
      db.$executeRawUnsafe("INSERT INTO patiro_events (source_id, event_id, event_type, data, signed_at) VALUES ('default', $1, $2, $3::jsonb, now())", randomUUID(), 'PatientUpdated', '{"id":"p"}')));
    rows.push(await measure('write: plain pg (event only)', dbN, () =>
      client.query("INSERT INTO patiro_events (source_id, event_id, event_type, data, signed_at) VALUES ('default', $1, $2, $3::jsonb, now())", [randomUUID(), 'PatientUpdated', '{"id":"p"}'])));
    rows.push(await measure('write: our statement, 1 delivery (event+patient+audit+notify)', dbN, () => writePatiroBatch(db, [delivery(body())])));
    const [label, perBatch] = await measure('write: our statement, batch of 32', dbN / 20, () => writePatiroBatch(db, Array.from({ length: 32 }, () => delivery(body()))));
    rows.push([`${label} (per delivery)`, perBatch / 32]);

    process.stdout.write('\nCost of each step of one acknowledged Patiro delivery (sequential, one connection)\n');
    for (const [name, micros] of rows) process.stdout.write(`  ${name.padEnd(66)} ${micros.toFixed(1).padStart(9)} µs\n`);
    await client.end();
    await db.$disconnect();
  } finally {
    await cleanup();
  }
}

void main();
