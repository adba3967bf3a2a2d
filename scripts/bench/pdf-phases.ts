import { mkdtemp, rm } from 'node:fs/promises';
import path from 'node:path';
import { runByteaLimit } from './bytea-limit.js';
import type { BenchContext } from './context.js';
import { openPool } from './database.js';
import { runPipeline, runPlainFetch } from './pdf-pipeline.js';
import type { Results } from './report.js';

/**
 * Phase 5, the PDF pipeline, and its baselines one after another, each alone on the machine: the
 * same files fetched by plain undici and discarded, the same fetched into fsynced files, and (when
 * the PDFs go to the database) the database taking the same bytes from plain INSERTs.
 */
export async function runPdfPhases(ctx: BenchContext, results: Results): Promise<void> {
  const { o, s } = ctx;
  const mib = (o.pdfBytes / 1024 / 1024).toFixed(2);
  ctx.say(`5: the PDF pipeline, ${o.pdfs} × ${mib} MiB, DOWNLOAD_CONCURRENCY=${o.downloadConcurrency}, PDF_STORAGE=${o.storage}`);
  const pdfUrl = await ctx.server.createDatabase(`bench_${ctx.stamp}_pdf`);
  const pdfService = await ctx.startService('the service (PDF pipeline)', pdfUrl, 'service-pdf');
  try {
    const pipeline = await runPipeline({
      service: pdfService, db: openPool(pdfUrl, ctx.cleanup), fileHost: ctx.fileHost, apiKey: ctx.secrets.physitrack,
      pdfs: o.pdfs, pdfBytes: o.pdfBytes, connections: o.connections, runId: ctx.stamp, signal: s.signal, postmasterPid: s.postmasterPid,
    });
    results.pipeline = { ...pipeline, label: `${o.pdfs} × ${mib} MiB, DOWNLOAD_CONCURRENCY=${o.downloadConcurrency}, ${o.storage}` };
  } finally {
    await pdfService.stop();
  }

  const fetchSpec = { repoRoot: ctx.repoRoot, urlPrefix: ctx.fileHost.pdfUrlPrefix, count: o.pdfs, concurrency: o.downloadConcurrency, certPath: ctx.tls.certPath, signal: s.signal };
  ctx.say(`   plain undici fetch of the same files, concurrency ${o.downloadConcurrency}`);
  results.plain = { ...(await runPlainFetch(fetchSpec)), concurrency: o.downloadConcurrency };

  ctx.say(`   plain undici fetch into fsynced files, concurrency ${o.downloadConcurrency}`);
  // Under tmpDir, so on the same filesystem as the service's PDF_DIR (DATA_DIR/pdf) in the pipeline.
  const intoDir = await mkdtemp(path.join(ctx.tmpDir, 'plain-fetch-files-'));
  try {
    results.plainToFiles = { ...(await runPlainFetch({ ...fetchSpec, intoDir })), concurrency: o.downloadConcurrency };
  } finally {
    await rm(intoDir, { recursive: true, force: true }); // the next baseline needs the disk space more
  }

  if (o.storage !== 'database') return;
  ctx.say(`   the database limit: plain pg INSERT of the same bytes, concurrency ${o.downloadConcurrency}`);
  results.byteaLimit = await runByteaLimit({
    url: await ctx.server.createDatabase(`bench_${ctx.stamp}_bytea`),
    count: o.pdfs, pdfBytes: o.pdfBytes, concurrency: o.downloadConcurrency, postmasterPid: s.postmasterPid, signal: s.signal,
  });
}
