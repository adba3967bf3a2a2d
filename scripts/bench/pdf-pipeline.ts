import { execFile } from 'node:child_process';
import type pg from 'pg';
import type { Child } from './child-process.js';
import { sleep } from './cleanup.js';
import { cpuBetween, cpuSnapshot, type CpuUse } from './cpu.js';
import { createPool, physitrackRequestBuilder } from './deliveries.js';
import type { FileHost } from './file-host.js';
import { runLoad, type LoadResult } from './load.js';

export interface PipelineResult {
  notices: LoadResult;
  done: number;
  /** Rows that ended failed or expired, or were still open when waiting stopped. */
  notDone: number;
  /** Attempts beyond one per delivery. */
  retries: number;
  /** First notice received → last PDF stored, from the rows' own timestamps. */
  elapsedS: number;
  bytes: number;
  idleRss: number;
  /** VmHWM, restarted when the phase began when the kernel allows it (else since the process started). */
  peakRss: number;
  peakSinceStart: boolean;
  /** The largest VmRSS seen by sampling every 50 ms: a cross-check of the peak. */
  sampledRss: number;
  cpu: CpuUse;
}

export interface PlainFetchResult {
  files: number;
  bytes: number;
  elapsedS: number;
}

interface Progress {
  done: number;
  open: number;
  closedOther: number;
  attempts: number;
}

async function progress(db: pg.Pool): Promise<Progress> {
  const { rows } = await db.query<{ status: string; n: string; attempts: string }>(
    'SELECT download_status AS status, count(*) AS n, sum(attempts) AS attempts FROM physitrack_deliveries GROUP BY 1',
  );
  const p: Progress = { done: 0, open: 0, closedOther: 0, attempts: 0 };
  for (const row of rows) {
    const n = Number(row.n);
    p.attempts += Number(row.attempts);
    if (row.status === 'done') p.done += n;
    else if (row.status === 'pending' || row.status === 'downloading') p.open += n;
    else p.closedOther += n;
  }
  return p;
}

/** Waits until every delivery is closed; gives up after 60 s without progress (bounded either way). */
async function waitUntilClosed(db: pg.Pool, expected: number, signal: AbortSignal): Promise<Progress> {
  let last = await progress(db);
  let lastChange = Date.now();
  const hardStop = Date.now() + 30 * 60_000;
  while (last.open > 0 || last.done + last.closedOther < expected) {
    if (Date.now() - lastChange > 60_000 || Date.now() > hardStop) {
      process.stderr.write(`pipeline: no progress for 60 s (${last.done} done, ${last.open} open); giving up waiting\n`);
      break;
    }
    await sleep(100, signal);
    const now = await progress(db);
    if (now.done !== last.done || now.closedOther !== last.closedOther) lastChange = Date.now();
    last = now;
  }
  return last;
}

/**
 * POSTs `pdfs` notices through the real route (at `connections`), each pointing at its own PDF on
 * the local HTTPS host, and waits until the worker has stored all of them. The database is used by
 * this phase alone, so every row in physitrack_deliveries is one of these notices.
 */
export async function runPipeline(opts: {
  service: Child;
  db: pg.Pool;
  fileHost: FileHost;
  apiKey: string;
  pdfs: number;
  pdfBytes: number;
  connections: number;
  runId: string;
  signal: AbortSignal;
  postmasterPid: number | undefined;
}): Promise<PipelineResult> {
  const pool = createPool(physitrackRequestBuilder(opts.apiKey, opts.fileHost.pdfUrl, `${opts.runId}-pdf`));
  pool.prepare(opts.pdfs);
  const idleRss = opts.service.memory().rss;
  const peakSinceStart = !opts.service.resetPeak();
  let sampledRss = idleRss;
  const sampler = setInterval(() => {
    sampledRss = Math.max(sampledRss, opts.service.memory().rss);
  }, 50);
  const pids = { target: opts.service.pid, postmaster: opts.postmasterPid };
  const before = cpuSnapshot(pids);
  const notices = await runLoad({ baseUrl: opts.service.baseUrl, connections: Math.min(opts.connections, opts.pdfs), pool, amount: opts.pdfs, signal: opts.signal });
  const closed = await waitUntilClosed(opts.db, notices.acked, opts.signal).finally(() => clearInterval(sampler));
  const cpu = cpuBetween(before, cpuSnapshot(pids));
  const { rows } = await opts.db.query<{ s: number | null }>(
    "SELECT extract(epoch FROM max(downloaded_at) - min(received_at))::float8 AS s FROM physitrack_deliveries WHERE download_status = 'done'",
  );
  return {
    notices,
    done: closed.done,
    notDone: notices.acked - closed.done,
    retries: closed.attempts - (closed.done + closed.closedOther + closed.open),
    elapsedS: rows[0]?.s ?? Number.NaN,
    bytes: closed.done * opts.pdfBytes,
    idleRss,
    peakRss: opts.service.memory().peak,
    peakSinceStart,
    sampledRss,
    cpu,
  };
}

/**
 * The same files fetched by a plain undici loop in its own process, trusting the same certificate;
 * with `intoDir`, each written there durably (scripts/bench/plain-fetch.ts says how).
 */
export function runPlainFetch(opts: {
  repoRoot: string;
  urlPrefix: string;
  count: number;
  concurrency: number;
  certPath: string;
  intoDir?: string;
  signal: AbortSignal;
}): Promise<PlainFetchResult> {
  const env = { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: process.env.HOME ?? '/tmp', NODE_EXTRA_CA_CERTS: opts.certPath };
  const args = ['--import', 'tsx', 'scripts/bench/plain-fetch.ts', opts.urlPrefix, String(opts.count), String(opts.concurrency), ...(opts.intoDir ? [opts.intoDir] : [])];
  return new Promise((resolve, reject) => {
    execFile(process.execPath, args, { cwd: opts.repoRoot, env, signal: opts.signal, timeout: 30 * 60_000 }, (err, stdout, stderr) => {
      if (err) return reject(new Error(`the plain fetch failed: ${stderr || err.message}`));
      try {
        resolve(JSON.parse(stdout.trim().split('\n').pop() ?? '') as PlainFetchResult);
      } catch {
        reject(new Error(`the plain fetch printed no result: ${stdout}`));
      }
    });
  });
}
