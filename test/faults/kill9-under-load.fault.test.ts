import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestDatabase, type TestDatabase } from '../helpers/database.js';
import { waitFor } from '../helpers/wait.js';
import { createClient, isAcknowledged, runLoad, sendPatiroEvent, summarise } from './senders.js';
import { killAllServiceProcesses, restartServiceProcess, startServiceProcess } from './service-process.js';

// kill -9 in the middle of concurrent deliveries: whatever was answered 2xx must be in the table
// after a restart. Stored may exceed acknowledged (committed, then killed before the answer), never
// the reverse.

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

async function storedEventIds(ids: string[]): Promise<Set<string>> {
  const { rows } = await database.pool.query<{ event_id: string }>('SELECT event_id FROM patiro_events WHERE event_id = ANY($1)', [ids]);
  return new Set(rows.map((r) => r.event_id));
}

describe('kill -9 under concurrent load', () => {
  it('keeps every acknowledged Patiro event: each 2xx is in patiro_events after a restart', async () => {
    const service = await startServiceProcess({ databaseUrl: database.url });
    await service.waitReady();

    // 8 senders; kill -9 once 100 deliveries have been acknowledged (mid-stream, not at a quiet
    // moment), and keep sending for another second against the dead service.
    let acknowledgedSoFar = 0;
    let killedAt = 0;
    const send = async () => {
      const outcome = await sendPatiroEvent(client, service.baseUrl);
      if (isAcknowledged(outcome)) acknowledgedSoFar += 1;
      return outcome;
    };
    const load = runLoad({ senders: 8, send, stop: () => killedAt > 0 && Date.now() - killedAt > 1000 });
    await waitFor(() => acknowledgedSoFar >= 100, 30_000, 5);
    killedAt = Date.now();
    await service.kill9();
    const outcomes = await load;

    const restarted = await restartServiceProcess(service);
    await restarted.waitReady();

    const acknowledged = outcomes.filter(isAcknowledged).map((o) => o.id);
    const sent = outcomes.map((o) => o.id);
    const stored = await storedEventIds(sent);
    const lost = acknowledged.filter((id) => !stored.has(id));
    const storedNotAcknowledged = [...stored].filter((id) => !acknowledged.includes(id));
    const answeredAfterKill = outcomes.filter((o) => o.status !== undefined && o.startedAt > killedAt).length;
    console.log(
      `[kill -9 under load] sent ${sent.length}, outcomes ${JSON.stringify(summarise(outcomes))}, ` +
        `acknowledged ${acknowledged.length}, stored ${stored.size} (stored but not acknowledged: ${storedNotAcknowledged.length}), lost ${lost.length}`,
    );

    expect(acknowledged.length).toBeGreaterThanOrEqual(100); // the load really ran before the kill
    expect(answeredAfterKill).toBe(0); // and the kill really stopped the service mid-way
    expect(outcomes.filter((o) => o.error).length).toBeGreaterThan(0);
    expect(lost).toEqual([]);
    expect(stored.size).toBeGreaterThanOrEqual(acknowledged.length);
    // Every row in the table is one this test sent: nothing invented or duplicated.
    expect(Number((await database.pool.query('SELECT count(*) AS n FROM patiro_events')).rows[0].n)).toBe(stored.size);

    // The restarted service takes deliveries again.
    const after = await sendPatiroEvent(client, restarted.baseUrl);
    expect(after.status).toBe(204);
    expect((await storedEventIds([after.id])).has(after.id)).toBe(true);
  });
});
