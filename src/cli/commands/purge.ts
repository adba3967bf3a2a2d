import { MIN_RETENTION_MS, parseDuration, purge } from '../../retention.js';
import { command, EXIT, printJson, printTable, UsageError } from '../output.js';

interface PurgeArgs {
  olderThan: string;
  olderThanMs: number;
  dryRun: boolean;
  includeDocuments: boolean;
  batchSize: number;
}

const purgeCommand = command<PurgeArgs>({
  path: ['purge'],
  synopsis: '--older-than 90d [--dry-run] [--include-documents] [--batch-size N]',
  summary: 'Retention: delete old events, audit rows and finished deliveries (documents only on request).',
  details: `Deletes, in batches of --batch-size rows (default 1000), each its own short transaction:
  patiro_events          by last_received_at
  webhook_audit          by received_at
  physitrack_deliveries  by received_at, only done, failed or expired (never pending or downloading)
  documents              only with --include-documents: those no remaining delivery references and
                         created before the cutoff, with their files under PDF_DIR
patiro_patients (the current patients) are kept. Documents are clinical records: kept by default.
  --older-than D   required; 90d, 12h or 30m; at least 1h
  --dry-run        count what would be deleted, delete nothing
Safe to repeat and to run on several replicas at once: a concurrent run deletes other rows.`,
  options: {
    'older-than': { type: 'string' },
    'dry-run': { type: 'boolean' },
    'include-documents': { type: 'boolean' },
    'batch-size': { type: 'string' },
  },
  parse(values, positionals) {
    if (positionals.length > 0) throw new UsageError(`unexpected argument "${positionals[0]}"`);
    const olderThan = values['older-than'];
    if (typeof olderThan !== 'string') throw new UsageError('--older-than is required (for example --older-than 90d)');
    let olderThanMs: number;
    try {
      olderThanMs = parseDuration(olderThan);
    } catch (err) {
      throw new UsageError(`--older-than: ${(err as Error).message}`);
    }
    if (olderThanMs < MIN_RETENTION_MS) throw new UsageError(`--older-than ${olderThan} is under 1 hour: refused, to avoid accidents`);
    const batch = (values['batch-size'] as string | undefined) ?? '1000';
    if (!/^[1-9][0-9]{0,5}$/.test(batch)) throw new UsageError('--batch-size must be a whole number from 1 to 999999');
    return {
      olderThan,
      olderThanMs,
      dryRun: values['dry-run'] === true,
      includeDocuments: values['include-documents'] === true,
      batchSize: Number(batch),
    };
  },
  async run(ctx, args) {
    const result = await purge(ctx.db, { ...args, pdfDir: ctx.config.storage.pdfDir });
    if (ctx.json) {
      printJson(ctx.io, { ...result, olderThan: args.olderThan, includeDocuments: args.includeDocuments });
      return EXIT.ok;
    }
    const verb = result.dryRun ? 'Would delete' : 'Deleted';
    ctx.io.stdout.write(`${verb} rows older than ${args.olderThan} (received before ${result.cutoff.toISOString()}):\n`);
    const tables = Object.entries(result.counts)
      .filter(([table]) => table !== 'documents' || args.includeDocuments)
      .map(([table, rows]) => ({ table, rows }));
    printTable(ctx.io, tables, [
      { header: 'TABLE', value: (r) => r.table },
      { header: 'ROWS', value: (r) => r.rows },
    ]);
    if (args.includeDocuments) {
      const { removed, missing, refused } = result.files;
      const files = result.dryRun ? `${removed} PDF files would be removed` : `${removed} PDF files removed, ${missing} already missing`;
      ctx.io.stdout.write(`${files}${refused ? `, ${refused} left alone (storage_key not of the form xx/<sha256>.pdf)` : ''}.\n`);
    } else {
      ctx.io.stdout.write('Documents kept (clinical records); --include-documents deletes unreferenced ones.\n');
    }
    if (result.dryRun) ctx.io.stdout.write('Dry run: nothing was deleted.\n');
    return EXIT.ok;
  },
});

export const purgeCommands = [purgeCommand];
