import type { ByteaLimitResult } from './bytea-limit.js';
import type { CpuUse } from './cpu.js';
import type { DbLimitResult } from './db-limit.js';
import type { Latency, LoadResult } from './load.js';
import type { PipelineResult, PlainFetchResult } from './pdf-pipeline.js';

export interface WebhookResult {
  load: LoadResult;
  /** Rows the table gained during the run. */
  stored: number;
  /** Acked deliveries whose row is there. */
  ackedFound: number;
  cpu: CpuUse;
}

export interface Results {
  header: string[];
  connections: number;
  durationS: number;
  patiro?: WebhookResult;
  /** Half the connections to the default source, half to a source from the table, at the same time. */
  patiroSplit?: { viaDefault: WebhookResult; viaSource: WebhookResult };
  lone?: LoadResult;
  /** The same on a service with group commit off (WRITE_BATCH_MAX_ROWS=1). */
  loneUnbatched?: LoadResult;
  dbLimit?: DbLimitResult & { stored: number; cpu: CpuUse };
  /** The same at the service's own number of database connections. */
  dbLimitAtPool?: DbLimitResult & { stored: number; cpu: CpuUse; connections: number };
  http?: { load: LoadResult; cpu: CpuUse };
  physitrack?: WebhookResult;
  pipeline?: PipelineResult & { label: string };
  plain?: PlainFetchResult & { concurrency: number };
  /** The same, each file written, fsynced and renamed. */
  plainToFiles?: PlainFetchResult & { concurrency: number };
  /** PostgreSQL storing the same bytes from plain INSERTs (PDF_STORAGE=database only). */
  byteaLimit?: ByteaLimitResult;
}

/** Whether any phase finished, so that a failed run still has something to report. */
export function hasResults(r: Results): boolean {
  const { header: _header, connections: _connections, durationS: _durationS, ...phases } = r;
  return Object.values(phases).some((result) => result !== undefined);
}

const MIB = 1024 * 1024;
const num = (n: number) => (!Number.isFinite(n) ? '–' : n >= 100 ? Math.round(n).toLocaleString('en-US') : n.toFixed(n >= 10 ? 1 : 2));
const ms = (n: number) => (Number.isFinite(n) ? `${n.toFixed(n >= 100 ? 0 : n >= 10 ? 1 : 2)} ms` : '–');
const pct = (n: number) => `${Math.round(n)}`;
const cpuText = (c: CpuUse) => `${pct(c.target)} / ${pct(c.postgres)} / ${pct(c.bench)} / ${pct(c.others)}`;
const lat = (l: Latency) => [ms(l.p50), ms(l.p99), ms(l.max)];

function refusedText(load: LoadResult): string {
  const parts = [...load.refused].map(([status, n]) => `${n}×${status}`);
  if (load.unanswered > 0) parts.push(`${load.unanswered} unanswered`);
  return parts.length === 0 ? '0' : parts.join(' ');
}

/** A mismatch is printed loudly: every acked delivery must be stored, and nothing else. */
function storedText(w: WebhookResult): { cell: string; alarm?: string } {
  const lost = w.load.acked - w.ackedFound;
  const cell = `${w.stored.toLocaleString('en-US')} / ${w.load.acked.toLocaleString('en-US')}`;
  if (lost > 0) return { cell: `${cell}  !!! ${lost} LOST`, alarm: `${lost} acknowledged deliveries have no row` };
  if (w.stored !== w.load.acked) {
    return { cell: `${cell}  !!! MISMATCH`, alarm: `rows stored (${w.stored}) ≠ 2xx answers (${w.load.acked}): a delivery answered non-2xx or never answered was committed anyway` };
  }
  return { cell: `${cell}  ok` };
}

function table(rows: string[][]): string {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length)));
  return rows.map((r) => r.map((cell, i) => (i === 0 ? cell.padEnd(widths[i]!) : cell.padStart(widths[i]!))).join('  ').trimEnd()).join('\n');
}

