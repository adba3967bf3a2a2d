import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createDatabase, closeDatabase, poolOf, type Database } from '../../src/db/client.js';
import { INTAKE_STATEMENT, insertDeliveries } from '../../src/downloads/intake.js';
import { createTestDatabase, type TestDatabase } from '../helpers/database.js';
import { newDelivery } from '../helpers/physitrack.js';

// The intake statement is a named one: after five runs on a connection, PostgreSQL plans it once
// without the batch's values and keeps that plan until the tables' statistics change. Made while
// the tables were young, that plan must still reach rows through their indexes when they hold
// millions: a sequential scan, or an index read from end to end, costs one row more with every
// notice stored (measured: 10 ms a batch after 12,800 rows).

type PlanNode = { 'Node Type': string; 'Relation Name'?: string; 'Index Name'?: string; 'Index Cond'?: string; Plans?: PlanNode[] };

/** Every node that reads a table (not the nodes that write one), with its index condition, if any. */
function tableReads(node: PlanNode): { table: string; index: string | undefined; cond: string | undefined }[] {
  const children = node.Plans ?? [];
  // A bitmap heap scan is bounded by its bitmap index scan child, which holds the condition.
  const cond = node['Index Cond'] ?? children.find((c) => c['Node Type'] === 'Bitmap Index Scan')?.['Index Cond'];
  const index = node['Index Name'] ?? children.find((c) => c['Node Type'] === 'Bitmap Index Scan')?.['Index Name'];
  const own = node['Relation Name'] !== undefined && node['Node Type'] !== 'ModifyTable' ? [{ table: node['Relation Name'], index, cond }] : [];
  return [...own, ...children.filter((c) => c['Node Type'] !== 'Bitmap Index Scan').flatMap(tableReads)];
}

let database: TestDatabase;
let db: Database;

let counter = 0;
const notice = (program: number) =>
  newDelivery({
    patientId: `patient-${program}`,
    fileUrl: `https://files.physitrack.com/plan-test/${(counter += 1)}.pdf`,
    programCreatedAt: new Date(Date.UTC(2026, 10, 1, 10, 0, program)).toISOString(),
  });

beforeAll(async () => {
  database = await createTestDatabase();
  // One connection, so the test reads the plan that the production path cached on it.
  db = createDatabase({ url: database.url, poolSize: 1, connectTimeoutMs: 5000 });
  // Young tables, as autovacuum sees them after the first notices: a few rows, analyzed.
  await insertDeliveries(db, [notice(1), notice(2), notice(1)]);
  await database.pool.query('ANALYZE physitrack_deliveries, physitrack_programs');
  // More than five runs: from then on the connection uses the generic plan.
  for (let round = 0; round < 8; round += 1) await insertDeliveries(db, [notice(10 + round), notice(1), notice(2)]);
});
afterAll(async () => {
  await closeDatabase(db);
  await database.drop();
});

describe('the intake statement, planned on young tables', () => {
  it('has a cached generic plan that reads the deliveries and programs only through their unique indexes, by their whole key', async () => {
    const client = await poolOf(db).connect();
    try {
      const prepared = await client.query(`SELECT * FROM pg_prepared_statements WHERE name = $1`, [INTAKE_STATEMENT.name]);
      expect(prepared.rows).toHaveLength(1);
      if ('generic_plans' in prepared.rows[0]) expect(Number(prepared.rows[0].generic_plans)).toBeGreaterThan(0); // PostgreSQL 14+
      // EXECUTE shows the plan cached by the runs above; were there none, it would plan now without
      // the intake's settings, with sequential scans, and fail here.
      await client.query('BEGIN; SET LOCAL plan_cache_mode = force_generic_plan');
      const { rows } = await client.query<{ 'QUERY PLAN': [{ Plan: PlanNode }] }>(`EXPLAIN (FORMAT JSON) EXECUTE ${INTAKE_STATEMENT.name}('[]', '[]')`);
      const reads = tableReads(rows[0]!['QUERY PLAN'][0].Plan);
      const keyed = (cond: string | undefined, ...columns: string[]) => columns.every((column) => cond?.includes(column) === true);
      // The receipts recorded before, the program of each notice, the earlier delivery of each
      // notice, the known programs to update and their deliveries.
      expect([...new Set(reads.map(({ table, index }) => `${table} using ${index}`))].sort()).toEqual([
        'physitrack_deliveries using physitrack_deliveries_program_id_idx',
        'physitrack_deliveries using physitrack_deliveries_source_id_notice_key_key',
        'physitrack_programs using physitrack_programs_pkey',
        'physitrack_programs using physitrack_programs_source_id_patient_id_program_key_key',
        'webhook_audit using webhook_audit_receipt_id_key',
      ]);
      const KEYS: Record<string, string[]> = {
        physitrack_programs_pkey: ['id'],
        physitrack_deliveries_program_id_idx: ['program_id'],
        physitrack_deliveries_source_id_notice_key_key: ['source_id', 'notice_key'],
        webhook_audit_receipt_id_key: ['receipt_id'],
      };
      for (const read of reads) {
        const columns = KEYS[read.index!] ?? ['source_id', 'patient_id', 'program_key'];
        expect(keyed(read.cond, ...columns), `${read.index}: ${read.cond}`).toBe(true);
      }
    } finally {
      await client.query('ROLLBACK');
      client.release();
    }
  });

  it('counts versions and keeps programs apart with the cached plan', async () => {
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
