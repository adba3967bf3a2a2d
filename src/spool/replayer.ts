import { promises as fs } from 'node:fs';
import path from 'node:path';
import type { FastifyBaseLogger } from 'fastify';
import { isUnavailable, type DatabaseAvailability } from '../db/availability.js';
import type { Database } from '../db/client.js';
import { insertDeliveries } from '../downloads/intake.js';
import type { Vendor } from '../metrics.js';
import { writePatiroBatch } from '../webhooks/patiro-store.js';
import { nodeIo, type Journal, type JournalFile } from './journal.js';
import { CorruptRecordError, decodeRecord, encodeRecord, type SpooledDelivery } from './records.js';

// Writes what the spool holds into PostgreSQL, oldest file first and in arrival order within it,
// through the very statements a live delivery uses, and only then removes the file. A crash after
// the COMMIT and before the removal replays the file again: the receipts make that a no-op. A record
// that fails its checksum, or that PostgreSQL refuses for good, is set aside in `rejected/`.

export interface ReplayResult {
  replayed: number;
  rejected: number;
  /** False when PostgreSQL went away mid-way: the rest waits for the next run. */
  complete: boolean;
}

export interface ReplayerOptions {
  journal: Journal;
  /** Where records that can never be written are set aside (SPOOL_DIR/rejected). */
  rejectedDir: string;
  db: Database;
  availability?: DatabaseAvailability | undefined;
  log: FastifyBaseLogger;
  batchSize?: number;
  onReplayed?: (vendor: Vendor, n: number) => void;
  onRejected?: (n: number) => void;
  /** A Physitrack delivery was written: wake the download worker. */
  onPhysitrackWritten?: () => void;
  /** For tests: runs after a file's records are committed and before the file is removed. */
  afterCommit?: (file: JournalFile) => Promise<void>;
  /** False once the spool directory was lost to another process: its files are not this one's to replay. */
  shouldRun?: () => boolean;
}

export interface Replayer {
  /** Replays every file waiting, oldest first; stops at the first sign that PostgreSQL is away. */
  runOnce(): Promise<ReplayResult>;
  /** Replays whenever PostgreSQL is (back) up and files wait; checks every few seconds. */
  start(): void;
  stop(): Promise<void>;
}

class DatabaseAwayError extends Error {}

interface ReadFile {
  records: SpooledDelivery[];
  bad: { line: Buffer; reason: string }[];
}

/** Reads a file's records; what fails its checksum is `bad`, and records missing from its end count as bad too. */
async function readJournalFile(file: string, expected: number): Promise<ReadFile> {
  const data = await fs.readFile(file);
  const lines: Buffer[] = [];
  for (let start = 0; start < data.length; ) {
    const end = data.indexOf(0x0a, start);
    lines.push(data.subarray(start, end === -1 ? data.length : end));
    start = end === -1 ? data.length : end + 1;
  }
  const result: ReadFile = { records: [], bad: [] };
  let ended = false;
  for (const line of lines) {
    if (line.length === 0) continue;
    if (/^end \d+$/.test(line.toString('latin1'))) {
      ended = true;
      continue;
    }
    try {
      result.records.push(decodeRecord(line));
    } catch (err) {
      if (!(err instanceof CorruptRecordError)) throw err;
      result.bad.push({ line, reason: err.message });
    }
  }
  // The name says how many records the file was written with: a file cut short (at a line's end,
  // or with its `end` line gone) has lost some, which are counted, never silently forgotten.
  const missing = expected - result.records.length - result.bad.length;
  for (let i = 0; i < missing; i++) result.bad.push({ line: Buffer.alloc(0), reason: `the file ends early (${ended ? 'its end line is there, records are not' : 'no end line'})` });
  return result;
}

/**
 * The records of a round, one vendor's in arrival order, cut into statements of at most `size`.
 * The two vendors write different tables, so their relative order does not matter; each vendor's
 * own rows follow the order of arrival.
 */
function batchesOf(records: Tagged[], size: number): Tagged[][] {
  const batches: Tagged[][] = [];
  for (const vendor of ['patiro', 'physitrack'] as const) {
    const mine = records.filter((r) => r.spooled.vendor === vendor);
    for (let i = 0; i < mine.length; i += size) batches.push(mine.slice(i, i + size));
  }
  return batches;
}

/** A record and the file it came from, where it is set aside if PostgreSQL refuses it for good. */
interface Tagged {
  spooled: SpooledDelivery;
  refused: ReadFile['bad'];
}

