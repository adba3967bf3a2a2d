import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config.js';
import { startService, type RunningService } from '../../src/server.js';
import { createTestDatabase, type TestDatabase } from '../helpers/database.js';
import { captureLogs } from '../helpers/logs.js';
import { PATIRO_SECRET } from '../helpers/patiro.js';
import { PHYSITRACK_KEY } from '../helpers/physitrack.js';
import { waitFor } from '../helpers/wait.js';
import { createClient, get, sendPatiroEvent, sendPhysitrackNotice, type Outcome } from '../faults/senders.js';
import { startTcpProxy, type TcpProxy } from '../faults/tcp-proxy.js';

// The service in this process, its PostgreSQL behind a TCP proxy: cut, every verified delivery is
// answered 204 from the spool within the ack deadline; restored, each is written exactly once,
// with the time it arrived, and the spool empties.

let database: TestDatabase;
let proxy: TcpProxy;
let spoolDir: string;
let service: RunningService;
let base: string;
const client = createClient();

beforeAll(async () => {
  database = await createTestDatabase();
  const target = new URL(database.url);
  proxy = await startTcpProxy({ host: target.hostname, port: Number(target.port) });
  spoolDir = await mkdtemp(path.join(os.tmpdir(), 'wr-spool-'));
  const config = loadConfig({
    NODE_ENV: 'test',
    DATABASE_URL: proxy.urlFor(database.url),
    HOST: '127.0.0.1',
    PORT: '0',
    SPOOL_DIR: spoolDir,
    PATIRO_SIGNING_SECRET: PATIRO_SECRET,
    PHYSITRACK_API_KEY: PHYSITRACK_KEY,
    PHYSITRACK_FILE_URL_HOSTS: 'files.example.org',
  });
  service = await startService(config, captureLogs('warn').logger);
  const address = service.app.server.address();
  if (typeof address !== 'object' || !address) throw new Error('no address');
  base = `http://127.0.0.1:${address.port}`;
});
afterAll(async () => {
  await service?.stop();
  await client.close();
  await proxy?.close();
  await database?.drop();
  await rm(spoolDir, { recursive: true, force: true });
});

async function spoolText(): Promise<string> {
  const dir = path.join(spoolDir, 'journal');
  const files = await readdir(dir);
  return (await Promise.all(files.map((f) => readFile(path.join(dir, f), 'utf8')))).join('');
}

describe('an outage with the spool on', () => {
  it('answers 204 from the spool while PostgreSQL is away, then writes every delivery exactly once with its receive time', async () => {
    expect((await sendPatiroEvent(client, base)).status).toBe(204);

    proxy.cut({ newConnections: 'refuse' });
    const startedAt = Date.now();
    const outcomes: Outcome[] = [];
    for (let i = 0; i < 3; i++) {
      outcomes.push(...(await Promise.all(Array.from({ length: 10 }, () => sendPatiroEvent(client, base)))));
      outcomes.push(...(await Promise.all(Array.from({ length: 3 }, (_, j) => sendPhysitrackNotice(client, base, `https://files.example.org/p/${i}-${j}.pdf`)))));
    }
    expect(outcomes.map((o) => o.status)).toEqual(outcomes.map(() => 204));
    expect(Math.max(...outcomes.map((o) => o.latencyMs))).toBeLessThan(1500);
    const ready = await fetch(`${base}/readyz`);
    expect(ready.status).toBe(200);
    expect(await ready.json()).toMatchObject({ status: 'ready', database: 'unavailable', spool: { records: 39 } });
    const during = await (await fetch(`${base}/metrics`)).text();
    expect(during).toMatch(/^webhook_spool_records 39$/m);
    expect(during).toMatch(/^webhook_database_up 0$/m);
    expect(during).toMatch(/^webhook_spool_oldest_age_seconds \d/m);

    // Nothing that authenticates is on disk: no key, secret, signature.
    const text = await spoolText();
    expect(text).not.toContain(PATIRO_SECRET);
    expect(text).not.toContain(PHYSITRACK_KEY);
    expect(text).not.toMatch(/hmacsha256|api_key/i);

    await proxy.restore();
    await waitFor(async () => service.spool!.journal.stats().records === 0, 20_000, 100);

    const patiroIds = outcomes.filter((o) => !o.id.startsWith('https://')).map((o) => o.id);
    const events = await database.pool.query<{ event_id: string; delivery_count: number; first_received_at: Date }>(
      'SELECT event_id, delivery_count, first_received_at FROM patiro_events WHERE event_id = ANY($1)',
      [patiroIds],
    );
    expect(events.rows).toHaveLength(30);
    for (const e of events.rows) {
      expect(e.delivery_count).toBe(1);
      // The time it arrived, not the time it was replayed.
      expect(e.first_received_at.getTime()).toBeGreaterThanOrEqual(startedAt - 5);
      expect(e.first_received_at.getTime()).toBeLessThan(startedAt + 10_000);
    }
    const deliveries = await database.pool.query('SELECT count(*)::int AS n, sum(notice_count)::int AS notices FROM physitrack_deliveries');
    expect(deliveries.rows[0]).toEqual({ n: 9, notices: 9 });
    const audit = await database.pool.query('SELECT count(*)::int AS n, count(DISTINCT receipt_id)::int AS receipts FROM webhook_audit');
    expect(audit.rows[0]).toEqual({ n: 40, receipts: 40 });
    expect((await get(base, '/readyz')).status).toBe(200);
    // A rendered scrape is reused for a second: this one must be newer than the one above.
    await new Promise((resolve) => setTimeout(resolve, 1100));
    const after = await (await fetch(`${base}/metrics`)).text();
    expect(after).toMatch(/^webhook_spool_replayed_total\{vendor="patiro"\} 30$/m);
    expect(after).toMatch(/^webhook_spool_replayed_total\{vendor="physitrack"\} 9$/m);
    expect(after).toMatch(/^webhook_spool_records 0$/m);
    expect(after).toMatch(/^webhook_database_up 1$/m);
  });
});
