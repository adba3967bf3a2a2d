import type { FastifyInstance } from 'fastify';
import { buildApp } from '../../src/app.js';
import { loadConfig, type Config, type Env } from '../../src/config.js';
import { closeDatabase, createDatabase, type Database } from '../../src/db/client.js';
import { createSourceHealth, type SourceHealth } from '../../src/sources/health.js';
import { createSourceRegistry, type SourceRegistry } from '../../src/sources/registry.js';
import { captureLogs, type CapturedLogs } from './logs.js';

/** The key the test apps seal source credentials with (base64 of 32 bytes). */
export const TEST_SOURCES_KEY = Buffer.alloc(32, 7).toString('base64');

export interface TestApp {
  app: FastifyInstance;
  config: Config;
  db: Database;
  logs: CapturedLogs;
  /** Call reload() after changing the sources table, where the service would hear a NOTIFY. */
  sources: SourceRegistry;
  health: SourceHealth;
  close(): Promise<void>;
}

/** The real app on a real database, configured through the same loadConfig as production. */
export async function buildTestApp(databaseUrl: string, env: Env = {}): Promise<TestApp> {
  const config = loadConfig({ NODE_ENV: 'test', DATABASE_URL: databaseUrl, LOG_LEVEL: 'debug', SOURCES_SECRET_KEY: TEST_SOURCES_KEY, ...env });
  const logs = captureLogs(config.logLevel);
  const db = createDatabase({ url: databaseUrl, poolSize: 4, connectTimeoutMs: 1000 });
  const sources = await createSourceRegistry({ db, config, log: logs.logger });
  const health = createSourceHealth({ db, log: logs.logger });
  const app = await buildApp({ config, db, logger: logs.logger, sources, health });
  await app.ready();
  return {
    app,
    config,
    db,
    logs,
    sources,
    health,
    async close() {
      await app.close();
      await health.stop();
      await sources.close();
      await closeDatabase(db);
    },
  };
}
