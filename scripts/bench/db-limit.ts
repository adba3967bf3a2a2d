import { execFile } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdtemp, readdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import pg from 'pg';
import { patientData } from './deliveries.js';
import { percentiles, type Latency } from './load.js';

/**
 * What src/webhooks/patiro-store.ts writes for one delivery, as one statement and so one
 * transaction: the event upsert, the patient projection and the audit row. Kept as a copy on
 * purpose: this phase measures the database, whatever the service's write path becomes.
 */
const DELIVERY_SQL = `
WITH event AS (
  INSERT INTO patiro_events AS e (source_id, event_id, event_type, occurred_at, occurred_at_raw, data, signed_at)
  VALUES ('default', $1, $2, $3::timestamptz, $4, $5::jsonb, $6::timestamptz)
  ON CONFLICT (source_id, event_id) DO UPDATE SET
    event_type = CASE WHEN EXCLUDED.signed_at > e.signed_at THEN EXCLUDED.event_type ELSE e.event_type END,
    occurred_at = CASE WHEN EXCLUDED.signed_at > e.signed_at THEN EXCLUDED.occurred_at ELSE e.occurred_at END,
    occurred_at_raw = CASE WHEN EXCLUDED.signed_at > e.signed_at THEN EXCLUDED.occurred_at_raw ELSE e.occurred_at_raw END,
    data = CASE WHEN EXCLUDED.signed_at > e.signed_at THEN EXCLUDED.data ELSE e.data END,
    signed_at = GREATEST(e.signed_at, EXCLUDED.signed_at),
    last_received_at = now(),
    delivery_count = e.delivery_count + 1
  RETURNING (xmax = 0) AS inserted
), patient AS (
  INSERT INTO patiro_patients AS p (source_id, patient_id, data, signed_at, revealed_at, updated_at, last_event_id)
  SELECT 'default', $7::text, $5::jsonb, $6::timestamptz,
         CASE WHEN $2 = 'PatientRevealed' THEN COALESCE($3::timestamptz, $6::timestamptz) END, now(), $1
  WHERE $7::text IS NOT NULL
  ON CONFLICT (source_id, patient_id) DO UPDATE SET
    data = CASE WHEN EXCLUDED.signed_at > p.signed_at THEN EXCLUDED.data ELSE p.data END,
    last_event_id = CASE WHEN EXCLUDED.signed_at > p.signed_at THEN EXCLUDED.last_event_id ELSE p.last_event_id END,
    updated_at = CASE WHEN EXCLUDED.signed_at > p.signed_at THEN now() ELSE p.updated_at END,
    signed_at = GREATEST(p.signed_at, EXCLUDED.signed_at),
    revealed_at = LEAST(p.revealed_at, EXCLUDED.revealed_at)
), audit AS (
  INSERT INTO webhook_audit (source_id, vendor, event_id, status_code, body_sha256, source_address)
  VALUES ('default', 'patiro', $1, 204, $8, $9)
)
SELECT inserted FROM event`;

const SAMPLE_SHA256 = 'c3ab8ff13720e8ad9047dd39466b3c8974e592c2fa383d4a3960714caef0c4f2';

export interface DbLimitResult {
  method: string;
  transactions: number;
  failed: number;
  elapsedS: number;
  latency: Latency;
}

export function pgbenchPath(): string | undefined {
  const candidates = (process.env.PATH ?? '').split(':').map((dir) => path.join(dir, 'pgbench'));
  for (const version of ['18', '17', '16', '15', '14', '13']) candidates.push(`/usr/lib/postgresql/${version}/bin/pgbench`);
  return candidates.find((file) => existsSync(file));
}

