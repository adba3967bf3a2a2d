import { requeueByStatus, requeueDelivery, type UrlCheck } from '../../downloads/queue.js';
import { checkFileUrl } from '../../downloads/url-policy.js';
import { command, describeUrl, EXIT, formatDuration, maskToken, parseId, parseLimit, parseSince, plural, printFields, printJson, printTable, summarizeUrl, UsageError } from '../output.js';

const STATUSES = ['pending', 'downloading', 'done', 'failed', 'expired'];
const RETRYABLE = ['failed', 'expired'];
const PICKED_UP = "The running service's worker picks them up within its poll interval (about 1 s).";

interface DeliveryRow {
  id: string;
  source_id: string;
  received_at: Date;
  practitioner_token: string;
  patient_id: string;
  file_url: string;
  program_name: string;
  program_date: string | null;
  program_created_at: Date | null;
  updated: boolean;
  download_status: string;
  attempts: number;
  next_attempt_at: Date;
  deadline_at: Date;
  last_error: string | null;
  last_http_status: number | null;
  downloaded_at: Date | null;
  finished_at: Date | null;
  document_id: string | null;
  locked_by: string | null;
  locked_until: Date | null;
  sha256: string | null;
  size_bytes: number | null;
  now: Date;
}

const SELECT = `SELECT d.id::text AS id, d.source_id, d.received_at, d.practitioner_token, d.patient_id, d.file_url, d.program_name,
  d.program_date::text AS program_date, d.program_created_at, d.updated, d.download_status, d.attempts, d.next_attempt_at,
  d.deadline_at, d.last_error, d.last_http_status, d.downloaded_at, d.finished_at, d.document_id::text AS document_id, d.locked_by,
  d.locked_until, doc.sha256, doc.size_bytes::float8 AS size_bytes, now() AS now
FROM physitrack_deliveries d LEFT JOIN documents doc ON doc.id = d.document_id`;

/** What may be shown: the file_url only as its host, the token masked. */
function view(row: DeliveryRow) {
  const url = summarizeUrl(row.file_url);
  return {
    id: row.id,
    sourceId: row.source_id,
    receivedAt: row.received_at,
    patientId: row.patient_id,
    practitionerToken: maskToken(row.practitioner_token),
    fileUrlHost: url.host,
    fileNameLength: url.lastSegmentLength,
    programName: row.program_name,
    programDate: row.program_date,
    programCreatedAt: row.program_created_at,
    updated: row.updated,
    status: row.download_status,
    attempts: row.attempts,
    nextAttemptAt: row.next_attempt_at,
    deadlineAt: row.deadline_at,
    timeLeftMs: row.deadline_at.getTime() - row.now.getTime(),
    lastError: row.last_error,
    lastHttpStatus: row.last_http_status,
    downloadedAt: row.downloaded_at,
    finishedAt: row.finished_at,
    documentId: row.document_id,
    documentSha256: row.sha256,
    documentSizeBytes: row.size_bytes,
    lockedBy: row.locked_by,
    lockedUntil: row.locked_until,
  };
}

function parseStatus(value: unknown, allowed: string[]): string | undefined {
  if (value === undefined) return undefined;
  if (typeof value !== 'string' || !allowed.includes(value)) throw new UsageError(`--status must be one of ${allowed.join(', ')}`);
  return value;
}

function noPositionals(positionals: string[]): void {
  if (positionals.length > 0) throw new UsageError(`unexpected argument "${positionals[0]}"`);
}

interface ListArgs {
  sourceId?: string;
  status?: string;
  patient?: string;
  sinceMs?: number;
  limit: number;
}

