import { promises as fs, readFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';

// One process per spool directory. Two would each replay and remove the other's files, and the
// journal's size would be counted twice. Node has no flock(), so the owner writes who it is
// (host, kernel boot, pid and the pid's start time) and renews a heartbeat; a later process takes
// the directory over only from an owner that is provably gone: on the same host and boot, a pid
// that is not running (or is another process now); elsewhere, a heartbeat older than STALE_MS.
// Exactly-once does not rest on this lock (receipts do): it keeps the spool's bookkeeping single.

export class SpoolLockedError extends Error {
  readonly code = 'WH_ERR_SPOOL_LOCKED';
  override readonly name = 'SpoolLockedError';
}

interface Owner {
  pid: number;
  hostname: string;
  bootId: string | null;
  startTicks: string | null;
  since: string;
  heartbeatAt: string;
}

const FILE = 'owner.json';
const HEARTBEAT_MS = 5000;
const STALE_MS = 20_000;

function readOrNull(file: string): string | null {
  try {
    return readFileSync(file, 'utf8').trim();
  } catch {
    return null;
  }
}

/** Field 22 of /proc/<pid>/stat: when the process started, in clock ticks since boot. */
function startTicksOf(pid: number): string | null {
  const stat = readOrNull(`/proc/${pid}/stat`);
  if (!stat) return null;
  return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19] ?? null;
}

function isRunning(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

const me = (): Owner => {
  const now = new Date().toISOString();
  return { pid: process.pid, hostname: os.hostname(), bootId: readOrNull('/proc/sys/kernel/random/boot_id'), startTicks: startTicksOf(process.pid), since: now, heartbeatAt: now };
};

const sameOwner = (a: Owner, b: Owner) => a.pid === b.pid && a.hostname === b.hostname && a.bootId === b.bootId && a.startTicks === b.startTicks;

/** Why `owner` still holds the directory, or undefined when it is gone. */
function stillHeld(owner: Owner, self: Owner, now: number): string | undefined {
  if (owner.hostname === self.hostname && owner.bootId === self.bootId) {
    const alive = isRunning(owner.pid) && (owner.startTicks === null || startTicksOf(owner.pid) === owner.startTicks) && !sameOwner(owner, self);
    return alive ? `process ${owner.pid} on this host holds it (since ${owner.since})` : undefined;
  }
  const age = now - Date.parse(owner.heartbeatAt);
  return Number.isNaN(age) || age < STALE_MS ? `process ${owner.pid} on ${owner.hostname} holds it (last seen ${owner.heartbeatAt})` : undefined;
}

async function readOwner(file: string): Promise<Owner | undefined> {
  try {
    return JSON.parse(await fs.readFile(file, 'utf8')) as Owner;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    // Unreadable (a torn write by an owner that crashed mid-heartbeat): nobody provably holds it.
    return { pid: -1, hostname: '', bootId: null, startTicks: null, since: '', heartbeatAt: '1970-01-01T00:00:00Z' };
  }
}

async function writeAtomically(file: string, owner: Owner): Promise<void> {
  const temp = `${file}.${process.pid}.tmp`;
  await fs.writeFile(temp, JSON.stringify(owner), { mode: 0o600 });
  await fs.rename(temp, file);
}

export interface SpoolOwnership {
  /** Stops the heartbeat and gives the directory up. */
  release(): Promise<void>;
}

/**
 * Takes the directory, or throws SpoolLockedError naming its owner. `onLost` is called if another
 * process takes it over anyway (a clock far off, a volume mounted twice): the caller stops spooling.
 */
export async function takeSpoolDirectory(dir: string, onLost: (reason: string) => void): Promise<SpoolOwnership> {
  await fs.mkdir(dir, { recursive: true, mode: 0o700 });
  const file = path.join(dir, FILE);
  const self = me();
  try {
    // Written whole under another name, then linked into place: link() fails if the owner file
    // exists, and a reader never sees it half written (it would take that for a dead owner's).
    const temp = `${file}.${process.pid}.new`;
    await fs.writeFile(temp, JSON.stringify(self), { mode: 0o600 });
    try {
      await fs.link(temp, file);
    } finally {
      await fs.rm(temp, { force: true });
    }
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    const owner = await readOwner(file);
    const held = owner && stillHeld(owner, self, Date.now());
    if (held) throw new SpoolLockedError(`SPOOL_DIR ${dir} is in use: ${held}. Each process needs a spool directory of its own.`);
    await writeAtomically(file, self);
    // Two processes that found the same stale owner both wrote; the one whose file is there won.
    await new Promise((resolve) => setTimeout(resolve, 50));
    const now = await readOwner(file);
    if (!now || !sameOwner(now, self)) throw new SpoolLockedError(`SPOOL_DIR ${dir} was taken over by another process at the same moment`);
  }

  let lost = false;
  const timer = setInterval(() => {
    void (async () => {
      const current = await readOwner(file);
      if (!current || !sameOwner(current, self)) {
        if (!lost) onLost(current ? `process ${current.pid} on ${current.hostname} took SPOOL_DIR over` : 'the owner file of SPOOL_DIR was removed');
        lost = true;
        return;
      }
      await writeAtomically(file, { ...self, heartbeatAt: new Date().toISOString() });
    })().catch(() => undefined);
  }, HEARTBEAT_MS);
  timer.unref();

  return {
    async release() {
      clearInterval(timer);
      const current = await readOwner(file);
      if (current && sameOwner(current, self)) await fs.rm(file, { force: true });
    },
  };
}
