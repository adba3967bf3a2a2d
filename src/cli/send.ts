import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { parseArgs } from 'node:util';
import dotenv from 'dotenv';
import { loadConfig, type Config } from '../config.js';
import { withDevSecrets } from '../dev-secrets.js';
import { buildPatiroDelivery, buildPhysitrackDelivery, samplePdf, type SampleDelivery } from './sample-deliveries.js';

const USAGE = `Usage: npm run send -- <patiro|physitrack> [--url URL] [--file-url URL]
                    [--source ID (--secret S [--token T] | --api-key K)]

Builds a realistic, correctly signed delivery from the current configuration (.env, environment,
or the development secrets in DATA_DIR) and POSTs it to the running service.

  --url URL        the service's base URL (default http://127.0.0.1:$PORT)
  --file-url URL   physitrack only: the PDF URL to announce. Default outside production: a sample PDF
                   this command serves itself on http://127.0.0.1 (allowed by the development
                   defaults), waiting up to 20 s for the service to download it; in production:
                   Physitrack's documented example
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
  // Outside production the sample notice ends in a downloaded PDF on any machine: served from here.
  const host = vendor === 'physitrack' && values['file-url'] === undefined && !config.isProduction ? await serveSamplePdf() : undefined;
  let delivery: SampleDelivery;
  try {
    delivery = vendor === 'patiro' ? buildPatiroDelivery(config, new Date(), source) : buildPhysitrackDelivery(config, values['file-url'] ?? host?.url, new Date(), source);
  } catch (err) {
    await host?.close();
    process.stderr.write(`${(err as Error).message}\n`);
    return 2;
  }
  const response = await fetch(new URL(delivery.path, base), { method: 'POST', headers: delivery.headers, body: delivery.body });
  const answer = await response.text();
  // The path may carry Patiro's ?token=, a credential: it is not printed.
  const shownPath = delivery.path.replace(/([?&]token=)[^&]*/, '$1[redacted]');
  process.stdout.write(`POST ${shownPath} → ${response.status} ${response.statusText}${answer ? `\n${answer}` : ''}\n`);
  if (host) {
    const fetched = response.ok && (await host.fetched(20_000));
    process.stdout.write(
      fetched
        ? `The service downloaded the sample PDF from ${host.url} (npm run cli -- deliveries list shows it done).\n`
        : `The sample PDF at ${host.url} was not downloaded within 20 s (is the service's download worker running, and PHYSITRACK_FILE_URL_HOSTS left at its development default?).\n`,
    );
    await host.close();
  }
  return response.ok ? 0 : 1;
}

/** A file host on localhost for one sample PDF; `fetched` resolves once it was served whole. */
async function serveSamplePdf(): Promise<{ url: string; fetched(timeoutMs: number): Promise<boolean>; close(): Promise<void> }> {
  const pdf = samplePdf();
  let served!: () => void;
  const done = new Promise<void>((resolve) => (served = resolve));
  const server = http.createServer((request, response) => {
    if (request.url !== '/sample-program.pdf') return void response.writeHead(404).end();
    response.on('finish', served);
    response.writeHead(200, { 'content-type': 'application/pdf', 'content-length': pdf.length }).end(pdf);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}/sample-program.pdf`,
    fetched: (timeoutMs) => Promise.race([done.then(() => true), new Promise<boolean>((resolve) => setTimeout(() => resolve(false), timeoutMs).unref())]),
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    process.stderr.write(`send failed: ${(err as Error).message}\n`);
    process.exit(1);
  },
);
