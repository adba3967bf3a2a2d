import { randomBytes, randomUUID } from 'node:crypto';
import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildApp } from '../../src/app.js';
import { loadConfig } from '../../src/config.js';
import { closeDatabase, createDatabase, type Database } from '../../src/db/client.js';
import { storeOptionsFor } from '../../src/db/group-commit.js';
import { CENSOR } from '../../src/logger.js';
import { createPatiroStore, type PatiroStore } from '../../src/webhooks/patiro-store.js';
import { createTestDatabase, type TestDatabase } from '../helpers/database.js';
import { captureLogs, type CapturedLogs } from '../helpers/logs.js';
import { PATIRO_SECRET, signedPatiroRequest } from '../helpers/patiro.js';

// The shipped code logs no body and no patient field. This file proves the logger's safety net for
// the day a line does: the app runs at trace level, as in production but with the store wrapped so
// that it logs every delivery it is handed, and a patient row is logged as read back from the table,
// as careless debugging lines would. No value of a patient may reach any line all the same.

const unique = (label: string) => `${label}-${randomBytes(5).toString('hex')}`;
/** Never a whole number, so it cannot meet a log level or a count. */
const measure = (min: number, max: number) => Math.floor(min + Math.random() * (max - min)) + 0.125 + Math.floor(Math.random() * 800) / 1000;

/** A patient with every field Patiro documents, each value findable in a line. */
function patient() {
  return {
    id: unique('patient'),
    fullName: `${unique('Ada')} ${unique('Lovelace')}`,
    email: `${unique('ada')}@example.org`,
    phoneNumber: `+31 6 ${randomBytes(4).readUInt32BE() % 100_000_000}`,
    birthdate: `19${40 + Math.floor(Math.random() * 50)}-0${1 + Math.floor(Math.random() * 9)}-1${Math.floor(Math.random() * 9)}T00:00:00`,
    caregiver: { fullName: `${unique('Charles')} ${unique('Babbage')}`, phoneNumber: `+31 20 ${randomBytes(3).readUIntBE(0, 3)}`, email: `${unique('charles')}@example.org` },
    zipCode: `${1000 + (randomBytes(2).readUInt16BE() % 9000)} ${unique('ZP')}`,
    city: unique('Amsterdam'),
    weightInKg: measure(50, 110),
    heightInCm: measure(150, 200),
  };
}
const patients = [patient(), patient()];

/** Every value of a patient: strings are searched in the raw lines, numbers among parsed values. */
function valuesOf(value: unknown): (string | number)[] {
  if (typeof value === 'string' || typeof value === 'number') return [value];
  if (value === null || typeof value !== 'object') return [];
  return Object.values(value).flatMap(valuesOf);
}

let database: TestDatabase;
let db: Database;
let app: FastifyInstance;
let logs: CapturedLogs;

beforeAll(async () => {
  database = await createTestDatabase();
  const config = loadConfig({ NODE_ENV: 'test', DATABASE_URL: database.url, LOG_LEVEL: 'trace', PATIRO_SIGNING_SECRET: PATIRO_SECRET });
  logs = captureLogs(config.logLevel);
  db = createDatabase({ url: database.url, poolSize: 4, connectTimeoutMs: 1000 });
  const store = createPatiroStore(db, storeOptionsFor(config));
  const carelessStore: PatiroStore = {
    save: (delivery, deadlineAt) => {
      logs.logger.trace({ delivery }, 'saving a patiro delivery');
      return store.save(delivery, deadlineAt);
    },
  };
  app = await buildApp({ config, db, logger: logs.logger, patiroStore: carelessStore });
  await app.ready();
  await deliver();
});
afterAll(async () => {
  await app.close();
  await closeDatabase(db);
  await database.drop();
});

const event = (eventType: string, data: unknown) => JSON.stringify({ eventId: randomUUID(), eventType, timestamp: '2026-03-27T10:04:03.4247725', data });

async function deliver(): Promise<void> {
  const [first, second] = patients;
  const bodies = [event('PatientRevealed', first), event('PatientUpdated', first), event('PatientUpdated', second)];
  const answers = [];
  for (const body of bodies) answers.push((await app.inject(signedPatiroRequest({ body }))).statusCode);
  // Refused ones: a wrong signature, and an authenticated body that lacks its eventType.
  answers.push((await app.inject(signedPatiroRequest({ body: bodies[2]!, secret: 'someone-elses-secret-0123456789' }))).statusCode);
  answers.push((await app.inject(signedPatiroRequest({ body: JSON.stringify({ eventId: randomUUID(), data: second }) }))).statusCode);
  expect(answers).toEqual([204, 204, 204, 401, 400]);

  const rows = await database.pool.query('SELECT * FROM patiro_patients');
  expect(rows.rowCount).toBe(2);
  for (const row of rows.rows) logs.logger.trace({ patient: row }, 'patient projection updated');
}

describe('a real Patiro patient payload at LOG_LEVEL=trace', () => {
  it('reaches the log lines that would leak it, redacted', () => {
    const careless = logs.entries().filter((e) => e.msg === 'saving a patiro delivery' || e.msg === 'patient projection updated');
    expect(careless).toHaveLength(5);
    expect(careless[0]).toMatchObject({ delivery: { event: { eventType: 'PatientRevealed', dataJson: CENSOR, patientId: CENSOR } } });
    expect(careless.at(-1)).toMatchObject({ patient: { patient_id: CENSOR, data: CENSOR } });
    expect(logs.entries().filter((e) => e.msg === 'patiro event stored')).toHaveLength(3);
  });

  it('leaves no patient value in any line', () => {
    const values = patients.flatMap(valuesOf);
    expect(values.length).toBeGreaterThan(20);
    for (const value of values.filter((v) => typeof v === 'string')) {
      expect(logs.lines.filter((line) => line.includes(value)), value).toEqual([]);
    }
    const loggedNumbers = new Set(logs.entries().flatMap(valuesOf).filter((v) => typeof v === 'number'));
    for (const value of values.filter((v) => typeof v === 'number')) expect(loggedNumbers.has(value), String(value)).toBe(false);
  });
});
