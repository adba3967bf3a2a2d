import { erasePatient } from '../../erasure.js';
import type { Vendor } from '../../metrics.js';
import { DEFAULT_SOURCE_ID } from '../../sources/credentials.js';
import { findSources } from '../../sources/sources-table.js';
import { command, EXIT, printFields, printJson, UsageError } from '../output.js';

interface PatientRow {
  sourceId: string;
  patientId: string;
  data: unknown;
  signedAt: Date;
  revealedAt: Date | null;
  updatedAt: Date;
  lastEventId: string;
}

const show = command<{ patientId: string; sourceId?: string }>({
  path: ['patients', 'show'],
  synopsis: 'ID [--source ID]',
  summary: 'The current Patiro patient (patiro_patients) with its data.',
  details: `ID is the patient_id (Patiro's data.id), which is unique within one source (clinic) only.
  --source ID   only this source's patient
Without --source, a patient_id that exists in several sources lists each (--json: an array).
Exits 1 when there is no such patient.`,
  options: { source: { type: 'string' } },
  parse(values, positionals) {
    if (!positionals[0] || positionals.length > 1) throw new UsageError('give exactly one patient ID');
    return { patientId: positionals[0], ...(typeof values.source === 'string' ? { sourceId: values.source } : {}) };
  },
  async run(ctx, { patientId, sourceId }) {
    const rows = await ctx.db.$queryRawUnsafe<PatientRow[]>(
      `SELECT source_id AS "sourceId", patient_id AS "patientId", data, signed_at AS "signedAt", revealed_at AS "revealedAt",
         updated_at AS "updatedAt", last_event_id AS "lastEventId"
       FROM patiro_patients WHERE patient_id = $1 AND ($2::text IS NULL OR source_id = $2) ORDER BY source_id`,
      patientId,
      sourceId ?? null,
    );
    if (rows.length === 0) {
      ctx.io.stderr.write(`No patient ${JSON.stringify(patientId)}${sourceId ? ` in source ${JSON.stringify(sourceId)}` : ''}.\n`);
      return EXIT.notFound;
    }
    if (ctx.json) printJson(ctx.io, rows.length === 1 ? rows[0] : rows);
    else
      rows.forEach((row, i) => {
        if (i > 0) ctx.io.stdout.write('\n');
        printFields(ctx.io, [
          ['Patient', row.patientId],
          ['Source', row.sourceId],
          ['Revealed', row.revealedAt ?? 'not yet'],
          ['Updated here', row.updatedAt],
          ['Signed', row.signedAt],
          ['Last event', row.lastEventId],
          ['Data', JSON.stringify(row.data, null, 2)],
        ]);
      });
    return EXIT.ok;
  },
});

const erase = command<{ sourceId: string; patientId: string; vendor?: Vendor; dryRun: boolean }>({
  path: ['patients', 'erase'],
  synopsis: '--source ID --patient ID [--vendor patiro|physitrack] [--dry-run]',
  summary: "Erase one patient's data in one source (a GDPR erasure request): one transaction, recorded.",
  details: `Removes every row holding the patient's data in that source: for Patiro the patient row and its
events; for Physitrack its deliveries, programs and the documents no other delivery points at (their
files are removed after the commit). The erasure is recorded in erasures (when, source, counts, a
hash of the patient id: no patient data) and NOTIFY'd. Running it again removes nothing more.
  --source ID    the source (clinic); the default source needs --vendor, which both vendors share
  --patient ID   Patiro's data.id, or Physitrack's patient_id, as sent
  --vendor V     patiro or physitrack (a table source is of one vendor already)
  --dry-run      print what would be removed, remove nothing
The vendor must stop sending this patient too: a delivery stored afterwards (sent again, or written
later from a replica's spool) stores the vendor's data anew. Exits 1 when there is no such source.`,
  options: { source: { type: 'string' }, patient: { type: 'string' }, vendor: { type: 'string' }, 'dry-run': { type: 'boolean' } },
  parse(values, positionals) {
    if (positionals.length > 0) throw new UsageError(`unexpected argument "${positionals[0]}"`);
    if (typeof values.source !== 'string' || values.source === '') throw new UsageError('--source ID is required');
    if (typeof values.patient !== 'string' || values.patient === '') throw new UsageError('--patient ID is required');
    const vendor = values.vendor;
    if (vendor !== undefined && vendor !== 'patiro' && vendor !== 'physitrack') throw new UsageError('--vendor must be patiro or physitrack');
    if (values.source === DEFAULT_SOURCE_ID && vendor === undefined) throw new UsageError('the default source belongs to both vendors: give --vendor patiro or --vendor physitrack');
    return { sourceId: values.source, patientId: values.patient, ...(vendor ? { vendor: vendor as Vendor } : {}), dryRun: values['dry-run'] === true };
  },
  async run(ctx, { sourceId, patientId, vendor: given, dryRun }) {
    const rows = await findSources(ctx.db, sourceId);
    // The default source may have no row yet (a service never started with it): its vendor is given.
    const row = rows.find((r) => given === undefined || r.vendor === given) ?? (sourceId === DEFAULT_SOURCE_ID && given ? { vendor: given } : undefined);
    if (!row) {
      ctx.io.stderr.write(`No ${given ?? ''} source ${JSON.stringify(sourceId)}.\n`.replace('  ', ' '));
      return EXIT.notFound;
    }
    const result = await erasePatient(ctx.db, ctx.config.storage.pdfDir, { vendor: row.vendor, sourceId, patientId, dryRun });
    if (ctx.json) printJson(ctx.io, { sourceId, vendor: row.vendor, ...result });
    else
      printFields(ctx.io, [
        [dryRun ? 'Would remove' : 'Removed', `${row.vendor} patient of source ${sourceId}`],
        ...Object.entries(result.counts).map(([table, n]): [string, number] => [`  ${table}`, n]),
        ['  files', result.files.removed],
        ['Erasure record', result.erasureId ?? (dryRun ? '(dry run)' : 'none: nothing to remove')],
      ]);
    return EXIT.ok;
  },
});

export const patientCommands = [show, erase];
