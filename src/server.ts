import type { FastifyInstance } from 'fastify';
import type { Logger } from 'pino';
import { buildApp } from './app.js';
import type { Config } from './config.js';
import { createDatabase, type Database } from './db/client.js';
import { migrateAndReport, resolveDatabase, type ResolvedDatabase } from './db/database-url.js';

export interface RunningService {
  app: FastifyInstance;
  db: Database;
  databaseUrl: string;
  embeddedDatabase: boolean;
  /** Stops accepting, lets in-flight requests finish, then closes the database (and the embedded server). */
  stop(): Promise<void>;
}

/** Everything main.ts starts, in order, with each step undone if a later one fails. */
export async function startService(config: Config, logger: Logger): Promise<RunningService> {
  const database: ResolvedDatabase = await resolveDatabase(config, logger);
  let db: Database | undefined;
  let app: FastifyInstance | undefined;
  const stop = async () => {
    await app?.close();
    await db?.$disconnect();
    await database.stop();
  };
  try {
    if (database.embedded) logger.info({ psql: `psql "${database.url}"` }, 'using the embedded PostgreSQL (development only)');
    await migrateAndReport(database.url, logger);
    db = createDatabase({ url: database.url, poolSize: config.databasePoolSize, connectTimeoutMs: Math.min(config.ackDeadlineMs, 1000) });
    app = await buildApp({ config, db, logger });
    await app.listen({ host: config.host, port: config.port });
  } catch (err) {
    await stop().catch((stopErr: unknown) => logger.error({ err: stopErr }, 'cleanup after a failed start failed'));
    throw err;
  }
  return { app, db, databaseUrl: database.url, embeddedDatabase: database.embedded, stop };
}
