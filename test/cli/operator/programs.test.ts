import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildTestApp, type TestApp } from '../../helpers/app.js';
import { createTestDatabase, type TestDatabase } from '../../helpers/database.js';
import { PHYSITRACK_KEY, physitrackNotice, physitrackRequest } from '../../helpers/physitrack.js';
import { cli, spawnCli } from './helpers.js';

let database: TestDatabase;
let t: TestApp;
let env: Record<string, string>;
const SECRET_PATH = 'programs/secret-path-program-cli.pdf';

beforeAll(async () => {
  database = await createTestDatabase();
  env = { DATABASE_URL: database.url };
  t = await buildTestApp(database.url, { PHYSITRACK_API_KEY: PHYSITRACK_KEY });
  const notice = { patient_id: 'P-42', date_iso: '2026-11-02T08:15:00Z', token: 'practitioner-token-abcdef123456' };
  await t.app.inject(physitrackRequest(physitrackNotice({ ...notice, name: 'Knee', file_url: `https://files.physitrack.com/${SECRET_PATH}` })));
  await t.app.inject(physitrackRequest(physitrackNotice({ ...notice, name: 'Knee, week 2', updated: true, file_url: 'https://files.physitrack.com/v2-secret.pdf' })));
  await t.app.inject(physitrackRequest(physitrackNotice({ patient_id: 'P-7', file_url: 'https://files.physitrack.com/other.pdf' })));
});
afterAll(async () => {
  await t.close();
  await database.drop();
});

describe('cli programs', () => {
  it('lists programs, filtered by --patient and --source, with JSON for scripts', async () => {
    const all = JSON.parse((await cli(['programs', 'list', '--json'], env)).stdout) as { patientId: string }[];
    expect(all.map((p) => p.patientId).sort()).toEqual(['P-42', 'P-7']);
    const one = JSON.parse((await cli(['programs', 'list', '--patient', 'P-42', '--json'], env)).stdout);
    expect(one).toEqual([expect.objectContaining({ patientId: 'P-42', sourceId: 'default', versions: 2, programName: 'Knee, week 2', currentDocumentId: null })]);
    expect((await cli(['programs', 'list', '--source', 'clinicaaaaaaaaaaaaaa'], env)).code).toBe(1);
    const table = await cli(['programs', 'list'], env);
    expect(table.stdout).toMatch(/P-42 +Knee, week 2/);
  });

  it('shows a program with its versions, never a file_url or the whole practitioner token', async () => {
    const [program] = JSON.parse((await cli(['programs', 'list', '--patient', 'P-42', '--json'], env)).stdout);
    const shown = await cli(['programs', 'show', program.id], env);
    expect(shown.code).toBe(0);
    expect(shown.stdout).toMatch(/Versions: +2/);
    expect(shown.stdout).toMatch(/Current PDF: +none downloaded yet/);
    const json = JSON.parse((await cli(['programs', 'show', program.id, '--json'], env)).stdout);
    expect(json.deliveries).toHaveLength(2);
    expect(json.deliveries[0]).toMatchObject({ updated: true, downloadStatus: 'pending', programName: 'Knee, week 2' });
    for (const output of [shown.stdout, JSON.stringify(json)]) {
      expect(output).not.toContain('secret-path');
      expect(output).not.toContain('v2-secret');
      expect(output).not.toContain('practitioner-token-abcdef123456');
    }
  });

  it('exits 1 for an unknown program and 2 for a bad id, also as a real process', async () => {
    expect((await cli(['programs', 'show', '999999'], env)).code).toBe(1);
    expect((await cli(['programs', 'show', 'abc'], env)).code).toBe(2);
    const real = await spawnCli(['programs', 'list', '--json'], env);
    expect(real.code).toBe(0);
    expect(JSON.parse(real.stdout)).toHaveLength(2);
  });
});
