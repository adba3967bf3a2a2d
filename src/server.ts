import { randomBytes } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import os from 'node:os';
import type { FastifyInstance } from 'fastify';
import type { Logger } from 'pino';
import type { Agent } from 'undici';
import type pg from 'pg';
import { API_POOL_SIZE, buildApiApp } from './api/app.js';
import { createWakeup, type Wakeup } from './api/wakeup.js';
import { buildApp } from './app.js';
import { MIN_SHUTDOWN_AFTER_DRAIN_MS, type Config } from './config.js';
import { createAvailability } from './db/availability.js';
import { changesSkipped } from './changes/changes-table.js';
import { closeDatabase, createDatabase, createReadPool, poolOf, reservedPoolOf, type Database } from './db/client.js';
import { resolveDatabase, type ResolvedDatabase } from './db/database-url.js';
import { connectWhenReachable, type Connecting } from './db/connect.js';
import { createDownloadAgent } from './downloads/guarded-fetch.js';
import { createDownloadQueue } from './downloads/queue.js';
import { createDownloadWorker, type DownloadWorker } from './downloads/worker.js';
import { createLifecycle } from './http/lifecycle.js';
import { startMetricsServer } from './http/metrics-route.js';
import { createMetrics, type Metrics } from './metrics.js';
import { startDailyPurge } from './retention-schedule.js';
import { createSourceRegistry, type SourceRegistry } from './sources/registry.js';
import { forgetReplica, type Replica } from './sources/replicas.js';
import { createDurableWrite } from './spool/durable-write.js';
import { createReplayer, type Replayer } from './spool/replayer.js';
import { openSpool, type Spool } from './spool/spool.js';
import { removeAbandonedUploads } from './storage/abandoned-uploads.js';
import { createStorage } from './storage/pdf-storage.js';

