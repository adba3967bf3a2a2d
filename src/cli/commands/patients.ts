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

export const patientCommands = [show];
