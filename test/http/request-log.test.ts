import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildTestApp } from '../helpers/app.js';
import { createTestDatabase, type TestDatabase } from '../helpers/database.js';

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
});
