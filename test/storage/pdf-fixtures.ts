import { expect } from 'vitest';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { createDatabase, type Database } from '../../src/db/client.js';
import { createStorage, type PdfMeta, type PdfStorage, type PendingPdf, type StorageKind } from '../../src/storage/pdf-storage.js';
import { createTestDatabase, type TestDatabase } from '../helpers/database.js';

/** Not a real PDF, but it starts like one, which is all the downloader checks. */
export function fakePdf(sizeBytes = 200_000): Buffer {
  return Buffer.concat([Buffer.from('%PDF-1.7\n'), randomBytes(sizeBytes - 9)]);
}

export function metaOf(bytes: Buffer): PdfMeta {
  return { sha256: createHash('sha256').update(bytes).digest('hex'), sizeBytes: bytes.length, contentType: 'application/pdf' };
}

/** Writes in small chunks, in order and awaited, the way the downloader does. */
export async function writeInChunks(sink: { write(chunk: Uint8Array): Promise<void> }, bytes: Buffer, chunkSize = 16 * 1024) {
  for (let start = 0; start < bytes.length; start += chunkSize) await sink.write(bytes.subarray(start, start + chunkSize));
}

export async function store(storage: PdfStorage, bytes: Buffer, meta: PdfMeta = metaOf(bytes)) {
  const pending = await storage.begin();
  await writeInChunks(pending, bytes);
  return pending.commit(meta);
}

export async function readAll(stream: AsyncIterable<unknown>): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

/** Every file under `dir`, as paths relative to it; empty when `dir` does not exist. */
export async function listFiles(dir: string): Promise<string[]> {
  const entries = await readdir(dir, { recursive: true, withFileTypes: true }).catch(() => []);
  return entries
    .filter((entry) => entry.isFile())
    .map((entry) => path.relative(dir, path.join(entry.parentPath, entry.name)))
    .sort();
}

/** Both backends lend the sha256 of what they were written, and take no more bytes once it is read. */
export async function expectLentSha256(storage: PdfStorage): Promise<void> {
  const bytes = fakePdf();
  const pending = await storage.begin();
  await writeInChunks(pending, bytes);
  expect(pending.sha256?.()).toBe(metaOf(bytes).sha256);
  await expect(pending.write(bytes)).rejects.toMatchObject({ code: 'STORAGE_ERR_FINISHED' });
  expect((await pending.commit(metaOf(bytes))).deduplicated).toBe(false);
}

/**
 * Commits identical downloads so that every insert is attempted before any is committed: a SHARE
 * lock lets the lookups through but holds the inserts until all of them are waiting. This forces
 * the race between concurrent commits instead of hoping the scheduler produces it.
 */
export async function commitAllAtOnce(t: StorageTest, pendings: PendingPdf[], meta: PdfMeta) {
  const blocker = await t.database.pool.connect();
  try {
    await blocker.query('BEGIN');
    await blocker.query('LOCK TABLE documents IN SHARE MODE');
    const commits = pendings.map((pending) => pending.commit(meta));
    commits.forEach((commit) => commit.catch(() => undefined)); // awaited below, after the lock is gone
    await waitForBlockedInserts(t, pendings.length);
    await blocker.query('COMMIT');
    return await Promise.all(commits);
  } finally {
    blocker.release();
  }
}

async function waitForBlockedInserts(t: StorageTest, count: number) {
  const waiting = `SELECT count(*)::int AS n FROM pg_stat_activity
    WHERE datname = current_database() AND wait_event_type = 'Lock' AND query LIKE '%INSERT INTO documents%'`;
  for (let polls = 0; polls < 1000; polls += 1) {
    const { rows } = await t.database.pool.query<{ n: number }>(waiting);
    if (rows[0]!.n >= count) return;
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  throw new Error(`Only some of the ${count} inserts reached the lock.`);
}

export interface StorageTest {
  database: TestDatabase;
  db: Database;
  pdfDir: string;
  storage: PdfStorage;
  /** The same database and directory seen through the other backend. */
  other: PdfStorage;
  close(): Promise<void>;
}

/** A real database and a real, empty directory for one test file. */
export async function createStorageTest(kind: StorageKind): Promise<StorageTest> {
  const database = await createTestDatabase();
  const db = createDatabase({ url: database.url, poolSize: 8, connectTimeoutMs: 2000 });
  const tempDir = await mkdtemp(path.join(os.tmpdir(), 'pdf-storage-test-'));
  const pdfDir = path.join(tempDir, 'pdf');
  return {
    database,
    db,
    pdfDir,
    storage: createStorage({ kind, pdfDir }, db),
    other: createStorage({ kind: kind === 'database' ? 'filesystem' : 'database', pdfDir }, db),
    async close() {
      await db.$disconnect();
      await database.drop();
      await rm(tempDir, { recursive: true, force: true });
    },
  };
}
