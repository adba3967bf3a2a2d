import type { Readable } from 'node:stream';
import type { Vendor } from '../../metrics.js';
import { DEFAULT_SOURCE_ID } from '../../sources/credentials.js';
import { addSource, rotateSource, SourceChangeError, webhookPath } from '../../sources/manage.js';
import { findSources, listSources, recentFailures, setSourceStatus, updateSource, type RecentFailure, type SourceRow, type SourceStatus } from '../../sources/sources-table.js';
import { command, EXIT, formatDuration, printFields, printJson, printTable, UsageError, type CommandContext } from '../output.js';

const VENDORS: Vendor[] = ['patiro', 'physitrack'];
export const TAKES_EFFECT = 'Every running replica takes the change within 2 seconds, without a restart.';

/** What may be shown of a source: never a credential, only its fingerprints. */
function view(row: SourceRow) {
  return {
    id: row.id,
    vendor: row.vendor,
    name: row.name,
    tenantRef: row.tenantRef,
    status: row.status,
    path: webhookPath(row.vendor, row.id),
    configuredBy: row.id === DEFAULT_SOURCE_ID ? 'environment' : 'table',
    credentials: row.credentialFingerprints,
    createdAt: row.createdAt,
    updatedAt: row.updatedAt,
    lastSuccessAt: row.lastSuccessAt,
    lastFailureAt: row.lastFailureAt,
    lastFailureReason: row.lastFailureReason,
    failuresSinceSuccess: row.failuresSinceSuccess,
  };
}

function parseVendor(value: unknown): Vendor {
  if (typeof value !== 'string' || !VENDORS.includes(value as Vendor)) throw new UsageError(`the vendor must be one of ${VENDORS.join(', ')}`);
  return value as Vendor;
}

export function oneId(positionals: string[]): string {
  if (!positionals[0] || positionals.length > 1) throw new UsageError('give exactly one source ID');
  return positionals[0];
}

function text(value: unknown, flag: string, required: boolean): string | null {
  if (value === undefined && !required) return null;
  if (typeof value !== 'string' || value.trim() === '' || value.length > 200) throw new UsageError(`${flag} must be a text of 1 to 200 characters`);
  return value.trim();
}

/** `24h`, `30m`, `90s`, `2d`, or `0` (the old secret stops at once). */
function parseKeepOld(value: unknown): number {
  if (value === undefined) return 24 * 3_600_000;
  const match = typeof value === 'string' ? /^(0|[1-9][0-9]{0,5})([smhd]?)$/.exec(value) : null;
  if (!match || (match[1] !== '0' && !match[2])) throw new UsageError('--keep-old must be like 24h, 30m, 90s, 7d or 0');
  const unit = { '': 0, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 }[match[2] as '' | 's' | 'm' | 'h' | 'd'];
  return Number(match[1]) * unit;
}

async function readSecret(stdin: Readable | undefined): Promise<string> {
  if (!stdin) throw new UsageError('--secret-stdin: there is no standard input to read');
  const chunks: Buffer[] = [];
  for await (const chunk of stdin) chunks.push(Buffer.from(chunk as Uint8Array));
  return Buffer.concat(chunks).toString('utf8').trim();
}

function requireKey(ctx: CommandContext): readonly Buffer[] {
  const keys = ctx.config.sources.secretKeys;
  if (keys.length === 0) throw new UsageError('set SOURCES_SECRET_KEY (base64 of 32 bytes, e.g. openssl rand -base64 32), the same key the service has');
  return keys;
}

/** A SourceChangeError is the operator's to fix: exit 2 with its message. */
async function changing<T>(change: () => Promise<T>): Promise<T> {
  try {
    return await change();
  } catch (err) {
    if (err instanceof SourceChangeError) throw new UsageError(err.message);
    throw err;
  }
}

