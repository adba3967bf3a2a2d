import dotenv from 'dotenv';
import { pino } from 'pino';
import { ConfigError, loadConfig } from '../config.js';
import { migrateAndReport } from '../db/database-url.js';
import { loggerOptions } from '../logger.js';

/**
 * Applies pending migrations to DATABASE_URL and exits: for running migrations once per rollout
 * (a Kubernetes Job or init container). The service also applies them at start, under the same
 * advisory lock, so running both is safe.
 */
async function main(): Promise<number> {
  dotenv.config({ quiet: true });
  let url: string | undefined;
  try {
    url = loadConfig(process.env).databaseUrl;
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    process.stderr.write(`${err.message}\n`);
    return 2;
  }
  if (!url) {
    process.stderr.write('DATABASE_URL: is required to apply migrations\n');
    return 2;
  }
  // The production logger options: the same redaction as the service, pretty on a terminal.
  await migrateAndReport(url, pino(loggerOptions('info')));
  return 0;
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    process.stderr.write(`migration failed: ${(err as Error).message}\n`);
    process.exit(1);
  },
);
