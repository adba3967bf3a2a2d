import { findProgram, listPrograms, type ProgramRow } from '../../downloads/programs.js';
import { command, EXIT, maskToken, parseId, parseLimit, printFields, printJson, printTable, UsageError } from '../output.js';

interface VersionRow {
  deliveryId: string;
  receivedAt: Date;
  noticeCount: number;
  updated: boolean;
  programName: string;
  downloadStatus: string;
  documentId: string | null;
  documentSha256: string | null;
}

/** Its deliveries, newest first: never their file_url, which grants access to the PDF. */
const VERSIONS = `SELECT d.id::text AS "deliveryId", d.received_at AS "receivedAt", d.notice_count AS "noticeCount", d.updated,
  d.program_name AS "programName", d.download_status AS "downloadStatus", d.document_id::text AS "documentId", doc.sha256 AS "documentSha256"
FROM physitrack_deliveries d LEFT JOIN documents doc ON doc.id = d.document_id
WHERE d.program_id = $1 ORDER BY d.id DESC`;

const view = (p: ProgramRow) => ({ ...p, practitionerToken: maskToken(p.practitionerToken) });

interface ListArgs {
  patientId?: string;
  sourceId?: string;
  limit: number;
}

const list = command<ListArgs>({
  path: ['programs', 'list'],
  synopsis: '[--patient ID] [--source ID] [--limit N]',
  summary: 'Physitrack programs, most recently changed first, with their current PDF.',
  details: `  --patient ID   only this patient_id
  --source ID    only this source's programs
  --limit N      at most N rows (default 50)
Exits 1 when nothing matches.`,
  options: { patient: { type: 'string' }, source: { type: 'string' }, limit: { type: 'string' } },
  parse(values, positionals) {
    if (positionals.length > 0) throw new UsageError(`unexpected argument "${positionals[0]}"`);
    return {
      ...(typeof values.patient === 'string' ? { patientId: values.patient } : {}),
      ...(typeof values.source === 'string' ? { sourceId: values.source } : {}),
      limit: parseLimit(values.limit as string | undefined),
    };
  },
  async run(ctx, args) {
    const rows = (await listPrograms(ctx.db, args)).map(view);
    if (ctx.json) printJson(ctx.io, rows);
    else if (rows.length === 0) ctx.io.stderr.write('No programs match.\n');
    else
      printTable(ctx.io, rows, [
        { header: 'ID', value: (r) => r.id },
        { header: 'SOURCE', value: (r) => r.sourceId, max: 20 },
        { header: 'PATIENT', value: (r) => r.patientId, max: 20 },
        { header: 'NAME', value: (r) => r.programName, max: 30 },
        { header: 'CREATED', value: (r) => r.programCreatedAt ?? r.programDate },
        { header: 'VERSIONS', value: (r) => r.versions },
        { header: 'CURRENT PDF', value: (r) => (r.currentDocumentSha256 ? `${r.currentDocumentSha256.slice(0, 12)}…` : null) },
        { header: 'UPDATED', value: (r) => r.updatedAt },
      ]);
    return rows.length > 0 ? EXIT.ok : EXIT.notFound;
  },
});

const show = command<bigint>({
  path: ['programs', 'show'],
  synopsis: 'ID',
  summary: 'One program and its versions (delivery, received, status, document sha256; never a file_url).',
  details: 'Exits 1 when there is no program with this id.',
  options: {},
  parse: (_values, positionals) => {
    if (positionals.length > 1) throw new UsageError(`unexpected argument "${positionals[1]}"`);
    return parseId(positionals[0], 'the program ID');
  },
  async run(ctx, id) {
    const program = await findProgram(ctx.db, id);
    if (!program) {
      ctx.io.stderr.write(`No program ${id}.\n`);
      return EXIT.notFound;
    }
    const versions = await ctx.db.$queryRawUnsafe<VersionRow[]>(VERSIONS, id);
    const v = view(program);
    if (ctx.json) {
      printJson(ctx.io, { ...v, deliveries: versions });
      return EXIT.ok;
    }
    printFields(ctx.io, [
      ['Program', v.id],
      ['Source', v.sourceId],
      ['Patient', v.patientId],
      ['Name', v.programName],
      ['Created', v.programCreatedAt ?? `${v.programDate ?? 'unknown date'} (date_iso was unreadable: keyed by date and name)`],
      ['Practitioner token', v.practitionerToken],
      ['Versions', v.versions],
      ['Current PDF', v.currentDocumentId ? `document ${v.currentDocumentId} (sha256 ${v.currentDocumentSha256}), of delivery ${v.currentDeliveryId}` : 'none downloaded yet'],
      ['First notice', v.firstNoticeAt],
      ['Updated', v.updatedAt],
    ]);
    ctx.io.stdout.write('\n');
    printTable(ctx.io, versions, [
      { header: 'DELIVERY', value: (r) => r.deliveryId },
      { header: 'RECEIVED', value: (r) => r.receivedAt },
      { header: 'NOTICES', value: (r) => r.noticeCount },
      { header: 'UPDATE', value: (r) => (r.updated ? 'yes' : 'no') },
      { header: 'STATUS', value: (r) => r.downloadStatus },
      { header: 'DOCUMENT SHA256', value: (r) => r.documentSha256, max: 64 },
    ]);
    return EXIT.ok;
  },
});

export const programCommands = [list, show];
