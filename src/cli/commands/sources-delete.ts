import { eraseSource, SourceActiveError, SourceHasDataError } from '../../erasure.js';
import { DEFAULT_SOURCE_ID } from '../../sources/credentials.js';
import { findSources } from '../../sources/sources-table.js';
import { command, EXIT, printFields, printJson, UsageError } from '../output.js';
import { oneId, TAKES_EFFECT } from './sources.js';

// Offboarding a clinic: the source and, with --erase-data, everything it delivered (src/erasure.ts).
// Apart from the other source commands, which change a source and never remove data.

export const sourceDeleteCommand = command<{ id: string; eraseData: boolean; dryRun: boolean }>({
  path: ['sources', 'delete'],
  synopsis: 'ID [--erase-data] [--dry-run]',
  summary: 'Offboard a clinic: remove the source, refused while it has data unless --erase-data removes that too.',
  details: `Without --erase-data, a source that delivered anything is kept and the rows it has are counted.
  --erase-data   also remove every row the source delivered: events, patients, deliveries, programs,
                 the PDFs its patients had that no one else has (and their files), audit rows and its
                 failures; one transaction, recorded in erasures (counts only) and NOTIFY'd
  --dry-run      print what would be removed, remove nothing
Its URL then answers 404 (every replica within 2 s). Tell the vendor to stop sending first, and
disable the source until every replica's spool is empty: a delivery written after the deletion (from
a spool, or in the 2 s before a replica hears of it) would be kept under the deleted source's id.
--erase-data is refused while the source is active. ${TAKES_EFFECT} Exits 1 when there is no such
source, 2 when it has data (without --erase-data) or is active (with it).`,
  options: { 'erase-data': { type: 'boolean' }, 'dry-run': { type: 'boolean' } },
  parse(values, positionals) {
    const id = oneId(positionals);
    if (id === DEFAULT_SOURCE_ID) throw new UsageError('the default source is configured by environment variables; unset them instead');
    return { id, eraseData: values['erase-data'] === true, dryRun: values['dry-run'] === true };
  },
  async run(ctx, { id, eraseData, dryRun }) {
    const [row] = await findSources(ctx.db, id);
    if (!row) {
      ctx.io.stderr.write(`No source ${JSON.stringify(id)}.\n`);
      return EXIT.notFound;
    }
    let result;
    try {
      result = await eraseSource(ctx.db, ctx.config.storage.pdfDir, { vendor: row.vendor, sourceId: id, dryRun, keepData: !eraseData });
    } catch (err) {
      if (err instanceof SourceHasDataError) throw new UsageError(`source ${id} ${err.message.replace(/^the source /, '')}; add --erase-data to remove it with the source`);
      if (err instanceof SourceActiveError) throw new UsageError(`source ${id} is active; disable it first (sources disable ${id}) and wait until every replica's spool is empty`);
      throw err;
    }
    if (ctx.json) printJson(ctx.io, { id, vendor: row.vendor, ...result });
    else {
      printFields(ctx.io, [
        [dryRun ? 'Would remove source' : 'Removed source', `${id} (${row.vendor}, "${row.name}")`],
        ...Object.entries(result.counts).map(([table, n]): [string, number] => [`  ${table}`, n]),
        ['  files', result.files.removed],
      ]);
      if (!dryRun) ctx.io.stdout.write(`Its URL now answers 404. ${TAKES_EFFECT}\n`);
    }
    return EXIT.ok;
  },
});
