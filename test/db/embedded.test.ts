import { chmod, mkdir, mkdtemp, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { afterAll, describe, expect, it } from 'vitest';
import { startEmbeddedPostgres } from '../../src/db/embedded.js';

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

    const client = new pg.Client({ connectionString: server.url });
    await client.connect();
    expect((await client.query('SELECT 1 AS one')).rows).toEqual([{ one: 1 }]);
    await client.end();

    const pid = Number((await readFile(path.join(dir, 'cluster', 'postmaster.pid'), 'utf8')).split('\n')[0]);
    expect(isAlive(pid)).toBe(true);
    await server.stop();
    expect(isAlive(pid)).toBe(false);
  });

  it.runIf(isRoot)('as root, refuses a data directory under a 0700 parent with a message naming DATA_DIR', async () => {
    const privateParent = await tempDir(0o700);
    const dir = path.join(privateParent, 'data');
    await mkdir(dir);
    await expect(startEmbeddedPostgres({ dir, log: quietLog, ephemeral: true })).rejects.toThrow(
      new RegExp(`cannot reach .*${privateParent.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')} \\(mode 700\\).*Set DATA_DIR`),
    );
  });
});
