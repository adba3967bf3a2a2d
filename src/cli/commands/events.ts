import { command, EXIT, parseLimit, parseSince, printFields, printJson, printTable, UsageError } from '../output.js';

interface EventSummary {
  sourceId: string;
  eventId: string;
  eventType: string;
  occurredAt: Date | null;
  firstReceivedAt: Date;
  lastReceivedAt: Date;
  deliveryCount: number;
}

/** Never `data`: a list is for finding an event; its patient data is shown only by `events show`. */
const SUMMARY = `SELECT source_id AS "sourceId", event_id AS "eventId", event_type AS "eventType", occurred_at AS "occurredAt",
  first_received_at AS "firstReceivedAt", last_received_at AS "lastReceivedAt", delivery_count AS "deliveryCount"
FROM patiro_events`;

interface ListArgs {
  sourceId?: string;
  type?: string;
  sinceMs?: number;
  limit: number;
}

const list = command<ListArgs>({
  path: ['events', 'list'],
  synopsis: '[--source ID] [--type T] [--since 2h] [--limit N]',
  summary: 'Recent Patiro events, most recently received first (without their data).',
  details: `  --source ID  only this source's events (default: every source's)
  --type T     only this event_type (PatientRevealed, PatientUpdated, …)
  --since 2h   only events received within this time (d, h or m)
  --limit N    at most N rows (default 50)
Exits 1 when nothing matches. Use "events show EVENT_ID" for an event's data.`,
  options: { source: { type: 'string' }, type: { type: 'string' }, since: { type: 'string' }, limit: { type: 'string' } },
  parse(values, positionals) {
    if (positionals.length > 0) throw new UsageError(`unexpected argument "${positionals[0]}"`);
    return {
      sourceId: values.source as string | undefined,
      type: values.type as string | undefined,
      sinceMs: parseSince(values.since),
      limit: parseLimit(values.limit as string | undefined),
    };
  },
  async run(ctx, args) {
    const where: string[] = [];
    const params: unknown[] = [];
    if (args.sourceId !== undefined) where.push(`source_id = $${params.push(args.sourceId)}`);
    if (args.type !== undefined) where.push(`event_type = $${params.push(args.type)}`);
    if (args.sinceMs !== undefined) {
      where.push(`last_received_at >= now() - $${params.push(String(args.sinceMs))}::bigint * interval '1 millisecond'`);
    }
    const sql = `${SUMMARY} ${where.length ? `WHERE ${where.join(' AND ')}` : ''} ORDER BY last_received_at DESC, event_id LIMIT ${args.limit}`;
    const rows = await ctx.db.$queryRawUnsafe<EventSummary[]>(sql, ...params);
    if (ctx.json) printJson(ctx.io, rows);
    else if (rows.length === 0) ctx.io.stderr.write('No events match.\n');
    else
      printTable(ctx.io, rows, [
        { header: 'SOURCE', value: (r) => r.sourceId, max: 20 },
        { header: 'EVENT ID', value: (r) => r.eventId, max: 40 },
        { header: 'TYPE', value: (r) => r.eventType, max: 30 },
        { header: 'OCCURRED', value: (r) => r.occurredAt },
        { header: 'LAST RECEIVED', value: (r) => r.lastReceivedAt },
        { header: 'DELIVERIES', value: (r) => r.deliveryCount },
      ]);
    return rows.length > 0 ? EXIT.ok : EXIT.notFound;
  },
});

interface EventDetail extends EventSummary {
  occurredAtRaw: string | null;
  signedAt: Date;
  data: unknown;
}

const show = command<{ eventId: string; sourceId?: string }>({
  path: ['events', 'show'],
  synopsis: 'EVENT_ID [--source ID]',
  summary: "One Patiro event, with its data (patient data: shown only on this explicit request).",
  details: `  --source ID   only this source's event
Without --source, an eventId that two sources both received lists each (--json: an array).
Exits 1 when there is no event with this id.`,
  options: { source: { type: 'string' } },
  parse(values, positionals) {
    if (!positionals[0] || positionals.length > 1) throw new UsageError('give exactly one EVENT_ID');
    return { eventId: positionals[0], ...(typeof values.source === 'string' ? { sourceId: values.source } : {}) };
  },
  async run(ctx, { eventId, sourceId }) {
    const rows = await ctx.db.$queryRawUnsafe<EventDetail[]>(
      `SELECT source_id AS "sourceId", event_id AS "eventId", event_type AS "eventType", occurred_at AS "occurredAt", occurred_at_raw AS "occurredAtRaw",
         signed_at AS "signedAt", first_received_at AS "firstReceivedAt", last_received_at AS "lastReceivedAt",
         delivery_count AS "deliveryCount", data
       FROM patiro_events WHERE event_id = $1 AND ($2::text IS NULL OR source_id = $2) ORDER BY source_id`,
      eventId,
      sourceId ?? null,
    );
    if (rows.length === 0) {
      ctx.io.stderr.write(`No event ${JSON.stringify(eventId)}.\n`);
      return EXIT.notFound;
    }
    if (ctx.json) printJson(ctx.io, rows.length === 1 ? rows[0] : rows);
    else rows.forEach((row, i) => {
      if (i > 0) ctx.io.stdout.write('\n');
      printFields(ctx.io, [
        ['Event', row.eventId],
        ['Source', row.sourceId],
        ['Type', row.eventType],
        ['Occurred', row.occurredAt ? `${row.occurredAt.toISOString()} (sent as ${row.occurredAtRaw})` : `unreadable (sent as ${row.occurredAtRaw ?? '–'})`],
        ['Signed', row.signedAt],
        ['First received', row.firstReceivedAt],
        ['Last received', row.lastReceivedAt],
        ['Deliveries', row.deliveryCount],
        ['Data', JSON.stringify(row.data, null, 2)],
      ]);
    });
    return EXIT.ok;
  },
});

export const eventCommands = [list, show];
