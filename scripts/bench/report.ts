import type { CpuUse } from './processes.js';
import type { ByteaResult, DbResult } from './database.js';
import type { LoadResult } from './load.js';
import type { BenchOptions } from './options.js';
import type { FetchResult, PipelineResult } from './phases.js';

/** `stored`: rows the table gained during the run; `ackedFound`: acked deliveries whose row is there. */
export type WebhookResult = { load: LoadResult; stored: number; ackedFound: number; cpu: CpuUse };

// Filled phase by phase: `patiroSplit` is 1b (half the connections to the default source, half to one from the table, at once), `singleRow`
// and `wholeStatement` are 2 and 2b, `toFiles` and `byteaLimit` the PDF pipeline's durable baselines.
export type Results = { header: string[]; o: BenchOptions; patiro?: WebhookResult; patiroSplit?: { viaDefault: WebhookResult; viaSource: WebhookResult };
  lone?: LoadResult; loneUnbatched?: LoadResult; singleRow?: DbResult; wholeStatement?: DbResult; http?: { load: LoadResult; cpu: CpuUse }; physitrack?: WebhookResult;
  pipeline?: PipelineResult; toFiles?: FetchResult; byteaLimit?: ByteaResult };

const num = (n: number) => (!Number.isFinite(n) ? '–' : n >= 100 ? Math.round(n).toLocaleString('en-US') : n.toFixed(n >= 10 ? 1 : 2));
const ms = (n: number) => (Number.isFinite(n) ? `${n.toFixed(n >= 100 ? 0 : n >= 10 ? 1 : 2)} ms` : '–');
const times = (a: number, b: number) => `${(a / b).toFixed(2)}×`;
const share = (c: CpuUse, seconds: number) => Math.round((100 * seconds) / c.windowS);
const rateOf = (load: LoadResult) => load.acked / load.elapsedS;
const refusedText = (l: LoadResult) => [...[...l.refused].map(([status, n]) => `${n}×${status}`), ...(l.unanswered > 0 ? [`${l.unanswered} unanswered`] : [])].join(' ') || '0';
const CPU_HEADS = ['CPU µs each: target / postgres', 'CPU % of a core: target / postgres / bench / others'];

function table(rows: string[][]): string {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length)));
  return rows.map((r) => r.map((cell, i) => (i === 0 ? cell.padEnd(widths[i]!) : cell.padStart(widths[i]!))).join('  ').trimEnd()).join('\n');
}

/** CPU µs per delivery (transaction, request, PDF), the target '–' when it ran inside this process, then each side's % of a core. */
function cpuCells(phase: string, cpu: CpuUse, count: number, alarms: string[], hasTarget = true): string[] {
  if (share(cpu, cpu.others) > 20) alarms.push(`${phase}: other processes took ${share(cpu, cpu.others)}% of a core; the figures are disturbed`);
  if (share(cpu, cpu.bench) >= 85) alarms.push(`${phase}: the load generator used ${share(cpu, cpu.bench)}% of a core; the rate may be its limit`);
  return [`${hasTarget ? num((cpu.target * 1e6) / count) : '–'} / ${num((cpu.postgres * 1e6) / count)}`, [cpu.target, cpu.postgres, cpu.bench, cpu.others].map((s) => share(cpu, s)).join(' / ')];
}

