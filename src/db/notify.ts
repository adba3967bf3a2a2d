/** The channel a PMS LISTENs on for committed writes. Payloads carry ids and statuses, never patient data. */
export const PMS_CHANNEL = 'webhook_receiver';

/**
 * One pg_notify call with a JSON object payload, for use inside the statement that writes the row:
 * PostgreSQL delivers it only once that statement's transaction commits. `fields` maps each JSON key
 * to an SQL expression; every payload names its vendor, table, row id and source.
 */
export function notifySql(fields: { vendor: string; table: string; id: string; source: string } & Record<string, string>): string {
  const pairs = Object.entries(fields).map(([key, expression]) => `'${key}', ${expression}`);
  return `pg_notify('${PMS_CHANNEL}', json_build_object(${pairs.join(', ')})::text)`;
}