function printSource(ctx: CommandContext, row: SourceRow, failures: RecentFailure[] = []): void {
  const v = view(row);
  const now = Date.now();
  const ago = (at: Date | null) => (at ? `${at.toISOString()} (${formatDuration(now - at.getTime())} ago)` : 'never');
  const credentials = v.credentials.map((c) => `${c.kind} ${c.fingerprint}${c.notAfter ? ` (valid until ${c.notAfter})` : ''}`).join('\n');
  printFields(ctx.io, [
    ['Source', v.id],
    ['Vendor', v.vendor],
    ['Name', v.name],
    ['Tenant', v.tenantRef],
    ['Status', v.status],
    ['Path', v.path],
    ['Credentials', v.configuredBy === 'environment' ? 'from environment variables' : credentials],
    ['Created', v.createdAt],
    ['Updated', v.updatedAt],
    ['Last success', ago(v.lastSuccessAt)],
    ['Last failure', v.lastFailureAt ? `${ago(v.lastFailureAt)}: ${v.lastFailureReason ?? '–'}` : 'never'],
    ['Failures since success', v.failuresSinceSuccess],
    ...(failures.length > 0
      ? [['Recent failures', failures.map((f) => `${f.at.toISOString()} ${f.reason}${f.hint ? ` (${f.hint})` : ''}`).join('\n')] as [string, string]]
      : []),
  ]);
}

interface AddArgs {
  vendor: Vendor;
  name: string;
  tenantRef: string | null;
  withToken: boolean;
  secretStdin: boolean;
}

const add = command<AddArgs>({
  path: ['sources', 'add'],
  synopsis: 'patiro|physitrack --name NAME [--tenant REF] [--with-token] [--secret-stdin]',
  summary: 'Create a source; prints its webhook path and its new credentials, once.',
  details: `  --name NAME      what operators call it ("Clinic A")
  --tenant REF     the PMS's own id for the clinic, stored as tenant_ref
  --with-token     patiro only: also require ?token= in the webhook URL
  --secret-stdin   read the secret (Patiro signing secret, Physitrack api key) from standard input
                   instead of generating one
The credentials are printed once and cannot be shown again (the table holds them encrypted with
SOURCES_SECRET_KEY). ${TAKES_EFFECT}`,
  options: { name: { type: 'string' }, tenant: { type: 'string' }, 'with-token': { type: 'boolean' }, 'secret-stdin': { type: 'boolean' } },
  parse(values, positionals) {
    if (positionals.length !== 1) throw new UsageError('give the vendor: patiro or physitrack');
    const vendor = parseVendor(positionals[0]);
    if (values['with-token'] && vendor !== 'patiro') throw new UsageError('--with-token is for patiro sources only');
    return {
      vendor,
      name: text(values.name, '--name', true)!,
      tenantRef: text(values.tenant, '--tenant', false),
      withToken: values['with-token'] === true,
      secretStdin: values['secret-stdin'] === true,
    };
  },
  async run(ctx, args) {
    const keys = requireKey(ctx);
    const secret = args.secretStdin ? await readSecret(ctx.io.stdin) : undefined;
    const added = await changing(() => addSource(ctx.db, keys, { ...args, secret }));
    const path = webhookPath(args.vendor, added.row.id);
    const secretName = args.vendor === 'patiro' ? 'signingSecret' : 'apiKey';
    if (ctx.json) {
      printJson(ctx.io, { ...view(added.row), [secretName]: added.secret, ...(added.token ? { token: added.token } : {}) });
      return EXIT.ok;
    }
    const fullPath = added.token ? `${path}?token=${added.token}` : path;
    printFields(ctx.io, [
      ['Created source', `${added.row.id} (${args.vendor}, "${args.name}")`],
      ['Webhook path', fullPath],
      [args.vendor === 'patiro' ? 'Signing secret' : 'API key', added.secret],
    ]);
    const where = args.vendor === 'patiro' ? "Enter the URL (your base URL + the path) and the signing secret in this clinic's Patiro webhook settings" : 'Give Physitrack the URL (your base URL + the path) and the API key';
    ctx.io.stdout.write(`\n${where}. They are shown only now. ${TAKES_EFFECT}\n`);
    return EXIT.ok;
  },
});