function loadTable(r: Results, alarms: string[]): string[] {
  const c = r.o.connections;
  const rows = [['', 'rate', 'p50', 'p99', 'max', 'non-2xx', 'rows stored / 2xx', ...CPU_HEADS]];
  const row = (label: string, rate: string, l: { p50: number; p99: number; max: number }, ...rest: string[]) => rows.push([label, rate, ms(l.p50), ms(l.p99), ms(l.max), ...rest]);
  /** Every acked delivery must be stored, and nothing else; in 1b both streams share the table, so each checks its own and CPU is over both. */
  const webhookRow = (phase: string, label: string, w: WebhookResult, cpuCount = w.load.acked, shared = false) => {
    const [lost, stored] = [w.load.acked - w.ackedFound, shared ? w.ackedFound : w.stored];
    if (lost > 0 || stored !== w.load.acked) alarms.push(`${phase}: ${lost > 0 ? `${lost} acknowledged deliveries have no row` : `${stored} rows stored for ${w.load.acked} 2xx answers`}`);
    if (w.load.builtLive > 0) alarms.push(`${phase}: ${w.load.builtLive} deliveries were signed during the run (the prepared ones ran out)`);
    const check = lost > 0 ? `!!! ${lost} LOST` : stored !== w.load.acked ? '!!! MISMATCH' : shared ? 'found' : 'ok';
    row(label, `${num(rateOf(w.load))} acks/s`, w.load.latency, refusedText(w.load), `${stored} / ${w.load.acked}  ${check}`, ...cpuCells(phase, w.cpu, cpuCount, alarms));
  };
  const dbRow = (phase: string, label: string, d: DbResult) =>
    row(label, `${num(d.transactions / d.elapsedS)} tx/s`, d.latency, `${d.failed} failed`, '', ...cpuCells(phase, d.cpu, d.transactions, alarms, d.method.startsWith('pgbench')));
  const loneRow = (label: string, lone: LoadResult) => row(label, `${num(lone.answered / lone.elapsedS)} req/s`, lone.latency, refusedText(lone));
  if (r.patiro) webhookRow('1', `1  service  POST /webhooks/patiro (c=${c})`, r.patiro);
  if (r.patiroSplit) {
    const { viaDefault, viaSource } = r.patiroSplit;
    const [half, both] = [Math.max(1, Math.floor(c / 2)), viaDefault.load.acked + viaSource.load.acked];
    webhookRow('1b', `1b service  POST /webhooks/patiro, default source (c=${half} of ${c})`, viaDefault, both, true);
    webhookRow('1b', `   at once  POST /webhooks/patiro/<database source> (c=${half} of ${c})`, viaSource, both, true);
  }
  if (r.lone) loneRow('   service  a lone request (c=1, sequential)', r.lone);
  if (r.loneUnbatched) loneRow('   service  a lone request, batching off (WRITE_BATCH_MAX_ROWS=1)', r.loneUnbatched);
  if (r.singleRow) dbRow('2', `2  database limit: single-row INSERT of the event, 1 per tx (${r.singleRow.method}, c=${c})`, r.singleRow);
  if (r.wholeStatement) dbRow('2b', `2b second baseline: our whole statement one by one (event+patient+audit+NOTIFY, ${r.wholeStatement.method})`, r.wholeStatement);
  if (r.http) row(`3  HTTP limit: bare Fastify 204, same bodies (c=${c})`, `${num(r.http.load.answered / r.http.load.elapsedS)} req/s`, r.http.load.latency, refusedText(r.http.load), '', ...cpuCells('3', r.http.cpu, r.http.load.answered, alarms));
  if (r.physitrack) webhookRow('4', `4  service  POST /webhooks/physitrack (c=${c})`, r.physitrack);
  if (rows.length === 1) return [];
  return [`Load phases: ${r.o.durationS} s each, latency over every answer. CPU: user + system from /proc per acked delivery (per transaction in 2, per request in 3),`,
    'and in % of a core. Target: the service (pgbench in 2, – when in the bench; the bare server in 3); postgres: the whole server; others: the rest of the machine.', table(rows), ''];
}

function pdfTable({ o, pipeline: p, toFiles: f, byteaLimit: b }: Results, alarms: string[]): string[] {
  const rows = [['', 'PDFs/s', 'time', 'done', 'retries', 'peak RSS (idle)', ...CPU_HEADS.map((h) => h.replace('each', 'per PDF'))]];
  const row = (label: string, done: number, of: number, elapsedS: number, ...rest: string[]) => rows.push([label, num(done / elapsedS), `${elapsedS.toFixed(2)} s`, `${done}/${of}`, ...rest]);
  if (p) row(`5  PDF pipeline: ${p.label}`, p.done, p.notices.acked, p.elapsedS, String(p.retries), `${num(p.peakRss / 1e6)} MB (${num(p.idleRss / 1e6)})`, ...cpuCells('5', p.cpu, p.done, alarms));
  if (p && p.notDone > 0) alarms.push(`5: ${p.notDone} deliveries did not end done`);
  if (f) row(`   durable baseline: undici into fsynced files (write, fsync, rename, fsync dir), concurrency ${o.downloadConcurrency}`, f.files, f.files, f.elapsedS, '', '', ...cpuCells('5', f.cpu, f.files, alarms));
  if (b) row(`   durable baseline: plain pg INSERT of the same bytes, concurrency ${o.downloadConcurrency}`, b.stored, b.files, b.elapsedS, '', '', ...cpuCells('5', b.cpu, b.files, alarms, false));
  if (b && b.stored !== b.files) alarms.push(`5: the plain INSERT loop left ${b.stored} rows for ${b.files} INSERTs`);
  return rows.length > 1 ? [table(rows), ''] : [];
}

