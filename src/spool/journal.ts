import { promises as fs } from 'node:fs';
import path from 'node:path';
import { encodeRecord, type SpooledDelivery } from './records.js';

// The journal: verified deliveries that PostgreSQL could not take, kept on this replica's disk
// until the replayer has written them. Postfix's order: a group of records is written to a file
// under a temporary name, fsynced, renamed to its final name (the mark that it is complete) and
// the directory fsynced; only then is any of its deliveries answered. A file that never got its
// final name was never acknowledged, and is removed at start. Every waiting delivery shares one
// group, so the cost is two fsyncs per group, not per delivery.
//
// A file: one record per line (records.ts), then `end <count>`. Its name sorts in arrival order and
// carries its record count, so the spool's size is known from the directory alone:
// <ms since epoch, 15 digits>-<sequence, 8 digits>-<pid>-<records>.jnl

export class SpoolFullError extends Error {
  readonly code = 'WH_ERR_SPOOL_FULL';
  override readonly name = 'SpoolFullError';
}

export class SpoolFailedError extends Error {
  readonly code = 'WH_ERR_SPOOL_FAILED';
  override readonly name = 'SpoolFailedError';
}

/** The file operations the journal makes, so that a test can make a write or an fsync fail. */
export interface JournalIo {
  writeDurably(file: string, data: Buffer): Promise<void>;
  rename(from: string, to: string): Promise<void>;
  syncDirectory(dir: string): Promise<void>;
}

export const nodeIo: JournalIo = {
  async writeDurably(file, data) {
    const handle = await fs.open(file, 'wx', 0o600);
    try {
      await handle.writeFile(data);
      await handle.sync();
    } finally {
      await handle.close();
    }
  },
  rename: (from, to) => fs.rename(from, to),
  async syncDirectory(dir) {
    const handle = await fs.open(dir, 'r');
    try {
      await handle.sync();
    } finally {
      await handle.close();
    }
  },
};

export interface JournalFile {
  name: string;
  records: number;
  /** On disk, in whole blocks (diskBytesOf). */
  bytes: number;
  /** When the file was written (ms): the spool's oldest delivery is at most a group's wait older. */
  writtenAt: number;
}

const NAME = /^(\d{15})-(\d{8})-(\d+)-(\d+)\.jnl$/;

/**
 * What a file costs on disk: whole 4 KiB blocks. At light traffic each file holds one delivery of
 * about 1 KB; counted by its length, SPOOL_MAX_BYTES would let the disk fill (and the spool fail)
 * long before the limit's clean 503.
 */
export const diskBytesOf = (length: number) => Math.max(1, Math.ceil(length / 4096)) * 4096;
const TEMP_PREFIX = '.tmp-';
const MAX_GROUP_RECORDS = 2000;
const MAX_GROUP_BYTES = 4 * 1024 * 1024;

export function parseJournalName(name: string): Omit<JournalFile, 'bytes'> | undefined {
  const match = NAME.exec(name);
  return match ? { name, writtenAt: Number(match[1]), records: Number(match[4]) } : undefined;
}

export interface JournalStats {
  records: number;
  bytes: number;
  /** Age in seconds of the oldest file waiting, or null when none waits. */
  oldestAgeSeconds: number | null;
  state: 'ok' | 'failed';
}

export interface Journal {
  readonly dir: string;
  /** Resolves once the delivery is durable on disk; rejects with SpoolFullError or SpoolFailedError. */
  append(spooled: SpooledDelivery): Promise<void>;
  /** The complete files, oldest first. */
  files(): JournalFile[];
  /** Forgets a file the replayer has written (and removes it). */
  remove(name: string): Promise<void>;
  stats(now?: number): JournalStats;
  /** Whether a delivery of typical size would be taken now. */
  accepting(): boolean;
  /** Waits for the group being written, so nothing is left half-answered at shutdown. */
  flush(): Promise<void>;
  /** Takes nothing more from now on (the directory was lost to another process). */
  fail(reason: Error): void;
}

interface Waiting {
  line: Buffer;
  resolve(): void;
  reject(err: Error): void;
}

export interface JournalOptions {
  dir: string;
  maxBytes: number;
  io?: JournalIo;
  onFailure?: (err: Error) => void;
}

