import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildApp } from '../../src/app.js';
import { loadConfig } from '../../src/config.js';
import { poolOf } from '../../src/db/client.js';
import { buildTestApp, type TestApp } from '../helpers/app.js';
import { createTestDatabase, unreachableDatabaseUrl, type TestDatabase } from '../helpers/database.js';
import { captureLogs } from '../helpers/logs.js';

let database: TestDatabase;
let testApp: TestApp;

beforeAll(async () => {
  database = await createTestDatabase();
  testApp = await buildTestApp(database.url);
});
afterAll(async () => {
  await testApp.close();
  await database.drop();
});

describe('health endpoints', () => {
  it('answers /healthz with 200', async () => {
    const res = await testApp.app.inject({ method: 'GET', url: '/healthz' });
    expect(res.statusCode).toBe(200);
    expect(res.json()).toEqual({ status: 'ok' });
  });

  it('answers /readyz with 200 when the database answers', async () => {
    const res = await testApp.app.inject({ method: 'GET', url: '/readyz' });
    expect(res.statusCode).toBe(200);
  });

  it('answers /readyz with 200 while every connection of the main pool is taken by writes', async () => {
    const main = poolOf(testApp.db);
    const held = await Promise.all(Array.from({ length: main.options.max }, () => main.connect()));
    try {
      const started = Date.now();
      const res = await testApp.app.inject({ method: 'GET', url: '/readyz' });
      expect(res.statusCode).toBe(200);
      expect(Date.now() - started).toBeLessThan(500);
    } finally {
      held.forEach((client) => client.release());
    }
  });

  it('answers /readyz with 503 but /healthz with 200 when the database is unreachable', async () => {
    const dead = await buildTestApp(await unreachableDatabaseUrl());
    const app = dead.app;
    try {
      const started = Date.now();
      const ready = await app.inject({ method: 'GET', url: '/readyz' });
      expect(ready.statusCode).toBe(503);
      expect(Date.now() - started).toBeLessThan(2000);
      expect((await app.inject({ method: 'GET', url: '/healthz' })).statusCode).toBe(200);
    } finally {
      await dead.close();
    }
  });

  it('answers an unknown route with a JSON 404', async () => {
    const res = await testApp.app.inject({ method: 'POST', url: '/webhooks/unknown' });
    expect(res.statusCode).toBe(404);
    expect(res.json()).toMatchObject({ error: 'WH_ERR_NOT_FOUND' });
  });
});

describe('body limit', () => {
  it('answers 413 for a body over BODY_LIMIT_BYTES, and accepts one at the limit', async () => {
    const config = loadConfig({ NODE_ENV: 'test', DATABASE_URL: database.url, BODY_LIMIT_BYTES: '2048' });
    const app = await buildApp({ config, db: testApp.db, logger: captureLogs().logger });
    app.post('/echo-size', async (request) => ({ size: JSON.stringify(request.body).length }));
    try {
      const atLimit = JSON.stringify({ pad: 'x'.repeat(2048 - 10) });
      expect(Buffer.byteLength(atLimit)).toBe(2048);
      const ok = await app.inject({ method: 'POST', url: '/echo-size', headers: { 'content-type': 'application/json' }, payload: atLimit });
      expect(ok.statusCode).toBe(200);
      const over = JSON.stringify({ pad: 'x'.repeat(2048) });
      const res = await app.inject({ method: 'POST', url: '/echo-size', headers: { 'content-type': 'application/json' }, payload: over });
      expect(res.statusCode).toBe(413);
      expect(res.json()).toMatchObject({ error: 'WH_ERR_BODY_TOO_LARGE' });
    } finally {
      await app.close();
    }
  });
});