const list = command<ListArgs>({
  path: ['deliveries', 'list'],
  synopsis: '[--source ID] [--status S] [--patient ID] [--since 2h] [--limit N]',
  summary: 'Recent Physitrack deliveries, newest first (file_url shown as its host only).',
  details: `  --source ID    only this source's deliveries
  --status S     pending, downloading, done, failed or expired
  --patient ID   only this patient_id
  --since 2h     only deliveries received within this time (d, h or m)
  --limit N      at most N rows (default 50)
Exits 1 when nothing matches.`,
  options: { source: { type: 'string' }, status: { type: 'string' }, patient: { type: 'string' }, since: { type: 'string' }, limit: { type: 'string' } },
  parse(values, positionals) {
    noPositionals(positionals);
    return {
      sourceId: typeof values.source === 'string' ? values.source : undefined,
      status: parseStatus(values.status, STATUSES),
      patient: typeof values.patient === 'string' ? values.patient : undefined,
      sinceMs: parseSince(values.since),
      limit: parseLimit(values.limit as string | undefined),
    };
  },
  async run(ctx, args) {
    const where: string[] = [];
    const params: unknown[] = [];
    const add = (sql: string, value: unknown) => where.push(sql.replace('?', `$${params.push(value)}`));
    if (args.sourceId !== undefined) add('d.source_id = ?', args.sourceId);
    if (args.status) add('d.download_status = ?', args.status);
    if (args.patient !== undefined) add('d.patient_id = ?', args.patient);
    if (args.sinceMs !== undefined) add("d.received_at >= now() - ?::bigint * interval '1 millisecond'", String(args.sinceMs));
    const sql = `${SELECT} ${where.length ? `WHERE ${where.join(' AND ')}` : ''} ORDER BY d.received_at DESC, d.id DESC LIMIT ${args.limit}`;
    const rows = (await ctx.db.$queryRawUnsafe<DeliveryRow[]>(sql, ...params)).map(view);
    if (ctx.json) printJson(ctx.io, rows);
    else if (rows.length === 0) ctx.io.stderr.write('No deliveries match.\n');
    else
      printTable(ctx.io, rows, [
        { header: 'ID', value: (r) => r.id },
        { header: 'SOURCE', value: (r) => r.sourceId, max: 20 },
        { header: 'RECEIVED', value: (r) => r.receivedAt },
        { header: 'PATIENT', value: (r) => r.patientId, max: 20 },
        { header: 'STATUS', value: (r) => r.status },
        { header: 'ATTEMPTS', value: (r) => r.attempts },
        { header: 'HOST', value: (r) => r.fileUrlHost, max: 30 },
        { header: 'LAST ERROR', value: (r) => r.lastError, max: 60 },
      ]);
    return rows.length > 0 ? EXIT.ok : EXIT.notFound;
  },
});

const show = command<bigint>({
  path: ['deliveries', 'show'],
  synopsis: 'ID',
  summary: 'One delivery: status, attempts, last error, deadline, document (never the file_url or token).',
  details: 'Exits 1 when there is no delivery with this id.',
  options: {},
  parse: (_values, positionals) => parseId(positionals[0], 'the delivery ID'),
  async run(ctx, id) {
    const [row] = await ctx.db.$queryRawUnsafe<DeliveryRow[]>(`${SELECT} WHERE d.id = $1`, id);
    if (!row) {
      ctx.io.stderr.write(`No delivery ${id}.\n`);
      return EXIT.notFound;
    }
    const v = view(row);
    if (ctx.json) {
      printJson(ctx.io, v);
      return EXIT.ok;
    }
    const timeLeft = v.timeLeftMs >= 0 ? `${formatDuration(v.timeLeftMs)} left` : `passed ${formatDuration(-v.timeLeftMs)} ago`;
    printFields(ctx.io, [
      ['Delivery', v.id],
      ['Source', v.sourceId],
      ['Received', v.receivedAt],
      ['Patient', v.patientId],
      ['Practitioner token', v.practitionerToken],
      ['File URL', describeUrl(row.file_url)],
      ['Program', `${v.programName} (date ${v.programDate ?? '–'}, created ${v.programCreatedAt?.toISOString() ?? '–'}${v.updated ? ', an update' : ''})`],
      ['Status', v.status],
      ['Attempts', v.attempts],
      ['Next attempt', ['pending', 'downloading'].includes(v.status) ? v.nextAttemptAt : null],
      ['Deadline', `${v.deadlineAt.toISOString()} (${timeLeft})`],
      ['Last error', v.lastError],
      ['Last HTTP status', v.lastHttpStatus],
      ['Locked by', v.lockedBy ? `${v.lockedBy} until ${v.lockedUntil?.toISOString()}` : null],
      ['Downloaded', v.downloadedAt],
      ['Finished', v.finishedAt],
      ['Document', v.documentId ? `${v.documentId} (sha256 ${v.documentSha256}, ${v.documentSizeBytes} bytes)` : null],
    ]);
    return EXIT.ok;
  },
});

