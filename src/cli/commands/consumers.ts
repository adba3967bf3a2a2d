import { addConsumer, ConsumerError, findConsumer, listConsumers, rotateConsumer, setConsumerStatus, type ConsumerRow, type ConsumerStatus } from '../../api/consumers-table.js';
import { DEFAULT_SOURCE_ID } from '../../sources/credentials.js';
import { findSources } from '../../sources/sources-table.js';
import { command, EXIT, printFields, printJson, printTable, UsageError, type CommandContext } from '../output.js';

// The consumers of the internal HTTP API (API_PORT): who may read the change feed and the PDFs.

const view = (row: ConsumerRow) => ({
  id: row.id,
  name: row.name,
  sources: row.allSources ? 'all' : row.sourceIds,
  status: row.status,
  createdAt: row.createdAt,
  lastSeenAt: row.lastSeenAt,
  previousTokenValidUntil: row.previousValidUntil,
});

function oneId(positionals: string[]): string {
  if (!positionals[0] || positionals.length > 1) throw new UsageError('give exactly one consumer ID');
  return positionals[0];
}

function printToken(ctx: CommandContext, row: ConsumerRow, token: string, verb: string): void {
  if (ctx.json) {
    printJson(ctx.io, { ...view(row), token });
    return;
  }
  printFields(ctx.io, [
    [`${verb} consumer`, `${row.id} ("${row.name}")`],
    ['Sources', row.allSources ? 'all' : row.sourceIds.join(', ')],
    ['Token', token],
  ]);
  ctx.io.stdout.write('\nGive the token to the importer as its bearer token (Authorization: Bearer …). It is shown only now.\n');
}

const add = command<{ name: string; sourceIds: string[] | undefined }>({
  path: ['consumers', 'add'],
  synopsis: '--name NAME [--source ID[,ID…]]',
  summary: 'Create a consumer of the internal API; prints its bearer token, once.',
  details: `  --name NAME        who reads (a PMS, an importer)
  --source ID,…      only these sources' changes and PDFs; without it, every source's
The token is stored as a hash only and cannot be shown again (rotate makes a new one).`,
  options: { name: { type: 'string' }, source: { type: 'string' } },
  parse(values, positionals) {
    if (positionals.length > 0) throw new UsageError(`unexpected argument "${positionals[0]}"`);
    if (typeof values.name !== 'string' || values.name.trim() === '' || values.name.length > 200) throw new UsageError('--name must be a text of 1 to 200 characters');
    let sourceIds: string[] | undefined;
    if (values.source !== undefined) {
      sourceIds = String(values.source).split(',').map((s) => s.trim()).filter(Boolean);
      if (sourceIds.length === 0) throw new UsageError('--source needs at least one source ID');
    }
    return { name: values.name.trim(), sourceIds };
  },
  async run(ctx, { name, sourceIds }) {
    for (const id of sourceIds ?? []) {
      // `default` is the environment's source, which may have no row until the service has started.
      if (id !== DEFAULT_SOURCE_ID && (await findSources(ctx.db, id)).length === 0) throw new UsageError(`no source ${JSON.stringify(id)} (see sources list)`);
    }
    try {
      const added = await addConsumer(ctx.db, { name, sourceIds });
      printToken(ctx, added.row, added.token, 'Created');
    } catch (err) {
      if (err instanceof ConsumerError) throw new UsageError(err.message);
      throw err;
    }
    return EXIT.ok;
  },
});

const list = command<void>({
  path: ['consumers', 'list'],
  synopsis: '',
  summary: 'Every consumer: its sources, status and when it last read (never a token).',
  details: 'Exits 1 when there is none.',
  options: {},
  parse(_values, positionals) {
    if (positionals.length > 0) throw new UsageError(`unexpected argument "${positionals[0]}"`);
  },
  async run(ctx) {
    const rows = (await listConsumers(ctx.db)).map(view);
    if (ctx.json) printJson(ctx.io, rows);
    else if (rows.length === 0) ctx.io.stderr.write('No consumers.\n');
    else
      printTable(ctx.io, rows, [
        { header: 'ID', value: (r) => r.id },
        { header: 'NAME', value: (r) => r.name, max: 30 },
        { header: 'SOURCES', value: (r) => (typeof r.sources === 'string' ? r.sources : r.sources.join(',')), max: 50 },
        { header: 'STATUS', value: (r) => r.status },
        { header: 'LAST SEEN', value: (r) => r.lastSeenAt },
      ]);
    return rows.length > 0 ? EXIT.ok : EXIT.notFound;
  },
});

