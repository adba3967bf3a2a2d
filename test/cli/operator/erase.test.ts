import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { newReceipt } from '../../../src/audit.js';
import { closeDatabase, createDatabase, type Database } from '../../../src/db/client.js';
import { toPatiroEvent } from '../../../src/webhooks/patiro-payload.js';
import { writePatiroBatch } from '../../../src/webhooks/patiro-store.js';
import { buildTestApp, TEST_SOURCES_KEY } from '../../helpers/app.js';
import { createTestDatabase, type TestDatabase } from '../../helpers/database.js';
import { patiroEvent, signedPatiroRequest } from '../../helpers/patiro.js';
import { cli } from './helpers.js';

let database: TestDatabase;
let db: Database;
let env: Record<string, string>;
beforeAll(async () => {
  database = await createTestDatabase();
  db = createDatabase({ url: database.url, poolSize: 2, connectTimeoutMs: 5000 });
  env = { DATABASE_URL: database.url, SOURCES_SECRET_KEY: TEST_SOURCES_KEY };
});
afterAll(async () => {
  await closeDatabase(db);
  await database.drop();
});
beforeEach(async () => {
  await database.pool.query('TRUNCATE patiro_events, patiro_patients, webhook_audit, erasures, sources');
});

async function patientEvent(sourceId: string, patientId: string) {
  await writePatiroBatch(db, [
    { receipt: newReceipt(), sourceId, event: toPatiroEvent({ eventId: `e-${patientId}-${Math.random()}`, eventType: 'PatientUpdated', data: { id: patientId } }), signedAt: new Date(), bodySha256: 'b'.repeat(64), sourceAddress: null },
  ]);
}

const count = async (table: string) => (await database.pool.query(`SELECT count(*)::int AS n FROM ${table}`)).rows[0].n as number;

describe('cli patients erase', () => {
  it('needs --vendor for the default source, counts with --dry-run, erases, and finds nothing the second time', async () => {
    await patientEvent('default', 'p-7');
    await patientEvent('default', 'p-8');
    const noVendor = await cli(['patients', 'erase', '--source', 'default', '--patient', 'p-7'], env);
    expect(noVendor.code).toBe(2);
    expect(noVendor.stderr).toMatch(/give --vendor patiro or --vendor physitrack/);

    const dry = await cli(['patients', 'erase', '--source', 'default', '--patient', 'p-7', '--vendor', 'patiro', '--dry-run', '--json'], env);
    expect(dry.code, dry.stderr).toBe(0);
    expect(JSON.parse(dry.stdout)).toMatchObject({ dryRun: true, counts: { patiro_events: 1, patiro_patients: 1 }, erasureId: null });
    expect(await count('patiro_patients')).toBe(2);

    const done = await cli(['patients', 'erase', '--source', 'default', '--patient', 'p-7', '--vendor', 'patiro'], env);
    expect(done.code, done.stderr).toBe(0);
    expect(done.stdout).toMatch(/patiro_patients:\s+1/);
    expect(done.stdout).not.toContain('p-7');
    expect(await count('patiro_patients')).toBe(1);
    expect(await count('erasures')).toBe(1);
    const again = await cli(['patients', 'erase', '--source', 'default', '--patient', 'p-7', '--vendor', 'patiro'], env);
    expect(again.stdout).toMatch(/nothing to remove/);
    expect(await count('erasures')).toBe(1);
  });

  it('exits 1 for a source that does not exist', async () => {
    expect((await cli(['patients', 'erase', '--source', 'zzzzzzzzzzzzzzzzzzzz', '--patient', 'p'], env)).code).toBe(1);
  });
});

describe('cli sources update and delete', () => {
  it('renames a source and sets or clears its tenant', async () => {
    const added = JSON.parse((await cli(['sources', 'add', 'patiro', '--name', 'Clinic A', '--json'], env)).stdout) as { id: string };
    const renamed = await cli(['sources', 'update', added.id, '--name', 'Clinic A (Utrecht)', '--tenant', 't-9', '--json'], env);
    expect(JSON.parse(renamed.stdout)).toMatchObject({ id: added.id, name: 'Clinic A (Utrecht)', tenantRef: 't-9' });
    const cleared = await cli(['sources', 'update', added.id, '--no-tenant', '--json'], env);
    expect(JSON.parse(cleared.stdout)).toMatchObject({ name: 'Clinic A (Utrecht)', tenantRef: null });
    expect((await cli(['sources', 'update', 'default', '--name', 'x'], env)).code).toBe(2);
    expect((await cli(['sources', 'update', added.id], env)).code).toBe(2);
  });

  it('refuses to delete a source with data, naming the counts, and to erase an active one; disabled, --erase-data removes it all, and its URL answers 404', async () => {
    const added = JSON.parse((await cli(['sources', 'add', 'patiro', '--name', 'Clinic B', '--json'], env)).stdout) as { id: string; signingSecret: string };
    const other = JSON.parse((await cli(['sources', 'add', 'patiro', '--name', 'Clinic C', '--json'], env)).stdout) as { id: string };
    await patientEvent(added.id, 'p-1');
    await patientEvent(other.id, 'p-1');
    const app = await buildTestApp(database.url);
    try {
      const send = () => app.app.inject(signedPatiroRequest({ body: JSON.stringify(patiroEvent()), secret: added.signingSecret, path: `/webhooks/patiro/${added.id}` }));
      expect((await send()).statusCode).toBe(204);

      const refused = await cli(['sources', 'delete', added.id], env);
      expect(refused.code).toBe(2);
      expect(refused.stderr).toMatch(/has data \(patiro_events: 2, patiro_patients: 2, webhook_audit: 2\); add --erase-data/);

      // Still active: erasing its data now would leave what it sends next under a deleted id.
      const active = await cli(['sources', 'delete', added.id, '--erase-data'], env);
      expect(active.code).toBe(2);
      expect(active.stderr).toMatch(/is active; disable it first \(sources disable /);
      const dry = await cli(['sources', 'delete', added.id, '--erase-data', '--dry-run', '--json'], env);
      expect(dry.code, dry.stderr).toBe(0);
      expect(JSON.parse(dry.stdout)).toMatchObject({ dryRun: true, counts: { patiro_events: 2, sources: 1 } });
      expect((await cli(['sources', 'disable', added.id], env)).code).toBe(0);

      const deleted = await cli(['sources', 'delete', added.id, '--erase-data', '--json'], env);
      expect(deleted.code, deleted.stderr).toBe(0);
      expect(JSON.parse(deleted.stdout)).toMatchObject({ counts: { patiro_events: 2, patiro_patients: 2, webhook_audit: 2, sources: 1 } });
      await app.sources.reload();
      expect((await send()).statusCode).toBe(404);
      // The other clinic keeps its rows.
      expect((await database.pool.query('SELECT DISTINCT source_id FROM patiro_events')).rows).toEqual([{ source_id: other.id }]);
      expect((await database.pool.query('SELECT count(*)::int AS n FROM sources WHERE id = $1', [added.id])).rows[0].n).toBe(0);
    } finally {
      await app.close();
    }
  });
});
