import { command, EXIT, printFields, printJson, UsageError } from '../output.js';

interface PatientRow {
  patientId: string;
  data: unknown;
  signedAt: Date;
  revealedAt: Date | null;
  updatedAt: Date;
  lastEventId: string;
}

const show = command<string>({
  path: ['patients', 'show'],
  synopsis: 'ID',
  summary: 'The current Patiro patient (patiro_patients) with its data.',
  details: 'ID is the patient_id (Patiro\'s data.id). Exits 1 when there is no such patient.',
  options: {},
  parse(_values, positionals) {
    if (!positionals[0] || positionals.length > 1) throw new UsageError('give exactly one patient ID');
    return positionals[0];
  },
  async run(ctx, patientId) {
    const [row] = await ctx.db.$queryRawUnsafe<PatientRow[]>(
      `SELECT patient_id AS "patientId", data, signed_at AS "signedAt", revealed_at AS "revealedAt",
         updated_at AS "updatedAt", last_event_id AS "lastEventId"
       FROM patiro_patients WHERE patient_id = $1`,
      patientId,
    );
    if (!row) {
      ctx.io.stderr.write(`No patient ${JSON.stringify(patientId)}.\n`);
      return EXIT.notFound;
    }
    if (ctx.json) printJson(ctx.io, row);
    else
      printFields(ctx.io, [
        ['Patient', row.patientId],
        ['Revealed', row.revealedAt ?? 'not yet'],
        ['Updated here', row.updatedAt],
        ['Signed', row.signedAt],
        ['Last event', row.lastEventId],
        ['Data', JSON.stringify(row.data, null, 2)],
      ]);
    return EXIT.ok;
  },
});

export const patientCommands = [show];