function statusCommand(status: ConsumerStatus, verb: string, effect: string) {
  return command<string>({
    path: ['consumers', verb],
    synopsis: 'ID',
    summary: `${verb === 'disable' ? 'Disable' : 'Enable'} a consumer: ${effect}`,
    details: 'Takes effect at its next request. Exits 1 when there is no such consumer.',
    options: {},
    parse: (_values, positionals) => oneId(positionals),
    async run(ctx, id) {
      const row = await setConsumerStatus(ctx.db, id, status);
      if (!row) {
        ctx.io.stderr.write(`No consumer ${JSON.stringify(id)}.\n`);
        return EXIT.notFound;
      }
      if (ctx.json) printJson(ctx.io, view(row));
      else ctx.io.stdout.write(`Consumer ${row.id} ("${row.name}") is ${status}.\n`);
      return EXIT.ok;
    },
  });
}

/** `1h`, `30m`, `90s`, `2d`, or `0` (the old token stops at once). */
function parseKeepOld(value: unknown): number {
  if (value === undefined) return 0;
  const match = typeof value === 'string' ? /^(0|[1-9][0-9]{0,5})([smhd]?)$/.exec(value) : null;
  if (!match || (match[1] !== '0' && !match[2])) throw new UsageError('--keep-old must be like 1h, 30m, 90s, 7d or 0');
  const unit = { '': 0, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 }[match[2] as '' | 's' | 'm' | 'h' | 'd'];
  return Number(match[1]) * unit;
}

const rotate = command<{ id: string; keepOldMs: number }>({
  path: ['consumers', 'rotate'],
  synopsis: 'ID [--keep-old 1h]',
  summary: 'Give a consumer a new token, printed once; the old one stops at once, or after --keep-old.',
  details: '  --keep-old DURATION   the old token keeps working this long (like 1h, 30m, 2d; default 0)',
  options: { 'keep-old': { type: 'string' } },
  parse: (values, positionals) => ({ id: oneId(positionals), keepOldMs: parseKeepOld(values['keep-old']) }),
  async run(ctx, { id, keepOldMs }) {
    const rotated = await rotateConsumer(ctx.db, id, keepOldMs);
    if (!rotated) {
      ctx.io.stderr.write(`No consumer ${JSON.stringify(id)}.\n`);
      return EXIT.notFound;
    }
    printToken(ctx, rotated.row, rotated.token, 'Rotated');
    return EXIT.ok;
  },
});

const show = command<string>({
  path: ['consumers', 'show'],
  synopsis: 'ID',
  summary: 'One consumer (never its token).',
  details: 'Exits 1 when there is no such consumer.',
  options: {},
  parse: (_values, positionals) => oneId(positionals),
  async run(ctx, id) {
    const row = await findConsumer(ctx.db, id);
    if (!row) {
      ctx.io.stderr.write(`No consumer ${JSON.stringify(id)}.\n`);
      return EXIT.notFound;
    }
    if (ctx.json) printJson(ctx.io, view(row));
    else
      printFields(ctx.io, [
        ['Consumer', row.id],
        ['Name', row.name],
        ['Sources', row.allSources ? 'all' : row.sourceIds.join(', ')],
        ['Status', row.status],
        ['Created', row.createdAt],
        ['Last seen', row.lastSeenAt ?? 'never'],
        ['Old token valid until', row.previousValidUntil ?? '–'],
      ]);
    return EXIT.ok;
  },
});

export const consumerCommands = [
  add,
  list,
  show,
  rotate,
  statusCommand('disabled', 'disable', 'its token is refused (401).'),
  statusCommand('active', 'enable', 'its token works again.'),
];
