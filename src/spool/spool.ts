import { promises as fs } from 'node:fs';
import path from 'node:path';
import type { FastifyBaseLogger } from 'fastify';
import { diskBytesOf, openJournal, parseJournalName, type Journal, type JournalIo } from './journal.js';
import { takeSpoolDirectory, type SpoolOwnership } from './owner.js';
import { sourcesCopyIn, type SourcesCopy } from './sources-copy.js';

// SPOOL_DIR, this replica's own volume:
//   owner.json   who holds the directory (one process at a time)
//   journal/     deliveries waiting for PostgreSQL, one file per group commit
//   rejected/    records that can never be written (corrupt, or refused by PostgreSQL for good)
//   sources.json the local copy of the sources table
// Everything is 0700/0600: the records hold patient data.

export interface Spool {
  readonly dir: string;
  /** True once another process took the directory over: this one neither spools nor replays. */
  readonly lost: boolean;
  readonly journal: Journal;
  readonly sourcesCopy: SourcesCopy;
  readonly rejectedDir: string;
  /** Files in rejected/ (counted at open; the operator inspects and removes them). */
  rejectedFiles(): Promise<string[]>;
  close(): Promise<void>;
}

export interface OpenSpoolOptions {
  dir: string;
  maxBytes: number;
  log: FastifyBaseLogger;
  io?: JournalIo;
}

export async function openSpool({ dir, maxBytes, log, io }: OpenSpoolOptions): Promise<Spool> {
  let journal: Journal | undefined;
  let lost = false;
  const ownership: SpoolOwnership = await takeSpoolDirectory(dir, (reason) => {
    lost = true;
    log.error({ spool: dir, reason }, 'lost SPOOL_DIR to another process: this replica stops spooling and replaying');
    journal?.fail(new Error(reason));
  });
  try {
    journal = await openJournal({
      dir: path.join(dir, 'journal'),
      maxBytes,
      ...(io ? { io } : {}),
      onFailure: (err) => log.error({ err, spool: dir }, 'the spool failed: it takes no more deliveries until the service restarts'),
    });
  } catch (err) {
    await ownership.release();
    throw err;
  }
  const rejectedDir = path.join(dir, 'rejected');
  const opened = journal;
  return {
    dir,
    get lost() {
      return lost;
    },
    journal: opened,
    sourcesCopy: sourcesCopyIn(dir),
    rejectedDir,
    async rejectedFiles() {
      return (await fs.readdir(rejectedDir).catch(() => [] as string[])).filter((f) => f.endsWith('.rejected')).sort();
    },
    async close() {
      await opened.flush();
      await ownership.release();
    },
  };
}

export interface SpoolInspection {
  dir: string;
  records: number;
  bytes: number;
  /** When the oldest waiting file was written, or null when none waits. */
  oldestWrittenAt: Date | null;
  rejectedFiles: number;
  /** What owner.json says (the process holding it, if it still runs), or null. */
  owner: { pid: number; hostname: string; since: string; heartbeatAt: string } | null;
}

/** Reads a spool directory without taking it: for `spool status`, beside the running service. */
export async function inspectSpool(dir: string): Promise<SpoolInspection> {
  const journalDir = path.join(dir, 'journal');
  let records = 0;
  let bytes = 0;
  let oldest: number | undefined;
  for (const entry of await fs.readdir(journalDir).catch(() => [] as string[])) {
    const parsed = parseJournalName(entry);
    if (!parsed) continue;
    // Counted as the journal counts them (whole blocks), so this matches /readyz and the metrics.
    const size = await fs.stat(path.join(journalDir, entry)).then((st) => diskBytesOf(st.size), () => 0);
    records += parsed.records;
    bytes += size;
    oldest = oldest === undefined ? parsed.writtenAt : Math.min(oldest, parsed.writtenAt);
  }
  const rejectedFiles = (await fs.readdir(path.join(dir, 'rejected')).catch(() => [] as string[])).filter((f) => f.endsWith('.rejected')).length;
  const owner = await fs
    .readFile(path.join(dir, 'owner.json'), 'utf8')
    .then((text) => JSON.parse(text) as SpoolInspection['owner'])
    .catch(() => null);
  return { dir, records, bytes, oldestWrittenAt: oldest === undefined ? null : new Date(oldest), rejectedFiles, owner };
}
