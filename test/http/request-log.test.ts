import http from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildApp } from '../../src/app.js';
import { loadConfig } from '../../src/config.js';
import { createDatabase } from '../../src/db/client.js';
import { buildTestApp } from '../helpers/app.js';
import { createTestDatabase, type TestDatabase } from '../helpers/database.js';
import { captureLogs } from '../helpers/logs.js';
import { waitFor } from '../helpers/wait.js';

let database: TestDatabase;

beforeAll(async () => {
  database = await createTestDatabase();
});
afterAll(async () => {
  await database.drop();
});

async function linesOfOneRequest(logLevel: string) {
  const t = await buildTestApp(database.url, { LOG_LEVEL: logLevel });
  try {
    // Any route but the probes, which log at warn only.
    const res = await t.app.inject({ method: 'GET', url: '/nowhere?token=query-secret' });
    expect(res.statusCode).toBe(404);
    const entries = t.logs.entries().filter((e) => e.reqId !== undefined);
    expect(new Set(entries.map((e) => e.reqId)).size).toBe(1);
    expect(t.logs.lines.join('\n')).not.toContain('query-secret');
    return entries;
  } finally {
    await t.close();
  }
}

describe('request log lines', () => {
  it('writes one info line per request, with method, path, status and time', async () => {
    const entries = await linesOfOneRequest('info');
    expect(entries).toHaveLength(1);
    expect(entries[0]).toMatchObject({ msg: 'request completed', req: { method: 'GET', path: '/nowhere' }, res: { statusCode: 404 } });
    expect(entries[0]!.responseTime).toBeTypeOf('number');
  });

  it('adds the incoming-request line at debug', async () => {
    const entries = await linesOfOneRequest('debug');
    expect(entries.map((e) => e.msg)).toEqual(['incoming request', 'request completed']);
    expect(entries[0]).toMatchObject({ req: { method: 'GET', path: '/nowhere' } });
  });

  it('logs a request whose client hung up before the answer', async () => {
    const config = loadConfig({ NODE_ENV: 'test', DATABASE_URL: database.url, LOG_LEVEL: 'info' });
    const logs = captureLogs('info');
    const db = createDatabase({ url: database.url, poolSize: 1, connectTimeoutMs: 1000 });
    const app = await buildApp({ config, db, logger: logs.logger });
    let handlerRunning!: () => void;
    const running = new Promise<void>((resolve) => (handlerRunning = resolve));
    app.get('/slow', async () => {
      handlerRunning();
      await new Promise((resolve) => setTimeout(resolve, 300));
      return { done: true };
    });
    try {
      const address = await app.listen({ port: 0, host: '127.0.0.1' });
      const request = http.get(`${address}/slow?token=query-secret`);
      request.on('error', () => undefined); // the hang-up below is the point
      await running;
      request.destroy();
      await waitFor(() => logs.entries().some((e) => typeof e.msg === 'string' && e.msg.startsWith('request aborted')), 2000);
      const aborted = logs.entries().find((e) => typeof e.msg === 'string' && e.msg.startsWith('request aborted'));
      expect(aborted).toMatchObject({ level: 30, req: { method: 'GET', path: '/slow' } });
      expect(logs.lines.join('\n')).not.toContain('query-secret');
    } finally {
      await app.close();
      await db.$disconnect();
    }
  });
});
