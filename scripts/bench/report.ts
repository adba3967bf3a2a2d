import type { ChangesResults, ChangesVendor } from './changes.js';
import type { CpuUse } from './processes.js';
import type { ByteaResult, DbResult } from './database.js';
import type { LoadResult } from './load.js';
import type { BenchOptions } from './options.js';
import type { FetchResult, PipelineResult } from './phases.js';
import type { SpoolResults, SpoolVendor } from './spool.js';

/** `stored`: rows the table gained during the run; `ackedFound`: acked deliveries whose row is there. */
export type WebhookResult = { load: LoadResult; stored: number; ackedFound: number; cpu: CpuUse };

// Filled phase by phase: `patiroSplit` is 1b (half the connections to the default source, half to one from the table, at once), `singleRow`
// and `wholeStatement` are 2 and 2b, `toFiles` and `byteaLimit` the PDF pipeline's durable baselines, `spool` phases 6–8, `changes` 9 and 10.
export type Results = { header: string[]; o: BenchOptions; patiro?: WebhookResult; patiroSplit?: { viaDefault: WebhookResult; viaSource: WebhookResult };
  lone?: LoadResult; loneUnbatched?: LoadResult; singleRow?: DbResult; wholeStatement?: DbResult; http?: { load: LoadResult; cpu: CpuUse }; physitrack?: WebhookResult;
  pipeline?: PipelineResult; toFiles?: FetchResult; byteaLimit?: ByteaResult; spool?: SpoolResults; changes?: ChangesResults };

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

/** CPU µs per delivery (transaction, request, PDF), the target '–' when it ran inside this process, then each side's % of a core.
 *  `postgresCount`: the deliveries PostgreSQL served meanwhile, when other targets were loaded at the same time. */
function cpuCells(phase: string, cpu: CpuUse, count: number, alarms: string[], hasTarget = true, postgresCount = count): string[] {
  if (share(cpu, cpu.others) > 20) alarms.push(`${phase}: other processes took ${share(cpu, cpu.others)}% of a core; the figures are disturbed`);
  if (share(cpu, cpu.bench) >= 85) alarms.push(`${phase}: the load generator used ${share(cpu, cpu.bench)}% of a core; the rate may be its limit`);
  return [`${hasTarget ? num((cpu.target * 1e6) / count) : '–'} / ${num((cpu.postgres * 1e6) / postgresCount)}`, [cpu.target, cpu.postgres, cpu.bench, cpu.others].map((s) => share(cpu, s)).join(' / ')];
}

/** Every acked delivery must be stored, and nothing else; in 1b both streams share the table, so each checks its own and CPU is over both. */
function webhookCells(phase: string, w: WebhookResult, alarms: string[], cpuCount = w.load.acked, shared = false, postgresCount = cpuCount): string[] {
  const [lost, stored] = [w.load.acked - w.ackedFound, shared ? w.ackedFound : w.stored];
  if (lost > 0 || stored !== w.load.acked) alarms.push(`${phase}: ${lost > 0 ? `${lost} acknowledged deliveries have no row` : `${stored} rows stored for ${w.load.acked} 2xx answers`}`);
  if (w.load.builtLive > 0) alarms.push(`${phase}: ${w.load.builtLive} deliveries were signed during the run (the prepared ones ran out)`);
  const check = lost > 0 ? `!!! ${lost} LOST` : stored !== w.load.acked ? '!!! MISMATCH' : shared ? 'found' : 'ok';
  return [`${num(rateOf(w.load))} acks/s`, ms(w.load.latency.p50), ms(w.load.latency.p99), ms(w.load.latency.max), refusedText(w.load), `${stored} / ${w.load.acked}  ${check}`,
    ...cpuCells(phase, w.cpu, cpuCount, alarms, true, postgresCount)];
}