export function createReplayer(options: ReplayerOptions): Replayer {
  const { journal, rejectedDir, db, availability, log, batchSize = 500, shouldRun = () => true } = options;
  const unreadable = new Set<string>();
  let failureLoggedAt = 0;
  let running: Promise<ReplayResult> | undefined;
  let timer: NodeJS.Timeout | undefined;
  let stopped = false;

  /** A batch is of one vendor (batchesOf). */
  async function write(batch: Tagged[]): Promise<void> {
    const records = batch.map((t) => t.spooled);
    if (records[0]!.vendor === 'patiro') await writePatiroBatch(db, records.flatMap((r) => (r.vendor === 'patiro' ? [r.delivery] : [])));
    else await insertDeliveries(db, records.flatMap((r) => (r.vendor === 'physitrack' ? [r.delivery] : [])));
  }

  /** Writes a batch; one PostgreSQL refuses for good is written one by one, to set aside only the bad. */
  async function writeBatch(batch: Tagged[]): Promise<number> {
    try {
      await write(batch);
      return batch.length;
    } catch (err) {
      if (isUnavailable(err)) throw new DatabaseAwayError((err as Error).message, { cause: err });
      if (batch.length === 1) {
        const code = (err as { code?: string }).code;
        batch[0]!.refused.push({ line: encodeRecord(batch[0]!.spooled).subarray(0, -1), reason: `PostgreSQL refused it (SQLSTATE ${code})` });
        return 0;
      }
      let written = 0;
      for (const one of batch) written += await writeBatch([one]);
      return written;
    }
  }

  async function setAside(file: JournalFile, bad: ReadFile['bad']): Promise<void> {
    await fs.mkdir(rejectedDir, { recursive: true, mode: 0o700 });
    const text = Buffer.concat(bad.filter(({ line }) => line.length > 0).flatMap(({ line }) => [line, Buffer.from('\n')]));
    const target = path.join(rejectedDir, `${file.name}.rejected`);
    await fs.rm(`${target}.tmp`, { force: true });
    await nodeIo.writeDurably(`${target}.tmp`, text);
    await fs.rename(`${target}.tmp`, target);
    await nodeIo.syncDirectory(rejectedDir);
    // Record contents are patient data: the log names the file and the reasons only.
    log.error({ file: file.name, rejected: bad.length, reasons: [...new Set(bad.map((b) => b.reason))], rejectedDir }, 'spooled deliveries set aside: they cannot be written');
    options.onRejected?.(bad.length);
  }

  /**
   * One round: the oldest files, up to `batchSize` records (at least one file), written a vendor at a
   * time, then each file set aside what it must and removed. At light traffic a file holds one
   * delivery; written file by file, the replay would cost a statement per delivery.
   */
  /** A file that cannot be read is left where it is (and said once); one removed meanwhile is forgotten. */
  async function readOrSkip(file: JournalFile): Promise<ReadFile | undefined> {
    try {
      return await readJournalFile(path.join(journal.dir, file.name), file.records);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
        await journal.remove(file.name);
        return undefined;
      }
      if (!unreadable.has(file.name)) log.error({ code: (err as NodeJS.ErrnoException).code, file: file.name }, 'a spool file cannot be read; it is left in place and the others are replayed');
      unreadable.add(file.name);
      return undefined;
    }
  }

  async function replayRound(candidates: JournalFile[]): Promise<{ replayed: number; rejected: number }> {
    const files: JournalFile[] = [];
    const read: ReadFile[] = [];
    for (const file of candidates) {
      const contents = await readOrSkip(file);
      if (!contents) continue;
      files.push(file);
      read.push(contents);
    }
    const tagged = read.flatMap(({ records, bad }) => records.map((spooled) => ({ spooled, refused: bad })));
    let replayed = 0;
    for (const batch of batchesOf(tagged, batchSize)) {
      const written = await writeBatch(batch);
      replayed += written;
      if (written > 0) {
        options.onReplayed?.(batch[0]!.spooled.vendor, written);
        if (batch[0]!.spooled.vendor === 'physitrack') options.onPhysitrackWritten?.();
      }
    }
    let rejected = 0;
    for (const [i, file] of files.entries()) {
      const { bad } = read[i]!;
      if (bad.length > 0) await setAside(file, bad);
      rejected += bad.length;
      await options.afterCommit?.(file);
      await journal.remove(file.name);
    }
    return { replayed, rejected };
  }

  /** The oldest files holding up to `batchSize` records, at least one. */
  function nextRound(files: JournalFile[]): JournalFile[] {
    let records = 0;
    let n = 0;
    while (n < files.length && (n === 0 || records + files[n]!.records <= batchSize)) records += files[n++]!.records;
    return files.slice(0, n);
  }

  async function runAll(): Promise<ReplayResult> {
    const total: ReplayResult = { replayed: 0, rejected: 0, complete: true };
    let files = journal.files().filter((f) => !unreadable.has(f.name));
    while (files.length > 0) {
      if (stopped || !shouldRun()) return { ...total, complete: false };
      const round = nextRound(files);
      try {
        const { replayed, rejected } = await replayRound(round);
        total.replayed += replayed;
        total.rejected += rejected;
      } catch (err) {
        if (!(err instanceof DatabaseAwayError)) throw err;
        availability?.reportUnavailable(err.cause);
        // The code only: a database error's detail may quote the row, patient data included.
        const { code, constraint } = err.cause as { code?: unknown; constraint?: unknown };
        log.warn({ code, constraint, reason: err.message.split('\n')[0], file: round[0]!.name }, 'replaying the spool stopped: PostgreSQL is away again');
        return { ...total, complete: false };
      }
      files = files.slice(round.length);
    }
    if (total.replayed + total.rejected > 0) log.info({ replayed: total.replayed, rejected: total.rejected, waiting: journal.stats().records }, 'replayed the spool into PostgreSQL');
    return total;
  }

  const runOnce = () => {
    running ??= runAll().finally(() => (running = undefined));
    return running;
  };

  const kick = () => {
    if (stopped || running || !shouldRun() || journal.files().length === 0 || (availability && !availability.up)) return;
    void runOnce().catch((err: unknown) => {
      // Tried again every few seconds: said once a minute.
      if (Date.now() - failureLoggedAt < 60_000) return;
      failureLoggedAt = Date.now();
      log.error({ code: (err as { code?: unknown }).code, reason: (err as Error).message?.split('\n')[0] }, 'replaying the spool failed; trying again');
    });
  };

  return {
    runOnce,
    start() {
      availability?.onChange((up) => up && kick());
      timer = setInterval(kick, 2000);
      timer.unref();
      kick();
    },
    async stop() {
      stopped = true;
      clearInterval(timer);
      await running?.catch(() => undefined);
    },
  };
}
