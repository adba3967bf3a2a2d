import { request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestDatabase, type TestDatabase } from '../helpers/database.js';
import { createClient, isAcknowledged, runLoad, sendPatiroEvent, summarise } from './senders.js';
import { killAllServiceProcesses, startServiceProcess } from './service-process.js';

// A rolling deploy: the load balancer keeps sending to a terminating pod for a few seconds. During
// SHUTDOWN_DRAIN_MS after SIGTERM the service keeps accepting and answering (with Connection: close,
// so keep-alive clients reconnect elsewhere) while /readyz says 503; then it shuts down as usual.

const DRAIN_MS = 3000;
/** The senders stop this long after SIGTERM: a load balancer that noticed the 503 within the drain. */
const SEND_FOR_MS = 2500;

let database: TestDatabase;
const client = createClient();

beforeAll(async () => {
  database = await createTestDatabase();
});
afterAll(async () => {
  await killAllServiceProcesses();
  await client.close();
  await database?.drop();
});

describe('SIGTERM during a rolling deploy', () => {
  it('keeps answering 32 keep-alive senders through the drain: no refused or reset connection, every answer 2xx and stored', async () => {
    const service = await startServiceProcess({ databaseUrl: database.url, env: { SHUTDOWN_DRAIN_MS: String(DRAIN_MS) } });
    await service.waitReady();
    let termAt = Number.POSITIVE_INFINITY;
    const load = runLoad({ senders: 32, send: () => sendPatiroEvent(client, service.baseUrl), stop: () => Date.now() - termAt > SEND_FOR_MS });
    await new Promise((resolve) => setTimeout(resolve, 1500)); // the load runs a while first, on warm connections

    termAt = Date.now();
    service.signal('SIGTERM');
    await new Promise((resolve) => setTimeout(resolve, 200));
    const readiness = await request(`${service.baseUrl}/readyz`);
    const readyBody = await readiness.body.json();
    const outcomes = await load;
    const exit = await service.exited;

    const duringDrain = outcomes.filter((o) => o.startedAt >= termAt);
    const failed = duringDrain.filter((o) => !isAcknowledged(o));
    const acknowledged = outcomes.filter(isAcknowledged).map((o) => o.id);
    const { rows } = await database.pool.query<{ n: number }>('SELECT count(*)::int AS n FROM patiro_events WHERE event_id = ANY($1)', [acknowledged]);
    console.log(
      `[rolling deploy] ${outcomes.length} requests, ${duringDrain.length} sent during the drain: ${JSON.stringify(summarise(duringDrain))}; ` +
        `exit ${exit.code ?? exit.signal} after ${exit.at - termAt} ms; /readyz during the drain ${readiness.statusCode}`,
    );

    expect(readiness.statusCode).toBe(503);
    expect(readyBody).toMatchObject({ status: 'draining' });
    expect(readiness.headers.connection).toBe('close');
    expect(duringDrain.length).toBeGreaterThan(100);
    expect(failed).toEqual([]);
    expect(rows[0]!.n).toBe(acknowledged.length);
    expect(exit).toMatchObject({ code: 0, signal: null });
    expect(exit.at - termAt).toBeGreaterThanOrEqual(DRAIN_MS);
    expect(exit.at - termAt).toBeLessThan(25_000);
    expect(service.logEntries().some((e) => e.msg?.toString().startsWith('draining'))).toBe(true);
  });
});
