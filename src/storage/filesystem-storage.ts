import { createHash, randomBytes } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdir, open, rename, rm } from 'node:fs/promises';
import path from 'node:path';
import type { Readable } from 'node:stream';
import type { Database } from '../db/client.js';
import { assertWritten, createRunningHash, finishedError, recordDocument, StorageError } from './document-rows.js';
import type { PendingPdf } from './pdf-storage.js';

const FILE_MODE = 0o640;
const DIR_MODE = 0o750;
/** Downloads in progress; inside pdfDir so the final rename never crosses filesystems. */
export const INCOMING_DIR = '.incoming';
const STORAGE_KEY = /^[0-9a-f]{2}\/[0-9a-f]{64}\.pdf$/;

/** Content-addressed, fanned out by the first two hex digits so no directory grows huge. */
export function storageKeyFor(sha256: string): string {
  return `${sha256.slice(0, 2)}/${sha256}.pdf`;
}

function hasCode(error: unknown, ...codes: string[]): boolean {
  return codes.includes((error as NodeJS.ErrnoException | undefined)?.code ?? '');
}

/** Bytes gathered before one write to the temporary file: bounds the memory of each download in progress. */
const WRITE_RUN_BYTES = 256 * 1024;

/** writev may write less than asked (a full disk, a signal); the rest is written until done or it throws. */
export async function writeAll(handle: { writev(chunks: Uint8Array[]): Promise<{ bytesWritten: number }> }, chunks: Uint8Array[]): Promise<void> {
  let pending = chunks;
  while (pending.length > 0) {
    let { bytesWritten } = await handle.writev(pending);
    const rest: Uint8Array[] = [];
    for (const chunk of pending) {
      if (bytesWritten >= chunk.length) bytesWritten -= chunk.length;
      else {
        rest.push(chunk.subarray(bytesWritten));
        bytesWritten = 0;
      }
    }
    pending = rest;
  }
}

/** Makes a rename or a new entry in `dir` survive a power cut. */
async function syncDirectory(dir: string): Promise<void> {
  try {
    const handle = await open(dir, 'r');
    try {
      await handle.sync();
    } finally {
      await handle.close();
    }
  } catch (error) {
    // Some platforms and filesystems cannot open or fsync a directory; there is nothing more to do there.
    if (!hasCode(error, 'EISDIR', 'EPERM', 'EINVAL')) throw error;
  }
}

async function fileHasSha256(file: string, sha256: string): Promise<boolean> {
  const hash = createHash('sha256');
  try {
    for await (const chunk of createReadStream(file)) hash.update(chunk as Buffer);
  } catch (error) {
    if (hasCode(error, 'ENOENT')) return false;
    throw error;
  }
  return hash.digest('hex') === sha256;
}

/** Moves the finished temp file to its content address, unless an identical file is already there. */
async function placeFile(pdfDir: string, tempPath: string, sha256: string): Promise<string> {
  const key = storageKeyFor(sha256);
  const finalPath = path.join(pdfDir, key);
  const prefixDir = path.dirname(finalPath);
  const created = await mkdir(prefixDir, { recursive: true, mode: DIR_MODE });
  if (created !== undefined) await syncDirectory(pdfDir);
  // An existing file with other bytes (truncated, damaged) is replaced, which repairs it.
  if (await fileHasSha256(finalPath, sha256)) return key;
  // rename replaces atomically: readers see the old complete file or the new one, never a partial one.
  await rename(tempPath, finalPath);
  await syncDirectory(prefixDir);
  return key;
}

/** Opens a stored file; the key is checked so a tampered row cannot point outside pdfDir. */
export async function openStoredFile(pdfDir: string, storageKey: string): Promise<Readable> {
  if (!STORAGE_KEY.test(storageKey)) {
    throw new StorageError('STORAGE_ERR_MISSING', `The storage key ${JSON.stringify(storageKey)} is not a PDF file name.`);
  }
  try {
    const handle = await open(path.join(pdfDir, storageKey), 'r');
    return handle.createReadStream(); // closes the handle when it ends or is destroyed
  } catch (error) {
    if (!hasCode(error, 'ENOENT')) throw error;
    throw new StorageError('STORAGE_ERR_MISSING', `The stored PDF ${storageKey} is missing from ${pdfDir}.`, { cause: error });
  }
}

/**
 * Streams the download into a temp file while hashing it, so the file is never held in memory.
 * Commit makes it durable (fsync file, rename, fsync directory) before recording the row: a row
 * never points at a file that could be lost. A file whose row insert then fails stays in place,
 * harmless, and is reused by the retry.
 */
export async function beginFilesystemPdf(db: Database, pdfDir: string): Promise<PendingPdf> {
  const incoming = path.join(pdfDir, INCOMING_DIR);
  await mkdir(incoming, { recursive: true, mode: DIR_MODE });
  // Random and opened exclusively ('wx'): no two downloads, in this process or another replica, share it.
  const tempPath = path.join(incoming, `${randomBytes(16).toString('hex')}.partial`);
  const handle = await open(tempPath, 'wx', FILE_MODE);
  const hash = createRunningHash();
  let sizeBytes = 0;
  // Chunks arrive as the network delivers them (often 16 KiB); one write per chunk costs more in
  // system calls and thread-pool round trips than the copy itself, so they are written in runs.
  let unwritten: Uint8Array[] = [];
  let unwrittenBytes = 0;
  let state: 'writing' | 'broken' | 'finished' = 'writing';
  let removal: Promise<void> | undefined;
  const flush = async () => {
    const run = unwritten;
    unwritten = [];
    unwrittenBytes = 0;
    try {
      await writeAll(handle, run);
    } catch (error) {
      state = 'broken'; // the file no longer matches the hash, so it must not be committed
      throw error;
    }
  };
  const removeTemp = () =>
    (removal ??= (async () => {
      await handle.close().catch(() => undefined);
      await rm(tempPath, { force: true }).catch(() => undefined);
    })());

  return {
    sha256: () => hash.sha256(),
    async write(chunk) {
      if (state !== 'writing' || hash.finished()) throw finishedError('write to');
      hash.update(chunk);
      sizeBytes += chunk.length;
      unwritten.push(chunk);
      unwrittenBytes += chunk.length;
      if (unwrittenBytes >= WRITE_RUN_BYTES) await flush();
    },
    async commit(meta) {
      if (state !== 'writing') {
        if (state === 'broken') await removeTemp();
        throw finishedError('commit');
      }
      state = 'finished';
      let storageKey: string;
      try {
        assertWritten(meta, { sha256: hash.sha256(), sizeBytes });
        await flush();
        await handle.sync();
        await handle.close();
        storageKey = await placeFile(pdfDir, tempPath, meta.sha256);
      } finally {
        await removeTemp(); // nothing left to remove once renamed; everything when refused or failed
      }
      return recordDocument(db, { ...meta, storage: 'filesystem', storageKey, content: null });
    },
    async discard() {
      state = 'finished';
      await removeTemp();
    },
  };
}
