import { parseArgs } from 'node:util';
import dotenv from 'dotenv';
import { loadConfig, type Config } from '../config.js';
import { withDevSecrets } from '../dev-secrets.js';
import { buildPatiroDelivery, buildPhysitrackDelivery, type SampleDelivery } from './sample-deliveries.js';

const USAGE = `Usage: npm run send -- <patiro|physitrack> [--url URL] [--file-url URL]
                    [--source ID (--secret S [--token T] | --api-key K)]

Builds a realistic, correctly signed delivery from the current configuration (.env, environment,
or the development secrets in DATA_DIR) and POSTs it to the running service.

  --url URL        the service's base URL (default http://127.0.0.1:$PORT)
  --file-url URL   physitrack only: the PDF URL to announce (default: Physitrack's documented example)
  --source ID      send to a source from the table (npm run cli -- sources add) instead of the
                   environment's; with its --secret (patiro, and --token if it has one) or --api-key

Exits 0 when the service answers 2xx, 1 otherwise, 2 on a usage error.`;

async function readConfig(): Promise<Config> {
  dotenv.config({ quiet: true });
  const production = process.env.NODE_ENV === 'production';
  return loadConfig(production ? process.env : (await withDevSecrets(process.env)).env);
}

async function main(): Promise<number> {
  const { values, positionals } = parseArgs({
    allowPositionals: true,
    options: {
      url: { type: 'string' },
      'file-url': { type: 'string' },
      source: { type: 'string' },
      secret: { type: 'string' },
      token: { type: 'string' },
      'api-key': { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  const vendor = positionals[0];
  if (values.help) {
    process.stdout.write(`${USAGE}\n`);
    return 0;
  }
  if (vendor !== 'patiro' && vendor !== 'physitrack') {
    process.stderr.write(`${USAGE}\n`);
    return 2;
  }
  const secret = vendor === 'patiro' ? values.secret : values['api-key'];
  if ((values.source === undefined) !== (secret === undefined)) {
    process.stderr.write(`--source needs ${vendor === 'patiro' ? '--secret' : '--api-key'}, and the other way round\n\n${USAGE}\n`);
    return 2;
  }
  const source = values.source === undefined ? undefined : { id: values.source, secret: secret!, token: values.token };
  const config = await readConfig();
  const base = values.url ?? `http://127.0.0.1:${config.port}`;
  let delivery: SampleDelivery;
  try {
    delivery = vendor === 'patiro' ? buildPatiroDelivery(config, new Date(), source) : buildPhysitrackDelivery(config, values['file-url'], new Date(), source);
  } catch (err) {
    process.stderr.write(`${(err as Error).message}\n`);
    return 2;
  }
  const response = await fetch(new URL(delivery.path, base), { method: 'POST', headers: delivery.headers, body: delivery.body });
  const answer = await response.text();
  // The path may carry Patiro's ?token=, a credential: it is not printed.
  const shownPath = delivery.path.replace(/([?&]token=)[^&]*/, '$1[redacted]');
  process.stdout.write(`POST ${shownPath} → ${response.status} ${response.statusText}${answer ? `\n${answer}` : ''}\n`);
  return response.ok ? 0 : 1;
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    process.stderr.write(`send failed: ${(err as Error).message}\n`);
    process.exit(1);
  },
);
