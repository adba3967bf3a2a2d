import { stat } from 'node:fs/promises';
import path from 'node:path';
import { pino } from 'pino';
import { readMigrations, DEFAULT_MIGRATIONS_DIR } from '../../db/migrate.js';
import { createReplayer } from '../../spool/replayer.js';
import { inspectSpool, openSpool } from '../../spool/spool.js';
import { SpoolLockedError } from '../../spool/owner.js';
import { command, EXIT, formatDuration, formatTime, printFields, printJson, UsageError, type CommandContext } from '../output.js';

/** Refuses to write with statements of this release into a schema that lacks its migrations. */
async function checkMigrated(ctx: CommandContext): Promise<void> {
  const known = (await readMigrations(DEFAULT_MIGRATIONS_DIR)).map((m) => m.name);
  const rows = await ctx.db.$queryRaw<{ name: string }[]>`SELECT migration_name AS name FROM _prisma_migrations WHERE finished_at IS NOT NULL`;
  const applied = new Set(rows.map((r) => r.name));
  const missing = known.filter((name) => !applied.has(name));
  if (missing.length > 0) throw new UsageError(`the database lacks migrations of this release (${missing.join(', ')}): run the migrations first (npm run cli -- … or the service's start applies them)`);
}

export const spoolCommands = [
  command<{ dir: string | undefined }>({
    path: ['spool', 'status'],
    synopsis: '[--dir PATH]',
    summary: "What this replica's spool holds: deliveries waiting for PostgreSQL, bytes, the oldest, set-aside files.",
    details: `Reads SPOOL_DIR (or --dir) without taking it, so it runs beside the service. A spool that
holds records while PostgreSQL answers is being replayed; one whose owner is gone is drained with
\`spool replay --dir\`. Files in rejected/ were set aside (corrupt, or refused by PostgreSQL for
good) and wait for an operator: they hold patient data.`,
    options: { dir: { type: 'string' } },
    needsDatabase: false,
    parse(values, positionals) {
      if (positionals.length > 0) throw new UsageError('spool status takes no arguments');
      return { dir: typeof values.dir === 'string' ? values.dir : undefined };
    },
    async run(ctx, { dir }) {
      const spoolDir = dir ? path.resolve(dir) : ctx.config.spool?.dir;
      if (!spoolDir) throw new UsageError('the spool is off: SPOOL_DIR is not set (or give --dir)');
      if (!(await stat(spoolDir).catch(() => undefined))?.isDirectory()) throw new UsageError(`${spoolDir} is not a directory`);
      const s = await inspectSpool(spoolDir);
      if (ctx.json) printJson(ctx.io, s);
      else {
        printFields(ctx.io, [
          ['Spool', s.dir],
          ['Waiting deliveries', s.records],
          ['Bytes', s.bytes],
          ['Oldest', s.oldestWrittenAt ? `${formatTime(s.oldestWrittenAt)} (${formatDuration(Date.now() - s.oldestWrittenAt.getTime())} ago)` : 'none'],
          ['Set aside (rejected/)', `${s.rejectedFiles} file(s)`],
          ['Held by', s.owner ? `process ${s.owner.pid} on ${s.owner.hostname} since ${s.owner.since} (last seen ${s.owner.heartbeatAt})` : 'nobody'],
        ]);
      }
      return EXIT.ok;
    },
  }),
  command<{ dir: string }>({
    path: ['spool', 'replay'],
    synopsis: '--dir PATH',
    summary: 'Writes the spool of a replica that is gone (its volume mounted here) into the database, then empties it.',
    details: `Takes the directory as the service would (refused while a live process holds it), writes
every waiting delivery through the service's own statements, oldest first, and removes each file
once written. Deliveries already written (a crash mid-replay, a replay run twice) count once: each
carries the receipt it got on arrival, and the statement finds it (such a delivery is still
counted under "Written"). Needs DATABASE_URL, migrated to this release. Exit 0 when the
spool is empty, 3 when PostgreSQL went away mid-way (run it again).`,
    options: { dir: { type: 'string' } },
    parse(values, positionals) {
      if (positionals.length > 0) throw new UsageError('spool replay takes no positional arguments');
      if (typeof values.dir !== 'string' || values.dir === '') throw new UsageError('--dir PATH is required: the spool directory to drain');
      return { dir: path.resolve(values.dir) };
    },
    async run(ctx, { dir }) {
      if (!(await stat(path.join(dir, 'journal')).catch(() => undefined))?.isDirectory()) throw new UsageError(`${dir} is not a spool directory (it has no journal/)`);
      await checkMigrated(ctx);
      // Only names and counts are logged: the records hold patient data.
      const log = pino({ level: 'warn' }, pino.destination(2));
      let spool;
      try {
        spool = await openSpool({ dir, maxBytes: Number.MAX_SAFE_INTEGER, log });
      } catch (err) {
        if (err instanceof SpoolLockedError) throw new UsageError(err.message);
        throw err;
      }
      try {
        const before = spool.journal.stats().records;
        const result = await createReplayer({ journal: spool.journal, rejectedDir: spool.rejectedDir, db: ctx.db, log }).runOnce();
        const left = spool.journal.stats().records;
        if (ctx.json) printJson(ctx.io, { dir, waiting: before, replayed: result.replayed, rejected: result.rejected, left, complete: result.complete });
        else {
          printFields(ctx.io, [
            ['Spool', dir],
            ['Waiting before', before],
            ['Written (or found written)', result.replayed],
            ['Set aside (rejected/)', result.rejected],
            ['Left', left],
          ]);
        }
        return result.complete ? EXIT.ok : EXIT.failed;
      } finally {
        await spool.close();
      }
    },
  }),
];
