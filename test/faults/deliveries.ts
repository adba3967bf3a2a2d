import type pg from 'pg';

export interface DeliveryRow {
  id: string;
  file_url: string;
  download_status: string;
  attempts: number;
  last_error: string | null;
  locked_until: Date | null;
  downloaded_at: Date | null;
  sha256: string | null;
}

export async function deliveryRows(pool: pg.Pool): Promise<DeliveryRow[]> {
  const { rows } = await pool.query<DeliveryRow>(
    `SELECT d.id::text, d.file_url, d.download_status, d.attempts, d.last_error, d.locked_until, d.downloaded_at, doc.sha256
     FROM physitrack_deliveries d LEFT JOIN documents doc ON doc.id = d.document_id ORDER BY d.id`,
  );
  return rows;
}

/**
 * Waits until `done(rows)` holds; on timeout the error lists how many rows are in each state and
 * the distinct last errors, so a failure says why the downloads did not finish.
 */
export async function waitForDeliveries(pool: pg.Pool, done: (rows: DeliveryRow[]) => boolean, timeoutMs: number): Promise<DeliveryRow[]> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    const rows = await deliveryRows(pool);
    if (done(rows)) return rows;
    if (Date.now() > until) {
      const states: Record<string, number> = {};
      for (const row of rows) states[row.download_status] = (states[row.download_status] ?? 0) + 1;
      const errors = [...new Set(rows.map((r) => r.last_error).filter((e) => e !== null))];
      const attempts = Math.max(0, ...rows.map((r) => r.attempts));
      throw new Error(`deliveries not finished within ${timeoutMs} ms: ${JSON.stringify(states)}, max attempts ${attempts}, last errors ${JSON.stringify(errors)}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

export const allDone = (count: number) => (rows: DeliveryRow[]) => rows.length === count && rows.every((r) => r.download_status === 'done');