export interface RunningService {
  app: FastifyInstance;
  /** The internal API, when API_PORT is set. */
  api: FastifyInstance | undefined;
  db: Database;
  /** The download worker, once PostgreSQL has been reached (it needs the migrated schema). */
  worker(): DownloadWorker | undefined;
  /** Resolves once PostgreSQL was reached and migrated, and everything that needs it started. */
  connected: Promise<void>;
  spool: Spool | undefined;
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
    policy: { allowedHosts: config.physitrack.fileUrlHosts, allowPrivateAddresses: config.download.allowPrivateAddresses, allowHttpLocalhost: config.download.allowHttpLocalhost },
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

async function openSpoolOf(config: Config, logger: Logger): Promise<Spool | undefined> {
  if (!config.spool) {
    logger.warn('the spool is off (SPOOL_DIR is not set): while PostgreSQL is away, every delivery is answered 503');
    return undefined;
  }
  const spool = await openSpool({ dir: config.spool.dir, maxBytes: config.spool.maxBytes, log: logger.child({ component: 'spool' }) });
  const { records, bytes } = spool.journal.stats();
  logger.info({ spool: spool.dir, maxBytes: config.spool.maxBytes, records, bytes }, 'the spool is on: while PostgreSQL is away, verified deliveries are kept here');
  return spool;
}

/**
 * Everything main.ts starts, in order, with each step undone if a later one fails. PostgreSQL
 * need not answer: the service listens (from the spool and the local copy of the sources), and
 * migrates, starts the downloads and replays the spool once it does.
 */
export async function startService(config: Config, logger: Logger): Promise<RunningService> {
  const database: ResolvedDatabase = await resolveDatabase(config, logger);
  let app: FastifyInstance | undefined;
  let worker: DownloadWorker | undefined;
  let metricsServer: FastifyInstance | undefined;
  let api: FastifyInstance | undefined;
  let wakeup: Wakeup | undefined;
  let apiPool: pg.Pool | undefined;
  let retention: { stop(): Promise<void> } | undefined;
  let sources: SourceRegistry | undefined;
  let spool: Spool | undefined;
  let replayer: Replayer | undefined;
  let connecting: Connecting | undefined;
  const agent = createDownloadAgent({ allowPrivateAddresses: config.download.allowPrivateAddresses });
  const lifecycle = createLifecycle();
  const replica: Replica = { id: `${os.hostname()}:${process.pid}:${randomBytes(3).toString('hex')}`, hostname: os.hostname(), pid: process.pid, startedAt: new Date() };
  let migrated = false;
  const db: Database = createDatabase({ url: database.url, poolSize: config.databasePoolSize, connectTimeoutMs: Math.min(config.ackDeadlineMs, 1000) });
  // Up once the schema is migrated and a query answers; a failed write or probe turns it down.
  const availability = createAvailability({ probe: () => reservedPoolOf(db).query('SELECT 1'), ready: () => migrated, initiallyUp: false });
  let stopping = false;
  const stop = async () => {
    stopping = true;
    // One budget from the moment the shutdown starts: the drain and closing the app (a slow request
    // may take a while) come out of the downloads' grace, not on top of it.
    const deadline = Date.now() + config.shutdownTimeoutMs;
    if (app?.server.listening && config.shutdownDrainMs > 0) {
      lifecycle.draining = true;
      logger.info({ drainMs: config.shutdownDrainMs }, 'draining: still answering, /readyz says 503 and every answer closes its connection');
      await new Promise((resolve) => setTimeout(resolve, config.shutdownDrainMs));
    }
    connecting?.stop();
    // Both at once: the API's long polls answer as the webhooks' in-flight requests finish, not after.
    const closed = await Promise.allSettled([app?.close(), api?.close()]);
    for (const c of closed) if (c.status === 'rejected') throw c.reason;
    await wakeup?.close();
    await apiPool?.end();
    availability.stop();
    await replayer?.stop();
    await sources?.close();
    await metricsServer?.close();
    await retention?.stop();
    // Leave a few seconds of the shutdown budget for closing the database after the downloads.
    await worker?.stop(Math.max(deadline - MIN_SHUTDOWN_AFTER_DRAIN_MS - Date.now(), 1000));
    await agent.close();
    if (migrated) await forgetReplica(db, replica.id).catch(() => undefined);
    await closeDatabase(db);
    await spool?.close();
    await database.stop();
  };
  try {
    if (database.embedded) logger.info({ psql: `psql "${database.url}"` }, 'using the embedded PostgreSQL (development only)');
    spool = await openSpoolOf(config, logger);
    if (config.storage.kind === 'filesystem') {
      const removed = await removeAbandonedUploads(config.storage.pdfDir, 2 * config.download.leaseSeconds * 1000);
      if (removed > 0) logger.info({ removed }, 'removed temp files of downloads interrupted by an earlier crash');
    }
    // The first attempt is waited for: with PostgreSQL up, everything is running when this returns.
    connecting = connectWhenReachable(database.url, logger);
    const reachedAtStart = await connecting.first;
    sources = await createSourceRegistry({ db, config, log: logger.child({ component: 'sources' }), localCopy: spool?.sourcesCopy, replica });
    const metrics = config.metrics.enabled ? createMetrics(db, { spool: spool && (() => spool!.journal.stats()), databaseUp: () => availability.up }) : undefined;
    const durable = createDurableWrite({ journal: spool?.journal, availability, ackDeadlineMs: config.ackDeadlineMs, log: logger.child({ component: 'spool' }) });
    const https = config.tls && { key: await readFile(config.tls.keyFile), cert: await readFile(config.tls.certFile) };
    const wake = () => worker?.wake();
    // Fastify names the scheme by its own https option, which a server factory's TLS bypasses.
    const listenText = (address: string) => `Server listening at ${https ? address.replace(/^http:/, 'https:') : address}`;
    app = await buildApp({ config, db, logger, metrics, https, sources, lifecycle, availability, durable, journal: spool?.journal, onPhysitrackStored: wake });
    if (metrics && config.metrics.port !== undefined) metricsServer = await startMetricsServer(metrics, config.host, config.metrics.port, logger);
    if (config.api) {
      wakeup = createWakeup(database.url, logger.child({ component: 'api' }));
      apiPool = createReadPool(database.url, API_POOL_SIZE, Math.min(config.ackDeadlineMs, 1000));
      api = await buildApiApp({
        db,
        pool: apiPool,
        logger: logger.child({ component: 'api' }),
        storage: createStorage(config.storage, db),
        wakeup,
        requestTimeoutMs: config.requestTimeoutMs,
        maxConnections: config.maxConnections,
        https,
      });
      await api.listen({ host: config.api.host, port: config.api.port, listenTextResolver: listenText });
    }
    if (spool) {
      replayer = createReplayer({
        journal: spool.journal,
        rejectedDir: spool.rejectedDir,
        db,
        availability,
        log: logger.child({ component: 'spool-replay' }),
        onReplayed: metrics && ((vendor, n) => metrics.spoolReplayed(vendor, n)),
        onRejected: metrics && ((n) => metrics.spoolRejected(n)),
        onPhysitrackWritten: wake,
        shouldRun: () => !spool!.lost,
      });
    }

    // What needs the migrated schema starts once PostgreSQL has answered, now or later.
    const whenConnected = async (sourcesRead: boolean) => {
      // A migration that finished after the shutdown began starts nothing (it would outlive it).
      if (stopping) return;
      migrated = true;
      if (!sourcesRead) await sources!.reload();
      await sources!.listen(database.url);
      if (await changesSkipped(poolOf(db)).catch(() => false)) {
        logger.error('this database has webhook_receiver.bench_skip_changes on (a benchmark switch): writes leave no changes, and the change feed misses them; ALTER DATABASE … RESET webhook_receiver.bench_skip_changes');
      }
      worker = startWorker(config, db, agent, logger, metrics);
      if (config.retentionDays !== undefined) {
        retention = startDailyPurge({ db: db, retentionDays: config.retentionDays, pdfDir: config.storage.pdfDir, log: logger.child({ component: 'retention' }) });
      }
      availability.reportAvailable();
      replayer?.start();
    };
    if (reachedAtStart) await whenConnected(true);
    else {
      logger.warn({ spool: spool?.dir ?? null }, 'PostgreSQL cannot be reached: listening anyway; migrations, downloads and the replay of the spool start when it answers');
    }
    await app.listen({ host: config.host, port: config.port, listenTextResolver: listenText });
    // Rejects when a migration fails once PostgreSQL answers (main.ts then stops the service).
    const connected = reachedAtStart ? Promise.resolve() : connecting.done.then(() => whenConnected(false));
    connected.catch(() => undefined);
    return { app, api, db, worker: () => worker, connected, spool, databaseUrl: database.url, embeddedDatabase: database.embedded, stop };
  } catch (err) {
    await stop().catch((stopErr: unknown) => logger.error({ err: stopErr }, 'cleanup after a failed start failed'));
    throw err;
  }
}
