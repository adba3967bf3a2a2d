import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestDatabase, type TestDatabase } from '../helpers/database.js';
import { samplePdf, startFileHost, type FileHost, servePdfSlowly } from '../helpers/https-file-host.js';
import { waitFor } from '../helpers/wait.js';
import { deliveryRows } from './deliveries.js';
import { createClient, isAcknowledged, runLoad, sendPatiroEvent, sendPhysitrackNotice, summarise } from './senders.js';
import { killAllServiceProcesses, startServiceProcess } from './service-process.js';

// SIGTERM (a deploy, a scale-down) in the middle of deliveries and downloads: requests already
// received are answered, the process exits 0 well inside the usual 30 s grace period, every 2xx
// is stored, and running downloads finish.

let database: TestDatabase;
let host: FileHost;
const client = createClient();

beforeAll(async () => {
  database = await createTestDatabase();
  host = await startFileHost();
});
afterAll(async () => {
  await killAllServiceProcesses();
  await client.close();
  await host?.close();
  await database?.drop();
});

const count = (entries: Record<string, unknown>[], msg: string) => entries.filter((e) => e.msg === msg && (e.req as { path?: string } | undefined)?.path !== '/readyz').length;
/** The one line that ends each request: "request completed", or the route's own ("patiro event stored"). */
const completedLines = (entries: Record<string, unknown>[]) =>
  entries.filter((e) => e.responseTime !== undefined && e.msg !== 'request errored' && (e.req as { path?: string } | undefined)?.path !== '/readyz').length;

describe('SIGTERM under load', () => {
  it('answers every request it read, finishes running downloads, stores every 2xx and exits 0 within 30 s', async () => {
    // debug: the "incoming request" line that proves each request read was answered is a debug line.
    const service = await startServiceProcess({ databaseUrl: database.url, env: { LOG_LEVEL: 'debug' } });
    await service.waitReady();
    let exited = false;
    void service.exited.then(() => (exited = true));

    const loadStarted = Date.now();
    const load = runLoad({ senders: 8, send: () => sendPatiroEvent(client, service.baseUrl), stop: () => exited || Date.now() - loadStarted > 40_000 });
    await new Promise((resolve) => setTimeout(resolve, 1000)); // the load runs a while first
    const downloads = await Promise.all(
      [1, 2, 3].map((i) => {
        host.route(`/term/${i}.pdf`, servePdfSlowly(samplePdf(), 1500));
        return sendPhysitrackNotice(client, service.baseUrl, host.url(`/term/${i}.pdf`));
      }),
    );
    expect(downloads.map((d) => d.status)).toEqual([204, 204, 204]);
    // SIGTERM while the three downloads are running: each has its first bytes and waits 1.5 s for the rest.
    await waitFor(() => host.requestCount() >= 3, 10_000);
    const runningAtTerm = (await deliveryRows(database.pool)).filter((r) => r.download_status === 'downloading').length;

    const termAt = Date.now();
    service.signal('SIGTERM');
    const exit = await service.exited;
    const shutdownMs = exit.at - termAt;
    const outcomes = await load;

    const answered = outcomes.filter((o) => o.status !== undefined);
    const refused = outcomes.filter((o) => o.error === 'ECONNREFUSED');
    const reset = outcomes.filter((o) => o.error !== undefined && o.error !== 'ECONNREFUSED');
    const acknowledged = outcomes.filter(isAcknowledged).map((o) => o.id);
    const { rows } = await database.pool.query<{ event_id: string }>('SELECT event_id FROM patiro_events WHERE event_id = ANY($1)', [outcomes.map((o) => o.id)]);
    const stored = new Set(rows.map((r) => r.event_id));
    const logs = service.logEntries();
    const received = count(logs, 'incoming request');
    const completed = completedLines(logs);
    const files = await deliveryRows(database.pool);
    console.log(
      `[SIGTERM under load] exit ${exit.code ?? exit.signal} ${shutdownMs} ms after SIGTERM; outcomes ${JSON.stringify(summarise(outcomes))}; ` +
        `answered ${answered.length} (after SIGTERM: ${answered.filter((o) => o.startedAt >= termAt).length}), refused ${refused.length}, ` +
        `reset ${reset.length}; server log: ${received} received, ${completed} completed; downloads running at SIGTERM ${runningAtTerm}, after exit ${files.map((f) => f.download_status).join(',')}`,
    );

    expect(exit).toMatchObject({ code: 0, signal: null });
    expect(shutdownMs).toBeLessThan(30_000);
    expect(answered.length).toBeGreaterThan(20);
    // Every request the service read was answered, and every answer reached its sender.
    expect(completed).toBe(received);
    expect(answered.length + downloads.length).toBe(completed);
    // So a connection error (refused, or reset: sent on a keep-alive connection the service was
    // closing as idle) is a request the service never read: nothing of it was stored, the sender
    // retries it like any failed delivery.
    expect(reset.concat(refused).filter((o) => stored.has(o.id)).map((o) => o.id)).toEqual([]);
    expect(acknowledged.filter((id) => !stored.has(id))).toEqual([]);
    expect(runningAtTerm).toBe(3);
    expect(files.map((f) => f.download_status)).toEqual(['done', 'done', 'done']);
    expect(logs.at(-1)?.msg).toBe('stopped');
  });
});
