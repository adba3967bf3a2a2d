import type { FastifyInstance } from 'fastify';
import { buildApp } from '../../src/app.js';
import { loadConfig, type Config, type Env } from '../../src/config.js';
import { createDatabase, type Database } from '../../src/db/client.js';
import { captureLogs, type CapturedLogs } from './logs.js';

export interface TestApp {
  app: FastifyInstance;
  config: Config;
  db: Database;
  logs: CapturedLogs;
  close(): Promise<void>;
}

/** The real app on a real database, configured through the same loadConfig as production. */
export async function buildTestApp(databaseUrl: string, env: Env = {}): Promise<TestApp> {
  const config = loadConfig({ NODE_ENV: 'test', DATABASE_URL: databaseUrl, LOG_LEVEL: 'debug', ...env });
  const logs = captureLogs(config.logLevel);
  const db = createDatabase({ url: databaseUrl, poolSize: 4, connectTimeoutMs: 1000 });
  const app = await buildApp({ config, db, logger: logs.logger });
  await app.ready();
  return {
    app,
    config,
    db,
    logs,
    async close() {
      await app.close();
      await db.$disconnect();
    },
  };
}