const list = command<{ vendor?: Vendor }>({
  path: ['sources', 'list'],
  synopsis: '[--vendor patiro|physitrack]',
  summary: 'Every source with its status and health (credentials as fingerprints only).',
  details: 'Exits 1 when there is none.',
  options: { vendor: { type: 'string' } },
  parse(values, positionals) {
    if (positionals.length > 0) throw new UsageError(`unexpected argument "${positionals[0]}"`);
    return { vendor: values.vendor === undefined ? undefined : parseVendor(values.vendor) };
  },
  async run(ctx, args) {
    const rows = (await listSources(ctx.db, args.vendor)).map(view);
    if (ctx.json) printJson(ctx.io, rows);
    else if (rows.length === 0) ctx.io.stderr.write('No sources.\n');
    else
      printTable(ctx.io, rows, [
        { header: 'ID', value: (r) => r.id, max: 64 },
        { header: 'VENDOR', value: (r) => r.vendor },
        { header: 'NAME', value: (r) => r.name, max: 30 },
        { header: 'TENANT', value: (r) => r.tenantRef, max: 20 },
        { header: 'STATUS', value: (r) => r.status },
        { header: 'SECRETS', value: (r) => (r.configuredBy === 'environment' ? '(environment)' : r.credentials.map((c) => c.fingerprint).join(' ')), max: 40 },
        { header: 'LAST SUCCESS', value: (r) => r.lastSuccessAt },
        { header: 'LAST FAILURE', value: (r) => (r.lastFailureAt ? `${r.lastFailureAt.toISOString()} ${r.lastFailureReason ?? ''}` : null), max: 60 },
        { header: 'FAILURES', value: (r) => r.failuresSinceSuccess },
      ]);
    return rows.length > 0 ? EXIT.ok : EXIT.notFound;
  },
});

const show = command<string>({
  path: ['sources', 'show'],
  synopsis: 'ID',
  summary: 'One source: status, path, credential fingerprints, health (last success, its last 10 failures and why).',
  details: '"default" shows the environment source, one record per vendor (--json: an array). Exits 1 when there is no such source.',
  options: {},
  parse: (_values, positionals) => oneId(positionals),
  async run(ctx, id) {
    const rows = await findSources(ctx.db, id);
    if (rows.length === 0) {
      ctx.io.stderr.write(`No source ${JSON.stringify(id)}.\n`);
      return EXIT.notFound;
    }
    const failures = await Promise.all(rows.map((row) => recentFailures(ctx.db, row.vendor, row.id)));
    const views = rows.map((row, i) => ({ ...view(row), recentFailures: failures[i]! }));
    if (ctx.json) printJson(ctx.io, id === DEFAULT_SOURCE_ID ? views : views[0]);
    else
      rows.forEach((row, i) => {
        if (i > 0) ctx.io.stdout.write('\n');
        printSource(ctx, row, failures[i]);
      });
    return EXIT.ok;
  },
});

const rotateCommand = command<{ id: string; keepOldMs: number; secretStdin: boolean }>({
  path: ['sources', 'rotate'],
  synopsis: 'ID [--keep-old 24h] [--secret-stdin]',
  summary: 'Add a new secret; the old one stays valid for --keep-old (default 24h), then only the new one.',
  details: `  --keep-old 24h   how long the secrets valid now stay valid (s, m, h or d; 0 ends them at once)
  --secret-stdin   read the new secret from standard input instead of generating one
Prints the new secret once. A Patiro ?token= stays as it is. ${TAKES_EFFECT}`,
  options: { 'keep-old': { type: 'string' }, 'secret-stdin': { type: 'boolean' } },
  parse: (values, positionals) => ({ id: oneId(positionals), keepOldMs: parseKeepOld(values['keep-old']), secretStdin: values['secret-stdin'] === true }),
  async run(ctx, args) {
    const keys = requireKey(ctx);
    const secret = args.secretStdin ? await readSecret(ctx.io.stdin) : undefined;
    const rotated = await changing(() => rotateSource(ctx.db, keys, args.id, { keepOldMs: args.keepOldMs, secret }));
    const secretName = rotated.row.vendor === 'patiro' ? 'signingSecret' : 'apiKey';
    if (ctx.json) {
      printJson(ctx.io, { ...view(rotated.row), [secretName]: rotated.secret, oldValidUntil: rotated.oldValidUntil });
      return EXIT.ok;
    }
    printFields(ctx.io, [
      ['Rotated source', `${rotated.row.id} (${rotated.row.vendor}, "${rotated.row.name}")`],
      [rotated.row.vendor === 'patiro' ? 'New signing secret' : 'New API key', rotated.secret],
      ['Old secrets valid until', rotated.oldValidUntil ?? 'no longer valid'],
    ]);
    ctx.io.stdout.write(`\nIt is shown only now. ${TAKES_EFFECT}\n`);
    return EXIT.ok;
  },
});

