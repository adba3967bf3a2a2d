import { readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TEST_SOURCES_KEY } from '../helpers/app.js';
import { PATIRO_SECRET } from '../helpers/patiro.js';
import { PHYSITRACK_KEY } from '../helpers/physitrack.js';
import { isAcknowledged, sendPatiro, sendPhysitrack, summarise, type Outcome } from './senders.js';
import { checkStoredOnce, filesUnder, journalRecords, pdfUrls, startFaultRig, waitReplayed, type FaultRig } from './spool-helpers.js';

// Nothing that authenticates a delivery is ever written to the spool directory: not a signing
// secret, an API key, a ?token=, a basic-auth password, nor a signature, and not the key that seals
// the sources' credentials. Deliveries use every kind of credential (the environment's Patiro
// source requires a signature, a token and basic auth), PostgreSQL is away so they are spooled,
// one record is damaged on disk (set aside in rejected/ by the replay), and every file under
// SPOOL_DIR is searched, during the outage and after the replay.

const PATIRO_TOKEN = 'patiro-env-token-5c1e0a9b7d3f';
const BASIC_USER = 'patiro-clinic';
const BASIC_PASSWORD = 'basic-auth-password-8e2d4b6a';

let rig: FaultRig;

beforeAll(async () => {
  rig = await startFaultRig({
    spool: 'secrets',
    tableSources: { patiroToken: true },
    env: { SOURCES_SECRET_KEY: TEST_SOURCES_KEY, PATIRO_TOKEN, PATIRO_BASIC_AUTH: `${BASIC_USER}:${BASIC_PASSWORD}` },
  });
});
afterAll(() => rig?.close());

/** Each secret value, by name, in every form a careless write could give it. */
function secretValues(outcomes: Outcome[]): Map<string, string | Buffer> {
  const { sources } = rig;
  const sealingKey = Buffer.from(TEST_SOURCES_KEY, 'base64');
  const values = new Map<string, string | Buffer>([
    ['PATIRO_SIGNING_SECRET', PATIRO_SECRET],
    ['PATIRO_TOKEN', PATIRO_TOKEN],
    ['PATIRO_BASIC_AUTH password', BASIC_PASSWORD],
    ['PATIRO_BASIC_AUTH header value', Buffer.from(`${BASIC_USER}:${BASIC_PASSWORD}`).toString('base64')],
    ['PHYSITRACK_API_KEY', PHYSITRACK_KEY],
    ['table Patiro signing secret', sources.patiro.secret],
    ['table Patiro token', sources.patiro.token!],
    ['table Physitrack api key', sources.physitrack.apiKey],
    ['SOURCES_SECRET_KEY', TEST_SOURCES_KEY],
    ['SOURCES_SECRET_KEY (raw)', sealingKey],
    ['SOURCES_SECRET_KEY (hex)', sealingKey.toString('hex')],
  ]);
  for (const o of outcomes) if (o.signature) values.set(`signature of ${o.id}`, o.signature);
  return values;
}

/** `file: secret name` for every secret found in any file under SPOOL_DIR. */
async function secretsOnDisk(values: Map<string, string | Buffer>): Promise<{ files: string[]; found: string[] }> {
  const { spoolDir } = rig;
  const files = await filesUnder(spoolDir);
  const found: string[] = [];
  for (const file of files) {
    const bytes = await readFile(file);
    for (const [name, value] of values) if (bytes.includes(value)) found.push(`${path.relative(spoolDir, file)}: ${name}`);
    // Nor the names of the fields and headers that carry them.
    for (const field of ['api_key', 'hmacsha256', 'authorization', 'token=']) if (bytes.toString('latin1').toLowerCase().includes(field)) found.push(`${path.relative(spoolDir, file)}: ${field}`);
  }
  return { files: files.map((f) => path.relative(spoolDir, f)).sort(), found };
}

function byFolder(files: string[]): Record<string, number> {
  const counts: Record<string, number> = {};
  for (const f of files) counts[f.split('/')[0]!] = (counts[f.split('/')[0]!] ?? 0) + 1;
  return counts;
}

describe('no credential in the spool directory', () => {
  it('keeps no secret, token, password, key or signature in any file under SPOOL_DIR', async () => {
    const { database, proxy, host, client, service, spoolDir, sources } = rig;
    proxy.cut({ newConnections: 'refuse' });
    const nextPdf = pdfUrls(host, 'secrets');
    const outcomes: Outcome[] = [];
    for (let round = 0; round < 5; round++) {
      outcomes.push(
        ...(await Promise.all([
          sendPatiro(client, service.baseUrl, { token: PATIRO_TOKEN, basicAuth: `${BASIC_USER}:${BASIC_PASSWORD}` }),
          sendPatiro(client, service.baseUrl, { sourceId: sources.patiro.id, secret: sources.patiro.secret, token: sources.patiro.token! }),
          sendPhysitrack(client, service.baseUrl, nextPdf()),
          sendPhysitrack(client, service.baseUrl, nextPdf(), { sourceId: sources.physitrack.id, apiKey: sources.physitrack.apiKey }),
        ])),
      );
    }
    const values = secretValues(outcomes);
    const records = await journalRecords(spoolDir);
    const during = await secretsOnDisk(values);
    // One record damaged on disk (a byte of its data changed): its CRC fails, and the replay sets
    // it aside in rejected/, which is searched too.
    const damaged = records.find((r) => r.vendor === 'patiro' && r.sourceId === 'default')!;
    const file = path.join(spoolDir, 'journal', damaged.file);
    await writeFile(file, (await readFile(file, 'utf8')).replace('Lovelace', 'Lovelacf'));

    await proxy.restore();
    await waitReplayed(service.baseUrl);
    const after = await secretsOnDisk(values);

    console.log(
      `[spool no secrets] ${JSON.stringify(summarise(outcomes))} spooled (${records.length} records); searched ${values.size} secret values ` +
        `(${outcomes.filter((o) => o.signature).length} of them signatures) in ${during.files.length} files during the outage ${JSON.stringify(byFolder(during.files))} ` +
        `and ${after.files.length} after the replay ${JSON.stringify(byFolder(after.files))}: found ${JSON.stringify([...during.found, ...after.found])}`,
    );

    expect(summarise(outcomes)).toEqual({ 204: 20 });
    // The search ran over the real records: every delivery is there, with its source.
    expect(records.map((r) => `${r.sourceId} ${r.id}`).sort()).toEqual(outcomes.map((o) => `${o.sourceId} ${o.id}`).sort());
    // sources.json holds the table sources, their credentials sealed.
    const copy = await readFile(path.join(spoolDir, 'sources.json'), 'utf8');
    expect([copy.includes(sources.patiro.id), copy.includes(sources.physitrack.id)]).toEqual([true, true]);
    expect(after.files.some((f) => f.startsWith('rejected/'))).toBe(true);
    expect(during.found).toEqual([]);
    expect(after.found).toEqual([]);
    // And the deliveries were stored (the damaged one aside).
    expect((await checkStoredOnce(database.pool, outcomes.filter((o) => isAcknowledged(o) && o.id !== damaged.id))).problems).toEqual([]);
  });
});