function loadTable(r: Results, alarms: string[]): string[] {
  const c = r.o.connections;
  const rows = [['', 'rate', 'p50', 'p99', 'max', 'non-2xx', 'rows stored / 2xx', ...CPU_HEADS]];
  const row = (label: string, rate: string, l: { p50: number; p99: number; max: number }, ...rest: string[]) => rows.push([label, rate, ms(l.p50), ms(l.p99), ms(l.max), ...rest]);
  const webhookRow = (phase: string, label: string, w: WebhookResult, cpuCount = w.load.acked, shared = false) => rows.push([label, ...webhookCells(phase, w, alarms, cpuCount, shared)]);
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

/** Phases 6–8. In 7 the rows are counted after the replay (8), over every 2xx while away, the warm-up's included. */
function spoolTable({ o, spool: s }: Results, alarms: string[]): string[] {
  if (!s) return [];
  const rows = [['', 'rate', 'p50', 'p99', 'max', 'non-2xx', 'rows stored / 2xx', ...CPU_HEADS]];
  for (const h of s.healthy) {
    // At once (round 0), PostgreSQL's CPU served both services: per ack over both.
    const both = h.round === 0 ? s.healthy.filter((x) => x.round === 0 && x.vendor === h.vendor).reduce((n, x) => n + x.w.load.acked, 0) : h.w.load.acked;
    const label = h.round === 0 ? `at once, c=${Math.max(1, Math.floor(o.connections / 2))} each` : `round ${h.round}, c=${o.connections}`;
    rows.push([`6  ${h.vendor}, PostgreSQL up, spool ${h.spool.padEnd(3)} (${label})`, ...webhookCells('6', h.w, alarms, h.w.load.acked, false, both)]);
    if (h.counted !== h.w.load.acked) alarms.push(`6: ${h.vendor}, spool ${h.spool}, round ${h.round}: ${h.w.load.acked} 2xx answers counted ${h.counted} times in the table`);
    if (h.spooled > 0) alarms.push(`6: ${h.vendor}, spool on, round ${h.round}: ${h.spooled} deliveries answered from the spool with PostgreSQL up (a write over its budget); rows counted once replayed`);
  }
  for (const a of s.away) {
    const ok = a.rows === a.acked && a.counted === a.acked && a.total === a.acked;
    if (!ok) alarms.push(`7/8: ${a.vendor}: ${a.acked} acked while away; after the replay ${a.rows} of them have a row, counted ${a.counted} times; the table holds ${a.total}`);
    rows.push([`7  ${a.vendor}, PostgreSQL away: from the spool (c=${o.connections})`, `${num(rateOf(a.load))} acks/s`, ms(a.load.latency.p50), ms(a.load.latency.p99),
      ms(a.load.latency.max), refusedText(a.load), `${a.rows} / ${a.acked}  ${ok ? 'once' : '!!! MISMATCH'}`, ...cpuCells('7', a.cpu, a.load.acked, alarms)]);
  }
  const { disk: d, groups: g, replay: p } = s;
  if (d) rows.push([`7c the disk alone: a ${num(d.bytes / 1024)} KiB group file durable (write, fsync, rename, fsync dir), one at a time`, `${num(d.groups / d.elapsedS)} groups/s`,
    ms(d.latency.p50), ms(d.latency.p99), ms(d.latency.max)]);
  if (p) rows.push([`8  replay: ${p.records} records; PostgreSQL seen up ${p.upAfterS.toFixed(1)} s after the restore, the spool empty after ${p.emptyAfterS.toFixed(1)} s`,
    `${num(p.records / (p.emptyAfterS - (Number.isNaN(p.upAfterS) ? 0 : p.upAfterS)))} records/s`]);
  if (p && !p.empty) alarms.push(`8: the spool did not empty (given up after 60 s without progress)`);
  if (p && (p.replayed !== p.records || p.rejected > 0)) alarms.push(`8: ${p.records} records spooled, ${p.replayed} replayed, ${p.rejected} rejected`);
  if (p && (p.auditRows !== p.acked || p.receipts !== p.acked)) alarms.push(`8: ${p.acked} 2xx answers, ${p.auditRows} audit rows with ${p.receipts} distinct receipts`);
  for (const vendor of new Set(s.healthy.map((h) => h.vendor))) {
    const [off, on] = healthyRates(s, vendor).postgresCpu;
    if (Math.max(off, on) > 2 * Math.min(off, on)) alarms.push(`6: ${vendor}: PostgreSQL spent ${num(off * 1e6)} µs per ack for the service with the spool off, `
      + `${num(on * 1e6)} µs for the one with it on: their databases differ (a plan?), so on ÷ off measures more than the spool`);
  }
  return ['Spool (issue 19): 6 the same service with SPOOL_DIR unset and set, each on its own database, in turns; 7 a third one, its PostgreSQL behind a',
    'TCP proxy that refuses: rows counted after the replay, over every 2xx while away (warm-up included); 8 the proxy restored, nothing else running.',
    table(rows), ...(g && g.files > 0 ? [`   7 wrote ${g.files} group files in its measured windows: ${num(g.records / g.files)} records each, one every ${ms((1000 * g.windowS) / g.files)}`] : []),
    ''];
}

/** Phase 6 by vendor and setting: mean rates, on ÷ off round by round, and CPU per ack over all rounds (the service's, PostgreSQL's); then at once. */
function healthyRates(s: SpoolResults, vendor: SpoolVendor) {
  const of = (spool: 'off' | 'on', atOnce = false) => s.healthy.filter((h) => h.vendor === vendor && h.spool === spool && (h.round === 0) === atOnce).map((h) => h.w);
  const [offAtOnce, onAtOnce] = [of('off', true)[0], of('on', true)[0]];
  const [off, on] = [of('off'), of('on')];
  const mean = (ws: WebhookResult[]) => ws.reduce((sum, w) => sum + rateOf(w.load), 0) / ws.length;
  const cpu = (ws: WebhookResult[], side: 'target' | 'postgres') => ws.reduce((sum, w) => sum + w.cpu[side], 0) / ws.reduce((sum, w) => sum + w.load.acked, 0);
  return { off: mean(off), on: mean(on), byRound: on.map((w, i) => times(rateOf(w.load), rateOf(off[i]!.load))),
    serviceCpu: times(cpu(on, 'target'), cpu(off, 'target')), postgresCpu: [cpu(off, 'postgres'), cpu(on, 'postgres')] as const,
    atOnce: offAtOnce && onAtOnce && { rate: times(rateOf(onAtOnce.load), rateOf(offAtOnce.load)), serviceCpu: times(cpu([onAtOnce], 'target'), cpu([offAtOnce], 'target')) } };
}

const sum = (counts: Record<string, number>) => Object.values(counts).reduce((n, c) => n + c, 0);
const int = (n: number) => Math.round(n).toLocaleString('en-US');

/** Phases 9 and 10: the cost of the change rows on the ack path, and the feed read while the service is loaded. */
function changesTable({ o, changes: c }: Results, alarms: string[]): string[] {
  if (!c) return [];
  const rows = [['', 'rate', 'p50', 'p99', 'max', 'non-2xx', 'rows stored / 2xx', ...CPU_HEADS, 'change rows per ack']];
  for (const t of c.cost) {
    rows.push([`9  ${t.vendor}, change rows ${t.changes.padEnd(3)} (round ${t.round}, c=${o.connections})`, ...webhookCells('9', t.w, alarms), num(sum(t.changeRows) / t.w.load.acked)]);
    if (t.changes === 'off' && sum(t.changeRows) > 0) alarms.push(`9: ${t.vendor}, round ${t.round}: ${sum(t.changeRows)} change rows written with the switch set`);
    if (t.changes === 'on' && sum(t.changeRows) < t.w.load.acked) alarms.push(`9: ${t.vendor}, round ${t.round}: ${sum(t.changeRows)} change rows for ${t.w.load.acked} acks`);
  }
  const feedRows = [['', 'acks/s', 'p50', 'p99', 'non-2xx', 'changes written/s', 'read/s', 'unread at the load\'s end', 'caught up after', ...CPU_HEADS]];
  for (const f of c.feed) {
    const written = f.written / f.load.elapsedS;
    feedRows.push([`10 ${f.vendor} at c=${o.connections}, two readers meanwhile`, num(rateOf(f.load)), ms(f.load.latency.p50), ms(f.load.latency.p99), refusedText(f.load),
      num(written), '', '', '', ...cpuCells('10', f.cpu, f.load.acked, alarms)]);
    for (const r of f.readers) {
      feedRows.push([`     reader ${r.name}`, '', '', '', '', '', num(r.readInWindow / f.load.elapsedS), `${int(r.lagAtStop)}${r.lagAtStop > 0 ? ` (${ms((1000 * r.lagAtStop) / written)} of writes)` : ''}`,
        Number.isNaN(r.caughtUpAfterS) ? '!!! not in 120 s' : `${r.caughtUpAfterS.toFixed(2)} s`]);
      if (Number.isNaN(r.caughtUpAfterS)) alarms.push(`10: ${f.vendor}: the reader ${r.name} did not reach the head within 120 s of the load's end`);
      if (r.errors > 0) alarms.push(`10: ${f.vendor}: the reader ${r.name} met ${r.errors} errors`);
    }
  }
  const lines = ['Change feed (issue 21): 9 the same service on two databases, one with webhook_receiver.bench_skip_changes = on (the same statements',
    'without change rows), in turns, after a few seconds of filling and an ANALYZE; change rows per ack counted in the measured window. 10 one service',
    'as shipped, filled and analyzed likewise, loaded while two readers page through the feed from the head (500 rows a page): unread = visible',
    'changes not yet read as the load ends, caught up = from then until the reader reaches the head of that moment.',
    table(rows)];
  for (const vendor of new Set(c.cost.map((t) => t.vendor))) {
    const on = c.cost.filter((t) => t.vendor === vendor && t.changes === 'on');
    const kinds = new Map<string, number>();
    for (const t of on) for (const [kind, n] of Object.entries(t.changeRows)) kinds.set(kind, (kinds.get(kind) ?? 0) + n);
    const acked = on.reduce((n, t) => n + t.w.load.acked, 0);
    lines.push(`   9 ${vendor}, change rows on, per ack by kind: ${[...kinds].map(([kind, n]) => `${kind} ${num(n / acked)}`).join(', ') || 'none'}`);
    const [off, onCpu] = costRates(c, vendor).postgresCpu;
    if (Math.max(off, onCpu) > 2 * Math.min(off, onCpu)) alarms.push(`9: ${vendor}: PostgreSQL spent ${num(off * 1e6)} µs per ack without change rows, ${num(onCpu * 1e6)} µs with them: `
      + 'more than the change rows can cost; their databases differ (a plan?)');
  }
  if (c.totals) {
    lines.push(`   9 afterwards, rows in changes: ${int(c.totals.off)} in the database with the switch (a new connection reads it as '${c.totals.setting}'), ${int(c.totals.on)} in the other`);
    if (c.totals.off !== 0 || c.totals.setting !== 'on') alarms.push(`9: the database with the switch holds ${c.totals.off} change rows (setting '${c.totals.setting}'): the switch did not work`);
  }
  if (c.feed.length > 0) lines.push('', table(feedRows));
  for (const k of c.check ?? []) {
    const once = k.reads === k.distinct && k.missing === 0 && k.unknown === 0 && k.distinct >= k.due;
    lines.push(`   10 reader ${k.name}: ${int(k.distinct)} distinct ids in ${int(k.reads)} rows read; of the ${int(k.due)} changes from its start to the head, ${k.missing} missing; `
      + `${k.unknown} ids not in the table  ${once ? 'once' : '!!! NOT ONCE'}`);
    if (!once) alarms.push(`10: reader ${k.name}: ${k.reads} rows read, ${k.distinct} distinct, ${k.missing} of ${k.due} changes missing, ${k.unknown} unknown ids`);
  }
  for (const b of c.backlog ?? []) {
    lines.push(`   10 a new reader ${b.name}, with no load: ${int(b.changes)} changes from the feed's start in ${b.seconds.toFixed(1)} s, ${int(b.changes / b.seconds)} a second`);
    if (Number.isNaN(b.seconds)) alarms.push(`10: a new reader ${b.name} did not reach the head within 600 s`);
  }
  for (const l of c.logs) {
    if (l.warnings > 0 || l.errors > 0 || l.expected > 0) {
      lines.push(`   ${l.service}: ${l.errors} errors, ${l.warnings} warnings logged${l.expected > 0 ? ` (and ${l.expected} error the switch is meant to log)` : ''}${l.first ? `; the first error: ${l.first}` : ''}`);
    }
    if (l.errors > 0) alarms.push(`${l.service}: ${l.errors} errors logged; the first: ${l.first ?? '?'}`);
  }
  return [...lines, ''];
}

/** Phase 9 by vendor and setting: mean rates, on ÷ off round by round, and CPU per ack over all rounds (the service's, PostgreSQL's). */
function costRates(c: ChangesResults, vendor: ChangesVendor) {
  const of = (changes: 'off' | 'on') => c.cost.filter((t) => t.vendor === vendor && t.changes === changes).sort((a, b) => a.round - b.round).map((t) => t.w);
  const [off, on] = [of('off'), of('on')];
  const mean = (ws: WebhookResult[]) => ws.reduce((n, w) => n + rateOf(w.load), 0) / ws.length;
  const cpu = (ws: WebhookResult[], side: 'target' | 'postgres') => ws.reduce((n, w) => n + w.cpu[side], 0) / ws.reduce((n, w) => n + w.load.acked, 0);
  const p = (ws: WebhookResult[], q: 'p50' | 'p99') => ws.reduce((n, w) => n + w.load.latency[q], 0) / ws.length;
  return { off: mean(off), on: mean(on), byRound: on.map((w, i) => times(rateOf(w.load), rateOf(off[i]!.load))),
    serviceCpu: [cpu(off, 'target'), cpu(on, 'target')] as const, postgresCpu: [cpu(off, 'postgres'), cpu(on, 'postgres')] as const,
    latency: { off: [p(off, 'p50'), p(off, 'p99')], on: [p(on, 'p50'), p(on, 'p99')] } };
}

function changesTargets({ changes: c }: Results, target: (label: string, value: string, goal?: string, ok?: boolean) => void): void {
  for (const vendor of c?.cost.length ? (['Patiro', 'Physitrack'] as const) : []) {
    const k = costRates(c!, vendor);
    if (!Number.isFinite(k.on) || !Number.isFinite(k.off)) continue;
    target(`${vendor} acks/s, change rows on ÷ off (9, mean of rounds; by round)`, `${times(k.on, k.off)} (${k.byRound.join(', ')})`, 'target ≥ 0.9×', k.on >= 0.9 * k.off);
    target(`${vendor} CPU µs per ack, change rows off → on (9, all rounds): service; PostgreSQL`,
      `${num(k.serviceCpu[0] * 1e6)} → ${num(k.serviceCpu[1] * 1e6)} (${times(k.serviceCpu[1], k.serviceCpu[0])}); ${num(k.postgresCpu[0] * 1e6)} → ${num(k.postgresCpu[1] * 1e6)} (${times(k.postgresCpu[1], k.postgresCpu[0])})`);
    target(`${vendor} p50 / p99, change rows off → on (9, mean of rounds)`, `${ms(k.latency.off[0]!)} / ${ms(k.latency.off[1]!)} → ${ms(k.latency.on[0]!)} / ${ms(k.latency.on[1]!)}`);
    const feed = c!.feed.find((f) => f.vendor === vendor);
    if (feed) target(`${vendor} acks/s with the feed read ÷ change rows on (10 ÷ 9, mean of rounds)`, times(rateOf(feed.load), k.on));
  }
  for (const k of c?.check ?? []) {
    target(`every change read once: ${k.name} (10)`, `${k.distinct} / ${k.reads} / ${k.due}`, 'target distinct = reads = due', k.reads === k.distinct && k.missing === 0 && k.unknown === 0 && k.distinct >= k.due);
  }
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
  for (const vendor of r.spool?.healthy.length ? (['Patiro', 'Physitrack'] as const) : []) {
    const healthy = healthyRates(r.spool!, vendor);
    target(`${vendor} acks/s with PostgreSQL up, spool on ÷ off (6, mean of rounds; by round)`, `${times(healthy.on, healthy.off)} (${healthy.byRound.join(', ')})`);
    target(`${vendor} service CPU per ack with PostgreSQL up, spool on ÷ off (6, all rounds)`, healthy.serviceCpu);
    if (healthy.atOnce) target(`${vendor} with PostgreSQL up, spool on ÷ off, the two at once (6): acks/s; service CPU per ack`, `${healthy.atOnce.rate}; ${healthy.atOnce.serviceCpu}`);
    const away = r.spool!.away.find((a) => a.vendor === vendor);
    if (away) target(`${vendor} acks/s with PostgreSQL away ÷ up, spool on (7 ÷ 6)`, times(rateOf(away.load), healthy.on), 'target ≥ 0.5×', rateOf(away.load) >= 0.5 * healthy.on);
  }
  changesTargets(r, target);
  const replay = r.spool?.replay;
  if (replay) {
    const once = r.spool!.away.every((a) => a.rows === a.acked && a.counted === a.acked && a.total === a.acked);
    target('acked while away, then in their table once (8)', r.spool!.away.map((a) => `${a.vendor} ${a.rows}/${a.acked}`).join(', '), 'target all, once', once);
    target('audit rows / distinct receipts / 2xx answers of the service (8)', `${replay.auditRows} / ${replay.receipts} / ${replay.acked}`, 'target equal',
      replay.auditRows === replay.acked && replay.receipts === replay.acked);
  }
  // Only phases that ran have ratios: with --only db,http there may be none at all.
  return targets.length > 0 ? ['Ratios and targets', table(targets)] : [];
}

export function formatReport(r: Results): string {
  const alarms: string[] = [];
  const out = [...r.header, '', ...loadTable(r, alarms), ...spoolTable(r, alarms), ...pdfTable(r, alarms), ...changesTable(r, alarms), ...targetTable(r)];
  if (alarms.length > 0) out.push(...(out.at(-1) === '' ? [] : ['']), ...[...new Set(alarms)].map((a) => `!!! ${a}`));
  return out.join('\n');
}
