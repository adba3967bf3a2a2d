import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { waitFor } from '../helpers/wait.js';
import { get, runLoad, sendPatiroEvent, summarise } from './senders.js';
import { startFaultRig, type FaultRig } from './spool-helpers.js';

// The nastiest outage: the connections the pool already holds go silent instead of closing (the
// database host went away behind a failover or a lost NAT entry; no FIN, no RST) and stay silent,
// while new connections work again after restore(). A small pool makes every slot one of them.

let rig: FaultRig;

beforeAll(async () => {
  rig = await startFaultRig({ env: { DATABASE_POOL_SIZE: '2' } });
});
afterAll(() => rig?.close());

describe('pooled connections that go silent (half-open)', () => {
  it('answers 503 + Retry-After within 2 s while the pooled connections hang', async () => {
    const { database, proxy, client, service } = rig;
    // Fill the pool: concurrent deliveries open both of its connections. Freeze them only once both
    // are established and idle: one frozen half-way through its handshake would just time out.
    await runLoad({ senders: 4, send: () => sendPatiroEvent(client, service.baseUrl), stop: () => proxy.openConnections() >= 2, maxPerSender: 50 });
    await waitFor(async () => {
      const { rows } = await database.pool.query(
        "SELECT count(*)::int AS total, count(*) FILTER (WHERE state = 'idle')::int AS idle FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()",
      );
      // The main pool's two, plus the reserved pool's (readiness, worker claims) and the sources
      // control channel: all established and idle.
      return rows[0].total >= 2 && rows[0].idle === rows[0].total && rows[0].total === proxy.openConnections();
    }, 10_000);
    proxy.cut({ newConnections: 'blackhole', currentConnections: 'freeze' });
    const cutAt = Date.now();
    const during = await runLoad({ senders: 3, send: () => sendPatiroEvent(client, service.baseUrl), stop: () => Date.now() - cutAt > 2500 });
    const ready = await get(service.baseUrl, '/readyz');
    console.log(`[half-open] during: ${JSON.stringify(summarise(during))}, max latency ${Math.max(...during.map((o) => o.latencyMs))} ms; /readyz ${ready.status} in ${ready.latencyMs} ms`);
    for (const o of during) expect({ status: o.status, retryAfter: o.retryAfter, fast: o.latencyMs < 2000 }).toEqual({ status: 503, retryAfter: '5', fast: true });
    expect(ready.status).toBe(503);
    await proxy.restore();
  });

  // A connection that went silent is given up after the query timeout (src/db/client.ts).
  it('takes deliveries again within 20 s once new connections reach the database', async () => {
    const { client, service } = rig;
    const restoredAt = Date.now();
    await waitFor(async () => (await get(service.baseUrl, '/readyz')).status === 200, 20_000, 250);
    console.log(`[half-open] ready again ${Date.now() - restoredAt} ms after restore`);
    expect((await sendPatiroEvent(client, service.baseUrl)).status).toBe(204);
  }, 30_000);
});
