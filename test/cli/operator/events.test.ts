import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { createTestDatabase, type TestDatabase } from '../../helpers/database.js';
import { ago, cli, insertEvent, spawnCli } from './helpers.js';

let database: TestDatabase;
let env: Record<string, string>;

beforeAll(async () => {
  database = await createTestDatabase();
  env = { DATABASE_URL: database.url };
});
afterAll(async () => {
  await database.drop();
});
beforeEach(async () => {
  await database.pool.query('TRUNCATE patiro_events');
});

const eventIds = (stdout: string) => (JSON.parse(stdout) as { eventId: string }[]).map((e) => e.eventId);

describe('cli events list', () => {
  it('lists the most recently received first and filters by --type and --since', async () => {
    await insertEvent(database.pool, { event_id: 'old', event_type: 'PatientRevealed', last_received_at: ago('3 days') });
    await insertEvent(database.pool, { event_id: 'mid', event_type: 'PatientUpdated', last_received_at: ago('90 minutes') });
    await insertEvent(database.pool, { event_id: 'new', event_type: 'PatientRevealed', last_received_at: ago('1 minute') });

    expect(eventIds((await cli(['events', 'list', '--json'], env)).stdout)).toEqual(['new', 'mid', 'old']);
    expect(eventIds((await cli(['events', 'list', '--type', 'PatientRevealed', '--json'], env)).stdout)).toEqual(['new', 'old']);
    expect(eventIds((await cli(['events', 'list', '--since', '2h', '--json'], env)).stdout)).toEqual(['new', 'mid']);
    expect(eventIds((await cli(['events', 'list', '--since', '4d', '--type', 'PatientUpdated', '--json'], env)).stdout)).toEqual(['mid']);
    expect(eventIds((await cli(['events', 'list', '--limit', '2', '--json'], env)).stdout)).toEqual(['new', 'mid']);
  });

  it('never prints the event data, in the table or in JSON', async () => {
    await insertEvent(database.pool, { event_id: 'e-1', data: JSON.stringify({ id: 1, firstName: 'Erika', lastName: 'Mustermann' }) });
    for (const args of [[], ['--json']]) {
      const result = await cli(['events', 'list', ...args], env);
      expect(result.code).toBe(0);
      expect(result.stdout).toContain('e-1');
      expect(result.stdout).not.toMatch(/Erika|Mustermann|firstName|"data"/);
    }
    expect(JSON.parse((await cli(['events', 'list', '--json'], env)).stdout)[0]).toEqual({
      sourceId: 'default',
      eventId: 'e-1',
      eventType: 'PatientUpdated',
      occurredAt: expect.any(String),
      firstReceivedAt: expect.any(String),
      lastReceivedAt: expect.any(String),
      deliveryCount: 1,
    });
  });

  it('exits 1 when nothing matches and 2 for a bad filter', async () => {
    const none = await cli(['events', 'list', '--type', 'Nothing', '--json'], env);
    expect(none.code).toBe(1);
    expect(JSON.parse(none.stdout)).toEqual([]);
    expect((await cli(['events', 'list', '--since', 'yesterday'], env)).code).toBe(2);
  });
});

describe('cli events show', () => {
  it("prints the event with its data on the operator's explicit request", async () => {
    await insertEvent(database.pool, { event_id: 'e-7', event_type: 'PatientRevealed', delivery_count: 3 });
    const result = await cli(['events', 'show', 'e-7'], env);
    expect(result.code).toBe(0);
    expect(result.stdout).toMatch(/Type:\s+PatientRevealed/);
    expect(result.stdout).toMatch(/Deliveries:\s+3/);
    expect(result.stdout).toMatch(/sent as 2025-01-01T10:00:00\.1234567/);
    expect(result.stdout).toMatch(/Data:\n {2}\{\n {4}"id": 4711,/);
    const json = JSON.parse((await cli(['events', 'show', 'e-7', '--json'], env)).stdout);
    expect(json).toMatchObject({ eventId: 'e-7', deliveryCount: 3, occurredAtRaw: '2025-01-01T10:00:00.1234567' });
    expect(json.data).toEqual({ id: 4711, firstName: 'Erika', lastName: 'Mustermann' });
  });

  it('tells apart the same eventId received by two sources, and filters by --source', async () => {
    await insertEvent(database.pool, { event_id: 'shared', source_id: 'clinicaaaaaaaaaaaaaa' });
    await insertEvent(database.pool, { event_id: 'shared', source_id: 'clinicbbbbbbbbbbbbbb' });
    const both = JSON.parse((await cli(['events', 'show', 'shared', '--json'], env)).stdout);
    expect(both.map((e: { sourceId: string }) => e.sourceId)).toEqual(['clinicaaaaaaaaaaaaaa', 'clinicbbbbbbbbbbbbbb']);
    const one = JSON.parse((await cli(['events', 'show', 'shared', '--source', 'clinicbbbbbbbbbbbbbb', '--json'], env)).stdout);
    expect(one).toMatchObject({ sourceId: 'clinicbbbbbbbbbbbbbb', eventId: 'shared' });
    const listed = JSON.parse((await cli(['events', 'list', '--source', 'clinicaaaaaaaaaaaaaa', '--json'], env)).stdout);
    expect(listed.map((e: { sourceId: string; eventId: string }) => [e.sourceId, e.eventId])).toEqual([['clinicaaaaaaaaaaaaaa', 'shared']]);
  });

  it('exits 1 for an unknown event and 2 without one', async () => {
    expect((await cli(['events', 'show', 'nope'], env)).code).toBe(1);
    expect((await cli(['events', 'show'], env)).code).toBe(2);
  });

  it('runs as a real process', async () => {
    await insertEvent(database.pool, { event_id: 'e-child' });
    const shown = await spawnCli(['events', 'show', 'e-child', '--json'], env);
    expect(shown.code).toBe(0);
    expect(JSON.parse(shown.stdout).eventId).toBe('e-child');
    const listed = await spawnCli(['events', 'list', '--type', 'Nothing'], env);
    expect(listed.code).toBe(1);
    expect(listed.stderr).toMatch(/No events match/);
  });
});
