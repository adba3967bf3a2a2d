import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { buildApp } from '../../src/app.js';
import { loadConfig } from '../../src/config.js';
import { createAvailability } from '../../src/db/availability.js';
import { closeDatabase, createDatabase, reservedPoolOf, type Database } from '../../src/db/client.js';
import { createDurableWrite } from '../../src/spool/durable-write.js';
import { nodeIo, openJournal, type JournalIo } from '../../src/spool/journal.js';
import { unreachableDatabaseUrl } from '../helpers/database.js';
import { captureLogs } from '../helpers/logs.js';
import { PATIRO_SECRET, patiroEvent, signedPatiroRequest } from '../helpers/patiro.js';
import { PHYSITRACK_KEY, physitrackNotice, physitrackRequest } from '../helpers/physitrack.js';

// PostgreSQL is away (nothing listens on its port) from the start: what a replica answers then
// depends on its spool alone. /readyz says whether it can durably accept now, and why.

let db: Database;
const dirs: string[] = [];
const closers: (() => Promise<void>)[] = [];
beforeAll(async () => {
  db = createDatabase({ url: await unreachableDatabaseUrl(), poolSize: 2, connectTimeoutMs: 300 });
});
afterEach(async () => {
  for (const close of closers.splice(0)) await close();
  for (const dir of dirs.splice(0)) await rm(dir, { recursive: true, force: true });
});
afterAll(async () => closeDatabase(db));

async function appWithSpool(maxBytes: number, io: JournalIo = nodeIo) {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'wr-ready-'));
  dirs.push(dir);
  const config = loadConfig({ NODE_ENV: 'test', DATABASE_URL: 'postgresql://unused', PATIRO_SIGNING_SECRET: PATIRO_SECRET, PHYSITRACK_API_KEY: PHYSITRACK_KEY, SPOOL_DIR: dir });
  const logs = captureLogs();
  const journal = await openJournal({ dir: path.join(dir, 'journal'), maxBytes, io });
  const availability = createAvailability({ probe: () => reservedPoolOf(db).query('SELECT 1'), initiallyUp: true });
  const durable = createDurableWrite({ journal, availability, ackDeadlineMs: config.ackDeadlineMs, log: logs.logger });
  const app = await buildApp({ config, db, logger: logs.logger, availability, durable, journal });
  closers.push(async () => {
    await app.close();
    availability.stop();
  });
  return { app, journal, availability, logs };
}

const readyz = async (app: Awaited<ReturnType<typeof appWithSpool>>['app']) => {
  const res = await app.inject({ method: 'GET', url: '/readyz' });
  return { status: res.statusCode, body: res.json() as Record<string, unknown> };
};

describe('a replica whose PostgreSQL is away', () => {
  it('takes deliveries into the spool, fast once it knows, and is ready', async () => {
    const { app, journal, availability, logs } = await appWithSpool(1 << 30);
    const first = await app.inject(signedPatiroRequest({ body: JSON.stringify(patiroEvent()) }));
    expect(first.statusCode).toBe(204);
    expect(availability.up).toBe(false);
    // The first write waited for the pool's connect timeout; the next ones go straight to the spool.
    const latencies: number[] = [];
    for (let i = 0; i < 10; i++) {
      const started = Date.now();
      const res = await app.inject(i % 2 ? signedPatiroRequest({ body: JSON.stringify(patiroEvent()) }) : physitrackRequest(physitrackNotice()));
      latencies.push(Date.now() - started);
      expect(res.statusCode).toBe(204);
    }
    expect(Math.max(...latencies)).toBeLessThan(250);
    expect(journal.stats().records).toBe(11);
    expect(await readyz(app)).toEqual({ status: 200, body: { status: 'ready', database: 'unavailable', spool: { records: 11, bytes: journal.stats().bytes, state: 'ok' } } });
    expect(logs.entries().filter((e) => String(e.msg).startsWith('PostgreSQL is away'))).toHaveLength(1);
  });

  it('answers 503 with Retry-After when the spool is full, and is not ready', async () => {
    const { app } = await appWithSpool(1024 * 1024);
    const big = { id: 'p', notes: 'x'.repeat(200_000) };
    const statuses: number[] = [];
    for (let i = 0; i < 8; i++) statuses.push((await app.inject(signedPatiroRequest({ body: JSON.stringify(patiroEvent({ data: big })) }))).statusCode);
    expect(statuses.slice(0, 5)).toEqual([204, 204, 204, 204, 204]);
    expect(statuses.slice(5)).toEqual([503, 503, 503]);
    const refused = await app.inject(signedPatiroRequest({ body: JSON.stringify(patiroEvent({ data: big })) }));
    expect(refused.headers['retry-after']).toBe('5');
    expect(await readyz(app)).toMatchObject({ status: 503, body: { status: 'unavailable', database: 'unavailable', reason: 'the database does not answer and the spool is full' } });
  });

  it('answers 503, never 2xx, when an fsync fails, and takes nothing more', async () => {
    const failingSync: JournalIo = {
      ...nodeIo,
      async writeDurably() {
        throw Object.assign(new Error('EIO: i/o error, fsync'), { code: 'EIO' });
      },
    };
    const { app, journal } = await appWithSpool(1 << 30, failingSync);
    expect((await app.inject(physitrackRequest(physitrackNotice()))).statusCode).toBe(503);
    expect((await app.inject(signedPatiroRequest({ body: JSON.stringify(patiroEvent()) }))).statusCode).toBe(503);
    expect(journal.stats()).toMatchObject({ records: 0, state: 'failed' });
    expect(await readyz(app)).toMatchObject({ status: 503, body: { reason: 'the database does not answer and the spool failed', spool: { state: 'failed' } } });
  });
});
