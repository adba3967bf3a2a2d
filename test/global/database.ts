import { mkdtemp, rm, chmod } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import type { TestProject } from 'vitest/node';
import { startEmbeddedPostgres, type EmbeddedPostgres } from '../../src/db/embedded.js';
import { migrate } from '../../src/db/migrate.js';

declare module 'vitest' {
  export interface ProvidedContext {
    databaseAdminUrl: string;
    templateDatabase: string;
  }
}

const quietLog = { info: () => {}, warn: () => {}, debug: () => {} };

async function withClient<T>(url: string, fn: (client: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    return await fn(client);
  } finally {
    await client.end();
  }
}

/**
 * One PostgreSQL for the whole run (TEST_DATABASE_URL, or an embedded one under the system temp
 * dir, which the `postgres` user can reach even when the clone lives under a 0700 home) and one
 * migrated template database that every test file copies.
 */
export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  let embedded: EmbeddedPostgres | undefined;
  let dir: string | undefined;
  let adminUrl = process.env.TEST_DATABASE_URL;
  if (!adminUrl) {
    dir = await mkdtemp(path.join(os.tmpdir(), 'webhook-receiver-test-'));
    await chmod(dir, 0o755);
    embedded = await startEmbeddedPostgres({ dir, log: quietLog, ephemeral: true });
    adminUrl = embedded.url;
  }
  const template = `wr_template_${process.pid}_${Date.now()}`;
  await withClient(adminUrl, (c) => c.query(`CREATE DATABASE ${template}`));
  const templateUrl = new URL(adminUrl);
  templateUrl.pathname = `/${template}`;
  await migrate(templateUrl.toString());

  project.provide('databaseAdminUrl', adminUrl);
  project.provide('templateDatabase', template);

  return async () => {
    const url = adminUrl;
    await withClient(url, async (c) => {
      const leftovers = await c.query<{ datname: string }>(
        `SELECT datname FROM pg_database WHERE datname LIKE 'wr\\_test\\_${process.pid}\\_%' OR datname = $1`,
        [template],
      );
      for (const { datname } of leftovers.rows) await c.query(`DROP DATABASE IF EXISTS ${c.escapeIdentifier(datname)} WITH (FORCE)`);
    });
    await embedded?.stop();
    if (dir) await rm(dir, { recursive: true, force: true });
  };
}