function verdict(ok: boolean | undefined): string {
  return ok === undefined ? '' : ok ? 'ok' : 'MISS';
}

export function formatReport(r: Results): string {
  const out: string[] = [...r.header, ''];
  const alarms: string[] = [];
  const c = r.connections;
  const rows: string[][] = [['', 'rate', 'p50', 'p99', 'max', 'non-2xx', 'rows stored / 2xx', 'CPU %: target/postgres/bench/others']];
  const webhookRow = (label: string, w: WebhookResult) => {
    const stored = storedText(w);
    if (stored.alarm) alarms.push(`${label}: ${stored.alarm}`);
    if (w.load.builtLive > 0) alarms.push(`${label}: ${w.load.builtLive} deliveries were signed during the run (the prepared ones ran out)`);
    rows.push([label, `${num(w.load.acked / w.load.elapsedS)} acks/s`, ...lat(w.load.latency), refusedText(w.load), stored.cell, cpuText(w.cpu)]);
  };
  if (r.patiro) webhookRow(`1 service  POST /webhooks/patiro (c=${c})`, r.patiro);
  /** One of two streams run at once: its own acked deliveries found, and the CPU of both. */
  const splitRow = (label: string, w: WebhookResult) => {
    const lost = w.load.acked - w.ackedFound;
    if (lost > 0) alarms.push(`${label}: ${lost} acknowledged deliveries have no row`);
    const found = `${w.ackedFound.toLocaleString('en-US')} / ${w.load.acked.toLocaleString('en-US')} found${lost > 0 ? `  !!! ${lost} LOST` : ''}`;
    rows.push([label, `${num(w.load.acked / w.load.elapsedS)} acks/s`, ...lat(w.load.latency), refusedText(w.load), found, cpuText(w.cpu)]);
  };
  if (r.patiroSplit) {
    const half = Math.max(1, Math.floor(c / 2));
    splitRow(`1b service POST /webhooks/patiro, default source (c=${half} of ${c})`, r.patiroSplit.viaDefault);
    splitRow(`   at once  POST /webhooks/patiro/<database source> (c=${half} of ${c})`, r.patiroSplit.viaSource);
  }
  const loneRow = (label: string, lone: LoadResult) => rows.push([label, `${num(lone.answered / lone.elapsedS)} req/s`, ...lat(lone.latency), refusedText(lone), '', '']);
  if (r.lone) loneRow('  service  a lone request (c=1, sequential)', r.lone);
  if (r.loneUnbatched) loneRow('  service  a lone request, batching off (WRITE_BATCH_MAX_ROWS=1)', r.loneUnbatched);
  const dbRow = (label: string, d: DbLimitResult & { stored: number; cpu: CpuUse }) => {
    const ok = d.stored === d.transactions ? 'ok' : '!!! MISMATCH';
    if (d.stored !== d.transactions) alarms.push(`${label}: ${d.stored} rows stored for ${d.transactions} transactions`);
    rows.push([label, `${num(d.transactions / d.elapsedS)} tx/s`, ...lat(d.latency), `${d.failed} failed`, `${d.stored.toLocaleString('en-US')} / ${d.transactions.toLocaleString('en-US')}  ${ok}`, cpuText(d.cpu)]);
  };
  if (r.dbLimit) dbRow(`2 database limit: ${r.dbLimit.method}, 1 delivery/tx (c=${c})`, r.dbLimit);
  if (r.dbLimitAtPool) dbRow(`  the same at the service's pool size (c=${r.dbLimitAtPool.connections})`, r.dbLimitAtPool);
  const saturated = (label: string, cpu: CpuUse | undefined) => {
    if (cpu && cpu.bench >= 85) alarms.push(`${label}: the load generator used ${Math.round(cpu.bench)}% of a core; the rate may be its limit, not the target's`);
  };
  saturated('1 Patiro', r.patiro?.cpu);
  saturated('3 HTTP limit', r.http?.cpu);
  saturated('4 Physitrack', r.physitrack?.cpu);
  if (r.http) rows.push([`3 HTTP limit: bare Fastify 204, same bodies (c=${c})`, `${num(r.http.load.answered / r.http.load.elapsedS)} req/s`, ...lat(r.http.load.latency), refusedText(r.http.load), '', cpuText(r.http.cpu)]);
  if (r.physitrack) webhookRow(`4 service  POST /webhooks/physitrack (c=${c})`, r.physitrack);
  if (rows.length > 1) {
    out.push(
      `Load phases: ${r.durationS} s each; latency over every answered delivery. CPU in % of one core during the phase: target is the`,
      'process under test (the service; pgbench in 2; the bare server in 3), others is the rest of the machine (other users included).',
      table(rows),
      '',
    );
  }

  const p = r.pipeline;
  const f = r.plain;
  const ff = r.plainToFiles;
  const b = r.byteaLimit;
  if (p || f || ff || b) {
    const prow: string[][] = [['', 'PDFs/s', 'MiB/s', 'time', 'done', 'retries', 'peak RSS (sampled; idle)', 'CPU %: service/postgres/bench/others']];
    if (p) {
      if (p.notDone > 0) alarms.push(`PDF pipeline: ${p.notDone} deliveries did not end done`);
      prow.push([`5 PDF pipeline: ${p.label}`, num(p.done / p.elapsedS), num(p.bytes / MIB / p.elapsedS), `${p.elapsedS.toFixed(2)} s`, `${p.done}/${p.notices.acked}`, String(p.retries),
        `${num(p.peakRss / 1e6)} MB (${num(p.sampledRss / 1e6)}; ${num(p.idleRss / 1e6)})`, cpuText(p.cpu)]);
      if (p.peakSinceStart) alarms.push('the peak RSS could not be restarted for the pipeline: it is the peak since the service started');
    }
    const fetchRow = (label: string, x: PlainFetchResult) => prow.push([label, num(x.files / x.elapsedS), num(x.bytes / MIB / x.elapsedS), `${x.elapsedS.toFixed(2)} s`, `${x.files}/${x.files}`, '', '', '']);
    if (f) fetchRow(`  plain undici fetch, same files, concurrency ${f.concurrency}`, f);
    if (ff) fetchRow(`  plain undici fetch into files (write + fsync + rename), concurrency ${ff.concurrency}`, ff);
    if (b) {
      if (b.stored !== b.files) alarms.push(`database limit for the bytes: ${b.stored} rows stored for ${b.files} INSERTs`);
      prow.push([`  database limit: plain pg INSERT of the same bytes, concurrency ${b.concurrency}`, num(b.files / b.elapsedS), num(b.bytes / MIB / b.elapsedS),
        `${b.elapsedS.toFixed(2)} s`, `${b.stored}/${b.files}`, '', '', `– / ${pct(b.cpu.postgres)} / ${pct(b.cpu.bench)} / ${pct(b.cpu.others)}`]);
    }
    out.push(table(prow), '');
  }

  const phases: [string, CpuUse | undefined][] = [
    ['1', r.patiro?.cpu], ['1b', r.patiroSplit?.viaDefault.cpu], ['2', r.dbLimit?.cpu], ['2 at the pool size', r.dbLimitAtPool?.cpu], ['3', r.http?.cpu], ['4', r.physitrack?.cpu], ['5', p?.cpu], ['5 database limit', b?.cpu],
  ];
  const disturbed = phases.filter((entry): entry is [string, CpuUse] => entry[1] !== undefined && entry[1].others > 20);
  if (disturbed.length > 0) {
    const where = disturbed.map(([phase, cpu]) => `${phase} (${Math.round(cpu.others)}%)`).join(', ');
    alarms.push(`other processes took CPU during phase ${where}: those figures are disturbed; rerun on a quiet machine`);
    const names = [...new Set(disturbed.flatMap(([, cpu]) => cpu.busiestOthers))].slice(0, 5);
    if (names.length > 0) alarms.push(`    busiest of them: ${names.join('; ')}`);
  }

  const targets: string[][] = [];
  const patiroRate = r.patiro ? r.patiro.load.acked / r.patiro.load.elapsedS : Number.NaN;
  if (r.patiro && r.dbLimit) {
    const ratio = patiroRate / (r.dbLimit.transactions / r.dbLimit.elapsedS);
    targets.push(['Patiro acks/s ÷ database one-row-per-transaction rate', `${ratio.toFixed(2)}×`, 'target ≥ 1.0×', verdict(ratio >= 1)]);
  }
  if (r.patiroSplit) {
    const rate = (w: WebhookResult) => w.load.acked / w.load.elapsedS;
    const ratio = rate(r.patiroSplit.viaSource) / rate(r.patiroSplit.viaDefault);
    targets.push(['Patiro acks/s, database source ÷ default source (1b, at once)', `${ratio.toFixed(2)}×`, 'target ≥ 0.9×', verdict(ratio >= 0.9)]);
  }
  if (r.patiro && r.http) targets.push(['Patiro acks/s ÷ HTTP limit', `${(patiroRate / (r.http.load.answered / r.http.load.elapsedS)).toFixed(3)}×`, '', '']);
  if (r.patiro) {
    targets.push(['Patiro p99 at c=' + c, ms(r.patiro.load.latency.p99), 'target ≤ 25 ms', verdict(r.patiro.load.latency.p99 <= 25)]);
    const lost = r.patiro.load.acked - r.patiro.ackedFound;
    targets.push(['Patiro acknowledged but not stored', String(lost), 'target 0', verdict(lost === 0)]);
  }
  if (r.physitrack) {
    const lost = r.physitrack.load.acked - r.physitrack.ackedFound;
    targets.push(['Physitrack acknowledged but not stored', String(lost), 'target 0', verdict(lost === 0)]);
  }
  if (r.lone) targets.push(['a lone Patiro request, p50', ms(r.lone.latency.p50), '', '']);
  if (r.lone && r.loneUnbatched) {
    const cost = r.lone.latency.p50 - r.loneUnbatched.latency.p50;
    const signed = Number.isFinite(cost) ? `${cost >= 0 ? '+' : '−'}${ms(Math.abs(cost))}` : '–';
    targets.push(['a lone Patiro request, p50 with batching − without', signed, 'target ≤ 1 ms', verdict(cost <= 1)]);
  }
  const pipelineRate = p ? p.done / p.elapsedS : Number.NaN;
  if (p && f) {
    const ratio = pipelineRate / (f.files / f.elapsedS);
    targets.push(['PDF pipeline ÷ plain fetch (PDFs/s)', `${ratio.toFixed(2)}×`, 'target ≥ 0.8×', verdict(ratio >= 0.8)]);
  }
  if (p && ff) targets.push(['PDF pipeline ÷ plain fetch into fsynced files', `${(pipelineRate / (ff.files / ff.elapsedS)).toFixed(2)}×`, '', '']);
  if (p && b) targets.push(['PDF pipeline ÷ database limit for the bytes', `${(pipelineRate / (b.files / b.elapsedS)).toFixed(2)}×`, '', '']);
  if (p) targets.push(['service peak RSS during the pipeline (VmHWM)', `${num(p.peakRss / 1e6)} MB`, 'target ≤ 200 MB', verdict(p.peakRss <= 200 * 1e6)]);
  // Only phases that ran have ratios: with --only db,http there may be none at all.
  if (targets.length > 0) out.push('Ratios and targets', table(targets.map((t) => ['  ' + t[0]!, ...t.slice(1)])));
  if (alarms.length > 0) out.push(...(out.at(-1) === '' ? [] : ['']), ...alarms.map((a) => `!!! ${a}`));
  return out.join('\n');
}