function targetTable(r: Results): string[] {
  const { o, pipeline: p, toFiles: f, byteaLimit: b } = r;
  const targets: string[][] = [];
  const target = (label: string, value: string, goal = '', ok?: boolean) => targets.push([`  ${label}`, value, goal, ok === undefined ? '' : ok ? 'ok' : 'MISS']);
  const lost = (vendor: string, w: WebhookResult) => target(`${vendor} acknowledged but not stored`, String(w.load.acked - w.ackedFound), 'target 0', w.load.acked === w.ackedFound);
  const limit = r.singleRow ? r.singleRow.transactions / r.singleRow.elapsedS : Number.NaN;
  const ofLimit = (vendor: string, w: WebhookResult, goal: number) => target(`${vendor} acks/s ÷ the single-row INSERT limit (c=${o.connections})`, times(rateOf(w.load), limit), `target ≥ ${goal}×`, rateOf(w.load) >= goal * limit);
  if (r.patiro && r.singleRow) ofLimit('Patiro', r.patiro, 0.6);
  if (r.patiro) target(`Patiro p99 at c=${o.connections}`, ms(r.patiro.load.latency.p99), 'target ≤ 25 ms', r.patiro.load.latency.p99 <= 25);
  if (r.patiro) lost('Patiro', r.patiro);
  if (r.physitrack && r.singleRow) ofLimit('Physitrack', r.physitrack, 0.5);
  if (r.physitrack) lost('Physitrack', r.physitrack);
  if (r.patiroSplit) {
    const [viaDefault, viaSource] = [rateOf(r.patiroSplit.viaDefault.load), rateOf(r.patiroSplit.viaSource.load)];
    target('Patiro acks/s, database source ÷ default source (1b, at once)', times(viaSource, viaDefault), 'target ≥ 0.9×', viaSource >= 0.9 * viaDefault);
  }
  if (r.lone && r.loneUnbatched) {
    const cost = r.lone.latency.p50 - r.loneUnbatched.latency.p50;
    target('a lone Patiro request, p50 with batching − without', `${cost >= 0 ? '+' : '−'}${ms(Math.abs(cost))}`, 'target ≤ 1 ms', cost <= 1);
  }
  if (r.patiro && r.wholeStatement) target('Patiro acks/s ÷ our whole statement one by one (2b)', times(rateOf(r.patiro.load), r.wholeStatement.transactions / r.wholeStatement.elapsedS));
  if (r.patiro && r.http) target('Patiro acks/s ÷ the HTTP limit', times(rateOf(r.patiro.load), r.http.load.answered / r.http.load.elapsedS));
  if (r.patiro && r.singleRow) target('PostgreSQL CPU per Patiro delivery ÷ per single-row INSERT transaction', times(r.patiro.cpu.postgres / r.patiro.load.acked, r.singleRow.cpu.postgres / r.singleRow.transactions));
  if (p && f) target('PDF pipeline ÷ undici into fsynced files (PDFs/s)', times(p.done / p.elapsedS, f.files / f.elapsedS));
  if (p && b) target('PDF pipeline ÷ plain pg INSERT of the bytes (PDFs/s)', times(p.done / p.elapsedS, b.stored / b.elapsedS));
  const maxMb = o.storage === 'database' ? 200 : 150;
  if (p) target(`service peak RSS during the pipeline (${o.storage} storage)`, `${num(p.peakRss / 1e6)} MB`, `target ≤ ${maxMb} MB`, p.peakRss <= maxMb * 1e6);
  // Only phases that ran have ratios: with --only db,http there may be none at all.
  return targets.length > 0 ? ['Ratios and targets', table(targets)] : [];
}

export function formatReport(r: Results): string {
  const alarms: string[] = [];
  const out = [...r.header, '', ...loadTable(r, alarms), ...pdfTable(r, alarms), ...targetTable(r)];
  if (alarms.length > 0) out.push(...(out.at(-1) === '' ? [] : ['']), ...[...new Set(alarms)].map((a) => `!!! ${a}`));
  return out.join('\n');
}
