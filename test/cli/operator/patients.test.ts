import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestDatabase, type TestDatabase } from '../../helpers/database.js';
import { cli, insertPatient, spawnCli } from './helpers.js';

let database: TestDatabase;
let env: Record<string, string>;

beforeAll(async () => {
  database = await createTestDatabase();
  env = { DATABASE_URL: database.url };
  await insertPatient(database.pool, {
    patient_id: '4711',
    data: JSON.stringify({ id: 4711, firstName: 'Erika', lastName: 'Mustermann' }),
    revealed_at: '2025-01-01T10:00:00.123456Z',
    last_event_id: 'evt-42',
  });
});
afterAll(async () => {
  await database.drop();
});

describe('cli patients show', () => {
  it('prints the current patient with its data', async () => {
    const result = await cli(['patients', 'show', '4711'], env);
    expect(result.code).toBe(0);
    expect(result.stdout).toMatch(/Patient:\s+4711/);
    expect(result.stdout).toMatch(/Revealed:\s+2025-01-01T10:00:00\.123Z/);
    expect(result.stdout).toMatch(/Last event:\s+evt-42/);
    expect(result.stdout).toContain('"lastName": "Mustermann"');
  });

  it('prints JSON for scripts', async () => {
    const result = await cli(['patients', 'show', '4711', '--json'], env);
    expect(result.code).toBe(0);
    expect(JSON.parse(result.stdout)).toEqual({
      sourceId: 'default',
      patientId: '4711',
      data: { id: 4711, firstName: 'Erika', lastName: 'Mustermann' },
      signedAt: expect.any(String),
      revealedAt: '2025-01-01T10:00:00.123Z',
      updatedAt: expect.any(String),
      lastEventId: 'evt-42',
    });
  });

  it('lists each source that has the patient_id, and only one with --source', async () => {
    await insertPatient(database.pool, { source_id: 'clinicaaaaaaaaaaaaaa', patient_id: '77', data: JSON.stringify({ id: 77, firstName: 'Ada' }) });
    await insertPatient(database.pool, { source_id: 'clinicbbbbbbbbbbbbbb', patient_id: '77', data: JSON.stringify({ id: 77, firstName: 'Bea' }) });
    const both = await cli(['patients', 'show', '77'], env);
    expect(both.stdout).toMatch(/Source:\s+clinicaaaaaaaaaaaaaa[\s\S]*"Ada"[\s\S]*Source:\s+clinicbbbbbbbbbbbbbb[\s\S]*"Bea"/);
    expect(JSON.parse((await cli(['patients', 'show', '77', '--json'], env)).stdout)).toHaveLength(2);
    const one = JSON.parse((await cli(['patients', 'show', '77', '--source', 'clinicbbbbbbbbbbbbbb', '--json'], env)).stdout);
    expect(one).toMatchObject({ sourceId: 'clinicbbbbbbbbbbbbbb', data: { firstName: 'Bea' } });
    expect((await cli(['patients', 'show', '77', '--source', 'default'], env)).code).toBe(1);
  });

  it('exits 1 for an unknown patient and 2 without an id', async () => {
    const missing = await cli(['patients', 'show', '9999'], env);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toMatch(/No patient "9999"/);
    expect((await cli(['patients', 'show'], env)).code).toBe(2);
    expect((await cli(['patients', 'list'], env)).code).toBe(2);
  });

  it('runs as a real process', async () => {
    const found = await spawnCli(['patients', 'show', '4711', '--json'], env);
    expect(found.code).toBe(0);
    expect(JSON.parse(found.stdout).patientId).toBe('4711');
    expect((await spawnCli(['patients', 'show', 'nobody'], env)).code).toBe(1);
  });
});
