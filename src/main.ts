import dotenv from 'dotenv';
import { pino } from 'pino';
import { ConfigError, loadConfig, type Config } from './config.js';
import { withDevSecrets, type DevSecrets } from './dev-secrets.js';
import { loggerOptions } from './logger.js';
import { startService, type RunningService } from './server.js';

async function readConfig(): Promise<{ config: Config; devSecrets: DevSecrets['used'] }> {
  dotenv.config({ quiet: true });
  const production = process.env.NODE_ENV === 'production';
  const { env, used } = production ? { env: process.env, used: {} } : await withDevSecrets(process.env);
  return { config: loadConfig(env), devSecrets: used };
}

function printBanner(service: RunningService, config: Config, devSecrets: DevSecrets['used']): void {
  const address = service.app.server.address();
  const port = typeof address === 'object' && address ? address.port : config.port;
  const base = `${config.tls ? 'https' : 'http'}://${config.host === '0.0.0.0' ? '127.0.0.1' : config.host}:${port}`;
  const lines = [`Webhook receiver listening on ${base}`, `  ready:      ${base}/readyz`];
  const apiAddress = service.api?.server.address();
  if (apiAddress && typeof apiAddress === 'object') lines.push(`  internal API (change feed, PDFs): ${config.tls ? 'https' : 'http'}://${config.api!.host === '0.0.0.0' ? '127.0.0.1' : config.api!.host}:${apiAddress.port}/v1/changes`);
  if (Object.keys(devSecrets).length > 0) {
    lines.push('  development secrets (generated once, kept in DATA_DIR/dev-secrets.json; never used in production):');
    for (const [name, value] of Object.entries(devSecrets)) lines.push(`    ${name}=${value}`);
  }
  // A banner for the developer at the terminal, deliberately outside the JSON log stream.
  process.stderr.write(`${lines.join('\n')}\n`);
}

async function main(): Promise<void> {
  let config: Config;
  let devSecrets: DevSecrets['used'];
  try {
    ({ config, devSecrets } = await readConfig());
  } catch (err) {
    process.stderr.write(`${err instanceof ConfigError ? err.message : String(err)}\n`);
    process.exit(1);
  }
  const logger = pino(loggerOptions(config.logLevel));
  let service: RunningService;
  try {
    service = await startService(config, logger);
  } catch (err) {
    logger.fatal({ err }, 'the service could not start');
    process.exit(1);
  }
  if (!config.isProduction) printBanner(service, config, devSecrets);

  let stopping = false;
  const shutdown = (signal: string) => {
    if (stopping) return;
    stopping = true;
    logger.info({ signal }, 'shutting down');
    const force = setTimeout(() => {
      logger.error({ timeoutMs: config.shutdownTimeoutMs }, 'shutdown took too long; exiting');
      process.exit(1);
    }, config.shutdownTimeoutMs);
    force.unref();
    service.stop().then(
      () => {
        logger.info('stopped');
        process.exit(process.exitCode ?? 0);
      },
      (err: unknown) => {
        logger.error({ err }, 'shutdown failed');
        process.exit(1);
      },
    );
  };
  process.on('SIGTERM', () => shutdown('SIGTERM'));
  process.on('SIGINT', () => shutdown('SIGINT'));
  // Started without PostgreSQL, and then a migration failed once it answered: the operator must act.
  service.connected.catch((err: unknown) => {
    logger.fatal({ err }, 'the database schema could not be migrated; stopping');
    process.exitCode = 1;
    shutdown('migration failure');
  });
}

void main();
