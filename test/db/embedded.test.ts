import { chmod, chown, mkdir, mkdtemp, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { afterAll, describe, expect, it } from 'vitest';
import { startEmbeddedPostgres } from '../../src/db/embedded.js';
import { blockedForPostgresUser, dataDirForPostgresUser } from '../../src/db/embedded-checks.js';

const quietLog = { info: () => {}, warn: () => {}, debug: () => {} };
const HOOKED = ['SIGINT', 'SIGTERM', 'SIGHUP', 'beforeExit', 'exit'] as const;
const isRoot = os.userInfo().uid === 0;
const dirs: string[] = [];

async function tempDir(mode: number): Promise<string> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'wr-embedded-'));
  await chmod(dir, mode);
  dirs.push(dir);
  return dir;
}

async function withClient<T>(url: string, use: (client: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    return await use(client);
  } finally {
    await client.end();
  }
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

afterAll(async () => {
  for (const dir of dirs) await rm(dir, { recursive: true, force: true });
});

describe('embedded PostgreSQL', () => {
  it('starts, answers queries, leaves no exit hooks behind and stops its server', async () => {
    const listenersBefore = HOOKED.map((s) => process.listenerCount(s));
    const dir = await tempDir(0o755);
    const server = await startEmbeddedPostgres({ dir, log: quietLog, ephemeral: false });
    expect(HOOKED.map((s) => process.listenerCount(s))).toEqual(listenersBefore);
    expect(server.dir).toBe(dir);

    const client = new pg.Client({ connectionString: server.url });
    await client.connect();
    expect((await client.query('SELECT 1 AS one')).rows).toEqual([{ one: 1 }]);
    await client.end();

    const pid = Number((await readFile(path.join(dir, 'cluster', 'postmaster.pid'), 'utf8')).split('\n')[0]);
    expect(isAlive(pid)).toBe(true);
    await server.stop();
    expect(isAlive(pid)).toBe(false);
  });

  it.runIf(isRoot)('as root, keeps the data of a directory under a 0700 parent where postgres can reach it, and finds it again', async () => {
    const privateParent = await tempDir(0o700);
    const dir = path.join(privateParent, 'data', 'postgres');
    const infos: string[] = [];
    const log = { ...quietLog, info: (_fields: unknown, msg?: string) => void infos.push(String(msg)) };

    const first = await startEmbeddedPostgres({ dir, log });
    dirs.push(first.dir);
    expect(first.dir).not.toBe(dir);
    expect(await blockedForPostgresUser(first.dir)).toEqual([]);
    expect(infos).toContain(`the embedded PostgreSQL keeps its data in ${first.dir}: it runs as the postgres user, which cannot reach ${dir}`);
    await withClient(first.url, (c) => c.query("CREATE TABLE kept (note text); INSERT INTO kept VALUES ('from the first start')"));
    await first.stop();

    const second = await startEmbeddedPostgres({ dir, log });
    try {
      expect(second.dir).toBe(first.dir);
      expect(await withClient(second.url, (c) => c.query('SELECT note FROM kept'))).toMatchObject({ rows: [{ note: 'from the first start' }] });
    } finally {
      await second.stop();
    }
  });

  it.runIf(isRoot)('as root, takes no fallback directory that another user made', async () => {
    const privateParent = await tempDir(0o700);
    const dir = path.join(privateParent, 'data');
    await mkdir(dir);
    const theirs = await tempDir(0o755);
    await chown(theirs, 65534, 65534); // nobody's
    const ours = path.join(await tempDir(0o755), 'fallback');
    expect(path.dirname(await dataDirForPostgresUser(dir, [theirs, ours]))).toBe(ours);
  });

  it.runIf(isRoot)('as root, says what to set when no place the postgres user can reach is usable', async () => {
    const privateParent = await tempDir(0o700);
    const dir = path.join(privateParent, 'data');
    await mkdir(dir);
    await expect(dataDirForPostgresUser(dir, [path.join(privateParent, 'fallback')])).rejects.toThrow(
      new RegExp(`cannot reach .*${privateParent.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')} \\(mode 700\\).*none of .* is usable instead.*Set DATA_DIR`),
    );
  });
});
