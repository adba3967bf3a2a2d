import { randomUUID } from 'node:crypto';
import type { Config } from '../config.js';
import { patiroSignature } from '../webhooks/patiro-signature.js';

export interface SampleDelivery {
  path: string;
  headers: Record<string, string>;
  body: string;
}

/** A source from the table, addressed by id with the credentials `sources add` printed. */
export interface TableSource {
  id: string;
  /** The Patiro signing secret or the Physitrack api key. */
  secret: string;
  /** Patiro: the ?token= of a source made --with-token. */
  token?: string | undefined;
}

/** The environment's Patiro protections, or a table source's. */
function patiroCredentials(config: Config, source: TableSource | undefined) {
  if (source) return { signingSecrets: [source.secret], token: source.token, basicAuth: undefined, path: `/webhooks/patiro/${source.id}` };
  return { ...config.patiro, path: '/webhooks/patiro' };
}

/** A PatientUpdated event signed as Patiro signs it, with every protection the config (or source) enables. */
export function buildPatiroDelivery(config: Config, now = new Date(), source?: TableSource): SampleDelivery {
  const { signingSecrets, token, basicAuth, path: basePath } = patiroCredentials(config, source);
  if (signingSecrets.length === 0 && !token && !basicAuth) {
    throw new Error('Patiro is not configured: set PATIRO_SIGNING_SECRET, PATIRO_TOKEN or PATIRO_BASIC_AUTH, or give --source and --secret.');
  }
  const body = JSON.stringify(
    {
      eventId: randomUUID(),
      eventType: 'PatientUpdated',
      timestamp: now.toISOString().replace('Z', '').replace(/(\.\d{3})$/, (ms) => `${ms}0000`),
      data: { id: 'sample-patient-1', firstName: 'Sam', lastName: 'Sample', dateOfBirth: '1980-01-01' },
    },
    null,
    2,
  );
  const timestamp = String(now.getTime());
  const headers: Record<string, string> = { 'content-type': 'application/json', 'x-patiro-timestamp': timestamp };
  if (signingSecrets[0]) headers['x-patiro-hmacsha256'] = patiroSignature(signingSecrets[0], timestamp, Buffer.from(body));
  if (basicAuth) headers.authorization = `Basic ${Buffer.from(basicAuth).toString('base64')}`;
  const path = token ? `${basePath}?token=${encodeURIComponent(token)}` : basePath;
  return { path, headers, body };
}

export const DOCUMENTED_FILE_URL = 'https://staging.physitrack.com/integrations/your_ehr/programs/pqokji.pdf';

/** A program-ready notice as Physitrack's document describes it. */
export function buildPhysitrackDelivery(config: Config, fileUrl = DOCUMENTED_FILE_URL, now = new Date(), source?: TableSource): SampleDelivery {
  const apiKey = source?.secret ?? config.physitrack.apiKeys[0];
  if (!apiKey) throw new Error('Physitrack is not configured: set PHYSITRACK_API_KEY, or give --source and --api-key.');
  const body = JSON.stringify({
    api_key: apiKey,
    token: config.physitrack.tokens?.[0] ?? 'sample-practitioner-token',
    patient_id: 'sample-patient-1',
    file_url: fileUrl,
    name: 'Knee Rehab Program',
    date: now.toISOString().slice(0, 10),
    date_iso: now.toISOString().replace(/\.\d{3}Z$/, 'Z'),
    updated: false,
  });
  return { path: source ? `/webhooks/physitrack/${source.id}` : '/webhooks/physitrack', headers: { 'content-type': 'application/json' }, body };
}

/**
 * A one-page PDF of the sample program, as a local file host serves it in development: readable,
 * small, and a new one each time (its creation time differs), so every sample is a new document.
 */
export function samplePdf(now = new Date()): Buffer {
  const text = `Sample exercise program, ${now.toISOString()}`;
  const stream = `BT /F1 18 Tf 72 720 Td (${text}) Tj ET`;
  const objects = [
    '<< /Type /Catalog /Pages 2 0 R >>',
    '<< /Type /Pages /Kids [3 0 R] /Count 1 >>',
    '<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R /Resources << /Font << /F1 5 0 R >> >> >>',
    `<< /Length ${stream.length} >>\nstream\n${stream}\nendstream`,
    '<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>',
  ];
  let body = '%PDF-1.4\n';
  const offsets: number[] = [];
  objects.forEach((object, i) => {
    offsets.push(body.length);
    body += `${i + 1} 0 obj\n${object}\nendobj\n`;
  });
  const xref = body.length;
  body += `xref\n0 ${objects.length + 1}\n0000000000 65535 f \n${offsets.map((o) => `${String(o).padStart(10, '0')} 00000 n \n`).join('')}`;
  body += `trailer\n<< /Size ${objects.length + 1} /Root 1 0 R >>\nstartxref\n${xref}\n%%EOF\n`;
  return Buffer.from(body, 'latin1');
}