/** Opens the journal directory: removes what was never completed and counts what waits. */
export async function openJournal({ dir, maxBytes, io = nodeIo, onFailure }: JournalOptions): Promise<Journal> {
  await fs.mkdir(dir, { recursive: true, mode: 0o700 });
  const complete = new Map<string, JournalFile>();
  for (const entry of await fs.readdir(dir)) {
    if (entry.startsWith(TEMP_PREFIX)) {
      await fs.rm(path.join(dir, entry), { force: true });
      continue;
    }
    const parsed = parseJournalName(entry);
    if (parsed) complete.set(entry, { ...parsed, bytes: diskBytesOf((await fs.stat(path.join(dir, entry))).size) });
  }
  let bytes = [...complete.values()].reduce((sum, f) => sum + f.bytes, 0);
  let records = [...complete.values()].reduce((sum, f) => sum + f.records, 0);
  let failed: SpoolFailedError | undefined;
  let sequence = 0;
  let waiting: Waiting[] = [];
  let waitingBytes = 0;
  let writing: Promise<void> | undefined;
  // The group being written counts from the moment it is taken, so nothing slips past the limit.
  let writingBytes = 0;

  /** At most what `n` waiting records of `raw` bytes will take on disk, however they are grouped. */
  function reservation(raw: number, n: number): number {
    if (n === 0) return 0;
    const groups = 1 + Math.floor(n / MAX_GROUP_RECORDS) + Math.floor(raw / MAX_GROUP_BYTES);
    return raw + groups * (4096 + 32);
  }
  const committed = () => bytes + writingBytes + reservation(waitingBytes, waiting.length);

  async function writeGroup(group: Waiting[]): Promise<void> {
    const data = Buffer.concat([...group.map((w) => w.line), Buffer.from(`end ${group.length}\n`)]);
    const writtenAt = Date.now();
    const name = `${String(writtenAt).padStart(15, '0')}-${String((sequence += 1)).padStart(8, '0')}-${process.pid}-${group.length}.jnl`;
    const temp = path.join(dir, `${TEMP_PREFIX}${name}`);
    writingBytes = diskBytesOf(data.length);
    try {
      await io.writeDurably(temp, data);
      await io.rename(temp, path.join(dir, name));
      await io.syncDirectory(dir);
    } catch (err) {
      // An fsync that failed may report success when retried after the kernel dropped the data
      // (PostgreSQL panics for this reason): nothing more is taken until a restart. The group is
      // answered 503, so its file goes too (if the rename happened): a replay of it and the
      // vendors' retries would count these deliveries twice.
      const failure = failWith(new SpoolFailedError(`the spool could not write durably: ${(err as Error).message}`, { cause: err }));
      await fs.rm(temp, { force: true }).catch(() => undefined);
      await fs.rm(path.join(dir, name), { force: true }).catch(() => undefined);
      writingBytes = 0;
      for (const w of group) w.reject(failure);
      return;
    }
    writingBytes = 0;
    complete.set(name, { name, records: group.length, bytes: diskBytesOf(data.length), writtenAt });
    bytes += diskBytesOf(data.length);
    records += group.length;
    for (const w of group) w.resolve();
  }

  function failWith(err: SpoolFailedError): SpoolFailedError {
    if (failed) return failed;
    failed = err;
    onFailure?.(err);
    for (const w of waiting) w.reject(err);
    waiting = [];
    waitingBytes = 0;
    return err;
  }

  function pump(): void {
    if (writing || waiting.length === 0) return;
    let size = 0;
    let n = 0;
    while (n < waiting.length && n < MAX_GROUP_RECORDS && (n === 0 || size + waiting[n]!.line.length <= MAX_GROUP_BYTES)) size += waiting[n++]!.line.length;
    const group = waiting.splice(0, n);
    waitingBytes -= size;
    writing = writeGroup(group).finally(() => {
      writing = undefined;
      pump();
    });
  }

  return {
    dir,
    append(spooled) {
      if (failed) return Promise.reject(failed);
      const line = encodeRecord(spooled);
      if (bytes + writingBytes + reservation(waitingBytes + line.length, waiting.length + 1) > maxBytes) {
        return Promise.reject(new SpoolFullError(`the spool holds ${bytes} bytes, its limit is ${maxBytes}`));
      }
      return new Promise<void>((resolve, reject) => {
        waiting.push({ line, resolve, reject });
        waitingBytes += line.length;
        pump();
      });
    },
    files: () => [...complete.values()].sort((a, b) => (a.name < b.name ? -1 : 1)),
    async remove(name) {
      const file = complete.get(name);
      if (!file) return;
      await fs.rm(path.join(dir, name), { force: true });
      complete.delete(name);
      bytes -= file.bytes;
      records -= file.records;
    },
    stats(now = Date.now()) {
      let oldest: number | undefined;
      for (const f of complete.values()) oldest = oldest === undefined ? f.writtenAt : Math.min(oldest, f.writtenAt);
      return { records, bytes, oldestAgeSeconds: oldest === undefined ? null : Math.max(0, (now - oldest) / 1000), state: failed ? 'failed' : 'ok' };
    },
    // 64 KiB: room for one more delivery of a common size, so /readyz turns 503 before refusals start.
    accepting: () => !failed && committed() + 64 * 1024 <= maxBytes,
    async flush() {
      while (writing) await writing;
    },
    fail(reason) {
      failWith(new SpoolFailedError(`the spool takes no more deliveries: ${reason.message}`, { cause: reason }));
    },
  };
}
