import type pg from 'pg';
import type { Child } from './child-process.js';
import { countRows } from './database.js';
import { cpuBetween, cpuSnapshot, type CpuUse } from './cpu.js';
import { pgbenchPath, runNodeLoop, runPgbench, type DbLimitResult } from './db-limit.js';
import type { RequestPool } from './deliveries.js';
import { runLoad, type LoadResult } from './load.js';
import type { WebhookResult } from './report.js';

export interface PhaseSettings {
  connections: number;
  durationS: number;
  warmupS: number;
  signal: AbortSignal;
  /** The local PostgreSQL server's postmaster, for CPU accounting. */
  postmasterPid?: number;
}

/** Most deliveries prepared for one run: beyond this they are signed on the spot (and reported). */
const MAX_PREPARED = 400_000;

/**
 * An unmeasured warm-up (JIT, connection pools), whose rate sizes the set of deliveries prepared
 * for the measured run, then the measured run with CPU accounting.
 */
export async function warmAndRun(target: Child, pool: RequestPool, s: PhaseSettings, afterWarmUp?: () => Promise<void>): Promise<{ load: LoadResult; cpu: CpuUse }> {
  pool.prepare(Math.ceil(s.connections * 50));
  const warm = await runLoad({ baseUrl: target.baseUrl, connections: s.connections, pool, durationS: s.warmupS, signal: s.signal });
  const warmRate = warm.answered / Math.max(warm.elapsedS, 1e-3);
  // The warm-up is slower than the run (JIT, pools still filling): prepare generously.
  pool.prepare(Math.min(MAX_PREPARED, Math.ceil(Math.max(warmRate * 2, 6000) * s.durationS)));
  await afterWarmUp?.();
  const before = cpuSnapshot({ target: target.pid, postmaster: s.postmasterPid });
  const load = await runLoad({ baseUrl: target.baseUrl, connections: s.connections, pool, durationS: s.durationS, signal: s.signal });
  return { load, cpu: cpuBetween(before, cpuSnapshot({ target: target.pid, postmaster: s.postmasterPid })) };
}

export interface StoredRows {
  /** SELECT count(*) of the table the deliveries go to. */
  countSql: string;
  /** The same, restricted to the keys in $1 (a text[]). */
  countKeysSql: string;
}

export const PATIRO_ROWS: StoredRows = {
  countSql: 'SELECT count(*) AS n FROM patiro_events',
  countKeysSql: 'SELECT count(*) AS n FROM patiro_events WHERE event_id = ANY($1::text[])',
};

export const PHYSITRACK_ROWS: StoredRows = {
  countSql: 'SELECT count(*) AS n FROM physitrack_deliveries',
  countKeysSql: 'SELECT count(*) AS n FROM physitrack_deliveries WHERE patient_id = ANY($1::text[])',
};

/** A webhook phase: the load, then the rows it left, compared with the 2xx answers one by one. */
export async function measureWebhook(service: Child, pool: RequestPool, db: pg.Pool, rows: StoredRows, s: PhaseSettings): Promise<WebhookResult> {
  let rowsBefore = 0;
  // The warm-up's deliveries are stored too: count from after it.
  const run = await warmAndRun(service, pool, s, async () => {
    rowsBefore = await countRows(db, rows.countSql);
  });
  const stored = (await countRows(db, rows.countSql)) - rowsBefore;
  const ackedFound = await countRows(db, rows.countKeysSql, [run.load.ackedKeys]);
  return { load: run.load, stored, ackedFound, cpu: run.cpu };
}

export async function runDbLimit(url: string, db: pg.Pool, how: 'auto' | 'pgbench' | 'node', workDir: string, s: PhaseSettings): Promise<DbLimitResult & { stored: number; cpu: CpuUse }> {
  const pgbench = how === 'node' ? undefined : pgbenchPath();
  if (how === 'pgbench' && pgbench === undefined) throw new Error('--db-limit pgbench: pgbench is not installed');
  const marker = pgbench ? 'pgb-%' : 'node-%';
  const countSql = `SELECT count(*) AS n FROM patiro_events WHERE event_id LIKE '${marker}'`;
  const rowsBefore = await countRows(db, countSql);
  // The target column is pgbench's own CPU (a child of this process, counted once it exits).
  const before = cpuSnapshot({ postmaster: s.postmasterPid });
  const result = pgbench
    ? await runPgbench(pgbench, url, s.connections, s.durationS, workDir, s.signal)
    : await runNodeLoop(url, s.connections, s.durationS, s.signal);
  const cpu = cpuBetween(before, cpuSnapshot({ postmaster: s.postmasterPid }));
  return { ...result, stored: (await countRows(db, countSql)) - rowsBefore, cpu };
}