const retry = command<{ id?: bigint; status?: string }>({
  path: ['deliveries', 'retry'],
  synopsis: 'ID | --status failed|expired',
  summary: 'Queue failed or expired deliveries again, if their deadline has not passed.',
  details: `Puts the delivery (or every delivery with --status) back to pending, due now. Only failed and
expired rows whose deadline_at is still in the future and whose file URL the download policy (of
this configuration) allows; pending, downloading and done rows are never touched. ${PICKED_UP}
Exits 1 when nothing was queued.`,
  options: { status: { type: 'string' } },
  parse(values, positionals) {
    const status = parseStatus(values.status, RETRYABLE);
    if ((status === undefined) === (positionals[0] === undefined)) throw new UsageError('give either a delivery ID or --status');
    if (status) return { status };
    if (positionals.length > 1) throw new UsageError(`unexpected argument "${positionals[1]}"`);
    return { id: parseId(positionals[0], 'the delivery ID') };
  },
  async run(ctx, { id, status }) {
    // The policy of this configuration (PHYSITRACK_FILE_URL_HOSTS, DOWNLOAD_ALLOW_PRIVATE_ADDRESSES), as the service applies it.
    const policy = { allowedHosts: ctx.config.physitrack.fileUrlHosts, allowPrivateAddresses: ctx.config.download.allowPrivateAddresses, allowHttpLocalhost: ctx.config.download.allowHttpLocalhost };
    const refusal: UrlCheck = (fileUrl) => {
      const check = checkFileUrl(fileUrl, policy);
      return check.ok ? undefined : check.reason;
    };
    if (id !== undefined) {
      const outcome = await requeueDelivery(ctx.db, id, refusal);
      const reason = outcome.requeued ? undefined : outcome.reason;
      if (ctx.json) printJson(ctx.io, { retried: outcome.requeued ? [String(id)] : [], skipped: reason ? { id: String(id), reason } : null });
      else if (reason) ctx.io.stderr.write(`Delivery ${id} was not queued: ${reason}.\n`);
      else ctx.io.stdout.write(`Delivery ${id} is pending again. ${PICKED_UP}\n`);
      return outcome.requeued ? EXIT.ok : EXIT.notFound;
    }
    const { ids, skippedPastDeadline, skippedRefused } = await requeueByStatus(ctx.db, status as 'failed' | 'expired', refusal);
    if (ctx.json) printJson(ctx.io, { retried: ids, skippedPastDeadline, skippedRefused });
    else {
      const skipped =
        (skippedPastDeadline ? ` Skipped ${plural(skippedPastDeadline, 'delivery', 'deliveries')} past the deadline.` : '') +
        (skippedRefused ? ` Left ${plural(skippedRefused, 'delivery', 'deliveries')} alone whose file URL the download policy refuses.` : '');
      ctx.io.stdout.write(`Queued ${plural(ids.length, `${status} delivery`, `${status} deliveries`)} again.${skipped}${ids.length ? ` ${PICKED_UP}` : ''}\n`);
    }
    return ids.length > 0 ? EXIT.ok : EXIT.notFound;
  },
});

export const deliveryCommands = [list, show, retry];
