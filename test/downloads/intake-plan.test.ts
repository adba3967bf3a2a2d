import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createDatabase, closeDatabase, type Database } from '../../src/db/client.js';
import { INTAKE_PLANNER_SETTINGS, INTAKE_STATEMENT, insertDeliveries, type NewDelivery } from '../../src/downloads/intake.js';
import { createTestDatabase, type TestDatabase } from '../helpers/database.js';

// The intake statement is a named one: each connection keeps the plan it made first, for as long as
// the connection lives. Made while the tables were young, that plan must still find rows through
// their indexes when the tables hold millions: a sequential scan, or an index read from end to end,
// costs one row more with every notice stored (measured: 10 ms a batch after 12,800 rows).

const WATCHED_TABLES = new Set(['physitrack_deliveries', 'physitrack_programs']);

type PlanNode = { 'Node Type': string; 'Relation Name'?: string; 'Index Cond'?: string; 'Index Name'?: string; Plans?: PlanNode[] };

/** The scans of the watched tables that are not bounded by an index condition. */
function unboundedScans(node: PlanNode): string[] {
  const here = node['Relation Name'] !== undefined && WATCHED_TABLES.has(node['Relation Name']) && node['Node Type'] !== 'ModifyTable' && node['Index Cond'] === undefined;
  const own = here ? [`${node['Node Type']} on ${node['Relation Name']}${node['Index Name'] ? ` using ${node['Index Name']}` : ''}`] : [];
  return [...own, ...(node.Plans ?? []).flatMap(unboundedScans)];
}

let database: TestDatabase;
let db: Database;

let counter = 0;
const notice = (program: number): NewDelivery => ({
  sourceId: 'default',
  refusal: null,
  deadlineHours: 24,
  bodySha256: 'ab'.repeat(32),
  sourceAddress: '127.0.0.1',
  notice: {
    practitionerToken: 'practitioner-token',
    patientId: `patient-${program}`,
    fileUrl: `https://files.physitrack.com/plan-test/${(counter += 1)}.pdf`,
    programName: 'Knee Rehab Program',
    programDate: '2026-11-01',
    programCreatedAt: new Date(Date.UTC(2026, 10, 1, 10, 0, program)).toISOString(),
    updated: false,
  },
});

beforeAll(async () => {
  database = await createTestDatabase();
  db = createDatabase({ url: database.url, poolSize: 2, connectTimeoutMs: 5000 });
  // Young tables, as autovacuum sees them after the first notices: a few rows, analyzed.
  await insertDeliveries(db, [notice(1), notice(2), notice(1)]);
  await database.pool.query('ANALYZE physitrack_deliveries, physitrack_programs');
});
afterAll(async () => {
  await closeDatabase(db);
  await database.drop();
});

describe('the intake statement, planned on young tables', () => {
  it('reaches every row of the deliveries and programs through an index condition, in its generic plan', async () => {
    const client = await database.pool.connect();
    try {
      await client.query(`BEGIN; ${INTAKE_PLANNER_SETTINGS}; SET LOCAL plan_cache_mode = force_generic_plan`);
      await client.query(`PREPARE intake_under_test(jsonb, jsonb) AS ${INTAKE_STATEMENT.text}`);
      const { rows } = await client.query<{ 'QUERY PLAN': [{ Plan: PlanNode }] }>(`EXPLAIN (FORMAT JSON) EXECUTE intake_under_test('[]', '[]')`);
      const plan = rows[0]!['QUERY PLAN'][0].Plan;
      const scans = JSON.stringify(plan).match(/"Relation Name":"physitrack_(deliveries|programs)"/g) ?? [];
      expect(scans.length).toBeGreaterThanOrEqual(4); // the two lookups, the insert, the update of known programs
      expect(unboundedScans(plan)).toEqual([]);
    } finally {
      await client.query('ROLLBACK');
      client.release();
    }
  });

  it('still counts versions and keeps programs apart once the plan is cached (more than 5 runs on one connection)', async () => {
    for (let round = 0; round < 8; round += 1) await insertDeliveries(db, [notice(10 + round), notice(1), notice(2)]);
    const { rows } = await database.pool.query<{ patient_id: string; versions: number }>(
      `SELECT patient_id, versions FROM physitrack_programs WHERE patient_id IN ('patient-1', 'patient-2', 'patient-10') ORDER BY patient_id`,
    );
    expect(rows).toEqual([
      { patient_id: 'patient-1', versions: 10 },
      { patient_id: 'patient-10', versions: 1 },
      { patient_id: 'patient-2', versions: 9 },
    ]);
  });
});
