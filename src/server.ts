import { randomBytes } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import os from 'node:os';
import type { FastifyInstance } from 'fastify';
import type { Logger } from 'pino';
import type { Agent } from 'undici';
import { buildApp } from './app.js';
import { MIN_SHUTDOWN_AFTER_DRAIN_MS, type Config } from './config.js';
import { closeDatabase, createDatabase, type Database } from './db/client.js';
import { migrateAndReport, resolveDatabase, type ResolvedDatabase } from './db/database-url.js';
import { createDownloadAgent } from './downloads/guarded-fetch.js';
import { createDownloadQueue } from './downloads/queue.js';
import { createDownloadWorker, type DownloadWorker } from './downloads/worker.js';
import { createLifecycle } from './http/lifecycle.js';
import { startMetricsServer } from './http/metrics-route.js';
import { createMetrics, type Metrics } from './metrics.js';
import { startDailyPurge } from './retention-schedule.js';
import { createSourceRegistry, type SourceRegistry } from './sources/registry.js';
import { removeAbandonedUploads } from './storage/abandoned-uploads.js';
import { createStorage } from './storage/pdf-storage.js';

export interface RunningService {
  app: FastifyInstance;
  db: Database;
  worker: DownloadWorker;
  databaseUrl: string;
  embeddedDatabase: boolean;
  /**
   * Drains for SHUTDOWN_DRAIN_MS (still answering, /readyz 503, every answer `Connection: close`),
   * then stops accepting, finishes in-flight requests and downloads (within a bound), and closes
   * the database.
   */
  stop(): Promise<void>;
}

function startWorker(config: Config, db: Database, agent: Agent, logger: Logger, metrics: Metrics | undefined): DownloadWorker {
  const workerId = `${os.hostname()}:${process.pid}:${randomBytes(3).toString('hex')}`;
  const worker = createDownloadWorker({
    queue: createDownloadQueue(db, workerId, config.download.leaseSeconds),
    storage: createStorage(config.storage, db),
    agent,
    policy: { allowedHosts: config.physitrack.fileUrlHosts, allowPrivateAddresses: config.download.allowPrivateAddresses },
    timeoutMs: config.download.timeoutMs,
    maxBytes: config.download.maxBytes,
    retryBaseMs: config.download.retryBaseMs,
    concurrency: config.download.concurrency,
    log: logger.child({ component: 'download-worker', workerId }),
    onAttempt: metrics && ((outcome, seconds, sizeBytes) => metrics.downloadAttempt(outcome, seconds, sizeBytes)),
  });
  worker.start();
  return worker;
}

/** Everything main.ts starts, in order, with each step undone if a later one fails. */
export async function startService(config: Config, logger: Logger): Promise<RunningService> {
  const database: ResolvedDatabase = await resolveDatabase(config, logger);
  let db: Database | undefined;
  let app: FastifyInstance | undefined;
  let worker: DownloadWorker | undefined;
  let metricsServer: FastifyInstance | undefined;
  let retention: { stop(): Promise<void> } | undefined;
  let sources: SourceRegistry | undefined;
  const agent = createDownloadAgent({ allowPrivateAddresses: config.download.allowPrivateAddresses });
  const lifecycle = createLifecycle();
  const stop = async () => {
    // One budget from the moment the shutdown starts: the drain and closing the app (a slow request
    // may take a while) come out of the downloads' grace, not on top of it.
    const deadline = Date.now() + config.shutdownTimeoutMs;
    if (app?.server.listening && config.shutdownDrainMs > 0) {
      lifecycle.draining = true;
      logger.info({ drainMs: config.shutdownDrainMs }, 'draining: still answering, /readyz says 503 and every answer closes its connection');
      await new Promise((resolve) => setTimeout(resolve, config.shutdownDrainMs));
    }
    await app?.close();
    await sources?.close();
    await metricsServer?.close();
    await retention?.stop();
    // Leave a few seconds of the shutdown budget for closing the database after the downloads.
    await worker?.stop(Math.max(deadline - MIN_SHUTDOWN_AFTER_DRAIN_MS - Date.now(), 1000));
    await agent.close();
    if (db) await closeDatabase(db);
    await database.stop();
  };
  try {
    if (database.embedded) logger.info({ psql: `psql "${database.url}"` }, 'using the embedded PostgreSQL (development only)');
    await migrateAndReport(database.url, logger);
    db = createDatabase({ url: database.url, poolSize: config.databasePoolSize, connectTimeoutMs: Math.min(config.ackDeadlineMs, 1000) });
    if (config.storage.kind === 'filesystem') {
      const removed = await removeAbandonedUploads(config.storage.pdfDir, 2 * config.download.leaseSeconds * 1000);
      if (removed > 0) logger.info({ removed }, 'removed temp files of downloads interrupted by an earlier crash');
    }
    sources = await createSourceRegistry({ db, config, log: logger.child({ component: 'sources' }) });
    await sources.listen(database.url);
    const metrics = config.metrics.enabled ? createMetrics(db) : undefined;
    const started = startWorker(config, db, agent, logger, metrics);
    if (config.retentionDays !== undefined) {
      retention = startDailyPurge({ db, retentionDays: config.retentionDays, pdfDir: config.storage.pdfDir, log: logger.child({ component: 'retention' }) });
    }
    worker = started;
    const https = config.tls && { key: await readFile(config.tls.keyFile), cert: await readFile(config.tls.certFile) };
    app = await buildApp({ config, db, logger, metrics, https, sources, lifecycle, onPhysitrackStored: () => started.wake() });
    if (metrics && config.metrics.port !== undefined) metricsServer = await startMetricsServer(metrics, config.host, config.metrics.port, logger);
    await app.listen({ host: config.host, port: config.port });
  } catch (err) {
    await stop().catch((stopErr: unknown) => logger.error({ err: stopErr }, 'cleanup after a failed start failed'));
    throw err;
  }
  return { app, db, worker, databaseUrl: database.url, embeddedDatabase: database.embedded, stop };
}
