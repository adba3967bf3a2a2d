import { heldBack, type HeldBack } from '../../changes/changes-table.js';
import { poolOf, type Database } from '../../db/client.js';
import { command, EXIT, formatDuration, formatTime, printFields, printJson, printTable, UsageError, type CommandContext } from '../output.js';

const STATUSES = ['pending', 'downloading', 'done', 'failed', 'expired'] as const;

export interface Status {
  now: Date;
  patiro: { events: number; lastReceivedAt: Date | null; byType: Record<string, number> };
  physitrack: {
    deliveries: Record<(typeof STATUSES)[number], number>;
    lastReceivedAt: Date | null;
    oldestPending: { id: string; receivedAt: Date; ageMs: number } | null;
    soonestDeadline: { id: string; deadlineAt: Date; timeLeftMs: number } | null;
  };
  documents: { count: number; totalBytes: number };
  /** The change feed: committed changes held back by an older transaction still open. */
  changeFeed: { heldBack: HeldBack };
}

async function readStatus(db: Database): Promise<Status> {
  const [patiro] = await db.$queryRawUnsafe<{ now: Date; events: number; last: Date | null }[]>(
    'SELECT now() AS now, count(*)::int AS events, max(last_received_at) AS last FROM patiro_events',
  );
  const types = await db.$queryRawUnsafe<{ type: string; n: number }[]>(
    'SELECT event_type AS type, count(*)::int AS n FROM patiro_events GROUP BY event_type ORDER BY event_type',
  );
  const byStatus = await db.$queryRawUnsafe<{ status: string; n: number; last: Date | null }[]>(
    'SELECT download_status AS status, count(*)::int AS n, max(received_at) AS last FROM physitrack_deliveries GROUP BY download_status',
  );
  const [oldest] = await db.$queryRawUnsafe<{ id: string; received_at: Date; age_ms: number }[]>(
    `SELECT id::text AS id, received_at, (extract(epoch FROM now() - received_at) * 1000)::float8 AS age_ms
     FROM physitrack_deliveries WHERE download_status = 'pending' ORDER BY received_at LIMIT 1`,
  );
  const [soonest] = await db.$queryRawUnsafe<{ id: string; deadline_at: Date; left_ms: number }[]>(
    `SELECT id::text AS id, deadline_at, (extract(epoch FROM deadline_at - now()) * 1000)::float8 AS left_ms
     FROM physitrack_deliveries WHERE download_status IN ('pending', 'downloading') ORDER BY deadline_at LIMIT 1`,
  );
  const [documents] = await db.$queryRawUnsafe<{ n: number; bytes: number }[]>(
    'SELECT count(*)::int AS n, coalesce(sum(size_bytes), 0)::float8 AS bytes FROM documents',
  );
  const deliveries = Object.fromEntries(STATUSES.map((s) => [s, 0])) as Status['physitrack']['deliveries'];
  let lastDelivery: Date | null = null;
  for (const row of byStatus) {
    deliveries[row.status as keyof typeof deliveries] = row.n;
    if (row.last && (!lastDelivery || row.last > lastDelivery)) lastDelivery = row.last;
  }
  return {
    now: patiro!.now,
    patiro: { events: patiro!.events, lastReceivedAt: patiro!.last, byType: Object.fromEntries(types.map((t) => [t.type, t.n])) },
    physitrack: {
      deliveries,
      lastReceivedAt: lastDelivery,
      oldestPending: oldest ? { id: oldest.id, receivedAt: oldest.received_at, ageMs: Math.round(oldest.age_ms) } : null,
      soonestDeadline: soonest ? { id: soonest.id, deadlineAt: soonest.deadline_at, timeLeftMs: Math.round(soonest.left_ms) } : null,
    },
    documents: { count: documents!.n, totalBytes: documents!.bytes },
    changeFeed: { heldBack: await heldBack(poolOf(db)) },
  };
}

function ago(now: Date, at: Date | null): string {
  return at ? `${formatTime(at)} (${formatDuration(now.getTime() - at.getTime())} ago)` : 'never';
}

function printStatus(ctx: CommandContext, s: Status): void {
  const { oldestPending, soonestDeadline } = s.physitrack;
  printFields(ctx.io, [
    ['Patiro events', s.patiro.events],
    ['  last received', ago(s.now, s.patiro.lastReceivedAt)],
    ...Object.entries(s.patiro.byType).map(([type, n]): [string, number] => [`  ${type}`, n]),
    ['Physitrack deliveries', Object.values(s.physitrack.deliveries).reduce((a, b) => a + b, 0)],
    ['  last received', ago(s.now, s.physitrack.lastReceivedAt)],
    ['  oldest pending', oldestPending ? `#${oldestPending.id}, waiting ${formatDuration(oldestPending.ageMs)}` : 'none'],
    [
      '  soonest deadline',
      soonestDeadline
        ? `#${soonestDeadline.id} at ${formatTime(soonestDeadline.deadlineAt)} (${soonestDeadline.timeLeftMs >= 0 ? `${formatDuration(soonestDeadline.timeLeftMs)} left` : 'passed'})`
        : 'none',
    ],
    ['Documents', `${s.documents.count} (${(s.documents.totalBytes / 1048576).toFixed(1)} MiB)`],
    [
      'Change feed',
      s.changeFeed.heldBack.changes === 0
        ? 'up to date (nothing held back)'
        : `${s.changeFeed.heldBack.changes} changes held back by a transaction still open, the oldest for ${formatDuration(s.changeFeed.heldBack.oldestSeconds * 1000)}`,
    ],
  ]);
  ctx.io.stdout.write('\n');
  printTable(ctx.io, STATUSES.map((status) => ({ status, count: s.physitrack.deliveries[status] })), [
    { header: 'DOWNLOAD STATUS', value: (r) => r.status },
    { header: 'COUNT', value: (r) => r.count },
  ]);
}

export const statusCommands = [
  command<null>({
    path: ['status'],
    synopsis: '',
    summary: 'Counts per vendor and download status, oldest pending download, soonest deadline.',
    details: `Shows the Patiro event count (per type) and the last received time; Physitrack deliveries per
download_status, the oldest pending download and how long it has waited, and the soonest deadline
among pending and downloading rows with the time left; stored documents.`,
    options: {},
    parse(_values, positionals) {
      if (positionals.length > 0) throw new UsageError(`status takes no arguments (got "${positionals[0]}")`);
      return null;
    },
    async run(ctx) {
      const status = await readStatus(ctx.db);
      if (ctx.json) printJson(ctx.io, status);
      else printStatus(ctx, status);
      return EXIT.ok;
    },
  }),
];