function statusCommand(status: SourceStatus, word: 'disable' | 'enable', effect: string) {
  return command<string>({
    path: ['sources', word],
    synopsis: 'ID',
    summary: `${word === 'disable' ? 'Disable' : 'Enable'} a source: ${effect}`,
    details: `${TAKES_EFFECT} The default source is configured by environment variables instead. Exits 1 when there is no such source.`,
    options: {},
    parse: (_values, positionals) => oneId(positionals),
    async run(ctx, id) {
      if (id === DEFAULT_SOURCE_ID) throw new UsageError('the default source is configured by environment variables; unset or set them instead');
      const row = await setSourceStatus(ctx.db, id, status);
      if (!row) {
        ctx.io.stderr.write(`No source ${JSON.stringify(id)}.\n`);
        return EXIT.notFound;
      }
      if (ctx.json) printJson(ctx.io, view(row));
      else ctx.io.stdout.write(`Source ${row.id} (${row.vendor}, "${row.name}") is ${status}: ${effect} ${TAKES_EFFECT}\n`);
      return EXIT.ok;
    },
  });
}

const updateCommand = command<{ id: string; name: string | null; tenantRef: string | null | undefined }>({
  path: ['sources', 'update'],
  synopsis: 'ID [--name NAME] [--tenant REF | --no-tenant]',
  summary: "Change a source's name or tenant reference (its URL and credentials stay).",
  details: `  --name NAME     the new name (1 to 200 characters)
  --tenant REF    the PMS's reference for the clinic; --no-tenant clears it
${TAKES_EFFECT} Exits 1 when there is no such source.`,
  options: { name: { type: 'string' }, tenant: { type: 'string' }, 'no-tenant': { type: 'boolean' } },
  parse(values, positionals) {
    const id = oneId(positionals);
    if (id === DEFAULT_SOURCE_ID) throw new UsageError('the default source is configured by environment variables');
    if (values.tenant !== undefined && values['no-tenant']) throw new UsageError('give --tenant or --no-tenant, not both');
    const tenantRef = values['no-tenant'] ? null : values.tenant === undefined ? undefined : text(values.tenant, '--tenant', true);
    const name = text(values.name, '--name', false);
    if (name === null && tenantRef === undefined) throw new UsageError('give --name, --tenant or --no-tenant');
    return { id, name, tenantRef };
  },
  async run(ctx, { id, name, tenantRef }) {
    const row = await updateSource(ctx.db, id, { ...(name === null ? {} : { name }), ...(tenantRef === undefined ? {} : { tenantRef }) });
    if (!row) {
      ctx.io.stderr.write(`No source ${JSON.stringify(id)}.\n`);
      return EXIT.notFound;
    }
    if (ctx.json) printJson(ctx.io, view(row));
    else printSource(ctx, row);
    return EXIT.ok;
  },
});

export const sourceCommands = [
  add,
  list,
  show,
  rotateCommand,
  statusCommand('disabled', 'disable', 'its deliveries are answered 404 and not stored (Patiro keeps retrying a 404 for about 10 hours).'),
  statusCommand('active', 'enable', 'its deliveries are accepted again.'),
  updateCommand,
];
