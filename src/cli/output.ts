import type { Readable, Writable } from 'node:stream';
import type { Config } from '../config.js';
import type { Database } from '../db/client.js';
import { parseDuration } from '../retention.js';

/** Where a command writes: the process's streams, or buffers in tests. */
export interface CliIo {
  stdout: Writable & { isTTY?: boolean };
  stderr: Writable;
  /** For a secret piped in (sources add --secret-stdin); absent when there is none. */
  stdin?: Readable;
}

/** A wrong argument or setting: exit code 2, with the message (and usage) on stderr. */
export class UsageError extends Error {
  override readonly name = 'UsageError';
}

export const EXIT = { ok: 0, notFound: 1, usage: 2, failed: 3 } as const;

/** bigint ids become strings, Dates ISO strings: JSON that any script can read. */
export function toJson(value: unknown): string {
  return JSON.stringify(value, (_key, v: unknown) => (typeof v === 'bigint' ? v.toString() : v), 2);
}

export function printJson(io: CliIo, value: unknown): void {
  io.stdout.write(`${toJson(value)}\n`);
}

export function formatTime(value: Date | null | undefined): string {
  return value ? value.toISOString() : '–';
}

/** 93784000 → "1d 2h 3m"; under a minute → "45s". Negative durations get a leading "-". */
export function formatDuration(ms: number): string {
  const sign = ms < 0 ? '-' : '';
  let seconds = Math.floor(Math.abs(ms) / 1000);
  if (seconds < 60) return `${sign}${seconds}s`;
  const days = Math.floor(seconds / 86_400);
  seconds %= 86_400;
  const hours = Math.floor(seconds / 3600);
  const minutes = Math.floor((seconds % 3600) / 60);
  const parts = [days ? `${days}d` : '', hours ? `${hours}h` : '', minutes ? `${minutes}m` : ''].filter(Boolean);
  return sign + parts.join(' ');
}

function cell(value: unknown, max: number): string {
  let text: string;
  if (value === null || value === undefined) text = '–';
  else if (value instanceof Date) text = value.toISOString();
  else text = String(value);
  text = text.replace(/\s+/g, ' ');
  return text.length > max ? `${text.slice(0, max - 1)}…` : text;
}

export interface Column<Row> {
  header: string;
  value: (row: Row) => unknown;
  /** Longer cells are cut with "…" (default 40). */
  max?: number;
}

/** A plain aligned table, one row per line, for people; scripts use --json. */
export function printTable<Row>(io: CliIo, rows: Row[], columns: Column<Row>[]): void {
  const cells = rows.map((row) => columns.map((c) => cell(c.value(row), c.max ?? 40)));
  const widths = columns.map((c, i) => Math.max(c.header.length, ...cells.map((r) => r[i]!.length)));
  const line = (values: string[]) => values.map((v, i) => v.padEnd(widths[i]!)).join('  ').trimEnd();
  io.stdout.write(`${[line(columns.map((c) => c.header)), ...cells.map(line)].join('\n')}\n`);
}

/** "label: value" lines for one record; multi-line values are indented under their label. */
export function printFields(io: CliIo, fields: [label: string, value: unknown][]): void {
  const width = Math.max(...fields.map(([label]) => label.length)) + 1;
  const lines = fields.map(([label, value]) => {
    if (typeof value === 'string' && value.includes('\n')) return `${label}:\n${value.replace(/^/gm, '  ')}`;
    return `${`${label}:`.padEnd(width)} ${cell(value, Number.POSITIVE_INFINITY)}`;
  });
  io.stdout.write(`${lines.join('\n')}\n`);
}

/**
 * A practitioner token identifies and authorises a practitioner at Physitrack: show only enough
 * to tell two apart. Short tokens show nothing, so the visible part is never most of it.
 */
export function maskToken(token: string): string {
  return token.length >= 12 ? `${token.slice(0, 4)}…` : '…';
}

export interface UrlSummary {
  host: string | null;
  /** Length of the last path segment (the file name), never the segment itself. */
  lastSegmentLength: number | null;
}

/** The file_url grants access to the PDF: only its host and the file name's length are shown. */
export function summarizeUrl(fileUrl: string): UrlSummary {
  try {
    const url = new URL(fileUrl);
    const segments = url.pathname.split('/').filter(Boolean);
    return { host: url.hostname, lastSegmentLength: segments.length ? segments[segments.length - 1]!.length : 0 };
  } catch {
    return { host: null, lastSegmentLength: null };
  }
}

export function describeUrl(fileUrl: string): string {
  const { host, lastSegmentLength } = summarizeUrl(fileUrl);
  if (host === null) return '(not a valid URL)';
  return `${host} (file name of ${lastSegmentLength} characters)`;
}

/** A positive whole number, as bigint for id columns. */
export function parseId(text: string | undefined, what: string): bigint {
  if (text === undefined || !/^[1-9][0-9]{0,18}$/.test(text)) throw new UsageError(`${what} must be a positive whole number`);
  return BigInt(text);
}

export function parseLimit(text: string | undefined, fallback = 50, max = 10_000): number {
  if (text === undefined) return fallback;
  if (!/^[1-9][0-9]*$/.test(text) || Number(text) > max) throw new UsageError(`--limit must be a whole number from 1 to ${max}`);
  return Number(text);
}

/** `--since 2h` → milliseconds; undefined when the flag is absent. */
export function parseSince(value: unknown): number | undefined {
  if (typeof value !== 'string') return undefined;
  try {
    return parseDuration(value);
  } catch (err) {
    throw new UsageError(`--since: ${(err as Error).message}`);
  }
}

export function plural(count: number, singular: string, pluralForm = `${singular}s`): string {
  return `${count} ${count === 1 ? singular : pluralForm}`;
}

export type OptionSpec = Record<string, { type: 'string' | 'boolean'; short?: string }>;
export type OptionValues = Record<string, string | boolean | undefined>;

/** What a command gets once its arguments are valid: one database connection, the config, the streams. */
export interface CommandContext {
  db: Database;
  config: Config;
  io: CliIo;
  json: boolean;
}

/** One operator command. `parse` runs before anything connects, so usage errors are cheap. */
export interface Command<Args = unknown> {
  /** Words that select it: ['deliveries', 'list']. */
  path: string[];
  /** Argument synopsis after the path: "[--status S] [--limit N]". */
  synopsis: string;
  summary: string;
  /** Explanation shown by `--help`, flags included. */
  details: string;
  options: OptionSpec;
  /** False for a command that never queries (it runs without DATABASE_URL). */
  needsDatabase?: boolean;
  parse(values: OptionValues, positionals: string[]): Args;
  run(ctx: CommandContext, args: Args): Promise<number>;
}

/** Erases a command's argument type so commands of different shapes share one list. */
export function command<Args>(definition: Command<Args>): Command {
  return definition as unknown as Command;
}