/** One transaction per delivery, `connections` clients, for `durationS`: pgbench with a custom script. */
export async function runPgbench(binary: string, url: string, connections: number, durationS: number, workDir: string, signal: AbortSignal): Promise<DbLimitResult> {
  // Every delivery is new: an id per transaction from the client id and a 62-bit random number.
  const id = `('pgb-' || :client_id || '-' || :k)`;
  const values: Record<string, string> = {
    $1: id,
    $2: `'PatientUpdated'`,
    // pgbench reads ":name" inside SQL as a variable, so the timestamps are computed, not written out.
    $3: 'now()',
    $4: `to_char(now(), 'YYYY-MM-DD"T"HH24' || chr(58) || 'MI' || chr(58) || 'SS.US0')`,
    $5: `'${JSON.stringify(patientData('pgbench-patient-00000000-0000-0000-0000-000000000000'))}'`,
    $6: 'now()',
    $7: `('p-' || ${id})`,
    $8: `'${SAMPLE_SHA256}'`,
    $9: `'127.0.0.1'`,
  };
  const script = `\\set k random(1, 4611686018427387903)\n${DELIVERY_SQL.replace(/\$\d/g, (p) => values[p]!)};\n`;
  const scriptPath = path.join(workDir, 'pgbench-delivery.sql');
  await writeFile(scriptPath, script);
  // A directory per run: the latencies are read back from every file in it.
  const logDir = await mkdtemp(path.join(workDir, 'pgbench-log-'));
  const threads = Math.min(2, connections);
  const args = ['-n', '-M', 'extended', '-c', String(connections), '-j', String(threads), '-T', String(Math.max(1, Math.round(durationS))),
    '-f', scriptPath, '-l', `--log-prefix=${path.join(logDir, 'tx')}`, url];
  const stdout = await new Promise<string>((resolve, reject) => {
    execFile(binary, args, { signal, timeout: (durationS + 60) * 1000, maxBuffer: 1 << 20 }, (err, out, errOut) =>
      err ? reject(new Error(`pgbench failed: ${errOut || err.message}`)) : resolve(out),
    );
  });
  const number = (re: RegExp) => Number(re.exec(stdout)?.[1] ?? Number.NaN);
  const transactions = number(/number of transactions actually processed: (\d+)/);
  const tps = number(/tps = ([\d.]+) \(without initial connection time\)/);
  const latencies: number[] = [];
  for (const file of await readdir(logDir)) {
    // client_id transaction_no latency_us script_no epoch_s epoch_us
    for (const line of (await readFile(path.join(logDir, file), 'utf8')).split('\n')) {
      const us = Number(line.split(' ')[2]);
      if (line !== '' && Number.isFinite(us)) latencies.push(us / 1000);
    }
  }
  const versionText = await new Promise<string>((resolve) => execFile(binary, ['--version'], (_err, out) => resolve(out)));
  const version = /pgbench \(PostgreSQL\) ([\d.]+)/.exec(versionText)?.[1] ?? '';
  return {
    method: `pgbench ${version} -M extended`,
    transactions,
    failed: number(/number of failed transactions: (\d+)/) || 0,
    elapsedS: transactions / tps,
    latency: percentiles(Float64Array.from(latencies)),
  };
}

/** The same, without pgbench: `connections` node-postgres clients, each INSERTing (autocommit) in a loop. */
export async function runNodeLoop(url: string, connections: number, durationS: number, signal: AbortSignal): Promise<DbLimitResult> {
  const clients = Array.from({ length: connections }, () => new pg.Client({ connectionString: url }));
  await Promise.all(clients.map((c) => c.connect()));
  const data = JSON.stringify(patientData('node-patient-00000000-0000-0000-0000-000000000000'));
  const latencies: number[] = [];
  let failed = 0;
  const start = performance.now();
  const end = start + durationS * 1000;
  try {
    await Promise.all(
      clients.map(async (client) => {
        while (performance.now() < end && !signal.aborted) {
          const eventId = `node-${randomUUID()}`;
          const t0 = performance.now();
          const params = [eventId, 'PatientUpdated', '2026-03-27T10:04:03.424772Z', '2026-03-27T10:04:03.4247725', data, new Date().toISOString(), `p-${eventId}`, SAMPLE_SHA256, '127.0.0.1'];
          await client.query(DELIVERY_SQL, params).then(() => latencies.push(performance.now() - t0), () => void (failed += 1));
        }
      }),
    );
  } finally {
    await Promise.all(clients.map((c) => c.end().catch(() => undefined)));
  }
  if (signal.aborted) throw signal.reason as Error;
  return { method: 'node-postgres loop', transactions: latencies.length, failed, elapsedS: (performance.now() - start) / 1000, latency: percentiles(Float64Array.from(latencies)) };
}
