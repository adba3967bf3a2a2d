import { ConfigError, loadConfig } from '../config.js';
import { checkHealth, healthTarget } from '../http/health-probe.js';

/**
 * The container's HEALTHCHECK: exits 0 when the service answers /healthz where its configuration
 * says it listens, 1 otherwise (a configuration the service could not start with included).
 */
async function main(): Promise<number> {
  try {
    return (await checkHealth(healthTarget(loadConfig(process.env)))) ? 0 : 1;
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    process.stderr.write(`${err.message}\n`);
    return 1;
  }
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    process.stderr.write(`health check failed: ${(err as Error).message}\n`);
    process.exit(1);
  },
);
